import { join } from 'node:path'
import type { ClusterConfig } from './config.ts'

/** Where each thing of a cluster lives under its directory. */
export interface InstanceLayout {
  name: string
  port: number
  dataDir: string
  /** Private Unix socket directory (the pooler's and gateway's way in). */
  socketDir: string
  logFile: string
}

export function instanceNames(config: ClusterConfig): string[] {
  return Array.from({ length: config.replicas + 1 }, (_, i) => `pg${i}`)
}

export function instanceLayout(config: ClusterConfig, name: string): InstanceLayout {
  const index = Number(name.slice(2))
  return {
    name,
    port: config.instancePortBase + index,
    dataDir: join(config.dir, name, 'data'),
    socketDir: join(config.dir, 'run', name),
    logFile: join(config.dir, 'log', `${name}-postgres.log`),
  }
}

export const topologyDir = (config: ClusterConfig) => join(config.dir, 'topology')
export const passwordFile = (config: ClusterConfig) => join(config.dir, 'password')
export const componentLog = (config: ClusterConfig, component: string) =>
  join(config.dir, 'log', `${component}.log`)

/** The Unix socket where an instance's pooler serves its lease link, beside Postgres's own. */
export const linkPath = (layout: InstanceLayout) => join(layout.socketDir, `.s.TIDEPOOL.${layout.port}`)
