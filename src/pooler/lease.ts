import type { PgError } from '../protocol/index.ts'
import type { BackendCredentials, BackendReceiver } from './backend.ts'
import type { NotificationListener } from './notifications.ts'
import type { PoolStats } from './pool.ts'
import type { QueryResult } from './simple-query.ts'

/**
 * The gateway's handle on a backend for one lease: from the first message of a
 * transaction until Postgres reports idle. This is the seam a later transport carries
 * between processes, so it speaks in bytes and a few verbs, never in sockets.
 */
export interface Lease {
  /** Stable id of the backend, for logs and statistics. */
  readonly backendId: number
  /** Canonical prepared statements already present on this backend. */
  readonly prepared: Set<string>
  /** Bumped whenever every prepared statement of the backend was dropped (see dropPrepared). */
  readonly preparedGeneration: number
  /** The session saw DISCARD ALL or DEALLOCATE ALL: no prepared statement is left on the backend. */
  dropPrepared(): void
  /** Routes everything the backend sends to `receiver` until release. */
  attach(receiver: BackendReceiver): void
  /** Writes bytes to the backend; false means its socket buffer is full. */
  send(data: Buffer): boolean
  /** Calls `callback` once the backend socket drained after a false `send`. */
  onDrain(callback: () => void): void
  /** Stops or restarts reading from the backend (client backpressure). */
  pause(): void
  resume(): void
  /** Returns a clean, idle backend to the pool. */
  release(): void
  /**
   * Promises that once the replies to what was sent so far have arrived the backend
   * will be idle with no session state, so another session's transaction may be
   * queued behind them on the same backend now (pipelining). The session sends
   * nothing more on this lease and calls {@link release} after its last reply, the
   * `syncPoints`-th ReadyForQuery from now.
   */
  releaseEarly(syncPoints: number): void
  /**
   * The session went away with `syncPoints` Syncs or Queries still unanswered: their
   * replies are swallowed, then the backend is released, or reset as by
   * {@link releaseDirty} when the last status is not idle, `unsynced` messages followed
   * the last Sync, or `reset` says the session may have left state on it.
   */
  abandon(syncPoints: number, unsynced: boolean, reset: boolean): void
  /**
   * Returns a backend the session left in an unknown state: the pool rolls it back
   * (after a Sync when `unsynced`), with `reset` also runs DISCARD ALL (settings, role,
   * locks, temporary tables, cursors, prepared statements and sequence state all go),
   * and reuses it only if it reaches idle, else closes it.
   */
  releaseDirty(unsynced: boolean, reset: boolean): void
  /** Closes the backend instead of returning it. */
  discard(reason: string): void
  /** Sends a CancelRequest for whatever this backend is running now. */
  cancel(): void
  /**
   * Runs an internal simple query on the leased backend between the session's own
   * messages (nothing of the session's may be outstanding); its replies never reach the
   * client. Used to ask Postgres what session state is, instead of guessing.
   */
  query(sql: string): Promise<QueryResult>
  /**
   * Records the settings Postgres reports this backend now has (after the session
   * changed them), so the next lease applies only the difference.
   */
  setSettings(settings: ReadonlyMap<string, string>, key: string): void
  /** Marks the backend as pinned to its session (for statistics; it stays leased anyway). */
  setPinned(pinned: boolean): void
}

/** A session's request for a lease, answered exactly once. */
export interface LeaseRequest {
  /** Settings the session needs applied, and their canonical key. */
  readonly settings: ReadonlyMap<string, string>
  readonly settingsKey: string
  /** The custom (dotted) setting names the session has used (see BackendConn.customNames). */
  readonly customSettingNames: ReadonlySet<string>
  onLease(lease: Lease): void
  onLeaseError(error: PgError): void
}

/** What the gateway knows of a role, to authenticate it. */
export interface RoleInfo {
  /** pg_authid.rolpassword: a SCRAM verifier, an md5 hash, or null. */
  password: string | null
  canLogin: boolean
  /** rolvaliduntil is in the past. */
  expired: boolean
}

/** Channels a session LISTENs to, through one shared listening connection per database. */
export interface NotificationChannels {
  /** Subscribes `listener`; resolves once notifications of `channel` are being received. */
  listen(channel: string, listener: NotificationListener): Promise<void>
  unlisten(channel: string, listener: NotificationListener): Promise<void>
  unlistenAll(listener: NotificationListener, channels: Iterable<string>): Promise<void>
}

/**
 * A backend that belongs to one session for its whole life, outside every pool (a
 * replication connection): bytes pass through.
 */
export interface DedicatedConnection {
  /** ParameterStatus values the server reported at login. */
  readonly parameters: ReadonlyMap<string, string>
  attach(receiver: BackendReceiver): void
  send(data: Buffer): boolean
  onDrain(callback: () => void): void
  pause(): void
  resume(): void
  cancel(): void
  close(): void
}

/**
 * Everything a gateway asks of a pooler. The in-process {@link Pooler} answers with direct
 * calls; a remote pooler answers over the lease link (src/link), so gateways in other
 * processes share its backends.
 */
export interface PoolerClient {
  /** Leases may be granted behind a busy backend's last batch (see Lease.releaseEarly). */
  readonly pipelining: boolean
  /** Queues or grants a lease on a backend of (database, user). */
  acquire(database: string, user: string, request: LeaseRequest): void
  /** Withdraws a request that waits for a lease (its session went away). */
  cancelWait(database: string, user: string, request: LeaseRequest): void
  /** Looks a role up in pg_authid. Null if it does not exist. */
  lookupRole(user: string): Promise<RoleInfo | null>
  /** Remembers what backend logins of `user` may present (e.g. SCRAM keys from a client proof). */
  setCredentials(user: string, credentials: BackendCredentials): void
  /** A backend of its own, logged in with the session's startup parameters. */
  dedicated(database: string, user: string, parameters: Record<string, string>): Promise<DedicatedConnection>
  /** The shared LISTEN connection of `database`. */
  notifications(database: string): NotificationChannels
  /** Pool counters, where the pools are in this process (empty otherwise). */
  stats(): PoolStats[]
  close(): Promise<void>
}
