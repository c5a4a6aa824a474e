import { type GatewayConfig, loadGatewayConfig } from '../config/index.ts'
import { type Gateway, startGateway } from '../gateway/index.ts'
import type { Logger } from '../log.ts'
import type { Endpoint } from '../pooler/index.ts'
import { FileTopology, type InstanceRecord, primaryOf, readableReplicas } from '../topology/index.ts'
import type { ClusterConfig } from './config.ts'
import { topologyDir } from './layout.ts'

/** How often the gateway's record (sessions, liveness) is refreshed. */
const RECORD_INTERVAL_MS = 1_000

/**
 * The gateway process of a cluster: sessions on `port` go to the primary, except those
 * that ask for read-only (`target_session_attrs=read-only` as a startup parameter, or
 * `default_transaction_read_only=on`), which go where sessions on `replicaPort` go: the
 * least lagging healthy replica (the primary when there is none). Both are looked up in
 * the topology at every new backend connection, so a replica that falls behind or dies
 * gets no new ones. Clients authenticate with SCRAM against
 * the cluster's roles; backends are reached over the instances' private sockets.
 */
export async function runClusterGateway(config: ClusterConfig, log: Logger): Promise<void> {
  const topology = new FileTopology(topologyDir(config))
  let snapshot = await topology.snapshot()
  const primary = primaryOf(snapshot)
  if (primary === null) throw new Error('the topology has no primary: run tidepool up')
  const replica = readableReplicas(snapshot, config.maxLagBytes)[0] ?? primary
  const unwatch = topology.watch((next) => {
    snapshot = next
  })
  // Each new backend connection goes where the topology says now: the primary, or the
  // least lagging healthy replica (the primary when none qualifies).
  const toPrimary = () => endpointOf(primaryOf(snapshot) ?? primary)
  const toReplica = () =>
    endpointOf(readableReplicas(snapshot, config.maxLagBytes)[0] ?? primaryOf(snapshot) ?? primary)
  const gateways: Gateway[] = []
  try {
    const readOnly = await startGateway(
      gatewayConfig(config, config.replicaPort, replica),
      log.child({ listener: 'replica' }),
      {
        route: toReplica,
      },
    )
    gateways.push(readOnly)
    gateways.push(
      await startGateway(gatewayConfig(config, config.port, primary), log.child({ listener: 'primary' }), {
        route: toPrimary,
        readOnly,
      }),
    )
  } catch (error) {
    unwatch()
    for (const gateway of gateways) await gateway.close()
    throw error
  }
  log.info({ primary: primary.name, replica: replica.name }, 'cluster gateway serving')

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
        ...poolUse(gateways),
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
  await topology.removeGateway(name)
}

function poolUse(gateways: Gateway[]): { backends: number; leased: number } {
  let backends = 0
  let leased = 0
  for (const gateway of gateways) {
    for (const pool of gateway.pooler.stats()) {
      backends += pool.size
      leased += pool.leased
    }
  }
  return { backends, leased }
}

function endpointOf(instance: InstanceRecord): Endpoint {
  return { socketDir: instance.socketDir, port: instance.port }
}

function gatewayConfig(config: ClusterConfig, port: number, instance: InstanceRecord): GatewayConfig {
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
