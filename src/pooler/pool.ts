import assert from 'node:assert'
import type { Logger } from '../log.ts'
import { FixedQueue } from '../net/index.ts'
import { frontend, PgError, SqlState } from '../protocol/index.ts'
import {
  BackendConn,
  type BackendCredentials,
  BackendHandle,
  type BackendReceiver,
  type Endpoint,
  type QueuedLease,
  sendCancel,
} from './backend.ts'
import type { Lease, LeaseRequest } from './lease.ts'
import { hasForeignCustomNames, noteCustomNames, settingsDiffSql } from './settings.ts'
import { InternalQueries, type QueryResult, simpleQuery } from './simple-query.ts'
import { type GuardedLease, isRetrySafe, MAX_RECORDED_BYTES, StrayCancelGuard } from './stray-cancel.ts'

export interface PoolOptions {
  maxSize: number
  minSize: number
  idleTimeoutMs: number
  maxLifetimeMs: number
  waitTimeoutMs: number
  connectTimeoutMs: number
  /** Leases that may queue behind a busy backend's promised-idle transaction (0: none). */
  pipelineDepth: number
}

/** Counters an operator reads; a snapshot, never a live view. */
export interface PoolStats {
  database: string
  user: string
  size: number
  idle: number
  leased: number
  connecting: number
  waiting: number
  /** Leased backends pinned to their session (temporary tables, locks, cursors…). */
  pinned: number
  maxSize: number
  leasesGranted: number
  waitTimeouts: number
  backendsOpened: number
  backendsClosed: number
  /** Leases granted behind another session's transaction on a busy backend. */
  leasesPipelined: number
  /** Statements written again after a cancel meant for the lease ahead hit them (stray-cancel.ts). */
  strayCancelsRetried: number
}

interface Waiter {
  request: LeaseRequest
  deadline: number
}

/**
 * A busy backend that finished a batch this recently (ms) is preferred for pipelining
 * over an idle one: it is unlikely to be in the middle of a slow statement. Measured on
 * pgbench -S, where a read-only transaction takes well under a millisecond of server time.
 */
const PIPELINE_FRESH_MS = 2

/** Pauses between logins while the server restarts. */
const RETRY_MIN_MS = 50
const RETRY_MAX_MS = 1000

/**
 * A login failure that means the server is (re)starting rather than refusing us: no one
 * listens yet (its socket is missing or refuses), or it is in crash recovery (57P03).
 */
function serverRestarting(error: PgError): boolean {
  if (error.code === SqlState.CannotConnectNow) return true
  return (
    error.code === SqlState.ConnectionFailure &&
    /ECONNREFUSED|ENOENT|ECONNRESET|during login/.test(error.message)
  )
}

/** How many idle backends from the top of the stack are checked for matching settings. */
const SETTINGS_MATCH_DEPTH = 8

/**
 * Backends for one (database, user): at most `maxSize` of them, idle ones on a LIFO
 * stack (the most recently used is warmest), waiting sessions in FIFO order with a
 * deadline. A broken backend is dropped, never handed out.
 */
export class Pool {
  readonly database: string
  readonly user: string
  /** Where a new backend connection goes (asked at each login). */
  private readonly endpoint: () => Endpoint
  private readonly options: PoolOptions
  private readonly credentials: () => BackendCredentials
  readonly log: Logger
  private readonly onBackendGone: (backendId: number) => void
  private readonly idle: BackendConn[] = []
  private readonly all = new Set<BackendConn>()
  private readonly waiters = new FixedQueue<Waiter>()
  private connecting = 0
  private closed = false
  private readonly maintenance: NodeJS.Timeout
  private waitSweep: NodeJS.Timeout | null = null
  /** A retry of a login the restarting server refused (see retryOpen). */
  private retryTimer: NodeJS.Timeout | null = null
  private retryDelayMs = RETRY_MIN_MS
  /** Busy backends whose last lease promised to end idle: a lease may queue behind it. */
  private readonly pipelinable = new Set<BackendConn>()
  private readonly stats = {
    leasesGranted: 0,
    waitTimeouts: 0,
    backendsOpened: 0,
    backendsClosed: 0,
    leasesPipelined: 0,
    strayCancelsRetried: 0,
  }

