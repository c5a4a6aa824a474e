/**
 * Real software that leans on LISTEN/NOTIFY and advisory locks, unchanged:
 * graphile-worker, through the gateway. Its polling interval is set to ten minutes, so
 * only the NOTIFY its add_job trigger sends can wake it for a job added after start.
 */
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { type Runner, run } from 'graphile-worker'
import pg from 'pg'
import type { Gateway } from '../../src/gateway/index.ts'
import { startTestGateway } from '../support/gateway.ts'
import { startTestPostgres, type TestPostgres } from '../support/postgres.ts'

const TEN_MINUTES = 10 * 60 * 1000

describe('graphile-worker through the gateway', () => {
  let server: TestPostgres
  let gateway: Gateway
  let runner: Runner | undefined
  let pool: pg.Pool | undefined
  const done: { id: number; at: number }[] = []

  before(async () => {
    server = await startTestPostgres()
    gateway = await startTestGateway(server, { poolSize: 3 })
  })

  after(async () => {
    await runner?.stop()
    // The worker's connections end before the gateway, which would otherwise end them with 57P01.
    await pool?.end()
    await gateway?.close()
    await server?.stop()
  })

  test('a job added after start is picked up by notification alone', { timeout: 60_000 }, async () => {
    const connectionString = `postgres://postgres@127.0.0.1:${gateway.port}/postgres`
    let listening!: () => void
    const listened = new Promise<void>((resolve) => (listening = resolve))
    pool = new pg.Pool({ connectionString, max: 4 })
    // Connections the worker still holds when the gateway shuts down are ended with 57P01.
    pool.on('error', () => {})
    runner = await run({
      pgPool: pool,
      concurrency: 2,
      pollInterval: TEN_MINUTES,
      noHandleSignals: true,
      logger: undefined,
      taskList: {
        hello: async (payload) => {
          done.push({ id: (payload as { id: number }).id, at: Date.now() })
        },
      },
    })
    runner.events.on('pool:listen:success', () => listening())
    await Promise.race([listened, new Promise((resolve) => setTimeout(resolve, 2000))])

    const client = new pg.Client({ connectionString })
    await client.connect()
    try {
      const added = Date.now()
      for (let id = 1; id <= 3; id++)
        await client.query("SELECT graphile_worker.add_job('hello', json_build_object('id', $1::int))", [id])
      const deadline = Date.now() + 10_000
      while (done.length < 3 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20))
      assert.deepEqual(
        done.map((job) => job.id).sort(),
        [1, 2, 3],
        'jobs ran (only a notification could have woken the worker)',
      )
      assert.ok(done.every((job) => job.at - added < 10_000))
      const { rows } = await client.query('SELECT count(*)::int AS n FROM graphile_worker.jobs')
      assert.equal(rows[0].n, 0, 'completed jobs are removed')
    } finally {
      await client.end()
    }
  })
})
