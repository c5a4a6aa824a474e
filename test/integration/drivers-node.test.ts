/**
 * The two Node drivers, many clients at once on a pool of 5: node-postgres (simple
 * queries, unnamed and named extended-protocol statements, transactions) and
 * postgres.js (automatically prepared tagged templates, pipelining, sql.begin).
 * Every result is checked against what that client alone should see, and the server
 * never holds more than the pool's 5 backends for the gateway.
 */
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import pg from 'pg'
import postgres from 'postgres'
import type { Gateway } from '../../src/gateway/index.ts'
import { watchBackends } from '../support/backends.ts'
import { startTestGateway } from '../support/gateway.ts'
import { startTestPostgres, type TestPostgres } from '../support/postgres.ts'

const POOL_SIZE = 5
const CLIENTS = 100
const ITERATIONS = 20

function assertPoolBound(max: number): void {
  assert.ok(max >= 1, 'no pooled backend was ever seen: the sampler is not looking')
  assert.ok(max <= POOL_SIZE, `saw ${max} backends in pg_stat_activity, pool size is ${POOL_SIZE}`)
}

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i)
}

describe('Node drivers through the gateway (pool of 5)', () => {
  let server: TestPostgres
  let gateway: Gateway

  before(async () => {
    server = await startTestPostgres({ settings: { max_connections: 50 } })
    gateway = await startTestGateway(server, { poolSize: POOL_SIZE })
    await server.psql('CREATE TABLE driver_log (client int NOT NULL, iter int NOT NULL, kind text NOT NULL)')
  })

  after(async () => {
    await gateway?.close()
    await server?.stop()
  })

  async function pgClient(): Promise<pg.Client> {
    const client = new pg.Client({
      host: '127.0.0.1',
      port: gateway.port,
      user: 'postgres',
      database: 'postgres',
    })
    await client.connect()
    return client
  }

  /** Rows of `kind` per client, straight from the server. */
  async function logCounts(kind: string): Promise<Map<number, number>> {
    const out = await server.psql(
      `SELECT client, count(*) FROM driver_log WHERE kind = '${kind}' GROUP BY client ORDER BY client`,
    )
    const counts = new Map<number, number>()
    for (const line of out.split('\n').filter(Boolean)) {
      const [client, count] = line.split('|').map(Number)
      counts.set(client, count)
    }
    return counts
  }

  function assertEveryClient(counts: Map<number, number>, expected: number, kind: string): void {
    assert.equal(counts.size, CLIENTS, `${kind}: rows from ${counts.size} clients, expected ${CLIENTS}`)
    for (const [client, count] of counts) assert.equal(count, expected, `${kind}: client ${client}`)
  }

  test('node-postgres: 100 clients mixing simple, extended, named statements and transactions', async () => {
    const clients = await Promise.all(range(CLIENTS).map(() => pgClient()))
    const watch = await watchBackends(server)
    try {
      await Promise.all(
        clients.map(async (client, i) => {
          const steps: Array<(iter: number) => Promise<void>> = [
            async (iter) => {
              const { rows } = await client.query(`SELECT ${i} AS a, ${iter} AS b, 'simple' AS c`)
              assert.deepEqual(rows, [{ a: i, b: iter, c: 'simple' }])
            },
            async (iter) => {
              const { rows } = await client.query('SELECT $1::int + $2::int AS s, $3::text AS t', [
                i,
                iter,
                `c${i}`,
              ])
              assert.deepEqual(rows, [{ s: i + iter, t: `c${i}` }])
            },
            async (iter) => {
              // Same name, same text in every client: one canonical statement.
              const { rows } = await client.query({
                name: 'q1',
                text: 'SELECT $1::int * 2 AS v, $2::text AS tag',
                values: [iter, `c${i}`],
              })
              assert.deepEqual(rows, [{ v: iter * 2, tag: `c${i}` }])
            },
            async (iter) => {
              // Same name in every client, but each client's own text.
              const { rows } = await client.query({
                name: 'mine',
                text: `SELECT ${i} AS owner, $1::int + ${i * 1000} AS v`,
                values: [iter],
              })
              assert.deepEqual(rows, [{ owner: i, v: iter + i * 1000 }])
            },
            async (iter) => {
              // A name no other client uses, with client-specific text.
              const { rows } = await client.query({
                name: `own_${i}`,
                text: `SELECT $1::text || '-${i}' AS v`,
                values: [`it${iter}`],
              })
              assert.deepEqual(rows, [{ v: `it${iter}-${i}` }])
            },
            async (iter) => {
              await client.query('BEGIN')
              await client.query({
                name: 'log',
                text: 'INSERT INTO driver_log (client, iter, kind) VALUES ($1, $2, $3)',
                values: [i, iter, 'pg-commit'],
              })
              const { rows } = await client.query(
                "SELECT count(*)::int AS n FROM driver_log WHERE client = $1 AND kind = 'pg-commit'",
                [i],
              )
              assert.deepEqual(rows, [{ n: iter + 1 }])
              await client.query('COMMIT')
            },
            async (iter) => {
              await client.query('BEGIN')
              await client.query('INSERT INTO driver_log (client, iter, kind) VALUES ($1, $2, $3)', [
                i,
                iter,
                'pg-rollback',
              ])
              await client.query('ROLLBACK')
            },
            async () => {
              await client.query('BEGIN')
              await assert.rejects(client.query('SELECT 1 / $1::int', [0]), { code: '22012' })
              await assert.rejects(client.query('SELECT 1'), { code: '25P02' })
              await client.query('ROLLBACK')
              const { rows } = await client.query({
                name: 'q1',
                text: 'SELECT $1::int * 2 AS v, $2::text AS tag',
                values: [i, 'after'],
              })
              assert.deepEqual(rows, [{ v: i * 2, tag: 'after' }])
            },
          ]
          for (let iter = 0; iter < ITERATIONS; iter++) {
            // Rotate the order so clients do different things at the same moment.
            for (let s = 0; s < steps.length; s++) await steps[(s + i + iter) % steps.length](iter)
          }
        }),
      )
    } finally {
      await watch.stop()
      await Promise.all(clients.map((client) => client.end()))
    }
    assertPoolBound(watch.max)
    assertEveryClient(await logCounts('pg-commit'), ITERATIONS, 'pg-commit')
    assert.equal((await logCounts('pg-rollback')).size, 0, 'rolled-back rows are visible')
  })

  test('postgres.js: 100 clients with prepared tagged templates, pipelining and sql.begin', async () => {
    const sqls = range(CLIENTS).map(() =>
      postgres({
        host: '127.0.0.1',
        port: gateway.port,
        user: 'postgres',
        database: 'postgres',
        max: 1,
        onnotice: () => {},
      }),
    )
    const watch = await watchBackends(server)
    try {
      await Promise.all(
        sqls.map(async (sql, i) => {
          for (let iter = 0; iter < ITERATIONS; iter++) {
            const [row] =
              await sql`SELECT ${i}::int AS a, ${`t${iter}`}::text AS b, ${[i, iter]}::int[] AS arr`
            assert.deepEqual({ ...row }, { a: i, b: `t${iter}`, arr: [i, iter] })

            // Three queries in flight at once on one connection: pipelined batches.
            const [x, y, z] = await Promise.all([
              sql`SELECT ${iter}::int * 3 AS v`,
              sql`SELECT ${`c${i}`}::text || ${`-${iter}`}::text AS v`,
              sql`SELECT count(*)::int AS v FROM driver_log WHERE client = ${i} AND kind = 'js-commit'`,
            ])
            assert.equal(x[0].v, iter * 3)
            assert.equal(y[0].v, `c${i}-${iter}`)
            assert.equal(z[0].v, iter)

            const committed = await sql.begin(async (tx) => {
              await tx`INSERT INTO driver_log (client, iter, kind) VALUES (${i}, ${iter}, 'js-commit')`
              const [{ n }] =
                await tx`SELECT count(*)::int AS n FROM driver_log WHERE client = ${i} AND kind = 'js-commit'`
              return n
            })
            assert.equal(committed, iter + 1)

            await assert.rejects(
              sql.begin(async (tx) => {
                await tx`INSERT INTO driver_log (client, iter, kind) VALUES (${i}, ${iter}, 'js-rollback')`
                throw new Error('roll it back')
              }),
              /roll it back/,
            )

            const results = await sql.unsafe(`SELECT ${i} AS one; SELECT ${iter} AS two`).simple()
            assert.equal(results.length, 2)
            assert.equal(results[0][0].one, i)
            assert.equal(results[1][0].two, iter)
          }
        }),
      )
    } finally {
      await watch.stop()
      await Promise.all(sqls.map((sql) => sql.end({ timeout: 5 })))
    }
    assertPoolBound(watch.max)
    assertEveryClient(await logCounts('js-commit'), ITERATIONS, 'js-commit')
    assert.equal((await logCounts('js-rollback')).size, 0, 'rolled-back rows are visible')
  })

  test('a named statement survives churn and is prepared again on another backend', async () => {
    const owner = await pgClient()
    const helpers: pg.Client[] = []
    try {
      // Text no other session uses, so only the backend it ran on has it.
      const keep = (values: number[]) => ({
        name: 'keep',
        text: 'SELECT $1::int * 3 AS v, pg_backend_pid() AS pid /* owner only */',
        values,
      })
      const first = await owner.query(keep([7]))
      assert.equal(first.rows[0].v, 21)
      const firstPid: number = first.rows[0].pid

      // 50 other sessions churn through all 5 backends, one of them reusing the
      // client name "keep" for a different statement.
      const churn = await Promise.all(range(50).map(() => pgClient()))
      helpers.push(...churn)
      await Promise.all(
        churn.map(async (client, i) => {
          for (let iter = 0; iter < 5; iter++) {
            const { rows } = await client.query({
              name: 'keep',
              text: 'SELECT $1::int - 1 AS v',
              values: [i],
            })
            assert.equal(rows[0].v, i - 1)
            await client.query('BEGIN')
            await client.query('SELECT pg_sleep(0.001)')
            await client.query('COMMIT')
          }
        }),
      )

      // Five transactions hold all five backends; then free one that is not the
      // owner's old backend, so the owner's next lease has to land there.
      const holders = await Promise.all(range(POOL_SIZE).map(() => pgClient()))
      helpers.push(...holders)
      const pids = await Promise.all(
        holders.map(async (client) => {
          await client.query('BEGIN')
          const { rows } = await client.query('SELECT pg_backend_pid() AS pid')
          return rows[0].pid as number
        }),
      )
      assert.equal(new Set(pids).size, POOL_SIZE, `holders share backends: ${pids}`)
      assert.ok(pids.includes(firstPid), `the owner's backend ${firstPid} is gone (holders: ${pids})`)
      const freed = pids.findIndex((pid) => pid !== firstPid)
      await holders[freed].query('COMMIT')

      const again = await owner.query(keep([8]))
      assert.equal(again.rows[0].pid, pids[freed], 'the lease did not land on the freed backend')
      assert.notEqual(again.rows[0].pid, firstPid)
      assert.equal(again.rows[0].v, 24)

      for (const [i, client] of holders.entries()) if (i !== freed) await client.query('COMMIT')
      for (let n = 0; n < 10; n++) {
        const { rows } = await owner.query(keep([n]))
        assert.equal(rows[0].v, n * 3)
      }
    } finally {
      await Promise.all([owner, ...helpers].map((client) => client.end()))
    }
  })
})