  constructor(
    database: string,
    user: string,
    endpoint: () => Endpoint,
    options: PoolOptions,
    credentials: () => BackendCredentials,
    log: Logger,
    onBackendGone: (backendId: number) => void = () => {},
  ) {
    this.onBackendGone = onBackendGone
    this.database = database
    this.user = user
    this.endpoint = endpoint
    this.options = options
    this.credentials = credentials
    this.log = log
    this.maintenance = setInterval(() => this.maintain(), 1000)
    this.maintenance.unref()
  }

  /** Grants a lease now if a backend is idle, else queues the request. */
  acquire(request: LeaseRequest): void {
    if (this.closed) {
      request.onLeaseError(new PgError(SqlState.AdminShutdown, 'the pool is shutting down'))
      return
    }
    // A backend that answered moments ago and whose last lease promised to end idle is
    // the best place for a short transaction, better even than an idle backend: Postgres
    // finds the next query already waiting (no sleep, no wakeup), and fewer backends are
    // busy at once. One that has been quiet longer may be running something slow, so an
    // idle backend comes first then.
    const now = performance.now()
    for (const busy of this.pipelinable) {
      if (busy.settingsKey === request.settingsKey && now - busy.activeAt < PIPELINE_FRESH_MS) {
        this.grantQueued(busy, request)
        return
      }
    }
    const conn = this.takeIdle(request)
    if (conn !== null) {
      this.grant(conn, request)
      return
    }
    for (const busy of this.pipelinable) {
      if (busy.settingsKey === request.settingsKey) {
        this.grantQueued(busy, request)
        if (this.all.size + this.connecting < this.options.maxSize) this.openBackend()
        return
      }
    }
    this.waiters.push({ request, deadline: Date.now() + this.options.waitTimeoutMs })
    this.scheduleWaitSweep()
    if (this.all.size + this.connecting < this.options.maxSize) this.openBackend()
  }

  /** Withdraws a queued request (the client went away); true if it was still queued. */
  cancelWait(request: LeaseRequest): boolean {
    return this.waiters.removeFirst((waiter) => waiter.request === request)
  }

  /**
   * Asks the server to cancel what `conn` runs now, on a connection of its own, for the
   * lease at its head (rule 5, "Faults"). The signal lands whenever the server gets to
   * it, so no other session's statement may be at its mercy: none granted until the
   * server acted on it, and of the leases already queued behind, each must be one the
   * stray cancel cannot hurt (see stray-cancel.ts), or the cancel is dropped.
   */
  cancelBackend(conn: BackendConn): void {
    if (!conn.queued.every((lease) => lease.retrySafe())) {
      this.log.debug({ backend: conn.id }, 'cancel dropped: another session is queued on the backend')
      return
    }
    for (const lease of conn.queued) lease.exposeToCancel()
    this.pipelinable.delete(conn)
    conn.cancelExposed = true
    conn.cancelsInFlight++
    sendCancel(
      conn.endpoint,
      conn,
      this.options.connectTimeoutMs,
      (error) => this.log.warn({ err: error.message }, 'cancel request failed'),
      (delivered) => {
        if (!delivered) conn.cancelUndelivered = true
        if (--conn.cancelsInFlight > 0) return
        const after = conn.afterCancels
        conn.afterCancels = null
        after?.()
      },
    )
  }

  snapshot(): PoolStats {
    let leased = 0
    let pinned = 0
    for (const conn of this.all) {
      if (conn.state === 'leased') leased++
      if (conn.pinned) pinned++
    }
    return {
      database: this.database,
      user: this.user,
      size: this.all.size,
      idle: this.idle.length,
      leased,
      connecting: this.connecting,
      waiting: this.waiters.length,
      pinned,
      maxSize: this.options.maxSize,
      ...this.stats,
    }
  }

