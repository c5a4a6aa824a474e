import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises'
import net from 'node:net'
import { dirname, join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { ConfigError } from '../config/index.ts'
import type { Logger } from '../log.ts'
import {
  appendSettings,
  basebackup,
  findPgBinDir,
  initdb,
  prepareServiceDir,
  spawnDetached,
  writeHba,
} from '../pgctl/index.ts'
import { queryServer, quoteLiteral } from '../pooler/index.ts'
import { FileTopology, type TopologySnapshot } from '../topology/index.ts'
import {
  CHANGEABLE_SETTINGS,
  CLUSTER_OPTIONS,
  type ClusterConfig,
  readStoredSettings,
  type StoredKey,
  type StoredSettings,
  settingConflicts,
  writeStoredSettings,
} from './config.ts'
import { exists } from './files.ts'
import { componentLog, instanceLayout, instanceNames, passwordFile, topologyDir } from './layout.ts'

const BIN = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'tidepool.js')
const READY_TIMEOUT_MS = 120_000

/** What `tidepool up` prints: how to connect. */
export interface UpResult {
  url: string
  replicaUrl: string
  password: string
  created: boolean
}

/**
 * Creates the cluster on first use (a primary by initdb, replicas by pg_basebackup with
 * replication slots, configuration written by us) and starts what is not running: one
 * pooler process per instance, which runs and supervises its Postgres, and the gateway
 * process. Returns once every component reports healthy.
 *
 * The settings are stored in the directory (`settings.yaml`) when the cluster is made;
 * `config` must agree with the fixed ones (`loadClusterConfig` takes them from there),
 * and changed changeable ones are stored for the components started from now on.
 */
export async function up(config: ClusterConfig, log: Logger): Promise<UpResult> {
  await checkMachine(config)
  const stored = readStoredSettings(config.dir)
  const conflicts = settingConflicts(config, stored)
  if (conflicts.length > 0) throw new ConfigError(conflicts)
  const topology = new FileTopology(topologyDir(config))
  let snapshot = await topology.snapshot()
  const created = snapshot.cluster === null
  const names = created ? instanceNames(config) : snapshot.cluster!.instances
  if (created) await checkPortsFree(config, names)
  await prepareServiceDir(config.dir, 0o711)
  await mkdir(join(config.dir, 'log'), { recursive: true })
  await prepareServiceDir(join(config.dir, 'log'), 0o711)
  await storeSettings(config, stored, log)

  const [primaryName, ...replicaNames] = names
  const primary = instanceLayout(config, primaryName)
  if (created && !(await exists(join(primary.dataDir, 'PG_VERSION')))) {
    log.info({ dataDir: primary.dataDir }, 'creating the primary (initdb)')
    await prepareServiceDir(dirname(primary.dataDir), 0o711)
    await initdb({
      dataDir: primary.dataDir,
      superuser: 'postgres',
      authLocal: 'trust',
      authHost: 'scram-sha-256',
    })
    await appendSettings(primary.dataDir, {
      wal_level: 'replica',
      max_wal_senders: 10,
      max_replication_slots: 10,
      hot_standby: 'on',
      wal_keep_size: '256MB',
      password_encryption: 'scram-sha-256',
      max_connections: 200,
    })
    // The pooler's private socket trusts local users (the directory is the service
    // user's alone); over TCP everyone proves a SCRAM password.
    await writeHba(primary.dataDir, [
      { type: 'local', database: 'all', user: 'all', method: 'trust' },
      { type: 'local', database: 'replication', user: 'all', method: 'trust' },
      { type: 'host', database: 'all', user: 'all', address: '127.0.0.1/32', method: 'scram-sha-256' },
      {
        type: 'host',
        database: 'replication',
        user: 'all',
        address: '127.0.0.1/32',
        method: 'scram-sha-256',
      },
    ])
  }

  await startPooler(config, primaryName, snapshot, log)
  snapshot = await waitHealthy(topology, [primaryName], config)
  const password = await ensureUser(config, created)
  if (created) {
    await topology.putCluster({
      name: 'tidepool',
      user: config.user,
      database: config.user,
      gateway: { host: config.host, port: config.port, replicaPort: config.replicaPort },
      instances: names,
      createdAt: new Date().toISOString(),
    })
  }

  for (const name of replicaNames) {
    const replica = instanceLayout(config, name)
    if (!(await exists(join(replica.dataDir, 'PG_VERSION')))) {
      log.info({ instance: name }, 'creating a replica (pg_basebackup)')
      await prepareServiceDir(dirname(replica.dataDir), 0o711)
      await basebackup({
        dataDir: replica.dataDir,
        host: primary.socketDir,
        port: primary.port,
        user: 'postgres',
        slot: name,
      })
    }
    await startPooler(config, name, snapshot, log)
  }
  snapshot = await waitHealthy(topology, names, config)

  const gateway = snapshot.gateways.find((record) => isAlive(record.pid))
  if (gateway === undefined) {
    const pid = await spawnDetached(process.execPath, [BIN, 'cluster-gateway', ...configFlags(config)], {
      logFile: componentLog(config, 'gateway'),
    })
    log.info({ pid }, 'gateway started')
  }
  await waitFor(
    async () => {
      const current = await topology.snapshot()
      return current.gateways.some((record) => isAlive(record.pid))
    },
    `the gateway did not start; see ${componentLog(config, 'gateway')}`,
  )
  const auth = `${config.user}:${encodeURIComponent(password)}`
  return {
    url: `postgresql://${auth}@${config.host}:${config.port}/${config.user}`,
    replicaUrl: `postgresql://${auth}@${config.host}:${config.replicaPort}/${config.user}`,
    password,
    created,
  }
}

