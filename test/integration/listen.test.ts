/**
 * LISTEN/NOTIFY through the gateway: 20 sessions share a pool of 2; every notification
 * reaches exactly the sessions listening on its channel, in order, with its payload,
 * between their transactions; LISTEN in a transaction counts only if it commits.
 */
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import pg from 'pg'
import type { Gateway } from '../../src/gateway/index.ts'
import { startTestGateway } from '../support/gateway.ts'
import { startTestPostgres, type TestPostgres } from '../support/postgres.ts'

const SESSIONS = 20

interface Received {
  channel: string
  payload: string | undefined
  processId: number
}

describe('LISTEN/NOTIFY across a pool of 2', () => {
  let server: TestPostgres
  let gateway: Gateway
  const clients: pg.Client[] = []

  before(async () => {
    server = await startTestPostgres()
    gateway = await startTestGateway(server, { poolSize: 2 })
  })

  after(async () => {
    await Promise.all(clients.map((client) => client.end().catch(() => {})))
    await gateway?.close()
    await server?.stop()
  })

  async function connect(): Promise<{ client: pg.Client; received: Received[] }> {
    const client = new pg.Client({
      host: '127.0.0.1',
      port: gateway.port,
      user: 'postgres',
      database: 'postgres',
    })
    await client.connect()
    clients.push(client)
    const received: Received[] = []
    client.on('notification', (n) =>
      received.push({ channel: n.channel, payload: n.payload, processId: n.processId }),
    )
    return { client, received }
  }

  async function until(check: () => boolean, what: string): Promise<void> {
    const deadline = Date.now() + 5000
    while (!check()) {
      if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`)
      await sleep(10)
    }
  }

  test('each notification reaches exactly its channel’s listeners, in order, with payloads', async () => {
    const sessions = await Promise.all(Array.from({ length: SESSIONS }, () => connect()))
    await Promise.all(sessions.map(({ client }) => client.query('LISTEN jobs')))
    await Promise.all(sessions.slice(0, 5).map(({ client }) => client.query('LISTEN "Other Channel"')))
    const sender = await connect()
    await sender.client.query('BEGIN')
    for (let i = 0; i < 10; i++) await sender.client.query(`NOTIFY jobs, 'job-${i}'`)
    await sender.client.query('COMMIT')
    await sender.client.query(`SELECT pg_notify('Other Channel', 'only five')`)
    const expected = Array.from({ length: 10 }, (_, i) => `job-${i}`)
    await until(
      () => sessions.every(({ received }) => received.filter((r) => r.channel === 'jobs').length === 10),
      'every job',
    )
    await until(
      () => sessions.slice(0, 5).every(({ received }) => received.some((r) => r.channel === 'Other Channel')),
      'other',
    )
    await sleep(100)
    for (const [i, { received }] of sessions.entries()) {
      assert.deepEqual(
        received.filter((r) => r.channel === 'jobs').map((r) => r.payload),
        expected,
        `session ${i} got the jobs in order`,
      )
      assert.equal(
        received.filter((r) => r.channel === 'Other Channel').length,
        i < 5 ? 1 : 0,
        `session ${i}`,
      )
      assert.ok(
        received.every((r) => r.processId > 0),
        'sender pid',
      )
    }
    assert.deepEqual(sender.received, [], 'a session that does not listen gets nothing')
    await Promise.all(sessions.map(({ client }) => client.query('UNLISTEN *')))
    await sender.client.query(`NOTIFY jobs, 'after unlisten'`)
    await sleep(200)
    assert.ok(sessions.every(({ received }) => !received.some((r) => r.payload === 'after unlisten')))
  })

  test('LISTEN in a transaction: not at all on rollback, from commit on', async () => {
    const { client, received } = await connect()
    const sender = await connect()
    await client.query('BEGIN')
    await client.query('LISTEN rolled')
    await client.query('ROLLBACK')
    await client.query('BEGIN')
    await client.query('LISTEN committed')
    await client.query('COMMIT')
    await sender.client.query(`NOTIFY rolled, 'no'`)
    await sender.client.query(`NOTIFY committed, 'yes'`)
    await until(() => received.length > 0, 'the committed channel')
    await sleep(100)
    assert.deepEqual(
      received.map((r) => [r.channel, r.payload]),
      [['committed', 'yes']],
    )
    await client.query('UNLISTEN committed')
  })

  test('a session in a transaction gets notifications only after it ends', async () => {
    const { client, received } = await connect()
    const sender = await connect()
    await client.query('LISTEN later')
    await client.query('BEGIN')
    await client.query('SELECT 1')
    await sender.client.query(`NOTIFY later, 'after commit'`)
    await sleep(200)
    assert.equal(received.length, 0, 'delivered inside a transaction')
    await client.query('COMMIT')
    await until(() => received.length === 1, 'delivery after COMMIT')
    assert.equal(received.at(0)?.payload, 'after commit')
  })
})
