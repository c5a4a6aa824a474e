import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Logger } from '../log.ts'
import { stop } from '../pgctl/index.ts'
import { FileTopology } from '../topology/index.ts'
import type { ClusterConfig } from './config.ts'
import { exists } from './files.ts'
import { instanceLayout, topologyDir } from './layout.ts'
import { isAlive } from './up.ts'

const STOP_TIMEOUT_MS = 60_000

/**
 * Stops the cluster: the gateway first (sessions end with an admin-shutdown error), then
 * each pooler, which stops its Postgres cleanly. A Postgres whose pooler is gone is
 * stopped directly. The data stays; `tidepool up` starts it all again.
 *
 * @returns what was stopped, for the operator
 */
export async function down(config: ClusterConfig, log: Logger): Promise<string[]> {
  const topology = new FileTopology(topologyDir(config))
  const snapshot = await topology.snapshot()
  const stopped: string[] = []
  const gatewayPids = snapshot.gateways.map((gateway) => gateway.pid).filter(isAlive)
  await terminate(gatewayPids)
  if (gatewayPids.length > 0) stopped.push(`gateway (pid ${gatewayPids.join(', ')})`)
  for (const gateway of snapshot.gateways) await topology.removeGateway(gateway.name)

  const running = snapshot.instances.filter((instance) => isAlive(instance.poolerPid))
  await terminate(running.map((instance) => instance.poolerPid!))
  for (const instance of running)
    stopped.push(`${instance.name} (pooler pid ${instance.poolerPid} and its Postgres)`)
  // A pooler killed hard leaves its Postgres running: stop that too.
  for (const name of snapshot.cluster?.instances ?? snapshot.instances.map((instance) => instance.name)) {
    const layout = instanceLayout(config, name)
    if (await exists(join(layout.dataDir, 'postmaster.pid'))) {
      log.info({ instance: name }, 'stopping a Postgres left without its pooler')
      await stop({ dataDir: layout.dataDir })
      stopped.push(`${name} Postgres`)
    }
  }
  return stopped
}

/** SIGTERM, then SIGKILL whatever still runs after STOP_TIMEOUT_MS. */
async function terminate(pids: number[]): Promise<void> {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGTERM')
    } catch {
      // gone already
    }
  }
  const deadline = Date.now() + STOP_TIMEOUT_MS
  while (pids.some(isAlive) && Date.now() < deadline) await sleep(50)
  for (const pid of pids.filter(isAlive)) process.kill(pid, 'SIGKILL')
}