  /** Closes every backend and fails every waiter. */
  close(): void {
    this.closed = true
    clearInterval(this.maintenance)
    if (this.retryTimer !== null) clearTimeout(this.retryTimer)
    if (this.waitSweep !== null) clearInterval(this.waitSweep)
    for (let waiter = this.waiters.shift(); waiter !== undefined; waiter = this.waiters.shift()) {
      waiter.request.onLeaseError(new PgError(SqlState.AdminShutdown, 'the pool is shutting down'))
    }
    for (const conn of [...this.all]) conn.destroy()
  }

  /**
   * The warmest idle backend whose settings match the request's, else the warmest
   * that carries no custom setting names the session never used, else the warmest.
   */
  private takeIdle(request: LeaseRequest): BackendConn | null {
    const idle = this.idle
    if (idle.length === 0) return null
    const top = idle.length - 1
    let pick = -1
    for (let i = top; i >= 0; i--) {
      if (!this.isCompatible(idle[i], request)) continue
      if (pick < 0) pick = i
      if (i <= top - SETTINGS_MATCH_DEPTH) break
      if (idle[i].settingsKey === request.settingsKey) {
        pick = i
        break
      }
    }
    return idle.splice(pick < 0 ? top : pick, 1)[0]
  }

  private isCompatible(conn: BackendConn, request: LeaseRequest): boolean {
    return conn.customNames.size === 0 || !hasForeignCustomNames(conn.customNames, request.customSettingNames)
  }

  /** Hands `conn` to `request`, first applying the request's settings if they differ. */
  private grant(conn: BackendConn, request: LeaseRequest): void {
    assert(conn.state === 'idle', `granting a backend in state ${conn.state}`)
    if (!this.isCompatible(conn, request)) {
      // Its placeholders cannot be removed: a new backend serves this session instead.
      conn.destroy(
        new PgError(SqlState.AdminShutdown, 'backend carries custom settings the session never used'),
      )
      this.acquire(request)
      return
    }
    conn.state = 'leased'
    conn.activeAt = performance.now()
    this.stats.leasesGranted++
    if (conn.settingsKey === request.settingsKey) {
      request.onLease(new PooledLease(this, conn, true))
      return
    }
    const sql = settingsDiffSql(conn.settings, request.settings)
    const resets = [...conn.settings.keys()].some((name) => !request.settings.has(name))
    simpleQuery(conn, sql).then(
      ({ error, status }) => {
        if (error === null) {
          conn.settings = new Map(request.settings)
          conn.settingsKey = request.settingsKey
          noteCustomNames(conn.customNames, conn.settings)
          request.onLease(new PooledLease(this, conn, true))
          return
        }
        // A RESET that fails means the backend is not what its record says (a module
        // loaded since removed a placeholder): a new backend has nothing to reset.
        if (resets) {
          conn.destroy(error)
          this.acquire(request)
          return
        }
        // A setting Postgres refuses is the session's fault, not the backend's. The diff
        // ran as one implicit transaction, so the backend keeps its previous settings.
        if (status === 0x49) this.giveBack(conn)
        else conn.destroy(error)
        request.onLeaseError(error)
      },
      (error: PgError) => request.onLeaseError(error),
    )
  }

  /**
   * The lease at the end of `conn`'s line promised to end idle: queue the oldest
   * waiter with the same settings behind it, or let the next acquire do so.
   */
  offerPipeline(conn: BackendConn): void {
    if (conn.state === 'closed' || conn.queued.length >= this.options.pipelineDepth) return
    // A cancel sent for it may still be pending in the backend (see cancelBackend).
    if (conn.cancelsInFlight > 0 || conn.cancelExposed) return
    const waiter = this.waiters.peek()
    if (waiter !== undefined && waiter.request.settingsKey === conn.settingsKey) {
      this.waiters.shift()
      this.grantQueued(conn, waiter.request)
      return
    }
    this.pipelinable.add(conn)
  }

