/**
 * Settings without modes: what a session sets (SET, set_config, SET in transactions
 * that commit or roll back, RESET) is what that session sees on whichever backend it
 * lands, and never leaks into another session. 20 sessions share a pool of 2.
 */
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import pg from 'pg'
import type { Gateway } from '../../src/gateway/index.ts'
import { startTestGateway } from '../support/gateway.ts'
import { startTestPostgres, type TestPostgres } from '../support/postgres.ts'

const SESSIONS = 20
const ROUNDS = 5

describe('session settings across a pool of 2', () => {
  let server: TestPostgres
  let gateway: Gateway
  const clients: pg.Client[] = []
  const extra: Gateway[] = []

  before(async () => {
    server = await startTestPostgres()
    gateway = await startTestGateway(server, { poolSize: 2 })
  })

  after(async () => {
    await Promise.all(clients.map((client) => client.end().catch(() => {})))
    for (const gw of extra) await gw.close()
    await gateway?.close()
    await server?.stop()
  })

  async function connect(applicationName: string): Promise<pg.Client> {
    const client = new pg.Client({
      host: '127.0.0.1',
      port: gateway.port,
      user: 'postgres',
      database: 'postgres',
      application_name: applicationName,
    })
    await client.connect()
    clients.push(client)
    return client
  }

  async function show(client: pg.Client): Promise<{ app: string; path: string; mem: string }> {
    const { rows } = await client.query(
      "SELECT current_setting('application_name') AS app, current_setting('search_path') AS path, current_setting('work_mem') AS mem",
    )
    return rows[0]
  }

  test('each session keeps its own SET values and sees no one else’s', async () => {
    const sessions = await Promise.all(Array.from({ length: SESSIONS }, (_, i) => connect(`start-${i}`)))
    await Promise.all(
      sessions.map(async (client, i) => {
        await client.query(`SET application_name = 'app-${i}'`)
        await client.query(`SET search_path = s_${i}, public`)
        // set_config in a SELECT changes a setting without a SET tag.
        await client.query(`SELECT set_config('work_mem', '${i + 1}MB', false)`)
      }),
    )
    for (let round = 0; round < ROUNDS; round++) {
      await Promise.all(
        sessions.map(async (client, i) => {
          assert.deepEqual(await show(client), { app: `app-${i}`, path: `s_${i}, public`, mem: `${i + 1}MB` })
        }),
      )
    }
    // A new session sees its own startup values and the server defaults, nothing leaked.
    const fresh = await connect('fresh')
    for (let i = 0; i < 4; i++) {
      assert.deepEqual(await show(fresh), { app: 'fresh', path: '"$user", public', mem: '4MB' })
    }
  })

  test('custom settings (myapp.tenant) follow their session, though Postgres lists them nowhere', async () => {
    const sessions = await Promise.all(Array.from({ length: SESSIONS }, (_, i) => connect(`custom-${i}`)))
    await Promise.all(
      sessions.map(async (client, i) => {
        if (i % 2 === 0) await client.query(`SET myapp.tenant = 'tenant-${i}'`)
        else await client.query(`SELECT set_config('myapp.tenant', 'tenant-${i}', false)`)
      }),
    )
    const tenant = async (client: pg.Client) =>
      (await client.query("SELECT current_setting('myapp.tenant', true) AS t")).rows[0].t
    for (let round = 0; round < ROUNDS; round++) {
      await Promise.all(sessions.map(async (client, i) => assert.equal(await tenant(client), `tenant-${i}`)))
    }
    await sessions[0].query('RESET myapp.tenant')
    for (let i = 0; i < 4; i++) assert.equal(await tenant(sessions[0]), '')
    // A session that never set it sees none: Postgres cannot remove a placeholder from a
    // backend, so backends that carry one do not serve this session.
    const fresh = await connect('fresh-custom')
    for (let i = 0; i < 4; i++) assert.equal(await tenant(fresh), null)
  })

  test('settings changed inside functions, CALL and DO follow their session', async () => {
    const setup = await connect('setup')
    await setup.query(`CREATE OR REPLACE FUNCTION set_tenant(t text) RETURNS void LANGUAGE plpgsql AS $$
      BEGIN PERFORM set_config('myapp.tenant', t, false); SET work_mem = '7MB'; END $$`)
    await setup.query(`CREATE OR REPLACE PROCEDURE set_path(p text) LANGUAGE plpgsql AS $$
      BEGIN EXECUTE format('SET search_path = %I, public', p); END $$`)
    const sessions = await Promise.all(Array.from({ length: SESSIONS }, (_, i) => connect(`fn-${i}`)))
    await Promise.all(
      sessions.map(async (client, i) => {
        await client.query(`SELECT set_tenant('t${i}')`)
        if (i % 2 === 0) await client.query(`CALL set_path('p${i}')`)
        else await client.query(`DO $$ BEGIN SET search_path = p${i}, public; END $$`)
      }),
    )
    for (let round = 0; round < ROUNDS; round++) {
      await Promise.all(
        sessions.map(async (client, i) => {
          const { rows } = await client.query(
            "SELECT current_setting('myapp.tenant', true) AS t, current_setting('work_mem') AS mem, current_setting('search_path') AS path",
          )
          assert.deepEqual(rows[0], { t: `t${i}`, mem: '7MB', path: `p${i}, public` })
        }),
      )
    }
    const fresh = await connect('fresh-fn')
    for (let i = 0; i < 4; i++) {
      assert.deepEqual(
        (
          await fresh.query(
            "SELECT current_setting('work_mem') AS mem, current_setting('search_path') AS path",
          )
        ).rows[0],
        {
          mem: '4MB',
          path: '"$user", public',
        },
      )
    }
  })

  test('SET LOCAL and SETs of rolled-back transactions are gone; committed ones stay', async () => {
    const client = await connect('tx')
    const other = await connect('other')
    await client.query('BEGIN')
    await client.query("SET LOCAL work_mem = '9MB'")
    await client.query('SET search_path = committed, public')
    await client.query('COMMIT')
    await client.query('BEGIN')
    await client.query("SET application_name = 'rolled-back'")
    await client.query('ROLLBACK')
    for (let i = 0; i < 4; i++) {
      // Interleave another session so the leases move between the two backends.
      await other.query("SET work_mem = '2MB'")
      assert.deepEqual(await show(client), { app: 'tx', path: 'committed, public', mem: '4MB' })
      assert.equal((await show(other)).mem, '2MB')
    }
  })

  test('RESET returns a setting to the session’s startup value, as in Postgres', async () => {
    const client = await connect('from-startup')
    await client.query("SET application_name = 'changed'")
    assert.equal((await show(client)).app, 'changed')
    await client.query('RESET application_name')
    for (let i = 0; i < 3; i++) assert.equal((await show(client)).app, 'from-startup')
    await client.query("SET work_mem = '5MB'")
    await client.query('RESET ALL')
    for (let i = 0; i < 3; i++)
      assert.deepEqual(await show(client), { app: 'from-startup', path: '"$user", public', mem: '4MB' })
  })

  test('DEALLOCATE ALL drops this session’s statements only', async () => {
    const mine = await connect('dealloc')
    const theirs = await connect('keeps')
    const text = 'SELECT $1::int * 2 AS v'
    assert.equal((await mine.query({ name: 'double', text, values: [2] })).rows[0].v, 4)
    assert.equal((await theirs.query({ name: 'double', text, values: [3] })).rows[0].v, 6)
    await mine.query('DEALLOCATE ALL')
    // The other session's statement still works on every backend.
    for (let i = 0; i < 4; i++)
      assert.equal((await theirs.query({ name: 'double', text, values: [i] })).rows[0].v, i * 2)
    // node-postgres believes 'double' is still prepared, so it sends only a Bind: Postgres
    // would answer 26000, and so must the gateway.
    await assert.rejects(mine.query({ name: 'double', text, values: [5] }), (error: { code?: string }) => {
      assert.equal(error.code, '26000')
      return true
    })
  })

  test('SET ROLE and SET SESSION AUTHORIZATION follow their session only', async () => {
    await server.psql('CREATE ROLE reader NOLOGIN; CREATE ROLE alice NOLOGIN')
    const a = await connect('role-a')
    const b = await connect('role-b')
    await a.query('SET SESSION AUTHORIZATION alice')
    await b.query('SET ROLE reader')
    for (let i = 0; i < 4; i++) {
      const [ra, rb] = await Promise.all([
        a.query('SELECT session_user AS s, current_user AS c'),
        b.query('SELECT session_user AS s, current_user AS c'),
      ])
      assert.deepEqual(ra.rows[0], { s: 'alice', c: 'alice' })
      assert.deepEqual(rb.rows[0], { s: 'postgres', c: 'reader' })
    }
    const fresh = await connect('role-fresh')
    assert.deepEqual((await fresh.query('SELECT session_user AS s, current_user AS c')).rows[0], {
      s: 'postgres',
      c: 'postgres',
    })
    await a.query('RESET SESSION AUTHORIZATION')
    await b.query('RESET ROLE')
  })

  test('a startup DateStyle survives a settings probe and moves with the session', async () => {
    const client = new pg.Client({
      host: '127.0.0.1',
      port: gateway.port,
      user: 'postgres',
      database: 'postgres',
      options: '-c DateStyle=Postgres,MDY',
    })
    await client.connect()
    clients.push(client)
    const other = await connect('datestyle-other')
    // A SET makes the gateway ask Postgres for the session's settings, DateStyle included.
    await client.query("SET work_mem = '3MB'")
    for (let i = 0; i < 4; i++) {
      await other.query("SET work_mem = '5MB'")
      const { rows } = await client.query(
        "SELECT current_setting('DateStyle') AS ds, to_date('20100309', 'YYYYMMDD')::text AS d",
      )
      assert.deepEqual(rows[0], { ds: 'Postgres, MDY', d: '03-09-2010' })
    }
  })

  test('a session that ends while its settings are being probed hands nothing to the next one', async () => {
    // Regression: the lease used to end mid-probe, and the next session received the
    // probe's replies or the settings query's (found by the regression suite).
    const { port } = await startTestGateway(server, { poolSize: 1 }).then((gw) => {
      extra.push(gw)
      return gw
    })
    const run = async (name: string) => {
      for (let round = 0; round < 15; round++) {
        const client = new pg.Client({
          host: '127.0.0.1',
          port,
          user: 'postgres',
          database: 'postgres',
          application_name: name,
        })
        await client.connect()
        await client.query("SET datestyle = 'ISO, YMD'")
        const { rows } = await client.query(`SELECT ${round} AS round, '${name}' AS who`)
        assert.deepEqual(rows, [{ round, who: name }])
        // End right after a SET: the gateway is still asking Postgres about it.
        await client.query('RESET datestyle')
        await client.end()
      }
    }
    await Promise.all([run('first'), run('second'), run('third')])
  })
})
