import { readFileSync } from 'node:fs'
import { rename, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml'
import { z } from 'zod'
import { ConfigError, LOG_LEVELS, type LogLevel } from '../config/index.ts'
import type { ClusterRecord, InstanceRecord } from '../topology/index.ts'

/** Validated configuration of `tidepool up` and the components it starts. */
export interface ClusterConfig {
  /** Where data, configuration, topology and logs live. */
  dir: string
  /** Gateway addresses: read-write sessions, and read-only ones served by replicas. */
  host: string
  port: number
  replicaPort: number
  /** Postgres instances listen on 127.0.0.1 from this port up, one each. */
  instancePortBase: number
  replicas: number
  /** The role applications log in as (created with a generated password). */
  user: string
  poolSize: number
  /** Replicas further behind than this are not read from. */
  maxLagBytes: number
  logLevel: LogLevel
}

const port = z.coerce
  .number({ error: 'expected a port number' })
  .int('expected a whole number')
  .min(1, 'expected a port from 1 to 65535')
  .max(65535, 'expected a port from 1 to 65535')

const schema = z.object({
  dir: z.string().min(1),
  host: z.string().min(1),
  port,
  replicaPort: port,
  instancePortBase: port,
  replicas: z.coerce
    .number({ error: 'expected a whole number' })
    .int('expected a whole number')
    .min(0, 'expected 0 or more')
    .max(8, 'at most 8'),
  user: z.string().regex(/^[a-z_][a-z0-9_]*$/, 'expected a lower-case role name'),
  poolSize: z.coerce
    .number({ error: 'expected a whole number' })
    .int('expected a whole number')
    .min(1, 'expected at least 1'),
  maxLagBytes: z.coerce
    .number({ error: 'expected a number of bytes' })
    .int('expected a whole number')
    .min(0, 'expected 0 or more'),
  logLevel: z.enum(LOG_LEVELS),
})

/** Option names as flags (`--replica-port`), environment variables and YAML keys. */
const OPTIONS: Record<keyof ClusterConfig, { flag: string; env: string; default: string }> = {
  dir: { flag: '--dir', env: 'TIDEPOOL_DIR', default: './tidepool-data' },
  host: { flag: '--host', env: 'TIDEPOOL_HOST', default: '127.0.0.1' },
  port: { flag: '--port', env: 'TIDEPOOL_PORT', default: '15432' },
  replicaPort: { flag: '--replica-port', env: 'TIDEPOOL_REPLICA_PORT', default: '15433' },
  instancePortBase: { flag: '--instance-port-base', env: 'TIDEPOOL_INSTANCE_PORT_BASE', default: '15440' },
  replicas: { flag: '--replicas', env: 'TIDEPOOL_REPLICAS', default: '2' },
  user: { flag: '--user', env: 'TIDEPOOL_USER', default: 'tidepool' },
  poolSize: { flag: '--pool-size', env: 'TIDEPOOL_POOL_SIZE', default: '20' },
  maxLagBytes: { flag: '--max-lag-bytes', env: 'TIDEPOOL_MAX_LAG_BYTES', default: String(16 * 1024 * 1024) },
  logLevel: { flag: '--log-level', env: 'TIDEPOOL_LOG_LEVEL', default: 'info' },
}

export const CLUSTER_OPTIONS = OPTIONS

/** The settings a cluster keeps in its directory: all but the directory itself. */
export type StoredKey = Exclude<keyof ClusterConfig, 'dir'>

/**
 * Settings fixed when a cluster is made. Its instances were made on these ports (and
 * replicas stream from them), its clients were given these addresses, its role and its
 * replicas exist: a later command may repeat them but not change them.
 */
export const FIXED_SETTINGS: readonly StoredKey[] = [
  'host',
  'port',
  'replicaPort',
  'instancePortBase',
  'replicas',
  'user',
]

/**
 * Settings a later `tidepool up` may change: the new value is stored, and each component
 * uses it from its next start (a running one keeps its value until `down` and `up`).
 */
export const CHANGEABLE_SETTINGS: readonly StoredKey[] = ['poolSize', 'maxLagBytes', 'logLevel']

/** Where a cluster keeps the settings it was made with (YAML, the keys of `--config`). */
export const settingsFile = (dir: string) => join(dir, 'settings.yaml')

/** The settings a cluster directory holds, and where they were read. */
export interface StoredSettings {
  values: Partial<Pick<ClusterConfig, StoredKey>>
  /** For messages: the settings file, or the topology of a cluster made before it existed. */
  source: string
  /** Whether they came from the settings file (else from the topology records). */
  fromFile: boolean
}

const STORED_KEYS = (Object.keys(OPTIONS) as (keyof ClusterConfig)[]).filter(
  (key): key is StoredKey => key !== 'dir',
)
const yamlKey = (key: keyof ClusterConfig) => OPTIONS[key].flag.slice(2)

/**
 * Each option from the first place that sets it: flags, `TIDEPOOL_*` environment
 * variables, the YAML file (`--config`, kebab-case keys), the settings stored in the
 * directory by the `tidepool up` that made its cluster, the default. A flag (or variable,
 * or file entry) that contradicts a stored {@link FIXED_SETTINGS fixed setting} is a
 * problem; one that changes a {@link CHANGEABLE_SETTINGS changeable one} wins, and
 * `tidepool up` stores it.
 *
 * @throws ConfigError listing every problem, e.g. `invalid --port "99999": expected a port from 1 to 65535`
 */
export function loadClusterConfig(input: {
  flags: Record<string, string | undefined>
  env: NodeJS.ProcessEnv
  file?: string
}): ClusterConfig {
  const problems: string[] = []
  let fromFile: Record<string, unknown> = {}
  if (input.file !== undefined) {
    try {
      const parsed = parseYaml(readFileSync(input.file, 'utf8')) as unknown
      if (parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed))
        fromFile = parsed as Record<string, unknown>
      else problems.push(`${input.file}: expected a mapping of option names to values`)
    } catch (error) {
      problems.push(`cannot read ${input.file}: ${(error as Error).message}`)
    }
  }
  const keys = Object.keys(OPTIONS) as (keyof ClusterConfig)[]
  for (const key of Object.keys(fromFile)) {
    if (!keys.some((option) => yamlKey(option) === key))
      problems.push(`${input.file}: unknown option "${key}"`)
  }
  // What the command was told: flags, then the environment, then the file.
  const given: Partial<Record<keyof ClusterConfig, { value: string; origin: string }>> = {}
  for (const key of keys) {
    const option = OPTIONS[key]
    const fileValue = fromFile[yamlKey(key)]
    const env = input.env[option.env]
    if (input.flags[key] !== undefined) given[key] = { value: input.flags[key], origin: option.flag }
    else if (env !== undefined && env !== '') given[key] = { value: env, origin: option.env }
    else if (fileValue !== undefined)
      given[key] = { value: String(fileValue), origin: `${yamlKey(key)} in ${input.file}` }
  }
  // The directory decides the rest: it may hold a cluster, made with settings of its own.
  let stored: StoredSettings | null = null
  const dir = given.dir?.value ?? OPTIONS.dir.default
  if (dir !== '') {
    try {
      stored = readStoredSettings(resolve(dir))
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error
      problems.push(...error.problems)
    }
  }
  const raw: Record<string, unknown> = {}
  const origin: Record<string, string> = {}
  for (const key of keys) {
    const storedValue = key === 'dir' ? undefined : stored?.values[key]
    if (given[key] !== undefined) {
      raw[key] = given[key].value
      origin[key] = given[key].origin
    } else if (storedValue !== undefined) {
      raw[key] = storedValue
      origin[key] = `${yamlKey(key)} in ${stored!.source}`
    } else {
      raw[key] = OPTIONS[key].default
      origin[key] = OPTIONS[key].flag
    }
  }
  const result = schema.safeParse(raw)
  for (const issue of result.error?.issues ?? []) {
    const key = issue.path[0] as keyof ClusterConfig
    problems.push(`invalid ${origin[key]} ${JSON.stringify(raw[key])}: ${issue.message}`)
  }
  if (result.success) {
    const config = { ...result.data, dir: resolve(result.data.dir) }
    problems.push(
      ...settingConflicts(config, stored, (key) => (given[key] === undefined ? null : given[key].origin)),
    )
    const ports = [config.port, config.replicaPort]
    for (let i = 0; i <= config.replicas; i++) ports.push(config.instancePortBase + i)
    if (new Set(ports).size !== ports.length) {
      problems.push(
        `the gateway ports (${config.port}, ${config.replicaPort}) and the instance ports (${config.instancePortBase}…) overlap`,
      )
    }
    if (problems.length === 0) return config
  }
  throw new ConfigError(problems)
}

