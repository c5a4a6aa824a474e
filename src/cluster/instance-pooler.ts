import { serveLeaseLink } from '../link/index.ts'
import type { Logger } from '../log.ts'
import { prepareServiceDir } from '../pgctl/index.ts'
import { Pooler } from '../pooler/index.ts'
import { clusterGatewayConfig } from './cluster-gateway.ts'
import type { ClusterConfig } from './config.ts'
import { instanceLayout, linkPath } from './layout.ts'
import { superviseInstance } from './supervisor.ts'

/**
 * The pooler process of one instance: it owns every backend connection to its Postgres
 * (pools per database and user, the shared LISTEN connection, role lookups), serves them
 * to gateways over the lease link on a private Unix socket, and supervises Postgres.
 */
export async function runInstancePooler(config: ClusterConfig, name: string, log: Logger): Promise<void> {
  const layout = instanceLayout(config, name)
  const settings = clusterGatewayConfig(config, config.port, layout)
  const pooler = new Pooler(
    { upstream: settings.upstream!, pool: settings.pool, authCacheTtlMs: settings.auth.cacheTtlMs },
    log,
  )
  // Postgres makes its socket directory when it starts; the link's socket goes there first.
  await prepareServiceDir(layout.socketDir, 0o700)
  const link = await serveLeaseLink(pooler, { path: linkPath(layout) }, log)
  const use = () => {
    const total = { backends: 0, leased: 0, waiting: 0 }
    for (const pool of pooler.stats()) {
      total.backends += pool.size
      total.leased += pool.leased
      total.waiting += pool.waiting
    }
    return total
  }
  try {
    await superviseInstance(config, name, { link: linkPath(layout), use }, log)
  } finally {
    await link.close()
    await pooler.close()
  }
}