  noteStrayCancel(): void {
    this.stats.strayCancelsRetried++
  }

  /** Grants a lease behind the ones `conn` already serves. */
  private grantQueued(conn: BackendConn, request: LeaseRequest): void {
    this.pipelinable.delete(conn)
    this.stats.leasesGranted++
    this.stats.leasesPipelined++
    const lease = new PooledLease(this, conn, false)
    conn.queued.push(lease)
    request.onLease(lease)
  }

  /** Returns a backend after a lease; hands it to the next in line, or the oldest waiter. */
  giveBack(conn: BackendConn): void {
    if (conn.advance()) return
    conn.receiver = null
    this.pipelinable.delete(conn)
    if (conn.state === 'closed') return
    if (conn.cancelsInFlight > 0) {
      conn.afterCancels = () => this.giveBack(conn)
      return
    }
    if (conn.cancelUndelivered) {
      conn.destroy(new PgError(SqlState.AdminShutdown, 'a cancel request for it may still arrive'))
      return
    }
    // Idle, with every cancel delivered: a signal still pending is ignored by a backend
    // waiting for its next command.
    conn.cancelExposed = false
    conn.state = 'idle'
    const now = Date.now()
    conn.lastUsedAt = now
    if (this.closed || this.expired(conn, now)) {
      conn.destroy()
      return
    }
    const waiter = this.waiters.shift()
    if (waiter !== undefined) this.grant(conn, waiter.request)
    else this.idle.push(conn)
  }

  /**
   * Rolls back a backend its session left mid-transaction, and with `discardAll` clears
   * every piece of session state from it, then returns it, or closes it if it does not
   * end idle.
   */
  reset(conn: BackendConn, unsynced: boolean, discardAll: boolean): void {
    conn.receiver = null
    if (conn.state === 'closed') return
    if (conn.queued.length > 0) {
      // Requests of other sessions are already on the wire behind this one: a ROLLBACK
      // now would land after them. Only a promise-breaking lease gets here.
      conn.destroy(
        new PgError(SqlState.InternalError, 'backend left mid-transaction with pipelined leases behind it'),
      )
      return
    }
    const sql = 'ROLLBACK'
    const rollback = unsynced ? syncThenQuery(conn, sql) : simpleQuery(conn, sql)
    // DISCARD ALL refuses to run in a transaction block: it goes once ROLLBACK ended it.
    const run = discardAll
      ? rollback.then((result) => (result.error === null ? discardAllState(conn) : result))
      : rollback
    run.then(
      ({ status, error }) => {
        if (status === 0x49 && error === null) this.giveBack(conn)
        else
          conn.destroy(
            new PgError(SqlState.InternalError, `backend not idle after ${discardAll ? 'DISCARD ALL' : sql}`),
          )
      },
      (error: Error) => conn.destroy(error),
    )
  }

  private openBackend(): void {
    this.connecting++
    const startup = { user: this.user, database: this.database }
    BackendConn.connect(this.endpoint(), startup, this.credentials(), this.options.connectTimeoutMs).then(
      (conn) => {
        this.connecting--
        this.retryDelayMs = RETRY_MIN_MS
        this.stats.backendsOpened++
        this.all.add(conn)
        conn.setCloseListener((closed, error) => this.forget(closed, error))
        if (this.closed) {
          conn.destroy()
          return
        }
        const waiter = this.waiters.shift()
        if (waiter !== undefined) this.grant(conn, waiter.request)
        else {
          conn.state = 'idle'
          this.idle.push(conn)
        }
      },
      (error: PgError) => {
        this.connecting--
        if (serverRestarting(error) && this.waiters.length > 0 && !this.closed) {
          // A supervisor brings the server back within seconds (crash recovery): the
          // waiters keep waiting, up to their wait timeout, and the next try comes soon.
          this.log.warn(
            { database: this.database, user: this.user, err: error.message },
            'server unavailable; retrying',
          )
          this.retryOpen()
          return
        }
        this.log.warn(
          { database: this.database, user: this.user, err: error.message },
          'backend login failed',
        )
        // With nothing else able to serve them, every waiter gets the server's answer
        // (e.g. 3D000 for a missing database); otherwise only the oldest does.
        if (this.all.size === 0 && this.connecting === 0) {
          for (let waiter = this.waiters.shift(); waiter !== undefined; waiter = this.waiters.shift()) {
            waiter.request.onLeaseError(error)
          }
        } else this.waiters.shift()?.request.onLeaseError(error)
      },
    )
  }

