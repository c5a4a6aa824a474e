/**
 * The pool's own life cycle, observed from Postgres: it keeps --min-pool-size backends
 * open, closes backends idle past --idle-timeout down to that minimum, and replaces
 * backends older than --max-lifetime.
 */
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import pg from 'pg'
import type { Gateway } from '../../src/gateway/index.ts'
import { ADMIN_APPLICATION_NAME, directClient } from '../support/backends.ts'
import { startTestGateway } from '../support/gateway.ts'
import { startTestPostgres, type TestPostgres } from '../support/postgres.ts'

const PIDS_SQL = `SELECT pid FROM pg_stat_activity
  WHERE backend_type = 'client backend' AND datname = 'postgres' AND usename = 'postgres'
    AND pid <> pg_backend_pid() AND application_name IS DISTINCT FROM '${ADMIN_APPLICATION_NAME}'
    AND application_name IS DISTINCT FROM 'tidepool-test-direct'`

async function eventually<T>(
  probe: () => Promise<T>,
  ok: (value: T) => boolean,
  what: string,
  timeoutMs = 8000,
) {
  const deadline = Date.now() + timeoutMs
  let last: T = await probe()
  while (!ok(last)) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}; last seen ${JSON.stringify(last)}`)
    await new Promise((resolve) => setTimeout(resolve, 100))
    last = await probe()
  }
  return last
}

describe('pool life cycle: min size, idle timeout, lifetime', () => {
  let server: TestPostgres
  let gateway: Gateway
  let direct: pg.Client

  before(async () => {
    server = await startTestPostgres()
    gateway = await startTestGateway(server, {
      poolSize: 4,
      minPoolSize: 2,
      idleTimeoutMs: 1500,
      maxLifetimeMs: 4000,
    })
    direct = await directClient(server)
  })

  after(async () => {
    await direct?.end()
    await gateway?.close()
    await server?.stop()
  })

  const pids = async () => (await direct.query<{ pid: number }>(PIDS_SQL)).rows.map((row) => row.pid).sort()

  const client = async () => {
    const c = new pg.Client({ host: '127.0.0.1', port: gateway.port, user: 'postgres', database: 'postgres' })
    await c.connect()
    return c
  }

  test('grows to the minimum, shrinks back to it when idle, and replaces old backends', async () => {
    const first = await client()
    try {
      await first.query('SELECT 1')
      const atMinimum = await eventually(
        pids,
        (list) => list.length === 2,
        'the pool to reach its minimum of 2',
      )

      // Four transactions at once need four backends (the pool's maximum).
      const busy = await Promise.all([0, 1, 2, 3].map(() => client()))
      try {
        await Promise.all(busy.map((c) => c.query('BEGIN')))
        const seen = new Set(
          (await Promise.all(busy.map((c) => c.query('SELECT pg_backend_pid() AS pid')))).map(
            (r) => r.rows[0].pid,
          ),
        )
        assert.equal(seen.size, 4, 'four open transactions on four distinct backends')
        assert.equal((await pids()).length, 4)
        await Promise.all(busy.map((c) => c.query('COMMIT')))
      } finally {
        await Promise.all(busy.map((c) => c.end()))
      }

      // Idle past the timeout: closed down to the minimum, never below it.
      await eventually(pids, (list) => list.length === 2, 'idle backends to close down to the minimum')

      // Past the lifetime every original backend has been replaced, and the minimum kept.
      const renewed = await eventually(
        pids,
        (list) => list.length === 2 && list.every((pid) => !atMinimum.includes(pid)),
        'backends older than the lifetime to be replaced',
        10_000,
      )
      assert.equal(renewed.length, 2)
      const { rows } = await first.query('SELECT 41 + 1 AS answer')
      assert.equal(rows[0].answer, 42)
    } finally {
      await first.end()
    }
  })
})
