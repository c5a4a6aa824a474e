/**
 * Pool behaviour a client can observe, on a pool of one backend: waiting for a lease
 * times out with 53300 and leaves the session usable; a client vanishing mid-transaction
 * gives its backend back rolled back; a backend killed while idle is replaced.
 */
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import pg from 'pg'
import type { Gateway } from '../../src/gateway/index.ts'
import { frontend } from '../../src/protocol/index.ts'
import { directClient } from '../support/backends.ts'
import { startTestGateway } from '../support/gateway.ts'
import { startTestPostgres, type TestPostgres } from '../support/postgres.ts'
import { connectArgs, runPgProgramSync } from '../support/programs.ts'
import { RawClient } from '../support/raw-client.ts'
import { errorFields, WireClient } from '../support/wire.ts'

const WAIT_TIMEOUT_MS = 500

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

/** Polls `check` until it returns true or `timeoutMs` passes; returns the last answer. */
async function eventually(check: () => Promise<boolean>, timeoutMs = 2000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (await check()) return true
    if (Date.now() > deadline) return false
    await sleep(25)
  }
}

describe('pool of one backend: waits, abandoned transactions, dead backends', () => {
  let server: TestPostgres
  let gateway: Gateway
  let direct: pg.Client
  const clients: pg.Client[] = []

  before(async () => {
    server = await startTestPostgres()
    gateway = await startTestGateway(server, { poolSize: 1, waitTimeoutMs: WAIT_TIMEOUT_MS })
    direct = await directClient(server)
    await direct.query('CREATE TABLE pool_rows (id int PRIMARY KEY)')
  })

  after(async () => {
    for (const client of clients) await client.end().catch(() => {})
    await direct?.end().catch(() => {})
    await gateway?.close()
    await server?.stop()
  })

  async function connect(): Promise<pg.Client> {
    const client = new pg.Client({
      host: '127.0.0.1',
      port: gateway.port,
      user: 'postgres',
      database: 'postgres',
    })
    // A destroyed socket surfaces as an 'error' event; tests check what they expect.
    client.on('error', () => {})
    await client.connect()
    clients.push(client)
    return client
  }

  /** pg_stat_activity's state for `pid`, or null once the backend is gone. */
  async function backendState(pid: number): Promise<string | null> {
    const { rows } = await direct.query('SELECT state FROM pg_stat_activity WHERE pid = $1', [pid])
    return rows.length === 0 ? null : rows[0].state
  }

  test('a lease wait times out with 53300 and the session stays usable', async () => {
    const a = await connect()
    const b = await connect()
    await a.query('BEGIN')
    await a.query('SELECT 1')

    const started = Date.now()
    const error = await b.query('SELECT 2 AS two').then(
      () => assert.fail('B got a backend while A held the only one'),
      (err: pg.DatabaseError) => err,
    )
    const waited = Date.now() - started
    assert.equal(error.code, '53300')
    assert.ok(waited >= WAIT_TIMEOUT_MS - 50 && waited <= 2000, `timed out after ${waited}ms`)

    await a.query('COMMIT')
    const { rows } = await b.query('SELECT 2 AS two')
    assert.deepEqual(rows, [{ two: 2 }])
    // And the extended protocol, whose batch was the one refused above in other drivers.
    const param = await b.query('SELECT $1::int AS n', [3])
    assert.deepEqual(param.rows, [{ n: 3 }])
  })

  test('an extended-protocol batch waiting for a lease also fails with 53300, then works', async () => {
    const a = await connect()
    const b = await connect()
    await a.query('BEGIN')
    const error = await b.query({ name: 'waiting', text: 'SELECT $1::int + 1 AS n', values: [1] }).then(
      () => assert.fail('B got a backend while A held the only one'),
      (err: pg.DatabaseError) => err,
    )
    assert.equal(error.code, '53300')
    await a.query('COMMIT')
    const { rows } = await b.query({ name: 'waiting2', text: 'SELECT $1::int + 1 AS n', values: [41] })
    assert.deepEqual(rows, [{ n: 42 }])
  })

  test('a client vanishing mid-transaction leaves its backend rolled back and idle', async () => {
    const a = await connect()
    await a.query('BEGIN')
    await a.query('INSERT INTO pool_rows VALUES (1)')
    await a.query('SELECT pg_advisory_xact_lock(4242)')
    const { rows } = await a.query('SELECT pg_backend_pid() AS pid')
    const pid: number = rows[0].pid
    assert.equal(await backendState(pid), 'idle in transaction')

    // No Terminate, no FIN handshake from the driver: the socket just goes.
    const socket = (a as unknown as { connection: { stream: { destroy(): void } } }).connection.stream
    socket.destroy()

    const b = await connect()
    const started = Date.now()
    const seen = await b.query(
      'SELECT pg_backend_pid() AS pid, (SELECT count(*)::int FROM pool_rows) AS n, pg_try_advisory_xact_lock(4242) AS locked',
    )
    const waited = Date.now() - started
    assert.ok(waited < WAIT_TIMEOUT_MS, `B waited ${waited}ms for the backend`)
    assert.deepEqual(seen.rows, [{ pid, n: 0, locked: true }])
    assert.ok(
      await eventually(async () => (await backendState(pid)) === 'idle'),
      `backend ${pid} is ${await backendState(pid)}, expected idle`,
    )
    const direct0 = await direct.query('SELECT count(*)::int AS n FROM pool_rows')
    assert.equal(direct0.rows[0].n, 0, 'the uncommitted row was committed')
  })

  test('a client that stops reading a large result, then vanishes, gives its backend back', async () => {
    const { client } = await RawClient.login(gateway.port, { user: 'postgres', database: 'postgres' })
    // Some 30 MB of rows: far more than the sockets between here and Postgres hold, so
    // the gateway stops reading the backend while the client reads nothing.
    client.socket.pause()
    client.write(frontend.query("SELECT repeat('x', 100), g FROM generate_series(1, 300000) AS g"))
    await sleep(300)
    client.socket.destroy()
    const leased = () => gateway.pooler.stats().reduce((sum, pool) => sum + pool.leased, 0)
    assert.ok(await eventually(async () => leased() === 0, 10_000), 'the backend went back to the pool')
    const b = await connect()
    const { rows } = await b.query('SELECT 41 + 1 AS n')
    assert.deepEqual(rows, [{ n: 42 }])
  })

  test('a slow reader of a large extended-protocol result that then sends Sync gets every row', async () => {
    const { client } = await RawClient.login(gateway.port, { user: 'postgres', database: 'postgres' })
    const rows = 300_000
    client.socket.pause()
    // Flush, not Sync: the rows flow (and back up) before the batch ends; the Sync that
    // follows ends it while the backend is held back for this client.
    client.write(
      Buffer.concat([
        frontend.parse('', `SELECT repeat('x', 100), g FROM generate_series(1, ${rows}) AS g`, []),
        frontend.bind('', ''),
        frontend.execute(''),
        Buffer.from([0x48, 0, 0, 0, 4]),
      ]),
    )
    await sleep(300)
    client.write(frontend.sync)
    await sleep(200)
    client.socket.resume()
    let dataRows = 0
    for (;;) {
      const message = await client.next(20_000)
      if (message.type === 0x44) dataRows++
      if (message.type === 0x5a) break
    }
    assert.equal(dataRows, rows)
    client.end()
    const b = await connect()
    assert.deepEqual((await b.query('SELECT 41 + 1 AS n')).rows, [{ n: 42 }])
  })

  test('a backend terminated while idle is replaced: the next query succeeds', async () => {
    const c = await connect()
    const before = await c.query('SELECT pg_backend_pid() AS pid')
    const pid: number = before.rows[0].pid
    const terminated = await direct.query('SELECT pg_terminate_backend($1) AS ok', [pid])
    assert.equal(terminated.rows[0].ok, true)
    assert.ok(await eventually(async () => (await backendState(pid)) === null), `backend ${pid} did not exit`)
    await sleep(50)

    const after = await c.query('SELECT pg_backend_pid() AS pid, 1 AS one')
    assert.equal(after.rows[0].one, 1)
    assert.notEqual(after.rows[0].pid, pid)
    const stats = gateway.pooler.stats()
    assert.equal(stats.length, 1)
    assert.ok(stats[0].size <= 1, `pool of 1 holds ${stats[0].size} backends`)
  })

  test('a backend terminated while idle, then a named extended-protocol statement, succeeds', async () => {
    const c = await connect()
    const before = await c.query('SELECT pg_backend_pid() AS pid')
    const pid: number = before.rows[0].pid
    await direct.query('SELECT pg_terminate_backend($1)', [pid])
    assert.ok(await eventually(async () => (await backendState(pid)) === null), `backend ${pid} did not exit`)
    await sleep(50)
    const after = await c.query({ name: 'after_kill', text: 'SELECT $1::int * 2 AS n', values: [21] })
    assert.deepEqual(after.rows, [{ n: 42 }])
  })
  test('a query that reaches the gateway just as its idle backend is terminated gets its result or an error, and the session goes on', async () => {
    // The race, made deterministic: the query is already in the gateway's socket
    // buffer when the backend dies, and the gateway (blocked in this process by a
    // synchronous psql that terminates the backend and waits for it to exit) only
    // then looks at both. It sees the query first, leases the idle backend it still
    // believes alive, writes the query, and then learns the backend is gone. From the
    // wire alone that cannot be told from a backend that died running it (a DO block
    // that committed), so the query is never sent again (docs/architecture.md,
    // "Faults", rule 1): the client gets the error as an ERROR, and its session, idle,
    // goes on with the next query on a new backend.
    const client = await WireClient.connect(gateway.port)
    const outcomes = new Map<string, number>()
    try {
      for (let i = 0; i < 3 && !client.closed; i++) {
        client.query('SELECT pg_backend_pid()')
        const row = (await client.untilReady()).find((m) => m.type === 'D')
        assert.ok(row, 'no pid row')
        const pid = Number(row.body.toString('utf8', 6))
        client.query('SELECT 1 AS after_termination')
        const terminated = runPgProgramSync('psql', [
          '-X',
          '-A',
          '-t',
          ...connectArgs(server.socketDir, server.port),
          '-d',
          'postgres',
          '-c',
          `SELECT pg_terminate_backend(${pid}, 5000)`,
        ])
        assert.equal(terminated.trim(), 't')
        const reply = await client.untilReady()
        const key = reply
          .map((m) => (m.type === 'E' ? `E(${errorFields(m.body).V} ${errorFields(m.body).C})` : m.type))
          .join(' ')
        outcomes.set(key, (outcomes.get(key) ?? 0) + 1)
      }
      assert.equal(client.closed, false, 'the session was closed')
      client.query('SELECT 1 AS still_here')
      assert.ok(
        (await client.untilReady()).some((m) => m.type === 'D'),
        'the session does not go on',
      )
    } finally {
      client.close()
    }
    for (const outcome of outcomes.keys()) {
      assert.ok(
        ['T D C Z', 'E(ERROR 57P01) Z', 'E(ERROR 08006) Z'].includes(outcome),
        `replies to the query racing the termination: ${JSON.stringify([...outcomes])}`,
      )
    }
  })

  /** Waits until a backend runs `marker`'s query, then terminates it from the direct side. */
  async function terminateRunning(marker: string): Promise<number> {
    let pid = 0
    const found = await eventually(async () => {
      const { rows } = await direct.query(
        "SELECT pid FROM pg_stat_activity WHERE state = 'active' AND query LIKE $1 AND pid <> pg_backend_pid()",
        [`%${marker}%`],
      )
      if (rows.length === 1) pid = rows[0].pid
      return rows.length === 1
    }, 5000)
    assert.ok(found, `no backend is running the query marked ${marker}`)
    const { rows } = await direct.query('SELECT pg_terminate_backend($1) AS ok', [pid])
    assert.equal(rows[0].ok, true)
    return pid
  }

  test('a backend killed mid-query: one error, then the session goes on (wire level)', async () => {
    const client = await WireClient.connect(gateway.port)
    try {
      client.query('SELECT pg_sleep(10) AS wire_kill_marker')
      await terminateRunning('wire_kill_marker')
      const reply = await client.untilReady()
      const errors = reply.filter((m) => m.type === 'E').map((m) => errorFields(m.body))
      const summary = errors.map((f) => `${f.V} ${f.C} ${f.M}`).join(' | ')
      assert.equal(errors.length, 1, `one Query got ${errors.length} ErrorResponses: ${summary}`)
      if (client.closed) {
        // Ending the session is fine, but then the error must say so.
        assert.equal(errors[0].V, 'FATAL', summary)
        return
      }
      // The session survives: the error must not claim otherwise (clients drop a
      // connection after FATAL), and the next query must work.
      assert.equal(errors[0].V, 'ERROR', `the session stays open after a ${summary}`)
      // Postgres describes the row before it starts running the statement, as directly.
      assert.deepEqual(
        reply.map((m) => m.type).filter((type) => type !== 'T'),
        ['E', 'Z'],
      )
      client.query('SELECT 7 AS seven')
      const next = await client.untilReady()
      assert.deepEqual(
        next.map((m) => m.type),
        ['T', 'D', 'C', 'Z'],
        `next query: ${next.map((m) => (m.type === 'E' ? errorFields(m.body).M : m.type)).join(', ')}`,
      )
    } finally {
      client.close()
    }
  })

  test('a backend killed mid-query: node-postgres sees one error and its connection stays usable', async () => {
    const c = await connect()
    let clientErrors = 0
    c.on('error', () => clientErrors++)
    const running = c.query('SELECT pg_sleep(10) AS pg_kill_marker')
    await terminateRunning('pg_kill_marker')
    await assert.rejects(running)
    await sleep(50)
    assert.equal(
      clientErrors,
      0,
      'node-postgres got an error with no query to pin it to (a second ErrorResponse)',
    )
    const { rows } = await c.query('SELECT 8 AS eight')
    assert.deepEqual(rows, [{ eight: 8 }])
  })
})
