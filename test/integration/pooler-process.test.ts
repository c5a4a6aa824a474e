/**
 * `tidepool pooler` with two `tidepool gateway --pooler` processes in front of it, all
 * real processes: the gateways share the pooler's backends over the lease link (their
 * sessions' prepared statements included), the backend count stays at the pool size,
 * and a pooler restart leaves idle sessions able to go on.
 */
import assert from 'node:assert/strict'
import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import pg from 'pg'
import { freePort } from '../support/ports.ts'
import { startTestPostgres, type TestPostgres } from '../support/postgres.ts'
import { runProgram } from '../support/programs.ts'

const TIDEPOOL = join(import.meta.dirname, '..', '..', 'bin', 'tidepool.js')
const POOL_SIZE = 3

function start(args: string[]): ChildProcess {
  const child = spawn(process.execPath, [TIDEPOOL, ...args, '--log-level', 'warn'], {
    env: { PATH: process.env.PATH ?? '' },
    stdio: ['ignore', 'ignore', 'inherit'],
  })
  return child
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise((resolve) => child.once('exit', resolve))
  child.kill('SIGTERM')
  await exited
}

async function listening(port: number): Promise<void> {
  const deadline = Date.now() + 15_000
  for (;;) {
    const up = await new Promise<boolean>((resolve) => {
      const socket = net.connect({ host: '127.0.0.1', port })
      socket.once('connect', () => {
        socket.destroy()
        resolve(true)
      })
      socket.once('error', () => resolve(false))
    })
    if (up) return
    if (Date.now() > deadline) assert.fail(`nothing listens on ${port}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

describe('a pooler process shared by two gateway processes', () => {
  let postgres: TestPostgres
  let dir: string
  let link: string
  let upstream: string
  let pooler: ChildProcess
  const gateways: ChildProcess[] = []
  const ports: number[] = []
  const clients: pg.Client[] = []

  before(async () => {
    postgres = await startTestPostgres()
    dir = await mkdtemp(join(tmpdir(), 'tidepool-pooler-'))
    link = join(dir, 'pooler.link')
    upstream = `postgresql://postgres@/postgres?host=${encodeURIComponent(postgres.socketDir)}&port=${postgres.port}`
    pooler = start(['pooler', '--link', link, '--upstream', upstream, '--pool-size', String(POOL_SIZE)])
    for (let i = 0; i < 2; i++) {
      const port = await freePort()
      ports.push(port)
      gateways.push(start(['gateway', '--pooler', link, '--listen', `127.0.0.1:${port}`, '--auth', 'trust']))
    }
    await Promise.all(ports.map(listening))
  })

  after(async () => {
    await Promise.all(clients.map((client) => client.end().catch(() => {})))
    for (const gateway of gateways) await stop(gateway)
    if (pooler !== undefined) await stop(pooler)
    await postgres?.stop()
    if (dir !== undefined) await rm(dir, { recursive: true, force: true })
  })

  async function connect(port: number): Promise<pg.Client> {
    const client = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: 'postgres' })
    client.on('error', () => {})
    await client.connect()
    clients.push(client)
    return client
  }

  /** Backends of the pool (the pooler's own listener and role-lookup connections left out). */
  async function poolBackends(): Promise<number> {
    const count = await postgres.psql(
      "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND application_name NOT LIKE 'tidepool-%' AND application_name <> 'psql'",
    )
    return Number(count)
  }

  test('sessions on both gateways share the pool: named statements, transactions, at most the pool size', async () => {
    await postgres.psql(
      'CREATE TABLE counters (id int PRIMARY KEY, n int NOT NULL); INSERT INTO counters VALUES (1, 0)',
    )
    const sessions = await Promise.all(Array.from({ length: 12 }, (_, i) => connect(ports[i % 2])))
    let peak = 0
    let running = true
    // One look at a time: overlapping psql processes would count each other.
    const watching = (async () => {
      while (running) {
        peak = Math.max(peak, await poolBackends())
        await new Promise((resolve) => setTimeout(resolve, 10))
      }
    })()
    try {
      await Promise.all(
        sessions.map(async (client, i) => {
          for (let round = 0; round < 10; round++) {
            await client.query('BEGIN')
            // The same text on every session: one canonical statement per gateway.
            await client.query({
              name: 'bump',
              text: 'UPDATE counters SET n = n + $1 WHERE id = 1',
              values: [1],
            })
            const { rows } = await client.query({
              name: `read-${i}`,
              text: 'SELECT n FROM counters WHERE id = 1',
            })
            assert.ok(rows[0].n >= 1)
            await client.query('COMMIT')
          }
        }),
      )
    } finally {
      running = false
      await watching
    }
    assert.equal(await postgres.psql('SELECT n FROM counters'), '120')
    assert.ok(peak >= 1 && peak <= POOL_SIZE, `backends seen at once: ${peak}`)
  })

  test('SET, LISTEN/NOTIFY and cancel work through a gateway in front of the pooler', async () => {
    const listener = await connect(ports[0])
    const notifier = await connect(ports[1])
    const heard = new Promise<string>((resolve) =>
      listener.on('notification', (message) => resolve(message.payload ?? '')),
    )
    await listener.query('LISTEN jobs')
    await listener.query("SET application_name = 'through-the-link'")
    await notifier.query("NOTIFY jobs, 'hello'")
    assert.equal(await heard, 'hello')
    assert.equal((await listener.query('SHOW application_name')).rows[0].application_name, 'through-the-link')
    const running = notifier.query('SELECT pg_sleep(30)')
    await new Promise((resolve) => setTimeout(resolve, 200))
    // The CancelRequest goes to the gateway on a connection of its own, with the key the session got.
    const cancel = notifier as unknown as { processID: number; secretKey: number }
    await new Promise<void>((resolve, reject) => {
      const socket = net.connect({ host: '127.0.0.1', port: ports[1] }, () => {
        const packet = Buffer.alloc(16)
        packet.writeInt32BE(16, 0)
        packet.writeInt32BE(80877102, 4)
        packet.writeInt32BE(cancel.processID, 8)
        packet.writeInt32BE(cancel.secretKey, 12)
        socket.end(packet)
      })
      socket.on('close', () => resolve())
      socket.on('error', reject)
    })
    await assert.rejects(running, (error: { code?: string }) => error.code === '57014')
    assert.equal((await notifier.query('SELECT 1 AS one')).rows[0].one, 1)
  })

  test('a pooler killed and started again: idle sessions on both gateways go on', async () => {
    const idle = await Promise.all(ports.map((port) => connect(port)))
    for (const client of idle) await client.query('SELECT 1')
    const exited = new Promise((resolve) => pooler.once('exit', resolve))
    pooler.kill('SIGKILL')
    await exited
    // Sent while no pooler runs: they wait for the lease link to come back.
    const next = idle.map((client) => client.query('SELECT n FROM counters'))
    await new Promise((resolve) => setTimeout(resolve, 300))
    pooler = start(['pooler', '--link', link, '--upstream', upstream, '--pool-size', String(POOL_SIZE)])
    for (const result of await Promise.all(next)) assert.equal(result.rows[0].n, 120)
  })

  test('the link over TCP: a gateway leases from a pooler at host:port', async () => {
    const linkPort = await freePort()
    const port = await freePort()
    const tcpPooler = start([
      'pooler',
      '--link',
      `127.0.0.1:${linkPort}`,
      '--upstream',
      upstream,
      '--pool-size',
      '1',
    ])
    const gateway = start([
      'gateway',
      '--pooler',
      `127.0.0.1:${linkPort}`,
      '--listen',
      `127.0.0.1:${port}`,
      '--auth',
      'trust',
    ])
    try {
      await listening(port)
      const client = await connect(port)
      const { rows } = await client.query({ name: 'tcp', text: 'SELECT $1::int * 2 AS n', values: [21] })
      assert.deepEqual(rows, [{ n: 42 }])
      await client.end()
    } finally {
      await stop(gateway)
      await stop(tcpPooler)
    }
  })

  test('bad command lines get a clear message and exit code 2', async () => {
    const run = (args: string[]) =>
      runProgram(process.execPath, [TIDEPOOL, ...args], {
        env: { PATH: process.env.PATH ?? '' },
        timeoutMs: 30_000,
      })
    const noBackends = await run(['gateway', '--listen', '127.0.0.1:1'])
    assert.equal(noBackends.code, 2)
    assert.match(noBackends.stderr, /missing --upstream/)
    const badLink = await run(['pooler', '--link', 'relative/path', '--upstream', upstream])
    assert.equal(badLink.code, 2)
    assert.match(
      badLink.stderr,
      /invalid --link "relative\/path": expected an absolute Unix socket path or host:port/,
    )
    const noUpstream = await run(['pooler', '--link', join(dir, 'x.link')])
    assert.equal(noUpstream.code, 2)
    assert.match(noUpstream.stderr, /missing --upstream/)
  })
})
