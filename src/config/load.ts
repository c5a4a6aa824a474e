import { closeSync, fstatSync, openSync, readFileSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import { parse as parseYaml } from 'yaml'
import { ConfigError } from './errors.ts'
import {
  GATEWAY_OPTIONS,
  type GatewayConfig,
  gatewayConfigSchema,
  type OptionKey,
  optionEnvVar,
  optionFlag,
} from './schema.ts'
import { redactUpstreamUrl } from './upstream.ts'

/** Inputs of {@link loadGatewayConfig}; all are explicit so tests need no global state. */
export interface LoadGatewayConfigInput {
  /** YAML file of flat kebab-case keys; when absent, `env.TIDEPOOL_CONFIG` is used if set. */
  file?: string
  /** Parsed command-line options keyed by camelCase option name (commander's `opts()`); `config` is ignored. */
  flags: Record<string, unknown>
  /** Environment; only `TIDEPOOL_*` variables are read, and empty ones count as unset. */
  env: NodeJS.ProcessEnv
}

type Source =
  | { kind: 'flag' }
  | { kind: 'env'; name: string }
  | { kind: 'file'; file: string }
  | { kind: 'default' }

interface Given {
  value: unknown
  source: Source
}

const KEYS = Object.keys(GATEWAY_OPTIONS) as OptionKey[]
const KEY_BY_NAME = new Map<string, OptionKey>(KEYS.map((key) => [GATEWAY_OPTIONS[key].name, key]))
// Options holding paths; see resolvePath().
const PATH_KEYS: ReadonlySet<OptionKey> = new Set(['unixSocket', 'tlsCert', 'tlsKey'])

/**
 * Builds the gateway configuration. Each option is taken from the first place that sets
 * it: flags, then `TIDEPOOL_<OPTION>` environment variables, then the YAML file, then
 * the default.
 *
 * @throws ConfigError listing every problem found, one line each, e.g.
 *   `invalid --listen "abc": expected host:port with a port from 1 to 65535`.
 */
export function loadGatewayConfig(input: LoadGatewayConfigInput): GatewayConfig {
  const problems: string[] = []
  const file = input.file ?? nonEmpty(input.env.TIDEPOOL_CONFIG)
  const fromFile = file === undefined ? undefined : readConfigFile(file, problems)
  for (const key of Object.keys(input.flags)) {
    if (key !== 'config' && !Object.hasOwn(GATEWAY_OPTIONS, key)) {
      problems.push(`unknown option ${JSON.stringify(key)}`)
    }
  }

  const given = new Map(KEYS.map((key) => [key, choose(key, input, fromFile)]))
  const raw: Record<string, unknown> = {}
  for (const [key, entry] of given) raw[key] = PATH_KEYS.has(key) ? resolvePath(entry) : entry.value

  const optionProblems: Array<[OptionKey, string]> = []
  for (const key of ['tlsCert', 'tlsKey'] as const) {
    const path = raw[key]
    const reason = typeof path === 'string' && path !== '' ? unreadableFile(path) : undefined
    if (reason !== undefined) optionProblems.push([key, `${describe(key, given.get(key)!)}: ${reason}`])
  }
  // Checked here, not only by the schema, whose cross-option rules run only when every
  // option parsed: a missing upstream is reported along with every other problem.
  const noBackends = raw.upstream === undefined && raw.pooler === undefined
  if (noBackends) optionProblems.push(['upstream', missing('upstream')])
  const result = gatewayConfigSchema.safeParse(raw)
  for (const issue of result.error?.issues ?? []) {
    const key = issue.path[0] as OptionKey
    if (key === 'upstream' && noBackends) continue
    const entry = given.get(key)!
    optionProblems.push([
      key,
      entry.value === undefined ? missing(key) : `${describe(key, entry)}: ${issue.message}`,
    ])
  }
  // Report in the order options appear in --help, whichever check found them.
  optionProblems.sort(([a], [b]) => KEYS.indexOf(a) - KEYS.indexOf(b))
  problems.push(...optionProblems.map(([, line]) => line))

  if (problems.length > 0 || !result.success) throw new ConfigError(problems)
  return result.data
}

/** The value of one option from the first source that sets it: flag, env, file, default. */
function choose(key: OptionKey, input: LoadGatewayConfigInput, fromFile: ConfigFile | undefined): Given {
  const flag = input.flags[key]
  if (flag !== undefined && flag !== null) return { value: flag, source: { kind: 'flag' } }
  const envName = optionEnvVar(key)
  const env = nonEmpty(input.env[envName])
  if (env !== undefined) return { value: env, source: { kind: 'env', name: envName } }
  // YAML `key: ~` (null) means "not set here", like an absent key.
  const fileValue = fromFile?.values.get(key)
  if (fromFile !== undefined && fileValue !== undefined && fileValue !== null) {
    return { value: fileValue, source: { kind: 'file', file: fromFile.file } }
  }
  return { value: GATEWAY_OPTIONS[key].defaultValue ?? undefined, source: { kind: 'default' } }
}

// Relative paths from a YAML file are resolved against the file's directory, so a config
// file can sit next to its certificates; others against the working directory. Either
// way the gateway gets absolute paths and never depends on its cwd.
function resolvePath({ value, source }: Given): unknown {
  if (typeof value !== 'string' || value === '') return value
  return resolve(source.kind === 'file' ? dirname(resolve(source.file)) : '.', value)
}

/** `invalid --pool-size "x" (from TIDEPOOL_POOL_SIZE)`: the option, the value as given, where from. */
function describe(key: OptionKey, { value, source }: Given): string {
  // Never echo a password back into a terminal or a log.
  const shown = key === 'upstream' && typeof value === 'string' ? redactUpstreamUrl(value) : value
  let where = ''
  if (source.kind === 'env') where = ` (from ${source.name})`
  else if (source.kind === 'file') where = ` (from ${GATEWAY_OPTIONS[key].name} in ${source.file})`
  else if (source.kind === 'default') where = ' (the default)'
  return `invalid ${optionFlag(key)} ${JSON.stringify(shown)}${where}`
}

function missing(key: OptionKey): string {
  const name = GATEWAY_OPTIONS[key].name
  return `missing ${optionFlag(key)}: set it with ${optionFlag(key)}, ${optionEnvVar(key)} or "${name}:" in the config file`
}

interface ConfigFile {
  file: string
  values: Map<OptionKey, unknown>
}

function readConfigFile(file: string, problems: string[]): ConfigFile {
  const values = new Map<OptionKey, unknown>()
  const parsed = { file, values }
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    problems.push(`cannot read config file ${file}: ${fileErrorReason(err)}`)
    return parsed
  }
  let doc: unknown
  try {
    doc = parseYaml(text)
  } catch (err) {
    // yaml's messages carry the line and column, and a snippet of the offending text.
    problems.push(`cannot parse config file ${file}: ${(err as Error).message}`)
    return parsed
  }
  if (doc === null || doc === undefined) return parsed // an empty file sets nothing
  if (typeof doc !== 'object' || Array.isArray(doc)) {
    problems.push(`config file ${file} must be a mapping of option names to values, e.g. "pool-size: 20"`)
    return parsed
  }
  for (const [name, value] of Object.entries(doc)) {
    const key = KEY_BY_NAME.get(name)
    if (key === undefined) {
      problems.push(
        `unknown key ${JSON.stringify(name)} in ${file} (keys are the option names without --, e.g. pool-size)`,
      )
    } else {
      values.set(key, value)
    }
  }
  return parsed
}

/** Why `path` cannot serve as a certificate or key file, or undefined when it can. */
function unreadableFile(path: string): string | undefined {
  // Open it rather than stat it: that is the check that matches what TLS setup will do.
  let fd: number | undefined
  try {
    fd = openSync(path, 'r')
    if (!fstatSync(fd).isFile()) return `${path} is not a regular file`
    return undefined
  } catch (err) {
    return `cannot read ${path}: ${fileErrorReason(err)}`
  } finally {
    if (fd !== undefined) closeSync(fd)
  }
}

function fileErrorReason(err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code
  if (code === 'ENOENT') return 'no such file'
  if (code === 'EACCES' || code === 'EPERM') return 'permission denied'
  if (code === 'EISDIR') return 'is a directory'
  return code ?? String(err)
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value === '' ? undefined : value
}