/**
 * The fixed settings `config` would change, one problem each, naming the option (as
 * `originOf` tells where it was given; null: not given, so not compared), the value the
 * cluster was made with and the one given.
 */
export function settingConflicts(
  config: ClusterConfig,
  stored: StoredSettings | null,
  originOf: (key: StoredKey) => string | null = (key) => OPTIONS[key].flag,
): string[] {
  const problems: string[] = []
  for (const key of FIXED_SETTINGS) {
    const made = stored?.values[key]
    const origin = originOf(key)
    if (made === undefined || origin === null || made === config[key]) continue
    problems.push(
      `${origin} ${JSON.stringify(String(config[key]))} conflicts with the cluster in ${config.dir}, ` +
        `made with ${yamlKey(key)} ${made} (${stored!.source}), which cannot change: leave ${OPTIONS[key].flag} out or give ${made}`,
    )
  }
  return problems
}

/**
 * The settings the cluster in `dir` was made with: its settings file, or for a cluster
 * made before there was one, what its topology records tell (the gateway's addresses,
 * the role, the instances and the first one's port). Null when `dir` holds no cluster.
 *
 * @throws ConfigError when the file cannot be read or holds an invalid value
 */
export function readStoredSettings(dir: string): StoredSettings | null {
  const file = settingsFile(dir)
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return settingsOfTopology(dir)
    throw new ConfigError([`cannot read ${file}: ${(error as Error).message}`])
  }
  let parsed: unknown
  try {
    parsed = parseYaml(text)
  } catch (error) {
    throw new ConfigError([`cannot read ${file}: ${(error as Error).message}`])
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed))
    throw new ConfigError([`${file}: expected a mapping of option names to values`])
  const entries = parsed as Record<string, unknown>
  const problems: string[] = []
  for (const key of Object.keys(entries)) {
    if (!STORED_KEYS.some((option) => yamlKey(option) === key))
      problems.push(`${file}: unknown option "${key}"`)
  }
  const values: Record<string, unknown> = {}
  for (const key of STORED_KEYS) {
    const value = entries[yamlKey(key)]
    if (value === undefined || value === null) continue
    const checked = schema.shape[key].safeParse(value)
    if (checked.success) values[key] = checked.data
    else
      problems.push(
        `invalid ${yamlKey(key)} in ${file} ${JSON.stringify(value)}: ${checked.error.issues[0].message}`,
      )
  }
  if (problems.length > 0) throw new ConfigError(problems)
  return { values, source: file, fromFile: true }
}

