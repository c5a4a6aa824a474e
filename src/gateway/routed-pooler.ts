import type {
  BackendCredentials,
  DedicatedConnection,
  LeaseRequest,
  NotificationChannels,
  PoolerClient,
  PoolStats,
  RoleInfo,
} from '../pooler/index.ts'

/**
 * Sends each lease to the pooler `pick` names at that moment (the primary's, or the
 * least lagging replica's, as the topology says now), so a session follows the cluster
 * from one transaction to the next. LISTEN stays with the pooler that first served a
 * database's listeners, so that UNLISTEN reaches the same one.
 */
export class RoutedPooler implements PoolerClient {
  readonly pipelining = false
  private readonly pick: () => PoolerClient
  /** Every pooler a lease went to, for withdrawing a request that waits at one of them. */
  private readonly used = new Set<PoolerClient>()
  private readonly listeners = new Map<string, NotificationChannels>()
  /** What backend logins of each user may present, for every pooler a lease goes to. */
  private readonly credentials = new Map<string, BackendCredentials>()

  constructor(pick: () => PoolerClient) {
    this.pick = pick
  }

  acquire(database: string, user: string, request: LeaseRequest): void {
    this.use(this.pick()).acquire(database, user, request)
  }

  cancelWait(database: string, user: string, request: LeaseRequest): void {
    for (const pooler of this.used) pooler.cancelWait(database, user, request)
  }

  lookupRole(user: string): Promise<RoleInfo | null> {
    return this.pick().lookupRole(user)
  }

  setCredentials(user: string, credentials: BackendCredentials): void {
    this.pick().setCredentials(user, credentials)
  }

  dedicated(
    database: string,
    user: string,
    parameters: Record<string, string>,
  ): Promise<DedicatedConnection> {
    return this.pick().dedicated(database, user, parameters)
  }

  notifications(database: string): NotificationChannels {
    let channels = this.listeners.get(database)
    if (channels === undefined) {
      channels = this.use(this.pick()).notifications(database)
      this.listeners.set(database, channels)
    }
    return channels
  }

  stats(): PoolStats[] {
    return [...this.used].flatMap((pooler) => pooler.stats())
  }

  async close(): Promise<void> {}

  /** A pooler met for the first time learns the credentials clients proved so far. */
  private use(pooler: PoolerClient): PoolerClient {
    if (this.used.has(pooler)) return pooler
    this.used.add(pooler)
    for (const [user, credentials] of this.credentials) pooler.setCredentials(user, credentials)
    return pooler
  }
}
