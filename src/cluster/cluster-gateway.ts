import { type GatewayConfig, loadGatewayConfig } from '../config/index.ts'
import { type Gateway, RoutedPooler, startGateway } from '../gateway/index.ts'
import { RemotePooler } from '../link/index.ts'
import type { Logger } from '../log.ts'
import { FileTopology, type InstanceRecord, primaryOf, readableReplicas } from '../topology/index.ts'
import type { ClusterConfig } from './config.ts'
import { instanceLayout, linkPath, topologyDir } from './layout.ts'

/** How often the gateway's record (sessions, liveness) is refreshed. */
const RECORD_INTERVAL_MS = 1_000

/** Lease link connections to each pooler. */
const LINK_CONNECTIONS = 2

/**
 * The gateway process of a cluster: sessions on `port` go to the primary, except those
 * that ask for read-only (`target_session_attrs=read-only` as a startup parameter, or
 * `default_transaction_read_only=on`), which go where sessions on `replicaPort` go: the
 * least lagging healthy replica (the primary when there is none). It holds no backend
 * connection itself: every lease is asked of the pooler of the instance the topology
 * names at that moment, over that pooler's lease link, so a replica that falls behind or
 * dies gets no new leases. Clients authenticate with SCRAM against the cluster's roles.
 */
export async function runClusterGateway(config: ClusterConfig, log: Logger): Promise<void> {
  const topology = new FileTopology(topologyDir(config))
  let snapshot = await topology.snapshot()
  const primary = primaryOf(snapshot)
  if (primary === null) throw new Error('the topology has no primary: run tidepool up')
  const unwatch = topology.watch((next) => {
    snapshot = next
  })
  const defaults = clusterGatewayConfig(config, config.port, primary)
  const poolers = new Map<string, RemotePooler>()
  const poolerOf = (instance: InstanceRecord): RemotePooler => {
    const path = instance.poolerLink ?? linkPath(instanceLayout(config, instance.name))
    let pooler = poolers.get(path)
    if (pooler === undefined) {
      pooler = new RemotePooler(
        { address: { path }, connections: LINK_CONNECTIONS, waitTimeoutMs: defaults.pool.waitTimeoutMs },
        log.child({ pooler: instance.name }),
      )
      poolers.set(path, pooler)
    }
    return pooler
  }
  const toPrimary = new RoutedPooler(() => poolerOf(primaryOf(snapshot) ?? primary))
  const toReplica = new RoutedPooler(() =>
    poolerOf(readableReplicas(snapshot, config.maxLagBytes)[0] ?? primaryOf(snapshot) ?? primary),
  )
  const gateways: Gateway[] = []
  try {
    const readOnly = await startGateway(
      clusterGatewayConfig(config, config.replicaPort, primary),
      log.child({ listener: 'replica' }),
      { pooler: toReplica },
    )
    gateways.push(readOnly)
    gateways.push(
      await startGateway(defaults, log.child({ listener: 'primary' }), { pooler: toPrimary, readOnly }),
    )
  } catch (error) {
    unwatch()
    for (const gateway of gateways) await gateway.close()
    for (const pooler of poolers.values()) await pooler.close()
    throw error
  }
  log.info({ primary: primary.name }, 'cluster gateway serving')

  const name = `gateway-${config.port}`
  const publish = () =>
    topology
      .putGateway({
        name,
        pid: process.pid,
        host: config.host,
        port: config.port,
        replicaPort: config.replicaPort,
        sessions: gateways.reduce((sum, gateway) => sum + gateway.sessionCount(), 0),
        updatedAt: new Date().toISOString(),
      })
      .catch((error: Error) => log.error({ err: error.message }, 'cannot write the topology record'))
  await publish()
  const timer = setInterval(publish, RECORD_INTERVAL_MS)
  await new Promise<void>((resolve) => {
    process.once('SIGTERM', resolve)
    process.once('SIGINT', resolve)
  })
  clearInterval(timer)
  unwatch()
  log.info('stopping')
  await Promise.all(gateways.map((gateway) => gateway.close()))
  for (const pooler of poolers.values()) await pooler.close()
  await topology.removeGateway(name)
}

/**
 * Gateway settings for a cluster listener, and the pool settings its instances' poolers
 * use (`upstream` is the instance's private socket, where local users are trusted).
 */
export function clusterGatewayConfig(
  config: ClusterConfig,
  port: number,
  instance: { socketDir: string; port: number },
): GatewayConfig {
  const socket = encodeURIComponent(instance.socketDir)
  return loadGatewayConfig({
    flags: {
      listen: `${config.host}:${port}`,
      upstream: `postgresql://postgres@/postgres?host=${socket}&port=${instance.port}`,
      poolSize: String(config.poolSize),
      auth: 'scram-sha-256',
      logLevel: config.logLevel,
    },
    env: {},
  })
}