  /** Opens a backend again after a pause that grows while the server stays away. */
  private retryOpen(): void {
    if (this.retryTimer !== null) return
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null
      if (this.closed || this.waiters.length <= this.connecting) return
      if (this.all.size + this.connecting < this.options.maxSize) this.openBackend()
    }, this.retryDelayMs)
    this.retryTimer.unref()
    this.retryDelayMs = Math.min(this.retryDelayMs * 2, RETRY_MAX_MS)
  }

  private forget(conn: BackendConn, error: Error): void {
    if (!this.all.delete(conn)) return
    this.pipelinable.delete(conn)
    this.stats.backendsClosed++
    const index = this.idle.indexOf(conn)
    if (index >= 0) this.idle.splice(index, 1)
    this.log.debug({ backend: conn.id, reason: error.message }, 'backend closed')
    this.onBackendGone(conn.id)
    // Someone may be waiting for the capacity this backend held.
    if (
      !this.closed &&
      this.waiters.length > this.connecting &&
      this.all.size + this.connecting < this.options.maxSize
    ) {
      this.openBackend()
    }
  }

  private scheduleWaitSweep(): void {
    if (this.waitSweep !== null) return
    const period = Math.max(10, Math.min(250, Math.floor(this.options.waitTimeoutMs / 10)))
    this.waitSweep = setInterval(() => this.sweepWaiters(), period)
    this.waitSweep.unref()
  }

  /** Waiters share one timeout, so deadlines grow along the queue: only the head can expire. */
  private sweepWaiters(): void {
    const now = Date.now()
    for (
      let waiter = this.waiters.peek();
      waiter !== undefined && waiter.deadline <= now;
      waiter = this.waiters.peek()
    ) {
      this.waiters.shift()
      this.stats.waitTimeouts++
      waiter.request.onLeaseError(
        new PgError(
          SqlState.TooManyConnections,
          `no backend connection became free within ${this.options.waitTimeoutMs}ms (pool of ${this.options.maxSize} for database "${this.database}", user "${this.user}")`,
          { hint: 'Raise --pool-size or --wait-timeout, or shorten transactions.' },
        ),
      )
    }
    if (this.waiters.length === 0 && this.waitSweep !== null) {
      clearInterval(this.waitSweep)
      this.waitSweep = null
    }
  }

  /** Past its lifetime (0 = unlimited). */
  private expired(conn: BackendConn, now: number): boolean {
    return this.options.maxLifetimeMs > 0 && now - conn.createdAt > this.options.maxLifetimeMs
  }

  private maintain(): void {
    const now = Date.now()
    for (let i = this.idle.length - 1; i >= 0; i--) {
      const conn = this.idle[i]
      const { idleTimeoutMs, minSize } = this.options
      const idleTooLong =
        idleTimeoutMs > 0 && now - conn.lastUsedAt > idleTimeoutMs && this.all.size > minSize
      if (idleTooLong || this.expired(conn, now)) {
        this.idle.splice(i, 1)
        conn.destroy()
      }
    }
    while (!this.closed && this.all.size + this.connecting < this.options.minSize) this.openBackend()
  }
}

/**
 * Runs DISCARD ALL and records what it did: the backend is back to its login's settings
 * and holds no prepared statement (the custom names it ever had stay: placeholders
 * survive even DISCARD ALL).
 */
