/**
 * A cluster keeps the settings it was made with: `tidepool up --dir D` alone, after a
 * pooler (or the gateway) died, brings it back on the ports it was made with, not on the
 * defaults; a flag that would change a fixed setting is refused with a clear error; a
 * changeable one is stored and used by the components started from then on.
 */
import assert from 'node:assert/strict'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import pg from 'pg'
import { isAlive } from '../../src/cluster/index.ts'
import { prepareServiceDir } from '../../src/pgctl/index.ts'
import type { TopologySnapshot } from '../../src/topology/index.ts'
import { clusterPortFlags, freePort } from '../support/ports.ts'
import { runProgram } from '../support/programs.ts'

const TIDEPOOL = join(import.meta.dirname, '..', '..', 'bin', 'tidepool.js')

function tidepool(args: string[]) {
  return runProgram(process.execPath, [TIDEPOOL, ...args], {
    env: { PATH: process.env.PATH ?? '' },
    timeoutMs: 180_000,
  })
}

async function killed(pid: number): Promise<void> {
  process.kill(pid, 'SIGKILL')
  const deadline = Date.now() + 10_000
  while (isAlive(pid)) {
    assert.ok(Date.now() < deadline, `pid ${pid} still runs after SIGKILL`)
    await sleep(20)
  }
}

