import type { GatewayConfig } from '../../src/config/index.ts'
import { type Gateway, startGateway } from '../../src/gateway/index.ts'
import { createLogger } from '../../src/log.ts'
import type { TestPostgres } from './postgres.ts'

/** Options a test may change; everything else gets test-friendly defaults. */
export interface TestGatewayOptions {
  poolSize?: number
  minPoolSize?: number
  waitTimeoutMs?: number
  auth?: GatewayConfig['auth']['method']
  tls?: GatewayConfig['tls']
  /** Connect upstream over TCP as this user/password instead of the trusted Unix socket. */
  upstreamTcp?: { user: string; password: string }
  maxLifetimeMs?: number
  idleTimeoutMs?: number
  pipelineDepth?: number
  pinnedIdleTimeoutMs?: number
  /** Also listen on `<dir>/.s.PGSQL.<port>`. */
  unixSocketDir?: string
}

/** A gateway on a random loopback port in front of `pg`, in this process. */
export async function startTestGateway(pg: TestPostgres, options: TestGatewayOptions = {}): Promise<Gateway> {
  const upstream = options.upstreamTcp
    ? {
        host: '127.0.0.1',
        port: pg.port,
        user: options.upstreamTcp.user,
        password: options.upstreamTcp.password,
        database: 'postgres',
      }
    : { socketDir: pg.socketDir, port: pg.port, user: 'postgres', database: 'postgres' }
  const config: GatewayConfig = {
    listen: { host: '127.0.0.1', port: 0 },
    unixSocketDir: options.unixSocketDir ?? null,
    upstream,
    pool: {
      maxSize: options.poolSize ?? 5,
      minSize: options.minPoolSize ?? 0,
      idleTimeoutMs: options.idleTimeoutMs ?? 60_000,
      maxLifetimeMs: options.maxLifetimeMs ?? 3_600_000,
      waitTimeoutMs: options.waitTimeoutMs ?? 30_000,
      pipelineDepth: options.pipelineDepth ?? 4,
    },
    auth: { method: options.auth ?? 'trust', cacheTtlMs: 1000 },
    tls: options.tls ?? null,
    startupTimeoutMs: 10_000,
    pinnedIdleTimeoutMs: options.pinnedIdleTimeoutMs ?? 0,
    maxClientConnections: 10_000,
    logLevel: 'warn',
  }
  return startGateway(config, createLogger(process.env.TIDEPOOL_TEST_LOG === '1' ? 'debug' : 'error'))
}