async function discardAllState(conn: BackendConn): Promise<QueryResult> {
  const result = await simpleQuery(conn, 'DISCARD ALL')
  conn.settings = new Map()
  conn.settingsKey = ''
  conn.prepared.clear()
  conn.preparedGeneration++
  return result
}

/** Sends Sync (ending a half-sent extended-protocol batch) and then `sql`. */
function syncThenQuery(conn: BackendConn, sql: string): Promise<QueryResult> {
  return new Promise((resolve, reject) => {
    const receiver: BackendReceiver = {
      onBackendMessage(type) {
        if (type === 0x5a) simpleQuery(conn, sql).then(resolve, reject)
      },
      onBackendMessagePart() {},
      onBackendFlush() {},
      onBackendClosed: reject,
    }
    conn.receiver = receiver
    conn.write(frontend.sync)
  })
}

/** The in-process lease: direct calls on the pooled connection. */
class PooledLease extends BackendHandle implements Lease, QueuedLease, GuardedLease {
  private readonly pool: Pool
  receiver: BackendReceiver | null = null
  /** The backend answers this lease now (else it waits behind others). */
  private head: boolean
  private active = true
  private cancelWhenHead = false
  cancelledItself = false
  private whenHead: (() => void) | null = null
  private readonly queries = new InternalQueries()
  /**
   * A queued lease's requests, as written, until its first reply: what is written again
   * if a cancel meant for a lease ahead lands on it (see stray-cancel.ts). Null for the
   * head, once the first reply came, or past MAX_RECORDED_BYTES.
   */
  private recorded: Buffer[] | null
  private recordedBytes = 0
  /** A cancel for a lease ahead was sent while this one waited behind it. */
  private exposed = false
  /** Watches the first reply for a stray cancel while this lease is head. */
  private guard: StrayCancelGuard | null = null
  /**
   * Requests the session sent after it was exposed, held back until its first reply is
   * known: a statement written again must not run after them.
   */
  private held: Buffer[] | null = null
  private readonly drainWaiters: (() => void)[] = []

  constructor(pool: Pool, conn: BackendConn, head: boolean) {
    super(conn)
    this.pool = pool
    this.head = head
    this.recorded = head ? null : []
  }

  override send(data: Buffer): boolean {
    if (this.held !== null) {
      this.held.push(Buffer.from(data))
      return false
    }
    if (this.recorded !== null) {
      this.recordedBytes += data.length
      if (this.recordedBytes > MAX_RECORDED_BYTES) this.recorded = null
      else this.recorded.push(Buffer.from(data))
    }
    return super.send(data)
  }

  /** Whether a cancel meant for a lease ahead could not hurt this one (see stray-cancel.ts). */
  retrySafe(): boolean {
    return this.recorded !== null && this.recorded.length > 0 && !this.cancelWhenHead
      ? isRetrySafe(Buffer.concat(this.recorded))
      : false
  }

  override onDrain(callback: () => void): void {
    if (this.held !== null) this.drainWaiters.push(callback)
    else super.onDrain(callback)
  }

  exposeToCancel(): void {
    this.exposed = true
    this.held ??= []
  }

  rewrite(bytes: Buffer): void {
    this.pool.noteStrayCancel()
    this.pool.log.info(
      { backend: this.conn.id },
      'a cancel meant for the lease ahead hit this one; its statement is written again',
    )
    super.send(bytes)
  }

  /** Ends the watch for a stray cancel: what was held back goes out now. */
  unguard(): void {
    if (this.guard !== null) {
      this.guard = null
      if (this.head && this.conn.receiver !== null) this.conn.receiver = this.receiver
    }
    this.exposed = false
    const held = this.held
    if (held === null) return
    this.held = null
    for (const bytes of held) super.send(bytes)
    for (const callback of this.drainWaiters.splice(0)) callback()
  }

  get backendId(): number {
    return this.conn.id
  }

  get prepared(): Set<string> {
    return this.conn.prepared
  }

