import { FileTopology, type TopologySnapshot } from '../topology/index.ts'
import type { ClusterConfig } from './config.ts'
import { topologyDir } from './layout.ts'
import { isAlive } from './up.ts'

/** The cluster as its components last reported it, with the processes checked now. */
export async function status(config: ClusterConfig): Promise<TopologySnapshot> {
  const snapshot = await new FileTopology(topologyDir(config)).snapshot()
  for (const instance of snapshot.instances) {
    // A record its writer can no longer update tells what was, not what is.
    if (instance.health !== 'stopped' && !isAlive(instance.poolerPid)) {
      instance.health = 'stopped'
      instance.problem = 'its pooler is not running'
    }
  }
  snapshot.gateways = snapshot.gateways.filter((gateway) => isAlive(gateway.pid))
  return snapshot
}

/** A table for the terminal. */
export function formatStatus(snapshot: TopologySnapshot): string {
  if (snapshot.cluster === null) return 'no cluster here: run tidepool up\n'
  const rows: string[][] = [['component', 'role', 'health', 'pid', 'address', 'lag', 'restarts', 'note']]
  for (const gateway of snapshot.gateways) {
    rows.push([
      'gateway',
      '-',
      'healthy',
      String(gateway.pid),
      `${gateway.host}:${gateway.port} (replicas :${gateway.replicaPort})`,
      '-',
      '-',
      `${gateway.sessions} sessions`,
    ])
  }
  if (snapshot.gateways.length === 0) rows.push(['gateway', '-', 'stopped', '-', '-', '-', '-', ''])
  for (const instance of snapshot.instances) {
    rows.push([
      instance.name,
      instance.role,
      instance.health,
      instance.postgresPid === null ? '-' : String(instance.postgresPid),
      `${instance.host}:${instance.port}`,
      instance.role === 'replica' ? (instance.lagBytes === null ? '?' : `${instance.lagBytes} B`) : '-',
      String(instance.restarts),
      instance.problem ??
        `${instance.pool.leased}/${instance.pool.backends} backends leased${instance.pool.waiting > 0 ? `, ${instance.pool.waiting} waiting` : ''}`,
    ])
  }
  const widths = rows[0].map((_, column) => Math.max(...rows.map((row) => row[column].length)))
  return rows
    .map(
      (row) =>
        `${row
          .map((cell, column) => cell.padEnd(widths[column]))
          .join('  ')
          .trimEnd()}\n`,
    )
    .join('')
}
