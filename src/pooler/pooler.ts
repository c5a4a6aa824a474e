import { randomBytes } from 'node:crypto'
import type { Logger } from '../log.ts'
import { PgError, SqlState } from '../protocol/index.ts'
import { BackendConn, type BackendCredentials, type Endpoint } from './backend.ts'
import { DedicatedBackend } from './dedicated.ts'
import type { DedicatedConnection, LeaseRequest, PoolerClient, RoleInfo } from './lease.ts'
import { NotificationHub } from './notifications.ts'
import { Pool, type PoolOptions, type PoolStats } from './pool.ts'
import { quoteLiteral, simpleQuery } from './simple-query.ts'

export interface PoolerOptions {
  upstream: Endpoint & { user?: string; password?: string; database?: string }
  /**
   * Where each new backend connection goes, asked at every login (a cluster's replicas
   * come and go); the upstream's address when absent. Logins use the upstream's role.
   */
  route?: () => Endpoint
  pool: Omit<PoolOptions, 'connectTimeoutMs'>
  /** How long role lookups stay cached. */
  authCacheTtlMs: number
  connectTimeoutMs?: number
}

/**
 * Owns every backend connection to one Postgres: a pool per (database, user), role
 * lookups in pg_authid for client authentication, and the credentials backend logins
 * present. The gateway talks to it only through this class's methods and {@link Lease}.
 */
export class Pooler implements PoolerClient {
  /**
   * Names this pooler's life: backend ids are unique within it, so what a remote gateway
   * remembers of a backend (its prepared statements) holds only while this stays the same.
   */
  readonly incarnation = randomBytes(8).toString('hex')
  private readonly backendGoneListeners = new Set<(backendId: number) => void>()
  private readonly options: PoolerOptions
  private readonly log: Logger
  private readonly pools = new Map<string, Pool>()
  private readonly roles = new Map<string, { info: RoleInfo | null; expires: number }>()
  private readonly credentials = new Map<string, BackendCredentials>()
  private admin: Promise<BackendConn> | null = null
  private readonly hubs = new Map<string, NotificationHub>()
  /** Admin queries run one at a time on one connection. */
  private adminQueue: Promise<unknown> = Promise.resolve()

  constructor(options: PoolerOptions, log: Logger) {
    this.options = options
    this.log = log
  }

  get pipelining(): boolean {
    return this.options.pool.pipelineDepth > 0
  }

  /** Queues or grants a lease on a backend of (database, user). */
  acquire(database: string, user: string, request: LeaseRequest): void {
    this.pool(database, user).acquire(request)
  }

  cancelWait(database: string, user: string, request: LeaseRequest): void {
    this.pools.get(poolKey(database, user))?.cancelWait(request)
  }

  /** Looks a role up in pg_authid, cached for the configured TTL. Null if it does not exist. */
  async lookupRole(user: string): Promise<RoleInfo | null> {
    const cached = this.roles.get(user)
    const now = Date.now()
    if (cached !== undefined && cached.expires > now) return cached.info
    const sql = `SELECT rolpassword, rolcanlogin, COALESCE(rolvaliduntil < now(), false) FROM pg_catalog.pg_authid WHERE rolname = ${quoteLiteral(user)}`
    const { rows, error } = await this.adminQuery(sql)
    if (error !== null) throw error
    const info: RoleInfo | null =
      rows.length === 0
        ? null
        : { password: rows[0][0], canLogin: rows[0][1] === 't', expired: rows[0][2] === 't' }
    this.roles.set(user, { info, expires: now + this.options.authCacheTtlMs })
    return info
  }

  /** Remembers what backend logins of `user` may present (e.g. SCRAM keys from a client proof). */
  setCredentials(user: string, credentials: BackendCredentials): void {
    this.credentials.set(user, { ...this.credentials.get(user), ...credentials })
  }

