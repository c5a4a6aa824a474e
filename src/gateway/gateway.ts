import { readFileSync } from 'node:fs'
import { unlink } from 'node:fs/promises'
import net from 'node:net'
import tls from 'node:tls'
import type { GatewayConfig } from '../config/index.ts'
import { describeAddress, RemotePooler } from '../link/index.ts'
import type { Logger } from '../log.ts'
import { type Endpoint, Pooler, type PoolerClient } from '../pooler/index.ts'
import { PgError, SqlState } from '../protocol/index.ts'
import { ReportedParameters } from './parameters.ts'
import type { ClientSession } from './relay-session.ts'
import { acceptClient, type SessionRoute, type StartupContext } from './startup.ts'
import { StatementRegistries } from './statements.ts'

/** Lease link connections a gateway keeps to a pooler process. */
const LINK_CONNECTIONS = 2

/** A running gateway. */
export interface Gateway {
  /** The TCP port it listens on (useful when configured with port 0). */
  readonly port: number
  readonly pooler: PoolerClient
  /** Its pooler and per-pooler state, for another gateway to send sessions to. */
  readonly route: SessionRoute
  /** Sessions currently open. */
  sessionCount(): number
  /** Stops accepting, ends every session and closes every backend. */
  close(): Promise<void>
}

/** How a gateway inside a cluster finds its servers. */
export interface GatewayRouting {
  /**
   * The pooler sessions lease from, when it is not the gateway's own: a remote pooler
   * over the lease link, or a router over several. The gateway does not close it.
   */
  pooler?: PoolerClient
  /** For the gateway's own pooler: where each new backend connection goes (see PoolerOptions.route). */
  route?: () => Endpoint
  /** A gateway whose backends serve the sessions that ask for read-only. */
  readOnly?: Gateway
}

/**
 * Starts the gateway: client listeners (TCP and optionally a Unix socket), sessions,
 * and the pooler they lease backends from (in this process unless routing gives one).
 */
export async function startGateway(
  config: GatewayConfig,
  log: Logger,
  routing: GatewayRouting = {},
): Promise<Gateway> {
  const { upstream } = config
  const ownPooler =
    routing.pooler !== undefined
      ? null
      : config.pooler !== null
        ? new RemotePooler(
            {
              address: config.pooler,
              connections: LINK_CONNECTIONS,
              waitTimeoutMs: config.pool.waitTimeoutMs,
            },
            log.child({ pooler: describeAddress(config.pooler) }),
          )
        : new Pooler(
            {
              upstream: upstream!,
              route: routing.route,
              pool: config.pool,
              authCacheTtlMs: config.auth.cacheTtlMs,
            },
            log,
          )
  const pooler = routing.pooler ?? ownPooler!
  const route: SessionRoute = {
    pooler,
    parameters: new ReportedParameters(pooler),
    statements: new StatementRegistries(),
  }
  const sessions = new Map<number, ClientSession>()
  let lastSessionId = 0
  const secureContext =
    config.tls === null
      ? null
      : tls.createSecureContext({
          cert: readFileSync(config.tls.certFile),
          key: readFileSync(config.tls.keyFile),
        })
  const ctx: StartupContext = {
    ...route,
    authMethod: config.auth.method,
    readOnly: routing.readOnly?.route ?? null,
    pipelining: pooler.pipelining,
    secureContext,
    startupTimeoutMs: config.startupTimeoutMs,
    pinnedIdleTimeoutMs: config.pinnedIdleTimeoutMs,
    log,
    maxClientConnections: config.maxClientConnections,
    sessionCount: () => sessions.size,
    nextSessionId() {
      // Session ids double as the BackendKeyData process id: positive int32, never reused while open.
      do lastSessionId = lastSessionId >= 0x7ffffffe ? 1 : lastSessionId + 1
      while (sessions.has(lastSessionId))
      return lastSessionId
    },
    register: (session) => sessions.set(session.id, session),
    unregister: (session) => sessions.delete(session.id),
    cancel(processId, secretKey) {
      const session = sessions.get(processId)
      // A wrong key does nothing, and says nothing, as in PostgreSQL.
      if (session !== undefined && session.secretKey === secretKey) session.cancel()
    },
  }
  /** Connections still in startup, so that shutdown can end them too. */
  const starting = new Set<net.Socket>()
  const onConnection = (socket: net.Socket): void => {
    socket.on('error', () => {})
    starting.add(socket)
    acceptClient(socket, ctx).finally(() => starting.delete(socket))
  }
  const servers: net.Server[] = []
  const tcp = net.createServer({ noDelay: true }, onConnection)
  await listen(tcp, { host: config.listen.host, port: config.listen.port, backlog: 4096 })
  servers.push(tcp)
  const port = (tcp.address() as net.AddressInfo).port
  let socketPath: string | null = null
  if (config.unixSocketDir !== null) {
    socketPath = `${config.unixSocketDir}/.s.PGSQL.${port}`
    await unlink(socketPath).catch(() => {})
    const unix = net.createServer(onConnection)
    await listen(unix, { path: socketPath, backlog: 4096 })
    servers.push(unix)
  }
  log.info({ listen: `${config.listen.host}:${port}`, socket: socketPath }, 'gateway listening')

  return {
    port,
    pooler,
    route,
    sessionCount: () => sessions.size,
    async close() {
      // server.close() waits for every connection to end: end them all first.
      const closed = Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))))
      for (const socket of starting) socket.destroy()
      for (const session of [...sessions.values()]) {
        session.fatal(
          new PgError(SqlState.AdminShutdown, 'terminating connection due to administrator command'),
        )
      }
      await closed
      await ownPooler?.close()
    },
  }
}

function listen(server: net.Server, options: net.ListenOptions): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(options, () => {
      server.off('error', reject)
      resolve()
    })
  })
}