/** What the topology of a cluster made before settings files existed tells of its settings. */
function settingsOfTopology(dir: string): StoredSettings | null {
  const topology = join(dir, 'topology')
  const cluster = readJson<ClusterRecord>(join(topology, 'cluster.json'))
  if (cluster === null) return null
  const values: StoredSettings['values'] = {
    host: cluster.gateway.host,
    port: cluster.gateway.port,
    replicaPort: cluster.gateway.replicaPort,
    user: cluster.user,
    replicas: cluster.instances.length - 1,
  }
  const first = cluster.instances[0]
  const record =
    first === undefined ? null : readJson<InstanceRecord>(join(topology, 'instances', `${first}.json`))
  if (record !== null) values.instancePortBase = record.port - Number(first.slice(2))
  return { values, source: `the records in ${topology}`, fromFile: false }
}

function readJson<T>(path: string): T | null {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as T
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null
    throw new ConfigError([`cannot read ${path}: ${(error as Error).message}`])
  }
}

/**
 * Writes `config`'s settings to its directory's settings file (atomically: a reader sees
 * the old file or the new one), so that later commands given only `--dir` find them.
 */
export async function writeStoredSettings(config: ClusterConfig): Promise<void> {
  const values: Record<string, unknown> = {}
  for (const key of STORED_KEYS) values[yamlKey(key)] = config[key]
  const file = settingsFile(config.dir)
  const text =
    '# The settings of the Tidepool cluster in this directory, written by tidepool up.\n' +
    '# Every tidepool command given this directory reads them. host, port, replica-port,\n' +
    '# instance-port-base, replicas and user are fixed when the cluster is made;\n' +
    '# tidepool up --pool-size, --max-lag-bytes or --log-level changes the others.\n' +
    stringifyYaml(values)
  await writeFile(`${file}.tmp`, text, { mode: 0o644 })
  await rename(`${file}.tmp`, file)
}