/** The command line a process was started with. */
async function commandLine(pid: number): Promise<string[]> {
  return (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0').filter((arg) => arg !== '')
}

/** The value that follows `flag` on a command line. */
function flagValue(args: string[], flag: string): string | undefined {
  const at = args.indexOf(flag)
  return at === -1 ? undefined : args[at + 1]
}

describe('tidepool up --dir on an existing cluster keeps its stored settings', () => {
  let dir: string
  let data: string
  let port: number
  let replicaPort: number
  let base: number
  let url: string
  const clients: pg.Client[] = []

  /** `tidepool status --json --dir D`: no other flag, as an operator would type it. */
  async function snapshot(): Promise<TopologySnapshot> {
    const result = await tidepool(['status', '--json', '--dir', data])
    assert.equal(result.code, 0, result.stderr)
    return JSON.parse(result.stdout) as TopologySnapshot
  }

  async function connect(connectionString: string): Promise<pg.Client> {
    const client = new pg.Client({ connectionString, connectionTimeoutMillis: 10_000 })
    client.on('error', () => {})
    clients.push(client)
    await client.connect()
    return client
  }

  /** Brings the cluster back with `--dir` alone and checks it serves on the stored ports. */
  async function upWithDirAlone(): Promise<void> {
    const again = await tidepool(['up', '--dir', data])
    assert.equal(again.code, 0, `${again.stdout}\n${again.stderr}`)
    assert.match(again.stdout, new RegExp(`read-write: postgresql://\\S+@127\\.0\\.0\\.1:${port}/tidepool`))
    assert.match(again.stdout, new RegExp(`read-only: +postgresql://\\S+@127\\.0\\.0\\.1:${replicaPort}/`))
  }

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'tidepool-stored-'))
    await prepareServiceDir(dir, 0o711)
    data = join(dir, 'data')
    const ports = await clusterPortFlags(2)
    port = Number(flagValue(ports, '--port'))
    replicaPort = Number(flagValue(ports, '--replica-port'))
    base = Number(flagValue(ports, '--instance-port-base'))
    const made = await tidepool(['up', '--dir', data, ...ports, '--replicas', '1'])
    assert.equal(made.code, 0, `${made.stdout}\n${made.stderr}`)
    url = /psql '([^']+)'/.exec(made.stdout)![1]
  })

  after(async () => {
    await Promise.all(clients.map((client) => client.end().catch(() => {})))
    // down, too, finds everything from the directory alone.
    if (data !== undefined) {
      const down = await tidepool(['down', '--dir', data])
      assert.equal(down.code, 0, down.stderr)
    }
    if (dir !== undefined && process.env.TIDEPOOL_KEEP_TEST_DIRS !== '1')
      await rm(dir, { recursive: true, force: true })
  })

  test('the settings are stored in the directory when the cluster is made', async () => {
    const stored = await readFile(join(data, 'settings.yaml'), 'utf8')
    assert.match(stored, new RegExp(`^port: ${port}$`, 'm'))
    assert.match(stored, new RegExp(`^replica-port: ${replicaPort}$`, 'm'))
    assert.match(stored, new RegExp(`^instance-port-base: ${base}$`, 'm'))
    assert.match(stored, /^replicas: 1$/m)
  })

  test("the primary's pooler killed with -9: up --dir alone starts a new one on the stored ports", async () => {
    const [primary] = (await snapshot()).instances
    assert.equal(primary.name, 'pg0')
    assert.equal(primary.port, base)
    await killed(primary.poolerPid!)

    await upWithDirAlone()
    const [again] = (await snapshot()).instances
    assert.equal(again.port, base, 'the new pooler runs its Postgres on the stored instance port')
    assert.equal(again.health, 'healthy')
    assert.notEqual(again.poolerPid, primary.poolerPid)
    assert.ok(isAlive(again.poolerPid), 'the new pooler runs')
    const args = await commandLine(again.poolerPid!)
    assert.equal(flagValue(args, '--instance-port-base'), String(base))
    assert.equal(flagValue(args, '--port'), String(port))

    // Through the gateway, on the port the cluster was made with, to the Postgres on its port.
    const client = await connect(url)
    const { rows } = await client.query('SELECT current_user AS who, current_setting($1) AS port', ['port'])
    assert.deepEqual(rows[0], { who: 'tidepool', port: String(base) })
  })

  test('the gateway and every pooler killed with -9: up --dir alone brings all back on the stored ports', async () => {
    const before = await snapshot()
    const pids = [
      ...before.gateways.map((gateway) => gateway.pid),
      ...before.instances.map((i) => i.poolerPid!),
    ]
    assert.equal(pids.length, 3, 'a gateway and 2 poolers')
    for (const pid of pids) await killed(pid)

    await upWithDirAlone()
    const after = await snapshot()
    assert.deepEqual(
      after.instances.map((instance) => [instance.name, instance.port, instance.health]),
      [
        ['pg0', base, 'healthy'],
        ['pg1', base + 1, 'healthy'],
      ],
    )
    assert.deepEqual(
      after.gateways.map((gateway) => [gateway.port, gateway.replicaPort]),
      [[port, replicaPort]],
    )
    const writer = await connect(url)
    await writer.query('CREATE TABLE IF NOT EXISTS kept (id int)')
    const readOnly = new URL(url)
    readOnly.port = String(replicaPort)
    const reader = await connect(readOnly.toString())
    const { rows } = await reader.query(
      'SELECT pg_is_in_recovery() AS replica, current_setting($1) AS port',
      ['port'],
    )
    assert.deepEqual(rows[0], { replica: true, port: String(base + 1) })
  })

  test('a flag that would change a fixed setting is refused, naming the flag and both values', async () => {
    const running = await snapshot()
    const settings = await readFile(join(data, 'settings.yaml'), 'utf8')
    let other = await freePort()
    while (other === port) other = await freePort()

    const movedPort = await tidepool(['up', '--dir', data, '--port', String(other)])
    assert.equal(movedPort.code, 2, movedPort.stdout)
    assert.match(
      movedPort.stderr,
      new RegExp(
        `--port "${other}" conflicts with the cluster in ${data}, made with port ${port} \\(${join(data, 'settings.yaml')}\\), which cannot change: leave --port out or give ${port}`,
      ),
    )
    const movedBase = await tidepool(['up', '--dir', data, '--instance-port-base', String(base + 10)])
    assert.equal(movedBase.code, 2, movedBase.stdout)
    assert.match(
      movedBase.stderr,
      new RegExp(
        `--instance-port-base "${base + 10}" conflicts with .*made with instance-port-base ${base}\\b`,
      ),
    )
    const moreReplicas = await tidepool(['up', '--dir', data, '--replicas', '2'])
    assert.equal(moreReplicas.code, 2, moreReplicas.stdout)
    assert.match(moreReplicas.stderr, /--replicas "2" conflicts with .*made with replicas 1\b/)
    // The same values as stored are no conflict.
    const same = await tidepool(['status', '--dir', data, '--port', String(port), '--replicas', '1'])
    assert.equal(same.code, 0, same.stderr)

    // Nothing was touched.
    assert.equal(await readFile(join(data, 'settings.yaml'), 'utf8'), settings)
    const now = await snapshot()
    assert.deepEqual(
      now.instances.map((instance) => instance.poolerPid),
      running.instances.map((instance) => instance.poolerPid),
    )
    assert.deepEqual(
      now.gateways.map((gateway) => gateway.pid),
      running.gateways.map((gateway) => gateway.pid),
    )
  })

  test('a changeable setting given to up is stored and used by the components it starts', async () => {
    const changed = await tidepool(['up', '--dir', data, '--pool-size', '7'])
    assert.equal(changed.code, 0, changed.stderr)
    assert.match(changed.stderr, /setting changed/)
    assert.match(await readFile(join(data, 'settings.yaml'), 'utf8'), /^pool-size: 7$/m)

    const replica = (await snapshot()).instances[1]
    await killed(replica.poolerPid!)
    await upWithDirAlone()
    const restarted = (await snapshot()).instances[1]
    assert.notEqual(restarted.poolerPid, replica.poolerPid)
    const args = await commandLine(restarted.poolerPid!)
    assert.equal(flagValue(args, '--pool-size'), '7', 'the stored pool size, with no flag given')
    assert.equal(flagValue(args, '--instance-port-base'), String(base))
  })
})
