import assert from 'node:assert/strict'
import { after, afterEach, before, describe, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import pg from 'pg'
import postgresJs from 'postgres'
import type { Gateway } from '../../src/gateway/index.ts'
import { eventually } from '../support/faults.ts'
import { startTestGateway, type TestGatewayOptions } from '../support/gateway.ts'
import type { TestPostgres } from '../support/postgres.ts'
import { startTestPostgres } from '../support/postgres.ts'
import {
  collectResult,
  type QueryResult,
  query as queryMessage,
  RawClient,
  sendCancel,
} from '../support/raw-client.ts'
import { describeErrors, trackUncaught } from '../support/uncaught.ts'

/** Waits until Postgres runs a statement containing `marker`. */
async function statementRunning(observer: pg.Client, marker: string): Promise<void> {
  await eventually(async () => {
    const { rows } = await observer.query(
      "SELECT 1 FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%' || $1 || '%' AND pid <> pg_backend_pid()",
      [marker],
    )
    return rows.length > 0
  }, `"${marker}" to run`)
}

/** A Postgres, a gateway in front of it, and a direct connection watching pg_stat_activity. */
async function startTarget(options: TestGatewayOptions) {
  const postgres = await startTestPostgres()
  const gateway = await startTestGateway(postgres, options)
  const observer = new pg.Client({
    host: postgres.socketDir,
    port: postgres.port,
    user: 'postgres',
    database: 'postgres',
  })
  await observer.connect()
  return { postgres, gateway, observer }
}

async function stopTarget(postgres?: TestPostgres, gateway?: Gateway, observer?: pg.Client): Promise<void> {
  await observer?.end()
  await gateway?.close()
  await postgres?.stop()
}

describe('CancelRequest through the gateway', () => {
  let postgres: TestPostgres
  let gateway: Gateway
  /** Direct superuser connection to watch pg_stat_activity. */
  let observer: pg.Client
  const open: RawClient[] = []
  const uncaught = trackUncaught()

  afterEach(() => {
    assert.deepEqual(describeErrors(uncaught.take()), [], 'the gateway threw out of a callback')
  })

  before(async () => {
    ;({ postgres, gateway, observer } = await startTarget({ poolSize: 2, auth: 'trust' }))
  })

  after(async () => {
    uncaught.stop()
    for (const client of open) client.destroy()
    await stopTarget(postgres, gateway, observer)
  })

  async function rawSession(): Promise<{ client: RawClient; processId: number; secretKey: number }> {
    const { client, login } = await RawClient.login(gateway.port, { user: 'postgres', database: 'postgres' })
    open.push(client)
    assert.ok(login.processId > 0, 'BackendKeyData with a process id')
    return { client, processId: login.processId, secretKey: login.secretKey }
  }

  const running = (marker: string) => statementRunning(observer, marker)

  function leased(): number {
    return gateway.pooler.stats().reduce((sum, pool) => sum + pool.leased, 0)
  }

  test('cancels the running query with 57014 and the session stays usable', async () => {
    const a = await rawSession()
    a.client.write(queryMessage('SELECT pg_sleep(30) /* cancel-me */'))
    await running('cancel-me')
    const started = Date.now()
    await sendCancel(gateway.port, a.processId, a.secretKey)
    const result = await readResult(a.client, 5000)
    const elapsed = Date.now() - started
    assert.equal(result.error?.code, '57014', `expected query_canceled, got ${JSON.stringify(result.error)}`)
    assert.equal(result.status, 'I')
    assert.ok(elapsed < 2000, `cancel took ${elapsed}ms`)
    const after = await a.client.query('SELECT 1')
    assert.equal(after.error, null)
    assert.deepEqual(after.rows, [['1']])
    await eventually(() => leased() === 0, 'the backend to go back to the pool')
  })

  test('cancels inside a transaction: the transaction is aborted, not the session', async () => {
    const a = await rawSession()
    assert.equal((await a.client.query('BEGIN')).status, 'T')
    a.client.write(queryMessage('SELECT pg_sleep(30) /* cancel-in-tx */'))
    await running('cancel-in-tx')
    await sendCancel(gateway.port, a.processId, a.secretKey)
    const result = await readResult(a.client, 5000)
    assert.equal(result.error?.code, '57014')
    assert.equal(result.status, 'E')
    assert.equal((await a.client.query('ROLLBACK')).status, 'I')
    assert.deepEqual((await a.client.query('SELECT 2')).rows, [['2']])
  })

  test('a wrong secret key does nothing', async () => {
    const a = await rawSession()
    a.client.write(queryMessage('SELECT pg_sleep(1) /* wrong-key */'))
    await running('wrong-key')
    await sendCancel(gateway.port, a.processId, a.secretKey ^ 0x5a5a5a)
    // A process id that belongs to no session does nothing either.
    await sendCancel(gateway.port, 0x7ffffff0, a.secretKey)
    const result = await readResult(a.client, 5000)
    assert.equal(result.error, null, `query failed: ${JSON.stringify(result.error)}`)
    assert.equal(result.rows.length, 1)
    assert.equal(result.status, 'I')
  })

  test('other sessions running at the same time are untouched', async () => {
    const a = await rawSession()
    const b = new pg.Client({ host: '127.0.0.1', port: gateway.port, user: 'postgres', database: 'postgres' })
    await b.connect()
    try {
      const bQuery = b.query('SELECT pg_sleep(1.5) /* bystander */, 42 AS answer')
      a.client.write(queryMessage('SELECT pg_sleep(30) /* victim */'))
      await running('victim')
      await running('bystander')
      await sendCancel(gateway.port, a.processId, a.secretKey)
      const result = await readResult(a.client, 5000)
      assert.equal(result.error?.code, '57014')
      const bResult = await bQuery
      assert.equal(bResult.rows[0].answer, 42)
      assert.deepEqual((await a.client.query('SELECT 3')).rows, [['3']])
    } finally {
      await b.end()
    }
  })

  test('postgres.js query.cancel() works through the gateway', async () => {
    // node-postgres has no public per-query cancel; postgres.js does (query.cancel()).
    const sql = postgresJs({
      host: '127.0.0.1',
      port: gateway.port,
      user: 'postgres',
      database: 'postgres',
      max: 1,
    })
    try {
      const pending = sql`SELECT pg_sleep(30) /* postgres-js */`
      const outcome = pending.then(
        () => null,
        (error: { code?: string }) => error,
      )
      await running('postgres-js')
      pending.cancel()
      const error = await outcome
      assert.equal(error?.code, '57014')
      const [row] = await sql`SELECT 4 AS four`
      assert.equal(row.four, 4)
    } finally {
      await sql.end({ timeout: 5 })
    }
  })

  test('a cancel for a session waiting for a lease leaves it usable', async () => {
    // Both backends busy: the third session waits for a lease.
    const holders = [await rawSession(), await rawSession()]
    for (const holder of holders) holder.client.write(queryMessage('SELECT pg_sleep(1) /* holder */'))
    await eventually(() => leased() === 2, 'both backends to be leased')
    const waiter = await rawSession()
    waiter.client.write(queryMessage('SELECT 5'))
    await sleep(100)
    await sendCancel(gateway.port, waiter.processId, waiter.secretKey)
    // Either the query is cancelled (57014) or runs once a backend is free: both are
    // honest; what must not happen is a stuck or broken session.
    const result = await readResult(waiter.client, 10_000)
    if (result.error !== null) assert.equal(result.error.code, '57014')
    else assert.deepEqual(result.rows, [['5']])
    assert.equal(result.status, 'I')
    for (const holder of holders) assert.equal((await readResult(holder.client, 5000)).error, null)
    assert.deepEqual((await waiter.client.query('SELECT 6')).rows, [['6']])
    await eventually(() => leased() === 0, 'every backend to go back to the pool')
  })
})

describe('CancelRequest with pipelined leases (pool of 1)', () => {
  let postgres: TestPostgres
  let gateway: Gateway
  let observer: pg.Client
  const open: RawClient[] = []
  const uncaught = trackUncaught()
  /** Pipeline-safe (only built-ins) and long: the lease is released early while it runs. */
  const LONG = 'SELECT count(*) FROM generate_series(1, 2000000000)'

  afterEach(() => {
    assert.deepEqual(describeErrors(uncaught.take()), [], 'the gateway threw out of a callback')
  })

  before(async () => {
    ;({ postgres, gateway, observer } = await startTarget({
      poolSize: 1,
      pipelineDepth: 1,
      auth: 'trust',
    }))
  })

  after(async () => {
    uncaught.stop()
    for (const client of open) client.destroy()
    await stopTarget(postgres, gateway, observer)
  })

  async function rawSession(): Promise<{ client: RawClient; processId: number; secretKey: number }> {
    const { client, login } = await RawClient.login(gateway.port, { user: 'postgres', database: 'postgres' })
    open.push(client)
    return { client, processId: login.processId, secretKey: login.secretKey }
  }

  const running = (marker: string) => statementRunning(observer, marker)

  function pipelined(): number {
    return gateway.pooler.stats().reduce((sum, pool) => sum + (pool.leasesPipelined ?? 0), 0)
  }

  test('cancelling the head of a pipeline leaves the session queued behind it alone', async () => {
    const head = await rawSession()
    const behind = await rawSession()
    const before = pipelined()
    head.client.write(queryMessage(`${LONG} /* pipeline-head */`))
    await running('pipeline-head')
    behind.client.write(queryMessage('SELECT 12 /* pipeline-behind */'))
    await eventually(() => pipelined() > before, 'the second session to be pipelined behind the first')
    await sendCancel(gateway.port, head.processId, head.secretKey)
    const headResult = await readResult(head.client, 5000)
    assert.equal(headResult.error?.code, '57014')
    const behindResult = await readResult(behind.client, 5000)
    assert.equal(
      behindResult.error,
      null,
      `the queued session was hit: ${JSON.stringify(behindResult.error)}`,
    )
    assert.deepEqual(behindResult.rows, [['12']])
  })

  test('cancelling a session queued behind another cancels its query, not the head’s', async () => {
    const head = await rawSession()
    const behind = await rawSession()
    const before = pipelined()
    head.client.write(queryMessage('SELECT count(*) FROM generate_series(1, 3000000) /* short-head */'))
    await running('short-head')
    behind.client.write(queryMessage(`${LONG} /* long-behind */`))
    await eventually(() => pipelined() > before, 'the second session to be pipelined behind the first')
    await sendCancel(gateway.port, behind.processId, behind.secretKey)
    const headResult = await readResult(head.client, 20_000)
    assert.equal(
      headResult.error,
      null,
      `the head was cancelled instead: ${JSON.stringify(headResult.error)}`,
    )
    assert.deepEqual(headResult.rows, [['3000000']])
    const behindResult = await readResult(behind.client, 5000)
    assert.equal(behindResult.error?.code, '57014')
    assert.deepEqual((await behind.client.query('SELECT 13')).rows, [['13']])
  })
})

async function readResult(client: RawClient, timeoutMs: number): Promise<QueryResult> {
  return collectResult(await client.readUntilReady(timeoutMs))
}
