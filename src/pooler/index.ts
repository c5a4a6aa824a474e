export { type BackendCredentials, type BackendReceiver, type Endpoint, errorFromFrame } from './backend.ts'
export type { DedicatedBackend } from './dedicated.ts'
export type {
  DedicatedConnection,
  Lease,
  LeaseRequest,
  NotificationChannels,
  PoolerClient,
  RoleInfo,
} from './lease.ts'
export type { NotificationHub, NotificationListener } from './notifications.ts'
export type { PoolStats } from './pool.ts'
export { Pooler, type PoolerOptions } from './pooler.ts'
export { settingsKey } from './settings.ts'
export {
  InternalQueries,
  type QueryResult,
  queryServer,
  quoteLiteral,
  simpleQuery,
} from './simple-query.ts'