  /**
   * A backend of its own for a session that cannot be pooled (a replication
   * connection): logged in with the session's startup parameters, released only by
   * closing it.
   */
  async dedicated(
    database: string,
    user: string,
    parameters: Record<string, string>,
  ): Promise<DedicatedConnection> {
    const conn = await BackendConn.connect(
      this.endpoint(),
      { ...parameters, user, database },
      this.backendCredentials(user),
      this.options.connectTimeoutMs ?? 10_000,
    )
    return new DedicatedBackend(conn, conn.endpoint, this.log)
  }

  /** The shared LISTEN connection of `database` (created on first use). */
  notifications(database: string): NotificationHub {
    let hub = this.hubs.get(database)
    if (hub === undefined) {
      const { upstream } = this.options
      const user = upstream.user ?? 'postgres'
      const startup = { user, database, application_name: 'tidepool-listener' }
      hub = new NotificationHub(
        () =>
          BackendConn.connect(
            this.endpoint(),
            startup,
            this.backendCredentials(user),
            this.options.connectTimeoutMs ?? 10_000,
          ),
        this.log,
      )
      this.hubs.set(database, hub)
    }
    return hub
  }

  /** Calls `listener` with the id of every backend closed from now on; returns the unsubscriber. */
  onBackendGone(listener: (backendId: number) => void): () => void {
    this.backendGoneListeners.add(listener)
    return () => this.backendGoneListeners.delete(listener)
  }

  stats(): PoolStats[] {
    return [...this.pools.values()].map((pool) => pool.snapshot())
  }

  async close(): Promise<void> {
    for (const pool of this.pools.values()) pool.close()
    this.pools.clear()
    for (const hub of this.hubs.values()) hub.close()
    this.hubs.clear()
    const admin = this.admin
    this.admin = null
    if (admin !== null) (await admin.catch(() => null))?.destroy()
  }

  private endpoint(): Endpoint {
    return this.options.route?.() ?? this.options.upstream
  }

  private pool(database: string, user: string): Pool {
    const key = poolKey(database, user)
    let pool = this.pools.get(key)
    if (pool === undefined) {
      pool = new Pool(
        database,
        user,
        () => this.endpoint(),
        { ...this.options.pool, connectTimeoutMs: this.options.connectTimeoutMs ?? 10_000 },
        () => this.backendCredentials(user),
        this.log,
        (backendId) => {
          for (const listener of this.backendGoneListeners) listener(backendId)
        },
      )
      this.pools.set(key, pool)
    }
    return pool
  }

  private backendCredentials(user: string): BackendCredentials {
    const upstream = this.options.upstream
    const known = this.credentials.get(user) ?? {}
    if (user === upstream.user && upstream.password !== undefined)
      return { ...known, password: upstream.password }
    return known
  }

  private adminQuery(sql: string) {
    const run = this.adminQueue.then(async () => {
      const conn = await this.adminConn()
      try {
        return await simpleQuery(conn, sql)
      } catch (error) {
        if (conn.state === 'closed') this.admin = null
        throw error
      }
    })
    this.adminQueue = run.catch(() => {})
    return run
  }

  private adminConn(): Promise<BackendConn> {
    if (this.admin !== null) return this.admin
    const { upstream } = this.options
    const user = upstream.user ?? 'postgres'
    const startup = { user, database: upstream.database ?? 'postgres', application_name: 'tidepool-admin' }
    const login = BackendConn.connect(
      this.endpoint(),
      startup,
      this.backendCredentials(user),
      this.options.connectTimeoutMs ?? 10_000,
    )
    this.admin = login
    login.then(
      (conn) =>
        conn.setCloseListener(() => {
          if (this.admin === login) this.admin = null
        }),
      (error: Error) => {
        if (this.admin === login) this.admin = null
        this.log.error({ err: error.message }, 'admin login to upstream failed')
      },
    )
    return login.catch((error: Error) => {
      throw new PgError(
        SqlState.ConnectionFailure,
        `cannot look up roles on the upstream server: ${error.message}`,
      )
    })
  }
}

function poolKey(database: string, user: string): string {
  return `${database}\0${user}`
}