/**
 * Stores `config`'s settings when the directory has none yet (a new cluster, or one made
 * before settings were stored) or when a changeable one changed, which running
 * components do not see: they keep their value until they are started again.
 */
async function storeSettings(config: ClusterConfig, stored: StoredSettings | null, log: Logger) {
  for (const key of CHANGEABLE_SETTINGS) {
    const before = stored?.values[key]
    if (before !== undefined && before !== config[key]) {
      log.warn(
        { setting: CLUSTER_OPTIONS[key].flag, from: before, to: config[key] },
        'setting changed: components started from now on use the new value, running ones theirs until tidepool down and up',
      )
    }
  }
  const keys = Object.keys(CLUSTER_OPTIONS).filter((key): key is StoredKey => key !== 'dir')
  if (stored === null || !stored.fromFile || keys.some((key) => stored.values[key] !== config[key]))
    await writeStoredSettings(config)
}

/** The flags that give a component the same configuration as ours. */
export function configFlags(config: ClusterConfig): string[] {
  const flags: string[] = []
  for (const [key, option] of Object.entries(CLUSTER_OPTIONS)) {
    flags.push(option.flag, String(config[key as keyof ClusterConfig]))
  }
  return flags
}

/** Whether a process runs (an exited one that nobody has reaped yet does not). */
export function isAlive(pid: number | null): boolean {
  if (pid === null) return false
  try {
    process.kill(pid, 0)
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EPERM') return false
  }
  try {
    // The state follows the parenthesised command name in /proc/<pid>/stat.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z'
  } catch {
    return true // no /proc: trust the signal
  }
}

async function startPooler(config: ClusterConfig, name: string, snapshot: TopologySnapshot, log: Logger) {
  const record = snapshot.instances.find((instance) => instance.name === name)
  if (record !== undefined && isAlive(record.poolerPid)) return
  const pid = await spawnDetached(
    process.execPath,
    [BIN, 'instance-pooler', '--instance', name, ...configFlags(config)],
    {
      logFile: componentLog(config, `${name}-pooler`),
    },
  )
  log.info({ instance: name, pid }, 'pooler started')
}

