import { Backend, frontend, PgError, SqlState } from '../protocol/index.ts'
import { BackendConn, type BackendReceiver, type Endpoint, errorFromFrame } from './backend.ts'

/** Rows of a simple query, each column as text or null. */
export type Rows = (string | null)[][]

/** Outcome of an internal query: an SQL error is a result, not a rejection. */
export interface QueryResult {
  rows: Rows
  /** Transaction status byte of the final ReadyForQuery. */
  status: number
  error: PgError | null
}

/** Anything with one receiver of backend messages that takes bytes for the server. */
export interface QueryTarget {
  receiver: BackendReceiver | null
  write(data: Buffer): boolean
}

/**
 * Runs one simple-protocol query for Tidepool's own bookkeeping (role lookups, resets,
 * settings), with the backend's receiver set aside meanwhile. Not a general client: text
 * results only. Rejects only when the connection fails.
 */
export function simpleQuery(conn: QueryTarget, sql: string): Promise<QueryResult> {
  return new Promise((resolve, reject) => {
    const rows: Rows = []
    let error: PgError | null = null
    const previous = conn.receiver
    const receiver: BackendReceiver = {
      onBackendMessage(type, frame) {
        if (type === Backend.DataRow) rows.push(decodeDataRow(frame))
        else if (type === Backend.ErrorResponse) error ??= errorFromFrame(frame)
        else if (type === Backend.ReadyForQuery) {
          conn.receiver = previous
          resolve({ rows, status: frame[5], error })
        }
      },
      onBackendMessagePart() {
        error ??= new PgError(SqlState.ProgramLimitExceeded, 'row too large for an internal query')
      },
      onBackendFlush() {},
      onBackendClosed(closeError) {
        reject(closeError)
      },
    }
    conn.receiver = receiver
    conn.write(frontend.query(sql))
  })
}

/**
 * The internal queries on the wire of one lease, and the end of that lease, which waits
 * for them: ending it while one is in flight would hand its replies to whoever gets the
 * backend next.
 */
export class InternalQueries {
  private inFlight = 0
  private afterLast: (() => void) | null = null

  get busy(): boolean {
    return this.inFlight > 0
  }

  /** Counts `query` as in flight until it settles. */
  track(query: Promise<QueryResult>): Promise<QueryResult> {
    this.inFlight++
    return query.finally(() => {
      if (--this.inFlight > 0) return
      const next = this.afterLast
      this.afterLast = null
      next?.()
    })
  }

  /** True when `end` is put off until the last query's reply; false: end now. */
  deferred(end: () => void): boolean {
    if (this.inFlight === 0) return false
    this.afterLast = end
    return true
  }
}

function decodeDataRow(frame: Buffer): (string | null)[] {
  const count = frame.readInt16BE(5)
  const values: (string | null)[] = []
  let offset = 7
  for (let i = 0; i < count; i++) {
    const length = frame.readInt32BE(offset)
    offset += 4
    if (length < 0) values.push(null)
    else {
      values.push(frame.toString('utf8', offset, offset + length))
      offset += length
    }
  }
  return values
}

/** Quotes a string as an SQL literal (standard_conforming_strings on, as since PG 9.1). */
export function quoteLiteral(value: string): string {
  return `'${value.replaceAll("'", "''")}'`
}

/**
 * Logs in to a server as `user` (trust or peer: no password), runs one query and
 * disconnects: for supervision checks, not for sessions.
 */
export async function queryServer(
  endpoint: Endpoint,
  user: string,
  sql: string,
  timeoutMs = 5000,
): Promise<QueryResult> {
  const conn = await BackendConn.connect(
    endpoint,
    { user, database: 'postgres', application_name: 'tidepool-supervisor' },
    {},
    timeoutMs,
  )
  try {
    return await simpleQuery(conn, sql)
  } finally {
    conn.destroy()
  }
}
