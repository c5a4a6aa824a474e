import { z } from 'zod'
import { DURATION_EXPECTED, parseDuration } from './duration.ts'
import { InvalidValueError } from './errors.ts'
import { parseUpstreamUrl, type UpstreamConfig } from './upstream.ts'

/** Log levels, most severe first (pino's names). */
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace'] as const
/** A pino log level. */
export type LogLevel = (typeof LOG_LEVELS)[number]

/** How the gateway authenticates clients. */
export const AUTH_METHODS = ['scram-sha-256', 'md5', 'trust'] as const
/** A client authentication method. */
export type AuthMethod = (typeof AUTH_METHODS)[number]

/** Validated configuration of one gateway process; every field is set. */
export interface GatewayConfig {
  /** TCP address clients connect to. */
  listen: { host: string; port: number }
  /** When set, also listen on the Unix socket `${unixSocketDir}/.s.PGSQL.${listen.port}` (an absolute path). */
  unixSocketDir: string | null
  /** The Postgres behind the gateway's own pooler; null when it leases from a pooler process. */
  upstream: UpstreamConfig | null
  /** A pooler process to lease backends from over its lease link, instead of pooling here. */
  pooler: LinkAddress | null
  /**
   * Backend pool limits. `idleTimeoutMs` and `maxLifetimeMs` of 0 mean "never";
   * `waitTimeoutMs` is how long a session may wait for a backend before it gets an error.
   */
  pool: {
    maxSize: number
    minSize: number
    idleTimeoutMs: number
    maxLifetimeMs: number
    waitTimeoutMs: number
    /** How many transactions may queue behind a busy backend's promised-idle one (0: none). */
    pipelineDepth: number
  }
  /** Client authentication; `cacheTtlMs` of 0 disables caching of verified credentials. */
  auth: { method: AuthMethod; cacheTtlMs: number }
  /** Server certificate and key (absolute paths, checked readable at load time), or null for no TLS. */
  tls: { certFile: string; keyFile: string } | null
  /** Bound on a client's whole startup phase: SSL negotiation, StartupMessage and authentication. */
  startupTimeoutMs: number
  /** End a session pinned to its backend (temporary tables, locks…) after this long idle; 0: never. */
  pinnedIdleTimeoutMs: number
  /** Client connections accepted at once; further ones are refused. */
  maxClientConnections: number
  /** Minimum level written to the log. */
  logLevel: LogLevel
}

/** Where a pooler serves its lease link: a Unix socket path, or a TCP address. */
export type LinkAddress = { path: string } | { host: string; port: number }

/** An absolute path is a Unix socket; host:port is TCP; anything else is null. */
export function parseLinkAddress(value: string): LinkAddress | null {
  if (value.startsWith('/')) return { path: value }
  const match = /^(?:\[([^\]]+)\]|([^\s:/[\]]+)):(\d{1,5})$/.exec(value.trim())
  const port = match === null ? 0 : Number(match[3])
  if (match === null || port < 1 || port > 65535) return null
  return { host: match[1] ?? match[2], port }
}

/** Node clamps larger timer delays to 1 ms (with only a warning), so no duration may exceed this. */
export const MAX_TIMER_MS = 2 ** 31 - 1

/** Describes one gateway option for every place it can be given. */
export interface OptionSpec {
  /** Kebab-case name: the flag is `--${name}`, the YAML key is `${name}`. */
  name: string
  /** Placeholder shown in help, e.g. `host:port`. */
  valueName: string
  /** Default as the user would type it, or null when there is none. */
  defaultValue: string | number | null
  /** One line for `--help` and the docs. */
  description: string
}

/**
 * Every gateway option, in help order. Keys are the camelCase names commander produces
 * for the flags, which are also the keys of {@link rawGatewayConfigSchema}.
 */
