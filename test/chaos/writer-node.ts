/**
 * The chaos suite's node-postgres writer: CONNECTIONS sessions (default 4), each writing
 * rows `(writer, seq, note)` into `chaos` with its own writer id (`<WRITER>-<i>`) and a
 * seq that only goes up, never reused, whatever happened to the previous one. Most
 * writes are transactions (`BEGIN; INSERT; pause; COMMIT`, the pause 0–5 ms, sometimes
 * 200–800 ms), some are autocommit INSERTs, some a `CALL chaos_write(…)` that commits
 * its INSERT and then sleeps before it replies. A write counts as acknowledged only when
 * its INSERT reported one row and its COMMIT came back as `COMMIT` (or the autocommit
 * INSERT succeeded, or the CALL came back as `CALL`); then, and only then, it prints
 * `ack\t<writer>\t<seq>\t<kind>`. Any error prints
 * `err\t<writer>\t<seq>\t<step>\t<code>\t<message>` and the write is given up; a closed
 * connection is replaced. The protocol is shared with writer.py and writer-go (see
 * ledger.ts). Runs until stdin closes, then prints `done\t<name>`.
 *
 * Environment: DATABASE_URL, WRITER (id prefix), CONNECTIONS.
 *
 * @module
 */
import { setTimeout as sleep } from 'node:timers/promises'
import pg from 'pg'

const url = process.env.DATABASE_URL
if (url === undefined) throw new Error('DATABASE_URL is required')
const prefix = process.env.WRITER ?? 'node'
const connections = Number(process.env.CONNECTIONS ?? '4')

let stopping = false
process.stdin.on('data', () => {})
process.stdin.on('end', () => (stopping = true))
process.stdin.on('close', () => (stopping = true))

/** Fields are tab-separated; keep messages on one line. */
function emit(...fields: (string | number)[]): void {
  process.stdout.write(`${fields.map((field) => String(field).replace(/[\t\n\r]+/g, ' ')).join('\t')}\n`)
}

/** A SQLSTATE when the server sent one, else `conn` (refused, reset, closed, timed out). */
function codeOf(error: unknown): string {
  const code = (error as { code?: unknown }).code
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : 'conn'
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error)
}

/**
 * The next write: an autocommit INSERT (1 in 5), a CALL of chaos_write, which commits its
 * INSERT and then sleeps `pause` ms inside the same statement (1 in 10), or a transaction
 * whose pause between INSERT and COMMIT is 0–5 ms, one in twelve 200–800 ms (`tx-long`).
 */
function pickWrite(): { kind: 'auto' | 'call' | 'tx' | 'tx-long'; pause: number } {
  const draw = Math.random()
  if (draw < 0.2) return { kind: 'auto', pause: 0 }
  if (draw < 0.3) return { kind: 'call', pause: 50 + Math.floor(Math.random() * 250) }
  if (Math.random() < 1 / 12) return { kind: 'tx-long', pause: 200 + Math.floor(Math.random() * 600) }
  return { kind: 'tx', pause: Math.floor(Math.random() * 6) }
}

interface Session {
  client: pg.Client
  dead: boolean
}

async function connect(): Promise<Session> {
  const client = new pg.Client({
    connectionString: url,
    connectionTimeoutMillis: 10_000,
    query_timeout: 20_000,
  })
  const session: Session = { client, dead: false }
  client.on('error', () => (session.dead = true))
  client.on('end', () => (session.dead = true))
  try {
    await client.connect()
  } catch (error) {
    client.end().catch(() => {})
    throw error
  }
  return session
}

class StepError extends Error {
  readonly step: string
  readonly failure: unknown
  constructor(step: string, failure: unknown) {
    super(messageOf(failure))
    this.step = step
    this.failure = failure
  }
}

async function step<T>(name: string, run: () => Promise<T>): Promise<T> {
  try {
    return await run()
  } catch (error) {
    throw new StepError(name, error)
  }
}

const INSERT = 'INSERT INTO chaos (writer, seq, note) VALUES ($1, $2, $3)'
/** Commits its INSERT, then sleeps: a statement that has committed before it replies. */
const CALL = 'CALL chaos_write($1, $2, $3, $4)'

async function runConnection(writer: string): Promise<void> {
  let session: Session | null = null
  let seq = 0
  while (!stopping) {
    if (session === null) {
      try {
        session = await connect()
      } catch (error) {
        emit('err', writer, seq, 'connect', codeOf(error), messageOf(error))
        await sleep(100 + Math.floor(Math.random() * 100))
        continue
      }
    }
    seq++
    const { kind, pause } = pickWrite()
    const note = `${kind} node`
    const { client } = session
    try {
      if (kind === 'auto') {
        const result = await step('insert', () => client.query(INSERT, [writer, seq, note]))
        if (result.rowCount !== 1)
          throw new StepError('insert', new Error(`INSERT reported ${result.rowCount} rows`))
      } else if (kind === 'call') {
        const result = await step('call', () => client.query(CALL, [writer, seq, note, pause]))
        if (result.command !== 'CALL')
          throw new StepError('call', new Error(`CALL answered ${result.command}`))
      } else {
        await step('begin', () => client.query('BEGIN'))
        const result = await step('insert', () => client.query(INSERT, [writer, seq, note]))
        if (result.rowCount !== 1)
          throw new StepError('insert', new Error(`INSERT reported ${result.rowCount} rows`))
        await sleep(pause)
        const commit = await step('commit', () => client.query('COMMIT'))
        if (commit.command !== 'COMMIT') {
          // Postgres answers COMMIT of a failed transaction with ROLLBACK: not acknowledged.
          emit('err', writer, seq, 'commit', 'not-committed', `COMMIT answered ${commit.command}`)
          continue
        }
      }
      emit('ack', writer, seq, kind)
    } catch (error) {
      const failed = error instanceof StepError ? error : new StepError('unknown', error)
      emit('err', writer, seq, failed.step, codeOf(failed.failure), failed.message)
      if (!session.dead) {
        try {
          await client.query('ROLLBACK')
        } catch {
          session.dead = true
        }
      }
      if (session.dead || codeOf(failed.failure) === 'conn') {
        client.end().catch(() => {})
        session = null
      }
    }
  }
  if (session !== null) await session.client.end().catch(() => {})
}

await Promise.all(Array.from({ length: connections }, (_, i) => runConnection(`${prefix}-${i}`)))
emit('done', prefix)
