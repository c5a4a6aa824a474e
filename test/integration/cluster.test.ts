/**
 * `tidepool up` as an operator uses it: a primary and 2 streaming replicas, a pooler
 * process per instance and a gateway process, all real. Writes go through the gateway and
 * come back from a replica; kill -9 of a Postgres is survived; `down` leaves nothing
 * running and `up` after it keeps the data.
 */
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { appendFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import pg from 'pg'
import { type ClusterConfig, down, isAlive, loadClusterConfig, status, up } from '../../src/cluster/index.ts'
import { createLogger } from '../../src/log.ts'
import { prepareServiceDir } from '../../src/pgctl/index.ts'
import { eventuallyValue } from '../support/faults.ts'
import { freePort, freePortRun } from '../support/ports.ts'

const log = createLogger('error')

/**
 * The processes connected to the Unix socket at `path`, with how many connections each
 * has: the socket's accepted connections, matched by inode to their other ends (ss -xp).
 */
function unixClients(path: string): Map<number, number> {
  const rows = execFileSync('ss', ['-xpnH'], { encoding: 'utf8' })
    .split('\n')
    .map((line) => line.trim().split(/\s+/))
    .filter((fields) => fields.length >= 8)
  // Netid State Recv-Q Send-Q Local Inode Peer PeerInode [Process]
  const serverPeers = new Set(rows.filter((fields) => fields[4] === path).map((fields) => fields[7]))
  const clients = new Map<number, number>()
  for (const fields of rows) {
    if (!serverPeers.has(fields[5])) continue
    for (const match of (fields[8] ?? '').matchAll(/pid=(\d+)/g)) {
      const pid = Number(match[1])
      clients.set(pid, (clients.get(pid) ?? 0) + 1)
    }
  }
  return clients
}

describe('tidepool up: a managed cluster', () => {
  let dir: string
  let config: ClusterConfig
  let url: string
  let replicaUrl: string
  const clients: pg.Client[] = []

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'tidepool-cluster-'))
    await prepareServiceDir(dir, 0o711)
    config = loadClusterConfig({
      flags: {
        dir: join(dir, 'data'),
        port: String(await freePort()),
        replicaPort: String(await freePort()),
        instancePortBase: String(await freePortRun(3)),
        logLevel: 'warn',
      },
      env: {},
    })
    const result = await up(config, log)
    assert.equal(result.created, true)
    url = result.url
    replicaUrl = result.replicaUrl
  })

  after(async () => {
    await Promise.all(clients.map((client) => client.end().catch(() => {})))
    if (config !== undefined) await down(config, log)
    if (dir !== undefined && process.env.TIDEPOOL_KEEP_TEST_DIRS !== '1')
      await rm(dir, { recursive: true, force: true })
  })

  async function writer(sql: string): Promise<void> {
    const client = await connect(url)
    await client.query(sql)
  }

  /** Each replica, asked directly on its own port, has the row: it streams. */
  async function rowOnEachReplica(id: number): Promise<void> {
    const replicas = (await status(config)).instances.filter((instance) => instance.role === 'replica')
    assert.equal(replicas.length, 2)
    for (const replica of replicas) {
      const direct = new URL(url)
      direct.port = String(replica.port)
      const client = await connect(direct.toString())
      await eventuallyValue(`row ${id} on ${replica.name}`, async () => {
        const { rows } = await client.query('SELECT 1 FROM notes WHERE id = $1', [id])
        return rows.length === 1 ? true : undefined
      })
    }
  }

  async function connect(connectionString: string): Promise<pg.Client> {
    const client = new pg.Client({ connectionString })
    client.on('error', () => {})
    await client.connect()
    clients.push(client)
    return client
  }

  test('a row written through the gateway is read back from a replica', async () => {
    const writer = await connect(url)
    assert.equal((await writer.query('SELECT pg_is_in_recovery() AS r')).rows[0].r, false)
    await writer.query('CREATE TABLE notes (id int PRIMARY KEY, body text)')
    await writer.query("INSERT INTO notes VALUES (1, 'hello')")
    const reader = await connect(replicaUrl)
    assert.equal((await reader.query('SELECT pg_is_in_recovery() AS r')).rows[0].r, true)
    const body = await eventuallyValue('the row on the replica', async () => {
      const { rows } = await reader.query('SELECT body FROM notes WHERE id = 1')
      return rows[0]?.body as string | undefined
    })
    assert.equal(body, 'hello')
    await assert.rejects(reader.query("INSERT INTO notes VALUES (2, 'no')"), (error: { code?: string }) => {
      return error.code === '25006' // read_only_sql_transaction
    })
  })

  test('a session on the main port that asks for read-only is served by a replica', async () => {
    const client = new pg.Client({ connectionString: url, options: '-c default_transaction_read_only=on' })
    await client.connect()
    clients.push(client)
    const { rows } = await client.query('SELECT pg_is_in_recovery() AS r, current_setting($1) AS ro', [
      'default_transaction_read_only',
    ])
    assert.deepEqual(rows[0], { r: true, ro: 'on' })
  })

  test('the status shows a primary and 2 streaming replicas', async () => {
    const snapshot = await status(config)
    assert.deepEqual(
      snapshot.instances.map((instance) => [instance.role, instance.health]),
      [
        ['primary', 'healthy'],
        ['replica', 'healthy'],
        ['replica', 'healthy'],
      ],
    )
    assert.equal(snapshot.gateways.length, 1)
    await writer(`INSERT INTO notes VALUES (2, 'to both replicas')`)
    await rowOnEachReplica(2)
  })

  test("the gateway holds no backend connection: the instances' poolers own them, within the pool size", async () => {
    const sessions = await Promise.all(Array.from({ length: 8 }, () => connect(url)))
    // Concurrent transactions, so that several backends are leased at once.
    await Promise.all(sessions.map((client) => client.query('SELECT pg_sleep(0.2), count(*) FROM notes')))
    const snapshot = await status(config)
    const primary = snapshot.instances[0]
    const gatewayPid = snapshot.gateways[0].pid
    const owners = unixClients(join(primary.socketDir, `.s.PGSQL.${primary.port}`))
    assert.ok(
      owners.get(primary.poolerPid!)! >= 2,
      `the pooler holds backends (${JSON.stringify([...owners])})`,
    )
    assert.equal(owners.get(gatewayPid), undefined, 'the gateway connects to no Postgres')
    assert.ok(
      owners.get(primary.poolerPid!)! <= config.poolSize + 2,
      'pool, listener and admin connections only',
    )
    // The gateway reaches the pooler over its lease link instead.
    assert.ok(
      (unixClients(primary.poolerLink!).get(gatewayPid) ?? 0) >= 1,
      'the gateway is on the lease link',
    )
    const reported = await eventuallyValue('the pool use in the topology', async () => {
      const use = (await status(config)).instances[0].pool
      return use.backends >= 2 ? use : undefined
    })
    assert.ok(reported.backends <= config.poolSize)
  })

  test('kill -9 of the primary: restarted, serving again, idle sessions untouched', async () => {
    const idle = await connect(url)
    assert.equal((await idle.query('SELECT 1 AS one')).rows[0].one, 1)
    const busy = await connect(url)
    await busy.query('SELECT 1')
    const running = busy.query('SELECT pg_sleep(30)')
    await new Promise((resolve) => setTimeout(resolve, 200))
    const before = (await status(config)).instances[0]
    process.kill(before.postgresPid!, 'SIGKILL')
    // Only the statement that was running fails, with the server's reason.
    await assert.rejects(running, (error: Error & { code?: string }) => {
      return typeof error.code === 'string' && /postmaster|connection/i.test(error.message)
    })
    // The session held no backend while idle: its next query, sent at once, waits for
    // the restarted server and succeeds, as if nothing had happened.
    const { rows } = await idle.query('SELECT count(*)::int AS n FROM notes')
    assert.equal(rows[0].n, 2)
    const restarted = await eventuallyValue('the primary restarted', async () => {
      const primary = (await status(config)).instances[0]
      return primary.health === 'healthy' && primary.postgresPid !== before.postgresPid ? primary : undefined
    })
    assert.equal(restarted.restarts, before.restarts + 1)
    assert.equal((await busy.query('SELECT 2 AS two')).rows[0].two, 2)
    await idle.query("INSERT INTO notes VALUES (3, 'after the crash')")
  })

  test('kill -9 of a replica: restarted and streaming again', async () => {
    const before = (await status(config)).instances[1]
    process.kill(before.postgresPid!, 'SIGKILL')
    await eventuallyValue('the replica restarted', async () => {
      const replica = (await status(config)).instances[1]
      return replica.health === 'healthy' && replica.postgresPid !== before.postgresPid ? replica : undefined
    })
    await writer(`INSERT INTO notes VALUES (4, 'to the replicas')`)
    await rowOnEachReplica(4)
  })

  test('kill -9 of a pooler: up starts a new one, which takes its Postgres over', async () => {
    const before = (await status(config)).instances[1]
    process.kill(before.poolerPid!, 'SIGKILL')
    await eventuallyValue('the pooler gone', async () => (isAlive(before.poolerPid!) ? undefined : true))
    await up(config, log)
    const after = (await status(config)).instances[1]
    assert.equal(after.health, 'healthy')
    assert.notEqual(after.poolerPid, before.poolerPid)
    await eventuallyValue('the orphaned postmaster gone', async () =>
      isAlive(before.postgresPid!) ? undefined : true,
    )
    await writer(`INSERT INTO notes VALUES (5, 'after a new pooler')`)
    await rowOnEachReplica(5)
  })

  test("kill -9 of the primary's pooler: an idle session carries on once a new pooler serves", async () => {
    const idle = await connect(url)
    await idle.query('SELECT 1')
    const before = (await status(config)).instances[0]
    process.kill(before.poolerPid!, 'SIGKILL')
    await eventuallyValue('the pooler gone', async () => (isAlive(before.poolerPid!) ? undefined : true))
    // The session's next query waits for the lease link to come back, then runs.
    const next = idle.query('SELECT count(*)::int AS n FROM notes')
    await up(config, log)
    assert.ok((await next).rows[0].n >= 5)
    assert.notEqual((await status(config)).instances[0].poolerPid, before.poolerPid)
    await idle.query("INSERT INTO notes VALUES (6, 'after a new primary pooler')")
    await rowOnEachReplica(6)
  })

  test('a Postgres that cannot start is retried with back-off, then given up on and reported', async () => {
    const before = (await status(config)).instances[2]
    // A setting Postgres refuses at startup: every restart fails the same way.
    const conf = join(before.dataDir, 'postgresql.conf')
    const original = await readFile(conf, 'utf8')
    await appendFile(conf, '\nno_such_setting_at_all = 1\n')
    const started = Date.now()
    process.kill(before.postgresPid!, 'SIGKILL')
    const failed = await eventuallyValue(
      `${before.name} reported failed`,
      async () => {
        const record = (await status(config)).instances[2]
        return record.health === 'failed' ? record : undefined
      },
      60_000,
    )
    // 6 tries, 250 ms doubling: over 7 s of back-off before giving up.
    assert.ok(Date.now() - started > 7000, `gave up after ${Date.now() - started} ms`)
    assert.match(failed.problem ?? '', /restarts within 60 s/)
    assert.ok(isAlive(failed.poolerPid!), 'the pooler stays to report it')
    await writeFile(conf, original)
  })

  test('down leaves no process behind; up again keeps the data', async () => {
    for (const client of clients.splice(0)) await client.end().catch(() => {})
    const running = await status(config)
    const pids = [
      ...running.gateways.map((gateway) => gateway.pid),
      ...running.instances.flatMap((instance) => [instance.poolerPid, instance.postgresPid]),
    ].filter((pid): pid is number => pid !== null)
    assert.equal(pids.length, 6, 'gateway, 3 poolers, 2 postmasters (pg2 failed)')
    await down(config, log)
    assert.deepEqual(pids.filter(isAlive), [])
    for (const instance of running.instances) {
      // A postmaster killed with -9 leaves its lock file; none may name a live process.
      const lock = await readFile(join(instance.dataDir, 'postmaster.pid'), 'utf8').catch(() => null)
      if (lock !== null)
        assert.equal(isAlive(Number(lock.split('\n')[0])), false, `${instance.name} still runs`)
    }
    const again = await up(config, log)
    assert.equal(again.created, false)
    const reader = await connect(again.replicaUrl)
    const count = await eventuallyValue('the data on a replica after up', async () => {
      const { rows } = await reader.query('SELECT count(*)::int AS n FROM notes')
      return rows[0].n === 6 ? rows[0].n : undefined
    })
    assert.equal(count, 6)
  })
})