export const GATEWAY_OPTIONS = {
  listen: {
    name: 'listen',
    valueName: 'host:port',
    defaultValue: '127.0.0.1:15432',
    description: 'TCP address to accept clients on',
  },
  unixSocket: {
    name: 'unix-socket',
    valueName: 'dir',
    defaultValue: null,
    description: 'also accept clients on the Unix socket dir/.s.PGSQL.<port>',
  },
  upstream: {
    name: 'upstream',
    valueName: 'url',
    defaultValue: null,
    description:
      'Postgres to pool, as postgresql://user:password@host:port/dbname (required unless --pooler)',
  },
  pooler: {
    name: 'pooler',
    valueName: 'path|host:port',
    defaultValue: null,
    description:
      'lease backends from the pooler process serving its lease link here (tidepool pooler) instead of pooling in this process',
  },
  poolSize: {
    name: 'pool-size',
    valueName: 'n',
    defaultValue: 20,
    description: 'most backend connections to open',
  },
  minPoolSize: {
    name: 'min-pool-size',
    valueName: 'n',
    defaultValue: 0,
    description: 'backend connections to keep open even when idle',
  },
  idleTimeout: {
    name: 'idle-timeout',
    valueName: 'duration',
    defaultValue: '10m',
    description: 'close a backend idle this long (0: never)',
  },
  maxLifetime: {
    name: 'max-lifetime',
    valueName: 'duration',
    defaultValue: '1h',
    description: 'close a backend this old once released (0: never)',
  },
  waitTimeout: {
    name: 'wait-timeout',
    valueName: 'duration',
    defaultValue: '30s',
    description: 'fail a query that waited this long for a backend',
  },
  pipelineDepth: {
    name: 'pipeline-depth',
    valueName: 'n',
    defaultValue: 4,
    description:
      'transactions that may queue behind a busy backend whose statement is known to end idle (0: off)',
  },
  auth: {
    name: 'auth',
    valueName: 'method',
    defaultValue: 'scram-sha-256',
    description: `client authentication: ${AUTH_METHODS.join(', ')}`,
  },
  authCacheTtl: {
    name: 'auth-cache-ttl',
    valueName: 'duration',
    defaultValue: '60s',
    description: 'how long verified credentials are cached (0: no cache)',
  },
  tlsCert: {
    name: 'tls-cert',
    valueName: 'file',
    defaultValue: null,
    description: 'PEM server certificate; enables TLS (needs --tls-key)',
  },
  tlsKey: {
    name: 'tls-key',
    valueName: 'file',
    defaultValue: null,
    description: 'PEM private key for --tls-cert',
  },
  startupTimeout: {
    name: 'startup-timeout',
    valueName: 'duration',
    defaultValue: '10s',
    description: "limit on a client's whole startup and authentication",
  },
  pinnedIdleTimeout: {
    name: 'pinned-idle-timeout',
    valueName: 'duration',
    defaultValue: '10s',
    description:
      'end a session that holds a backend for its temp tables, locks, cursors or sequence state and idles this long (0: never)',
  },
  maxClientConnections: {
    name: 'max-client-connections',
    valueName: 'n',
    defaultValue: 10000,
    description: 'client connections accepted at once',
  },
  logLevel: {
    name: 'log-level',
    valueName: 'level',
    defaultValue: 'info',
    description: `log level: ${LOG_LEVELS.join(', ')}`,
  },
} as const satisfies Record<string, OptionSpec>

/** camelCase key of a gateway option. */
export type OptionKey = keyof typeof GATEWAY_OPTIONS

/** `--pool-size` for `poolSize`. */
export function optionFlag(key: OptionKey): string {
  return `--${GATEWAY_OPTIONS[key].name}`
}

/** `TIDEPOOL_POOL_SIZE` for `poolSize`. */
export function optionEnvVar(key: OptionKey): string {
  return `TIDEPOOL_${GATEWAY_OPTIONS[key].name.toUpperCase().replaceAll('-', '_')}`
}

// Field schemas. Values arrive as strings (flags, env) or YAML scalars, so each accepts
// both and gives one message saying what was expected; zod's generic texts
// ("expected number, received string") would not tell an operator what to type.

function integer(min: number, max = Number.MAX_SAFE_INTEGER) {
  const expected =
    max === Number.MAX_SAFE_INTEGER
      ? `expected an integer >= ${min}`
      : `expected an integer from ${min} to ${max}`
  return z
    .union(
      [
        z.number(),
        z
          .string()
          .regex(/^\s*\d+\s*$/)
          .transform(Number),
      ],
      { error: expected },
    )
    .pipe(z.int({ error: expected }).min(min, { error: expected }).max(max, { error: expected }))
}

function duration(min: number) {
  const range = `must be from ${min}ms to ${MAX_TIMER_MS}ms (about 596h)`
  return z
    .union([z.number(), z.string()], { error: DURATION_EXPECTED })
    .transform((value, ctx) => {
      try {
        return parseDuration(value)
      } catch (err) {
        if (!(err instanceof InvalidValueError)) throw err
        ctx.addIssue({ code: 'custom', message: err.reason })
        return z.NEVER
      }
    })
    .pipe(z.int().min(min, { error: range }).max(MAX_TIMER_MS, { error: range }))
}

const listenAddress = z.string({ error: 'expected host:port' }).transform((value, ctx) => {
  // host:port, or [ipv6]:port; the host is whatever Node's server.listen() accepts.
  const match = /^(?:\[([^\]]+)\]|([^\s:/[\]]+)):(\d{1,5})$/.exec(value.trim())
  const port = match === null ? 0 : Number(match[3])
  if (match === null || port < 1 || port > 65535) {
    ctx.addIssue({ code: 'custom', message: 'expected host:port with a port from 1 to 65535' })
    return z.NEVER
  }
  return { host: match[1] ?? match[2], port }
})

