/**
 * State only a backend can hold (temporary tables, session advisory locks, WITH HOLD
 * cursors, SQL PREPARE, currval/lastval) pins a session to its backend while Postgres holds it, and the
 * session returns to pooling once it is gone. 20 sessions share a pool of 2; one session
 * at a time holds a pin while the others keep running.
 */
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import pg from 'pg'
import type { Gateway } from '../../src/gateway/index.ts'
import { GatewayClients } from '../support/clients.ts'
import { startTestGateway } from '../support/gateway.ts'
import { startTestPostgres, type TestPostgres } from '../support/postgres.ts'

const OTHERS = 19

describe('pins across a pool of 2', () => {
  let server: TestPostgres
  let gateway: Gateway
  let others: pg.Client[] = []
  const clients = new GatewayClients(() => gateway)

  before(async () => {
    server = await startTestPostgres()
    gateway = await startTestGateway(server, { poolSize: 2, waitTimeoutMs: 10_000 })
    others = await Promise.all(Array.from({ length: OTHERS }, () => connect()))
  })

  after(async () => {
    await clients.endAll()
    await gateway?.close()
    await server?.stop()
  })

  const connect = () => clients.connect()

  const pinned = () => clients.total('pinned')

  /**
   * The gateway asks Postgres about pins right after the reply that ends a transaction,
   * so the client can observe the reply a moment before the answer is in.
   */
  async function pinnedBecomes(expected: number): Promise<void> {
    const deadline = Date.now() + 5000
    while (pinned() !== expected) {
      if (Date.now() > deadline) assert.fail(`pinned backends: ${pinned()}, expected ${expected}`)
      await new Promise((resolve) => setTimeout(resolve, 10))
    }
  }

  /** Every other session runs a few statements, moving leases around the pool. */
  async function churn(check?: (client: pg.Client) => Promise<void>): Promise<void> {
    await Promise.all(
      others.map(async (client) => {
        for (let i = 0; i < 3; i++) {
          await client.query('SELECT 1')
          await check?.(client)
        }
      }),
    )
  }

  test('a temporary table pins its session until it is dropped', async () => {
    const owner = await connect()
    await owner.query('CREATE TEMP TABLE scratch (v int)')
    await owner.query('INSERT INTO scratch VALUES (1), (2)')
    await pinnedBecomes(1)
    await churn(async (client) => {
      const { rows } = await client.query("SELECT to_regclass('scratch') AS t")
      assert.equal(rows[0].t, null, 'another session sees the temporary table')
    })
    assert.equal((await owner.query('SELECT sum(v)::int AS s FROM scratch')).rows[0].s, 3)
    await owner.query('DROP TABLE scratch')
    await pinnedBecomes(0)
    await churn()
  })

  test('CREATE TEMP TABLE AS (tag SELECT) pins too', async () => {
    const owner = await connect()
    await owner.query('CREATE TEMP TABLE made AS SELECT 7 AS v')
    await pinnedBecomes(1)
    await churn()
    assert.equal((await owner.query('SELECT v FROM made')).rows[0].v, 7)
    await owner.query('DISCARD TEMP')
    await pinnedBecomes(0)
  })

  test('a session advisory lock stays with its session and unpins on unlock', async () => {
    const holder = await connect()
    await holder.query('SELECT pg_advisory_lock(42)')
    await pinnedBecomes(1)
    await churn(async (client) => {
      const { rows } = await client.query('SELECT pg_try_advisory_lock(42) AS got')
      assert.equal(rows[0].got, false, 'another session took the lock')
    })
    await holder.query('SELECT pg_advisory_unlock(42)')
    await pinnedBecomes(0)
    const { rows } = await others[0].query('SELECT pg_try_advisory_lock(42) AS got')
    assert.equal(rows[0].got, true)
    await others[0].query('SELECT pg_advisory_unlock_all()')
  })

  test('a WITH HOLD cursor survives other sessions’ transactions until CLOSE', async () => {
    const reader = await connect()
    await reader.query('DECLARE c CURSOR WITH HOLD FOR SELECT generate_series(1, 9) AS n')
    const seen: number[] = []
    for (let i = 0; i < 3; i++) {
      await churn()
      for (const row of (await reader.query('FETCH 3 FROM c')).rows) seen.push(row.n)
    }
    assert.deepEqual(seen, [1, 2, 3, 4, 5, 6, 7, 8, 9])
    await reader.query('CLOSE c')
    await pinnedBecomes(0)
  })

  test('SQL PREPARE / EXECUTE across other sessions’ traffic, then DEALLOCATE', async () => {
    const client = await connect()
    await client.query('PREPARE plus_one AS SELECT $1::int + 1 AS v')
    for (let i = 0; i < 3; i++) {
      await churn(async (other) => {
        await assert.rejects(
          other.query('EXECUTE plus_one(1)'),
          (error: { code?: string }) => error.code === '26000',
        )
      })
      assert.equal((await client.query(`EXECUTE plus_one(${i})`)).rows[0].v, i + 1)
    }
    await client.query('DEALLOCATE plus_one')
    await pinnedBecomes(0)
  })

  test('currval and lastval stay with the session that called nextval, until DISCARD SEQUENCES', async () => {
    await others[0].query('CREATE SEQUENCE IF NOT EXISTS pin_seq')
    const caller = await connect()
    const first = Number((await caller.query("SELECT nextval('pin_seq') AS v")).rows[0].v)
    await pinnedBecomes(1)
    await churn(async (client) => {
      // Other sessions never called nextval: Postgres refuses currval for them (55000).
      await assert.rejects(
        client.query("SELECT currval('pin_seq')"),
        (error: { code?: string }) => error.code === '55000',
      )
      await client.query("SELECT nextval('pin_seq')")
      await client.query('DISCARD SEQUENCES')
    })
    assert.equal(Number((await caller.query("SELECT currval('pin_seq') AS v")).rows[0].v), first)
    assert.equal(Number((await caller.query('SELECT lastval() AS v')).rows[0].v), first)
    await caller.query('DISCARD SEQUENCES')
    await pinnedBecomes(0)
    await assert.rejects(
      caller.query('SELECT lastval()'),
      (error: { code?: string }) => error.code === '55000',
    )
    // Naming a sequence function pins again, even in a statement that fails.
    await pinnedBecomes(1)
    await caller.end()
    await pinnedBecomes(0)
  })

  test('a pinned session that disconnects leaves nothing behind', async () => {
    const leaver = await connect()
    await leaver.query('CREATE TEMP TABLE left_behind (v int)')
    await leaver.query('SELECT pg_advisory_lock(7)')
    await leaver.end()
    await churn(async (client) => {
      assert.equal((await client.query("SELECT to_regclass('left_behind') AS t")).rows[0].t, null)
    })
    const { rows } = await others[1].query('SELECT pg_try_advisory_lock(7) AS got')
    assert.equal(rows[0].got, true, 'the lock outlived its session')
    await others[1].query('SELECT pg_advisory_unlock_all()')
    await pinnedBecomes(0)
  })
})

describe('pinned idle timeout', () => {
  test('a pinned session idle past --pinned-idle-timeout is ended with 57P05 and its backend freed', async () => {
    const server = await startTestPostgres()
    const gateway = await startTestGateway(server, { poolSize: 1, pinnedIdleTimeoutMs: 300 })
    try {
      const client = new pg.Client({
        host: '127.0.0.1',
        port: gateway.port,
        user: 'postgres',
        database: 'postgres',
      })
      const ended = new Promise<{ code?: string }>((resolve) =>
        client.on('error', (error) => resolve(error as { code?: string })),
      )
      await client.connect()
      await client.query('CREATE TEMP TABLE held (v int)')
      const error = await ended
      assert.equal(error.code, '57P05')
      // The only backend is free again: another session gets it.
      const other = new pg.Client({
        host: '127.0.0.1',
        port: gateway.port,
        user: 'postgres',
        database: 'postgres',
      })
      await other.connect()
      assert.equal((await other.query("SELECT to_regclass('held') AS t")).rows[0].t, null)
      await other.end()
      await client.end().catch(() => {})
    } finally {
      await gateway.close()
      await server.stop()
    }
  })
})
