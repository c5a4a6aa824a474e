/**
 * Helpers for fault tests: finding and terminating the backend behind a session from a
 * direct connection, reading replies that may never come or may end in a closed
 * connection, and describing raw replies readably in assertion messages.
 *
 * @module
 */
import assert from 'node:assert/strict'
import { setTimeout as sleep } from 'node:timers/promises'
import type pg from 'pg'
import { Backend } from '../../src/protocol/index.ts'
import {
  bind,
  ConnectionClosedError,
  errorFields,
  execute,
  parse,
  type RawClient,
  type RawMessage,
  sync,
} from './raw-client.ts'

/** Polls `check` until it returns true; fails the test after `timeoutMs`. */
export async function eventually(
  check: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 5000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`timed out after ${timeoutMs}ms waiting for ${what}`)
    await sleep(20)
  }
}

/** Polls `check` until it returns a value; fails with its last error after `timeoutMs`. */
export async function eventuallyValue<T>(
  what: string,
  check: () => Promise<T | undefined>,
  timeoutMs = 15_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs
  let last: unknown
  for (;;) {
    try {
      const value = await check()
      if (value !== undefined) return value
    } catch (error) {
      last = error
    }
    if (Date.now() > deadline) assert.fail(`${what} within ${timeoutMs} ms (last error: ${String(last)})`)
    await sleep(100)
  }
}

/** The pid of the backend running a statement whose text contains `marker`. */
export async function runningBackend(direct: pg.Client, marker: string, timeoutMs = 5000): Promise<number> {
  let pid = 0
  await eventually(
    async () => {
      const { rows } = await direct.query<{ pid: number }>(
        `SELECT pid FROM pg_stat_activity
          WHERE state = 'active' AND query LIKE '%' || $1 || '%' AND pid <> pg_backend_pid()`,
        [marker],
      )
      if (rows.length > 0) pid = rows[0].pid
      return rows.length > 0
    },
    `a backend running "${marker}"`,
    timeoutMs,
  )
  return pid
}

/** pg_terminate_backend(pid), then waits until the process is gone. */
export async function terminateBackend(direct: pg.Client, pid: number): Promise<void> {
  const { rows } = await direct.query<{ ok: boolean }>('SELECT pg_terminate_backend($1) AS ok', [pid])
  assert.equal(rows[0].ok, true, `pg_terminate_backend(${pid}) found no such backend`)
  await eventually(async () => {
    const { rows: left } = await direct.query('SELECT 1 FROM pg_stat_activity WHERE pid = $1', [pid])
    return left.length === 0
  }, `backend ${pid} to exit`)
}

/** Terminates every client backend but `direct`'s own (cleanup after a gateway closed). */
export async function terminateOthers(direct: pg.Client): Promise<void> {
  await direct.query(
    `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
      WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()`,
  )
}

/** What a raw client got: messages up to ReadyForQuery, or up to the end or a timeout. */
export interface Reply {
  messages: RawMessage[]
  /** The connection closed before a ReadyForQuery. */
  closed: boolean
  /** Nothing ended the reply within the time allowed. */
  timedOut: boolean
  /** ReadyForQuery status letter, '' if none. */
  status: string
}

/** Reads up to and including the next ReadyForQuery, tolerating a close or a timeout. */
export async function readReply(client: RawClient, timeoutMs = 5000): Promise<Reply> {
  const messages: RawMessage[] = []
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const left = deadline - Date.now()
    if (left <= 0) return { messages, closed: false, timedOut: true, status: '' }
    let message: RawMessage
    try {
      message = await client.next(left)
    } catch (error) {
      if (error instanceof ConnectionClosedError)
        return { messages, closed: true, timedOut: false, status: '' }
      if (error instanceof Error && /timed out/.test(error.message)) {
        return { messages, closed: false, timedOut: true, status: '' }
      }
      throw error
    }
    messages.push(message)
    if (message.type === Backend.ReadyForQuery) {
      return { messages, closed: false, timedOut: false, status: String.fromCharCode(message.body[0]) }
    }
  }
}

/** Everything until the server closes the connection (or `timeoutMs`), and whether it did. */
export async function readToEnd(
  client: RawClient,
  timeoutMs = 5000,
): Promise<{ messages: RawMessage[]; closed: boolean }> {
  return client.drain(timeoutMs)
}

/** One line per reply: message letters, with severity/SQLSTATE of errors and notices, tags and statuses. */
export function describeReply(reply: Reply | { messages: RawMessage[]; closed: boolean }): string {
  const parts = reply.messages.map(describeMessage)
  if (reply.closed) parts.push('<closed>')
  if ('timedOut' in reply && reply.timedOut) parts.push('<no reply>')
  return parts.join(' ')
}

/** E(ERROR 08006 "…"), C(ROLLBACK), Z(I), D, … */
export function describeMessage(message: RawMessage): string {
  const letter = String.fromCharCode(message.type)
  switch (message.type) {
    case Backend.ErrorResponse:
    case Backend.NoticeResponse: {
      const fields = errorFields(message)
      return `${letter}(${fields.severity} ${fields.code} ${JSON.stringify(fields.message)})`
    }
    case Backend.CommandComplete:
      return `C(${commandTag(message)})`
    case Backend.ReadyForQuery:
      return `Z(${String.fromCharCode(message.body[0])})`
    default:
      return letter
  }
}

/** The tag of a CommandComplete. */
export function commandTag(message: RawMessage): string {
  return message.body.toString('utf8', 0, message.body.length - 1)
}

/** The ErrorResponses of a reply, as fields. */
export function errorsOf(messages: readonly RawMessage[]): ReturnType<typeof errorFields>[] {
  return messages.filter((m) => m.type === Backend.ErrorResponse).map((m) => errorFields(m))
}

/** Messages of a reply other than NoticeResponse and ParameterStatus (which may come anywhere). */
export function significant(messages: readonly RawMessage[]): RawMessage[] {
  return messages.filter((m) => m.type !== Backend.NoticeResponse && m.type !== Backend.ParameterStatus)
}

/** Parse (unnamed), Bind (unnamed), Execute, Sync of `sql`, as one buffer. */
export function extendedQuery(sql: string): Buffer {
  return Buffer.concat([parse('', sql, []), bind('', ''), execute(''), sync])
}
