/**
 * SQL PREPARE, EXECUTE and DEALLOCATE without pinning: 20 sessions on a pool of 2 use
 * the same statement names for different statements, each sees only its own, errors
 * read as Postgres words them for the client's text, and a look at
 * pg_prepared_statements shows the session's own statements under their own names.
 */
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import type { Gateway } from '../../src/gateway/index.ts'
import { GatewayClients } from '../support/clients.ts'
import { startTestGateway } from '../support/gateway.ts'
import { startTestPostgres, type TestPostgres } from '../support/postgres.ts'

const SESSIONS = 20

describe('SQL prepared statements across a pool of 2', () => {
  let server: TestPostgres
  let gateway: Gateway
  const clients = new GatewayClients(() => gateway)

  before(async () => {
    server = await startTestPostgres()
    gateway = await startTestGateway(server, { poolSize: 2, waitTimeoutMs: 10_000 })
  })

  after(async () => {
    await clients.endAll()
    await gateway?.close()
    await server?.stop()
  })

  const connect = () => clients.connect()

  const pinned = () => clients.total('pinned')
  const code = (expected: string) => (error: { code?: string }) => error.code === expected

  test('each session’s q is its own, on whichever backend, and nothing pins', async () => {
    const sessions = await Promise.all(Array.from({ length: SESSIONS }, () => connect()))
    await Promise.all(
      sessions.map((client, i) => client.query(`PREPARE q(int) AS SELECT $1 * ${i + 1} AS v`)),
    )
    // Two bodies shared by many sessions: each backend prepares each at most once.
    await Promise.all(
      sessions.map((client, i) => client.query(`PREPARE shared AS SELECT ${i % 2} AS parity`)),
    )
    for (let round = 0; round < 5; round++) {
      await Promise.all(
        sessions.map(async (client, i) => {
          assert.equal((await client.query(`EXECUTE q(${round})`)).rows[0].v, round * (i + 1))
          assert.equal((await client.query('EXECUTE shared')).rows[0].parity, i % 2)
          assert.equal(pinned(), 0, 'a session was pinned for its prepared statements')
        }),
      )
    }
    await Promise.all(sessions.map((client) => client.query('DEALLOCATE q')))
    await Promise.all(sessions.map((client) => assert.rejects(client.query('EXECUTE q(1)'), code('26000'))))
    assert.equal((await sessions[3].query('EXECUTE shared')).rows[0].parity, 1)
  })

  test('errors are Postgres’s, in the client’s names and positions', async () => {
    const client = await connect()
    await assert.rejects(client.query('EXECUTE missing'), (error: Error & { code?: string }) => {
      return error.code === '26000' && error.message === 'prepared statement "missing" does not exist'
    })
    await client.query('PREPARE two(int, int) AS SELECT $1 + $2 AS s')
    await assert.rejects(client.query('PREPARE two AS SELECT 1'), code('42P05'))
    await assert.rejects(client.query('EXECUTE two(1)'), (error: Error & { code?: string }) => {
      return (
        error.code === '42601' && error.message === 'wrong number of parameters for prepared statement "two"'
      )
    })
    await assert.rejects(client.query("EXECUTE two(1, 'x')"), (error: Error & { position?: string }) => {
      // 'x' starts at character 16 of the client's text, not of the rewritten one.
      return error.position === '16'
    })
    await assert.rejects(
      client.query('PREPARE bad(nosuchtype) AS SELECT $1'),
      (error: Error & { code?: string; position?: string }) => {
        return error.code === '42704' && error.position === '13'
      },
    )
    await assert.rejects(client.query('EXECUTE bad(1)'), code('26000'))
    assert.equal((await client.query('EXECUTE two(20, 22)')).rows[0].s, 42)
    // DEALLOCATE right after a statement whose lease ends with a settings probe: it is
    // answered on the next lease, which must end too.
    await client.query("SELECT set_config('work_mem', '5MB', false)")
    await client.query('DEALLOCATE two')
    const deadline = Date.now() + 5000
    const leased = () => clients.total('leased')
    while (leased() !== 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10))
    assert.equal(leased(), 0, 'an idle session kept its backend')
  })

  test('a statement whose table is gone fails on EXECUTE once, with Postgres’s error', async () => {
    const owner = await connect()
    await owner.query('CREATE TABLE gone_t (a int)')
    const sessions = await Promise.all(Array.from({ length: 6 }, () => connect()))
    await Promise.all(sessions.map((client) => client.query('PREPARE g AS SELECT * FROM gone_t')))
    await owner.query('DROP TABLE gone_t')
    // Wherever each lands, prepared there already or not: one error, then a usable session.
    await Promise.all(
      sessions.map(async (client) => {
        for (let i = 0; i < 3; i++) {
          await assert.rejects(
            client.query('EXECUTE g'),
            (error: Error & { code?: string; position?: string }) => {
              return (
                error.code === '42P01' &&
                error.message === 'relation "gone_t" does not exist' &&
                !error.position
              )
            },
          )
          assert.equal((await client.query('SELECT 1 AS one')).rows[0].one, 1)
        }
      }),
    )
  })

  test('PREPARE inside a transaction survives its rollback, as in Postgres', async () => {
    const client = await connect()
    await client.query('BEGIN')
    await client.query('PREPARE kept AS SELECT 7 AS v')
    await client.query('ROLLBACK')
    assert.equal((await client.query('EXECUTE kept')).rows[0].v, 7)
    await client.query('BEGIN')
    await assert.rejects(client.query('SELECT 1/0'), code('22012'))
    await assert.rejects(client.query('DEALLOCATE kept'), code('25P02'))
    await client.query('ROLLBACK')
    assert.equal((await client.query('EXECUTE kept')).rows[0].v, 7)
  })

  test('pg_prepared_statements shows the session’s own statements, as sent', async () => {
    const others = await Promise.all(Array.from({ length: 4 }, () => connect()))
    await Promise.all(others.map((other, i) => other.query(`PREPARE other_${i} AS SELECT ${i}`)))
    const client = await connect()
    await client.query('PREPARE mine AS SELECT 1;')
    const { rows } = await client.query('SELECT name, statement FROM pg_prepared_statements ORDER BY name')
    assert.deepEqual(rows, [{ name: 'mine', statement: 'PREPARE mine AS SELECT 1;' }])
    // Its statements now live on its backend under their names: the session is pinned.
    assert.equal((await client.query('EXPLAIN (COSTS OFF) EXECUTE mine')).rows.length, 1)
    assert.equal((await client.query('EXECUTE mine')).rows[0]['?column?'], 1)
    await client.query('DEALLOCATE mine')
    const deadline = Date.now() + 5000
    while (pinned() !== 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10))
    assert.equal(pinned(), 0)
    for (const [i, other] of others.entries())
      assert.equal((await other.query(`EXECUTE other_${i}`)).rows[0]['?column?'], i)
  })
})