  get preparedGeneration(): number {
    return this.conn.preparedGeneration
  }

  dropPrepared(): void {
    this.conn.prepared.clear()
    this.conn.preparedGeneration++
  }

  attach(receiver: BackendReceiver): void {
    this.receiver = receiver
    if (this.head && this.guard === null) this.conn.receiver = receiver
    if (this.conn.state === 'closed')
      receiver.onBackendClosed(this.conn.closeError ?? new Error('backend closed'), !this.head)
  }

  becameHead(): void {
    this.head = true
    const recorded = this.recorded
    this.recorded = null
    if (this.exposed && recorded !== null && recorded.length > 0) {
      this.guard = new StrayCancelGuard(this, Buffer.concat(recorded))
      this.conn.receiver = this.guard
    } else this.unguard()
    if (this.cancelWhenHead && this.active) this.pool.cancelBackend(this.conn)
    const whenHead = this.whenHead
    this.whenHead = null
    whenHead?.()
  }

  release(): void {
    this.unguard()
    if (this.queries.deferred(() => this.release())) return
    if (this.active && !this.head) {
      // Nothing of this lease's was sent (its session left while queued): step aside in turn.
      this.whenHead = () => this.release()
      return
    }
    if (!this.end()) return
    this.pool.giveBack(this.conn)
  }

  releaseEarly(_syncPoints: number): void {
    if (this.active) this.pool.offerPipeline(this.conn)
  }

  abandon(syncPoints: number, unsynced: boolean, reset: boolean): void {
    // No one is left to be spared a stray cancel; held requests go out to be answered.
    this.unguard()
    if (this.queries.deferred(() => this.abandon(syncPoints, unsynced, reset))) return
    if (!this.active) return
    if (syncPoints === 0) {
      if (unsynced || reset) this.releaseDirty(unsynced, reset)
      else this.release()
      return
    }
    // Reading may be paused for the session's slow client: the sink must see the replies.
    this.conn.socket.resume()
    let remaining = syncPoints
    let status = 0x49
    const sink: BackendReceiver = {
      onBackendMessage: (type, frame) => {
        if (type !== 0x5a) return
        status = frame[5]
        if (--remaining > 0) return
        if (status === 0x49 && !unsynced && !reset) this.release()
        else this.releaseDirty(unsynced, reset)
      },
      onBackendMessagePart() {},
      onBackendFlush() {},
      onBackendClosed() {},
    }
    this.attach(sink)
  }

  releaseDirty(unsynced: boolean, reset: boolean): void {
    this.unguard()
    if (this.queries.deferred(() => this.releaseDirty(unsynced, reset))) return
    if (!this.end()) return
    this.pool.reset(this.conn, unsynced, reset)
  }

  discard(reason: string): void {
    this.unguard()
    if (this.queries.deferred(() => this.discard(reason))) return
    if (!this.end()) return
    this.conn.destroy(new PgError(SqlState.AdminShutdown, reason))
  }

  cancel(): void {
    if (!this.active) return
    this.cancelledItself = true
    if (this.head) this.pool.cancelBackend(this.conn)
    else this.cancelWhenHead = true
  }

  query(sql: string): Promise<QueryResult> {
    const run = () => this.queries.track(simpleQuery(this.conn, sql))
    if (this.head) return run()
    // Its replies would be taken for the head's: wait for this lease's turn.
    return new Promise((resolve, reject) => {
      this.whenHead = () => run().then(resolve, reject)
    })
  }

  setPinned(pinned: boolean): void {
    this.conn.pinned = pinned
  }

  setSettings(settings: ReadonlyMap<string, string>, key: string): void {
    this.conn.settings = new Map(settings)
    this.conn.settingsKey = key
    noteCustomNames(this.conn.customNames, settings)
  }

  private end(): boolean {
    if (!this.active) return false
    this.active = false
    this.conn.pinned = false
    this.conn.socket.resume()
    if (this.head) this.conn.receiver = null
    return true
  }
}