async function waitHealthy(
  topology: FileTopology,
  names: string[],
  config: ClusterConfig,
): Promise<TopologySnapshot> {
  let snapshot = await topology.snapshot()
  await waitFor(
    async () => {
      snapshot = await topology.snapshot()
      // A record left by a pooler that died says nothing about now.
      return names.every((name) => {
        const record = snapshot.instances.find((instance) => instance.name === name)
        return record?.health === 'healthy' && isAlive(record.poolerPid)
      })
    },
    () => {
      const problems = names.map((name) => {
        const record = snapshot.instances.find((instance) => instance.name === name)
        return `${name}: ${record?.health ?? 'no record'}${record?.problem ? ` (${record.problem})` : ''}; logs in ${componentLog(config, `${name}-pooler`)}`
      })
      return `instances did not become healthy within ${READY_TIMEOUT_MS / 1000} s:\n  ${problems.join('\n  ')}`
    },
  )
  return snapshot
}

async function waitFor(check: () => Promise<boolean>, failure: string | (() => string)): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(typeof failure === 'string' ? failure : failure())
    await sleep(100)
  }
}

/** The application role and its database, with a generated password kept in the directory. */
async function ensureUser(config: ClusterConfig, created: boolean): Promise<string> {
  const file = passwordFile(config)
  if (!created && (await exists(file))) return (await readFile(file, 'utf8')).trim()
  const password = randomBytes(18).toString('base64url')
  const primary = instanceLayout(config, 'pg0')
  const endpoint = { socketDir: primary.socketDir, port: primary.port }
  for (const sql of [
    `DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = ${quoteLiteral(config.user)}) THEN CREATE ROLE "${config.user}" LOGIN CREATEDB; END IF; END $$`,
    `ALTER ROLE "${config.user}" PASSWORD ${quoteLiteral(password)}`,
  ]) {
    const { error } = await queryServer(endpoint, 'postgres', sql)
    if (error !== null) throw error
  }
  const { rows } = await queryServer(
    endpoint,
    'postgres',
    `SELECT 1 FROM pg_database WHERE datname = ${quoteLiteral(config.user)}`,
  )
  if (rows.length === 0) {
    const { error } = await queryServer(
      endpoint,
      'postgres',
      `CREATE DATABASE "${config.user}" OWNER "${config.user}"`,
    )
    if (error !== null) throw error
  }
  await writeFile(file, `${password}\n`, { mode: 0o600 })
  return password
}

/** Problems an operator can fix, found before anything is created. */
async function checkMachine(config: ClusterConfig): Promise<void> {
  const problems: string[] = []
  try {
    await findPgBinDir()
  } catch (error) {
    problems.push((error as Error).message)
  }
  try {
    const info = await stat(config.dir)
    if (process.getuid !== undefined && info.uid !== process.getuid() && process.getuid() !== 0) {
      problems.push(
        `${config.dir} belongs to uid ${info.uid}, not to you (uid ${process.getuid()}): choose another --dir`,
      )
    }
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT')
      problems.push(`cannot use ${config.dir}: ${(error as Error).message}`)
  }
  if (problems.length > 0) throw new ConfigError(problems)
}

async function checkPortsFree(config: ClusterConfig, names: string[]): Promise<void> {
  const wanted = [
    ['--port', config.port],
    ['--replica-port', config.replicaPort],
    ...names.map(
      (name) => [`the port of ${name} (--instance-port-base)`, instanceLayout(config, name).port] as const,
    ),
  ] as const
  const problems: string[] = []
  for (const [what, port] of wanted) {
    if (!(await portFree(config.host, port)))
      problems.push(`${what}: port ${port} on ${config.host} is already in use`)
  }
  if (problems.length > 0) throw new ConfigError(problems)
}

function portFree(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer()
    server.once('error', () => resolve(false))
    server.listen({ host, port }, () => server.close(() => resolve(true)))
  })
}