const upstreamUrl = z.string({ error: 'expected a postgresql:// URL' }).transform((value, ctx) => {
  try {
    return parseUpstreamUrl(value)
  } catch (err) {
    if (!(err instanceof InvalidValueError)) throw err
    ctx.addIssue({ code: 'custom', message: err.reason })
    return z.NEVER
  }
})

const filePath = z.string({ error: 'expected a path' }).min(1, { error: 'expected a path' })

function oneOf<const T extends readonly [string, ...string[]]>(values: T) {
  return z.enum(values, { error: `expected one of ${values.join(', ')}` })
}

/**
 * The flat option set (flags, env and YAML merged, defaults filled in), one key per
 * option. Paths are expected to be absolute already; the loader resolves them.
 */
export const rawGatewayConfigSchema = z.strictObject({
  listen: listenAddress,
  unixSocket: filePath.optional(),
  upstream: upstreamUrl.optional(),
  pooler: z
    .string({ error: 'expected a socket path or host:port' })
    .min(1, { error: 'expected a socket path or host:port' })
    .optional(),
  poolSize: integer(1),
  minPoolSize: integer(0),
  idleTimeout: duration(0),
  maxLifetime: duration(0),
  waitTimeout: duration(1),
  pipelineDepth: integer(0),
  auth: oneOf(AUTH_METHODS),
  authCacheTtl: duration(0),
  tlsCert: filePath.optional(),
  tlsKey: filePath.optional(),
  startupTimeout: duration(1),
  pinnedIdleTimeout: duration(0),
  maxClientConnections: integer(1),
  logLevel: oneOf(LOG_LEVELS),
} satisfies Record<OptionKey, z.ZodType>)

// sun_path holds 108 bytes on Linux including the terminating NUL.
const MAX_SOCKET_PATH = 107

/**
 * Validates the flat option set and shapes it into a {@link GatewayConfig}. Issue paths
 * name the {@link OptionKey} at fault, including for rules that span two options.
 * Whether TLS files are readable is checked by the loader, not here (no I/O in schemas).
 */
export const gatewayConfigSchema = rawGatewayConfigSchema
  .superRefine((raw, ctx) => {
    if (raw.upstream === undefined && raw.pooler === undefined) {
      ctx.addIssue({ code: 'custom', path: ['upstream'], message: 'required unless --pooler is given' })
    }
    if (raw.pooler !== undefined && parseLinkAddress(raw.pooler) === null) {
      ctx.addIssue({
        code: 'custom',
        path: ['pooler'],
        message: 'expected an absolute Unix socket path or host:port',
      })
    }
    if (raw.minPoolSize > raw.poolSize) {
      ctx.addIssue({
        code: 'custom',
        path: ['minPoolSize'],
        message: `must not exceed --pool-size (${raw.poolSize})`,
      })
    }
    if ((raw.tlsCert === undefined) !== (raw.tlsKey === undefined)) {
      const [given, missing] = raw.tlsCert === undefined ? ['tlsKey', '--tls-cert'] : ['tlsCert', '--tls-key']
      ctx.addIssue({ code: 'custom', path: [given], message: `${missing} must be given too` })
    }
    if (raw.unixSocket !== undefined) {
      const socketPath = `${raw.unixSocket}/.s.PGSQL.${raw.listen.port}`
      if (Buffer.byteLength(socketPath) > MAX_SOCKET_PATH) {
        ctx.addIssue({
          code: 'custom',
          path: ['unixSocket'],
          message: `socket path ${socketPath} is longer than the ${MAX_SOCKET_PATH}-byte limit of Unix sockets`,
        })
      }
    }
  })
  .transform(
    (raw): GatewayConfig => ({
      listen: raw.listen,
      unixSocketDir: raw.unixSocket ?? null,
      upstream: raw.upstream ?? null,
      pooler: raw.pooler === undefined ? null : parseLinkAddress(raw.pooler),
      pool: {
        maxSize: raw.poolSize,
        minSize: raw.minPoolSize,
        idleTimeoutMs: raw.idleTimeout,
        maxLifetimeMs: raw.maxLifetime,
        waitTimeoutMs: raw.waitTimeout,
        pipelineDepth: raw.pipelineDepth,
      },
      auth: { method: raw.auth, cacheTtlMs: raw.authCacheTtl },
      tls:
        raw.tlsCert !== undefined && raw.tlsKey !== undefined
          ? { certFile: raw.tlsCert, keyFile: raw.tlsKey }
          : null,
      startupTimeoutMs: raw.startupTimeout,
      pinnedIdleTimeoutMs: raw.pinnedIdleTimeout,
      maxClientConnections: raw.maxClientConnections,
      logLevel: raw.logLevel,
    }),
  )
