import { readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { parse as parseYaml } from 'yaml'
import { z } from 'zod'
import { ConfigError, LOG_LEVELS, type LogLevel } from '../config/index.ts'

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

/**
 * Each option from the first place that sets it: flags, `TIDEPOOL_*` environment
 * variables, the YAML file (`--config`, kebab-case keys), the default.
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
    if (!keys.some((option) => OPTIONS[option].flag.slice(2) === key))
      problems.push(`${input.file}: unknown option "${key}"`)
  }
  const raw: Record<string, unknown> = {}
  const origin: Record<string, string> = {}
  for (const key of keys) {
    const option = OPTIONS[key]
    const fileValue = fromFile[option.flag.slice(2)]
    const env = input.env[option.env]
    if (input.flags[key] !== undefined) {
      raw[key] = input.flags[key]
      origin[key] = option.flag
    } else if (env !== undefined && env !== '') {
      raw[key] = env
      origin[key] = option.env
    } else if (fileValue !== undefined) {
      raw[key] = String(fileValue)
      origin[key] = `${option.flag.slice(2)} in ${input.file}`
    } else {
      raw[key] = option.default
      origin[key] = option.flag
    }
  }
  const result = schema.safeParse(raw)
  for (const issue of result.error?.issues ?? []) {
    const key = issue.path[0] as keyof ClusterConfig
    problems.push(`invalid ${origin[key]} ${JSON.stringify(raw[key])}: ${issue.message}`)
  }
  if (result.success) {
    const ports = [result.data.port, result.data.replicaPort]
    for (let i = 0; i <= result.data.replicas; i++) ports.push(result.data.instancePortBase + i)
    if (new Set(ports).size !== ports.length) {
      problems.push(
        `the gateway ports (${result.data.port}, ${result.data.replicaPort}) and the instance ports (${result.data.instancePortBase}…) overlap`,
      )
    }
  }
  if (problems.length > 0 || !result.success) throw new ConfigError(problems)
  return { ...result.data, dir: resolve(result.data.dir) }
}
