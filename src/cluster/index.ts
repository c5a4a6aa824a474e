/**
 * The managed cluster: `tidepool up` creates and starts Postgres instances with their
 * poolers and a gateway, `down` stops them, `status` reports them, all through the
 * topology.
 *
 * @module
 */
export { runClusterGateway } from './cluster-gateway.ts'
export { CLUSTER_OPTIONS, type ClusterConfig, loadClusterConfig } from './config.ts'
export { down } from './down.ts'
export { runInstancePooler } from './instance-pooler.ts'
export { formatStatus, status } from './status.ts'
export { isAlive, type UpResult, up } from './up.ts'
