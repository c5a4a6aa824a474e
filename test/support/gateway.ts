import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { GatewayConfig } from '../../src/config/index.ts'
import { type Gateway, startGateway } from '../../src/gateway/index.ts'
import { RemotePooler, serveLeaseLink } from '../../src/link/index.ts'
import { createLogger } from '../../src/log.ts'
import { Pooler } from '../../src/pooler/index.ts'
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
  /**
   * How sessions reach the pool: 'in-process' (the gateway's own pooler) or 'link' (a
   * pooler serving the lease link on a Unix socket). Default: TIDEPOOL_TEST_TRANSPORT,
   * else in-process, so that a whole suite can be run over the link.
   */
  transport?: 'in-process' | 'link'
}

/** The transport tests use when they do not choose one. */
export const defaultTransport = process.env.TIDEPOOL_TEST_TRANSPORT === 'link' ? 'link' : 'in-process'

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
    pooler: null,
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
  const log = createLogger(process.env.TIDEPOOL_TEST_LOG === '1' ? 'debug' : 'error')
  if ((options.transport ?? defaultTransport) === 'in-process') return startGateway(config, log)
  // The pooler's side in this process too, but reached only through the link's socket.
  const pooler = new Pooler(
    { upstream, pool: config.pool, authCacheTtlMs: config.auth.cacheTtlMs },
    log.child({ component: 'pooler' }),
  )
  const dir = mkdtempSync(join(tmpdir(), 'tidepool-link-'))
  const server = await serveLeaseLink(pooler, { path: join(dir, 'link.sock') }, log)
  const remote = new RemotePooler(
    { address: server.address, connections: 2, waitTimeoutMs: config.pool.waitTimeoutMs },
    log.child({ component: 'link' }),
  )
  const gateway = await startGateway(config, log, { pooler: remote })
  return {
    ...gateway,
    // Tests read pool counters, which live with the pools.
    pooler,
    sessionCount: () => gateway.sessionCount(),
    async close() {
      await gateway.close()
      await remote.close()
      await server.close()
      await pooler.close()
      rmSync(dir, { recursive: true, force: true })
    },
  }
}
