import net from 'node:net'
import type { Logger } from '../log.ts'
import {
  type BackendCredentials,
  type BackendReceiver,
  type DedicatedConnection,
  InternalQueries,
  type Lease,
  type LeaseRequest,
  type NotificationChannels,
  type NotificationListener,
  type PoolerClient,
  type PoolStats,
  type QueryResult,
  type RoleInfo,
  simpleQuery,
} from '../pooler/index.ts'
import { Backend, type FrameHandler, Framer, PgError, SqlState } from '../protocol/index.ts'
import { fromLinkError } from './errors.ts'
import {
  describeAddress,
  Kind,
  type LeaseDefinition,
  type LinkAddress,
  type LinkError,
  type LinkHandler,
  LinkReader,
  type LinkRequest,
  LinkWriter,
} from './frames.ts'

export interface RemotePoolerOptions {
  address: LinkAddress
  /** Link connections to keep open; leases are spread over them. */
  connections: number
  /** How long a lease request (or a role lookup) waits for the link to come (back) up. */
  waitTimeoutMs: number
}

/** What a gateway knows of one backend of the remote pooler: the statements it prepared there. */
interface Mirror {
  generation: number
  prepared: Set<string>
}

/** Definitions a link connection keeps before it starts over (each may be a distinct settings set). */
const MAX_DEFINITIONS = 4096

const CONNECT_TIMEOUT_MS = 5000
const KEEPALIVE_MS = 10_000
const RECONNECT_MIN_MS = 50
const RECONNECT_MAX_MS = 1000

/**
 * A pooler in another process, reached over the lease link (ARCHITECTURE.md): the
 * gateway's sessions lease its backends exactly as they lease an in-process pooler's.
 * It keeps, per backend, the canonical statements this gateway prepared there (names
 * are unique to a gateway's registry, so no other gateway changes them, except by
 * dropping them all, which the pooler reports as a new generation).
 */
export class RemotePooler implements PoolerClient {
  /** The pooler decides whether to queue leases behind promised-idle batches (its --pipeline-depth). */
  readonly pipelining = true
  private readonly options: RemotePoolerOptions
  private readonly log: Logger
  private readonly links: LinkConnection[]
  private nextLink = 0
  /**
   * Per pooler incarnation (a pooler process's life), per backend id: what this gateway
   * prepared there. Keyed by incarnation too, since ids restart with every process and
   * an old process may still serve a connection while a new one serves another.
   */
  private readonly mirrors = new Map<string, Map<number, Mirror>>()
  /** Requests waiting for a link to open, so that a session going away can withdraw them. */
  private readonly parked = new Set<LeaseRequest>()
  private readonly openWaiters: {
    resolve: (link: LinkConnection) => void
    reject: (error: Error) => void
    control: boolean
  }[] = []
  private readonly replies = new Map<
    number,
    { resolve: (value: unknown) => void; reject: (error: Error) => void }
  >()
  private nextRequestId = 1
  private readonly hubs = new Map<string, RemoteNotifications>()
  /** What backend logins of each user may present, as last learnt from a client. */
  private readonly credentials = new Map<string, LinkRequest>()
  private lastError = 'not connected yet'
  private closed = false

  constructor(options: RemotePoolerOptions, log: Logger) {
    this.options = options
    this.log = log
    this.links = Array.from(
      { length: Math.max(1, options.connections) },
      (_, index) => new LinkConnection(this, index),
    )
  }

  acquire(database: string, user: string, request: LeaseRequest): void {
    const link = this.openLink()
    if (link !== null) {
      link.acquire(database, user, request)
      return
    }
    this.parked.add(request)
    this.whenOpen(false).then(
      (opened) => {
        if (this.parked.delete(request)) opened.acquire(database, user, request)
      },
      (error: PgError) => {
        if (this.parked.delete(request)) request.onLeaseError(error)
      },
    )
  }

  cancelWait(_database: string, _user: string, request: LeaseRequest): void {
    if (this.parked.delete(request)) return
    for (const link of this.links) if (link.cancelWait(request)) return
  }

  async lookupRole(user: string): Promise<RoleInfo | null> {
    return (await this.request({ op: 'role', user })) as RoleInfo | null
  }

  setCredentials(user: string, credentials: BackendCredentials): void {
    const { password, md5Hash, scramKeys } = credentials
    const request: LinkRequest = {
      op: 'credentials',
      user,
      password,
      md5Hash,
      clientKey: scramKeys?.clientKey.toString('base64'),
      serverKey: scramKeys?.serverKey.toString('base64'),
    }
    // A lease that needs them may go out on any link connection right after this: each
    // open one gets them now, each that opens later gets them first (see opened).
    this.credentials.set(user, request)
    const payload = JSON.stringify(request)
    for (const link of this.links) if (link.isOpen) link.writer.control(Kind.Request, 0, payload)
  }

  async dedicated(
    database: string,
    user: string,
    parameters: Record<string, string>,
  ): Promise<DedicatedConnection> {
    const link = await this.whenOpen(false)
    return link.openDedicated(database, user, parameters)
  }

  notifications(database: string): NotificationChannels {
    let hub = this.hubs.get(database)
    if (hub === undefined) {
      hub = new RemoteNotifications(this, database)
      this.hubs.set(database, hub)
    }
    return hub
  }

  stats(): PoolStats[] {
    return []
  }

  async close(): Promise<void> {
    this.closed = true
    for (const link of this.links) link.close()
    this.failOpenWaiters()
  }

  // ---- for the link connections ----

  get isClosed(): boolean {
    return this.closed
  }

  describe(): string {
    return describeAddress(this.options.address)
  }

  /** The view of a granted backend, new when the backend's statements were all dropped. */
  mirror(incarnation: string, backendId: number, generation: number): Mirror {
    let backends = this.mirrors.get(incarnation)
    if (backends === undefined) {
      backends = new Map()
      this.mirrors.set(incarnation, backends)
    }
    let mirror = backends.get(backendId)
    if (mirror === undefined || mirror.generation !== generation) {
      mirror = { generation, prepared: new Set() }
      backends.set(backendId, mirror)
    }
    return mirror
  }

  backendGone(incarnation: string, backendId: number): void {
    this.mirrors.get(incarnation)?.delete(backendId)
  }

  /** A connection met a pooler process: views of processes no connection reaches are dropped. */
  hello(): void {
    const live = new Set(this.links.map((link) => link.incarnation))
    for (const incarnation of this.mirrors.keys())
      if (!live.has(incarnation)) this.mirrors.delete(incarnation)
  }

  opened(link: LinkConnection): void {
    for (const request of this.credentials.values())
      link.writer.control(Kind.Request, 0, JSON.stringify(request))
    for (let i = 0; i < this.openWaiters.length; i++) {
      const waiter = this.openWaiters[i]
      if (waiter.control && link.index !== 0) continue
      this.openWaiters.splice(i--, 1)
      waiter.resolve(link)
    }
    if (link.index === 0) for (const hub of this.hubs.values()) hub.resubscribe()
  }

  linkFailed(link: LinkConnection, error: Error): void {
    this.lastError = error.message
    if (link.index === 0) {
      for (const [id, reply] of this.replies) {
        this.replies.delete(id)
        reply.reject(this.unreachable())
      }
    }
  }

  /** Whether a closed link should come back now: something waits for it or listens through it. */
  wanted(link: LinkConnection): boolean {
    if (this.closed) return false
    if (this.openWaiters.some((waiter) => !waiter.control || link.index === 0)) return true
    return link.index === 0 && [...this.hubs.values()].some((hub) => hub.active)
  }

  reply(id: number, payload: Buffer): void {
    const waiter = this.replies.get(id)
    if (waiter === undefined) return
    this.replies.delete(id)
    const { result, error } = JSON.parse(payload.toString()) as { result?: unknown; error?: LinkError }
    if (error !== undefined) waiter.reject(fromLinkError(error))
    else waiter.resolve(result)
  }

  notify(payload: Buffer): void {
    const databaseEnd = payload.indexOf(0)
    const database = payload.toString('utf8', 0, databaseEnd)
    this.hubs.get(database)?.deliver(Buffer.from(payload.subarray(databaseEnd + 1)))
  }

  request(request: LinkRequest): Promise<unknown> {
    const control = this.links[0]
    if (control.isOpen) return this.send(control, request)
    return this.whenOpen(true).then((link) => this.send(link, request))
  }

  private send(link: LinkConnection, request: LinkRequest): Promise<unknown> {
    const id = this.nextRequestId
    this.nextRequestId = id >= 0xffffffff ? 1 : id + 1
    return new Promise((resolve, reject) => {
      this.replies.set(id, { resolve, reject })
      link.writer.control(Kind.Request, id, JSON.stringify(request))
    })
  }

  private openLink(): LinkConnection | null {
    const links = this.links
    for (let tries = 0; tries < links.length; tries++) {
      const link = links[this.nextLink]
      this.nextLink = (this.nextLink + 1) % links.length
      if (link.isOpen) return link
    }
    return null
  }

  /** An open link connection (link 0 for `control` requests), within the wait timeout. */
  private whenOpen(control: boolean): Promise<LinkConnection> {
    if (this.closed)
      return Promise.reject(new PgError(SqlState.AdminShutdown, 'the gateway is shutting down'))
    const ready = control ? (this.links[0].isOpen ? this.links[0] : null) : this.openLink()
    if (ready !== null) return Promise.resolve(ready)
    return new Promise((resolve, reject) => {
      const waiter = {
        control,
        resolve: (link: LinkConnection) => {
          clearTimeout(timer)
          resolve(link)
        },
        reject: (error: Error) => {
          clearTimeout(timer)
          reject(error)
        },
      }
      const timer = setTimeout(() => {
        const index = this.openWaiters.indexOf(waiter)
        if (index >= 0) this.openWaiters.splice(index, 1)
        reject(this.unreachable())
      }, this.options.waitTimeoutMs)
      timer.unref()
      this.openWaiters.push(waiter)
      for (const link of this.links) if (!control || link.index === 0) link.connect()
    })
  }

  private unreachable(): PgError {
    return new PgError(
      SqlState.ConnectionFailure,
      `cannot reach the pooler at ${this.describe()}: ${this.lastError}`,
    )
  }

  private failOpenWaiters(): void {
    const error = new PgError(SqlState.AdminShutdown, 'the gateway is shutting down')
    for (const waiter of this.openWaiters.splice(0)) waiter.reject(error)
  }

  get logger(): Logger {
    return this.log
  }

  get connectTarget(): net.NetConnectOpts {
    const address = this.options.address
    return 'path' in address
      ? { path: address.path }
      : { host: address.host, port: address.port, noDelay: true }
  }
}

/** Something that lives on one stream of a link connection. */
interface RemoteStream {
  onData(piece: Buffer): void
  onControl(kind: Kind, payload: Buffer): void
  /** The end of a link chunk that carried data for this stream. */
  flush(): void
  linkLost(error: Error): void
  /** Set while the stream is on the link's list of streams touched by the current chunk. */
  touched: boolean
}

/** One socket of the lease link, with its streams. */
class LinkConnection implements LinkHandler {
  readonly index: number
  writer!: LinkWriter
  /** The pooler process at the other end (its Hello), '' before it said. */
  incarnation = ''
  private readonly pooler: RemotePooler
  private socket: net.Socket | null = null
  private state: 'closed' | 'connecting' | 'open' = 'closed'
  private readonly streams = new Map<number, RemoteStream>()
  private readonly waiting = new Map<LeaseRequest, PendingLease>()
  private nextStream = 1
  private readonly definitions = new Map<string, number>()
  private nextDefinition = 1
  private touched: RemoteStream[] = []
  private reconnectMs = RECONNECT_MIN_MS
  private reconnectTimer: NodeJS.Timeout | null = null

  constructor(pooler: RemotePooler, index: number) {
    this.pooler = pooler
    this.index = index
  }

  get isOpen(): boolean {
    return this.state === 'open'
  }

  connect(): void {
    if (this.state !== 'closed' || this.pooler.isClosed || this.reconnectTimer !== null) return
    this.state = 'connecting'
    const socket = net.connect(this.pooler.connectTarget)
    this.socket = socket
    this.writer = new LinkWriter(socket)
    const reader = new LinkReader(this)
    // A pooler host that does not answer must not hold the link in 'connecting' for good.
    socket.setTimeout(CONNECT_TIMEOUT_MS, () => socket.destroy(new Error('connect timed out')))
    socket.once('connect', () => {
      socket.setTimeout(0)
      // Over TCP, a pooler host that vanished is found out eventually even on an idle link.
      socket.setKeepAlive(true, KEEPALIVE_MS)
      this.state = 'open'
      this.reconnectMs = RECONNECT_MIN_MS
      this.pooler.opened(this)
    })
    socket.on('data', (chunk: Buffer) => {
      try {
        reader.feed(chunk)
      } catch (error) {
        this.pooler.logger.error(
          { err: (error as Error).message },
          'malformed lease link frame; reconnecting',
        )
        socket.destroy()
      }
    })
    socket.on('error', (error) => this.pooler.linkFailed(this, error))
    socket.on('close', () => this.lost(socket))
  }

  close(): void {
    if (this.reconnectTimer !== null) clearTimeout(this.reconnectTimer)
    this.reconnectTimer = null
    this.socket?.destroy()
  }

  acquire(database: string, user: string, request: LeaseRequest): void {
    const stream = this.newStream()
    const pending = new PendingLease(this, stream, request, () =>
      this.pooler.acquire(database, user, request),
    )
    this.streams.set(stream, pending)
    this.waiting.set(request, pending)
    const acquire = Buffer.allocUnsafe(4)
    acquire.writeUInt32BE(this.definition(database, user, request), 0)
    this.writer.control(Kind.Acquire, stream, acquire)
  }

  cancelWait(request: LeaseRequest): boolean {
    const pending = this.waiting.get(request)
    if (pending === undefined) return false
    this.waiting.delete(request)
    pending.cancel()
    return true
  }

  openDedicated(
    database: string,
    user: string,
    parameters: Record<string, string>,
  ): Promise<DedicatedConnection> {
    const stream = this.newStream()
    return new Promise((resolve, reject) => {
      this.streams.set(stream, new RemoteDedicated(this, stream, resolve, reject))
      this.writer.control(Kind.OpenDedicated, stream, JSON.stringify({ database, user, parameters }))
    })
  }

  /** Replaces what lives on `stream` (a pending lease becoming a lease), or removes it. */
  setStream(stream: number, next: RemoteStream | null): void {
    if (next === null) this.streams.delete(stream)
    else this.streams.set(stream, next)
  }

  leaseSettled(request: LeaseRequest): void {
    this.waiting.delete(request)
  }

  mirror(backendId: number, generation: number): Mirror {
    return this.pooler.mirror(this.incarnation, backendId, generation)
  }

  onData(stream: number, piece: Buffer): void {
    const target = this.streams.get(stream)
    if (target === undefined) return
    target.onData(piece)
    if (!target.touched) {
      target.touched = true
      this.touched.push(target)
    }
  }

  onChunkEnd(): void {
    if (this.touched.length === 0) return
    const touched = this.touched
    this.touched = []
    for (const target of touched) {
      target.touched = false
      target.flush()
    }
  }

  onControl(kind: Kind, stream: number, payload: Buffer): void {
    switch (kind) {
      case Kind.Hello:
        this.incarnation = (JSON.parse(payload.toString()) as { incarnation: string }).incarnation
        this.pooler.hello()
        return
      case Kind.BackendGone:
        this.pooler.backendGone(this.incarnation, stream)
        return
      case Kind.Reply:
        this.pooler.reply(stream, payload)
        return
      case Kind.Notify:
        this.pooler.notify(payload)
        return
      default:
        this.streams.get(stream)?.onControl(kind, payload)
    }
  }

  private lost(socket: net.Socket): void {
    if (this.socket !== socket) return
    const wasOpen = this.state === 'open'
    this.state = 'closed'
    this.socket = null
    this.definitions.clear()
    this.nextDefinition = 1
    const error = new PgError(
      SqlState.ConnectionFailure,
      `lost the lease link to the pooler at ${this.pooler.describe()}`,
    )
    this.pooler.linkFailed(this, error)
    const streams = [...this.streams.values()]
    this.streams.clear()
    this.waiting.clear()
    for (const target of streams) target.linkLost(error)
    if (wasOpen)
      this.pooler.logger.warn({ link: this.pooler.describe() }, 'lease link lost; reconnecting when needed')
    if (!this.pooler.wanted(this) || this.state !== 'closed') return
    // The pooler is coming back (its process restarts): try again soon, then less often.
    if (this.reconnectTimer !== null) clearTimeout(this.reconnectTimer)
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null
      if (this.pooler.wanted(this)) this.connect()
    }, this.reconnectMs)
    this.reconnectTimer.unref()
    this.reconnectMs = Math.min(this.reconnectMs * 2, RECONNECT_MAX_MS)
  }

  private newStream(): number {
    let stream = this.nextStream
    while (this.streams.has(stream)) stream = stream >= 0xffffffff ? 1 : stream + 1
    this.nextStream = stream >= 0xffffffff ? 1 : stream + 1
    return stream
  }

  /** The ref of what `request` asks for, defined on this connection first if new. */
  private definition(database: string, user: string, request: LeaseRequest): number {
    const names = request.customSettingNames
    const custom = names.size === 0 ? '' : [...names].sort().join('\0')
    const key = `${database}\0${user}\0${request.settingsKey}\0${custom}`
    let ref = this.definitions.get(key)
    if (ref !== undefined) return ref
    if (this.definitions.size >= MAX_DEFINITIONS) {
      this.definitions.clear()
      this.writer.control(Kind.ForgetDefinitions, 0)
    }
    ref = this.nextDefinition++
    this.definitions.set(key, ref)
    const definition: LeaseDefinition = {
      database,
      user,
      settings: [...request.settings],
      settingsKey: request.settingsKey,
      customSettingNames: [...names],
    }
    this.writer.control(Kind.Define, ref, JSON.stringify(definition))
    return ref
  }
}

/** A lease asked for and not granted yet. */
class PendingLease implements RemoteStream {
  touched = false
  private readonly link: LinkConnection
  private readonly stream: number
  private readonly request: LeaseRequest
  /** Asks again, on whichever link connection is (or comes) up. */
  private readonly retry: () => void
  private cancelled = false

  constructor(link: LinkConnection, stream: number, request: LeaseRequest, retry: () => void) {
    this.link = link
    this.stream = stream
    this.request = request
    this.retry = retry
  }

  cancel(): void {
    this.cancelled = true
    this.link.writer.control(Kind.CancelWait, this.stream)
  }

  onData(): void {}

  flush(): void {}

  onControl(kind: Kind, payload: Buffer): void {
    if (kind === Kind.Grant) {
      this.link.leaseSettled(this.request)
      const mirror = this.link.mirror(payload.readUInt32BE(0), payload.readUInt32BE(4))
      const lease = new RemoteLease(this.link, this.stream, payload.readUInt32BE(0), mirror)
      this.link.setStream(this.stream, lease)
      // Granted while the cancel was on its way: straight back.
      if (this.cancelled) lease.release()
      else this.request.onLease(lease)
      return
    }
    if (kind === Kind.LeaseError) {
      this.link.leaseSettled(this.request)
      this.link.setStream(this.stream, null)
      if (!this.cancelled) this.request.onLeaseError(asPgError(parseError(payload)))
    }
  }

  linkLost(): void {
    // No backend did anything for it yet: the request can wait for the link to return
    // (a pooler process restarting), within the usual wait timeout.
    if (!this.cancelled) this.retry()
  }
}

/** Backend messages handed on in pieces when large, as a pooler's own backends do. */
const BACKEND_FRAMING = { streamTypes: [Backend.DataRow, Backend.CopyData], transientChunks: true }

/**
 * A backend at the far end of a stream, as leases and dedicated backends both see it:
 * its messages framed again for a receiver, bytes written to it with the backpressure
 * of the link socket and of the backend's own socket (Kind.Full until Kind.Drained).
 */
abstract class RemoteBackend implements FrameHandler, RemoteStream {
  touched = false
  receiver: BackendReceiver | null = null
  protected readonly link: LinkConnection
  protected readonly stream: number
  protected active = true
  private readonly framer: Framer
  private full = false
  private readonly drainWaiters: (() => void)[] = []

  constructor(link: LinkConnection, stream: number) {
    this.link = link
    this.stream = stream
    this.framer = new Framer(this, BACKEND_FRAMING)
  }

  abstract onControl(kind: Kind, payload: Buffer): void
  abstract linkLost(error: Error): void

  send(data: Buffer): boolean {
    if (!this.active) return true
    this.link.writer.data(this.stream, data)
    return !this.full && this.link.writer.writable
  }

  onDrain(callback: () => void): void {
    if (this.full) this.drainWaiters.push(callback)
    else this.link.writer.onDrain(callback)
  }

  pause(): void {
    this.control(Kind.Pause)
  }

  resume(): void {
    this.control(Kind.Resume)
  }

  cancel(): void {
    this.control(Kind.Cancel)
  }

  onData(piece: Buffer): void {
    this.framer.feed(piece)
  }

  onMessage(type: number, frame: Buffer): void {
    this.receiver?.onBackendMessage(type, frame)
  }

  onMessagePart(type: number, piece: Buffer, first: boolean, last: boolean): void {
    this.receiver?.onBackendMessagePart(type, piece, first, last)
  }

  flush(): void {
    this.receiver?.onBackendFlush()
  }

  /** Handles Kind.Full and Kind.Drained; false for any other kind. */
  protected flowControl(kind: Kind): boolean {
    if (kind === Kind.Full) {
      this.full = true
      return true
    }
    if (kind !== Kind.Drained) return false
    this.full = false
    for (const waiter of this.drainWaiters.splice(0)) this.link.writer.onDrain(waiter)
    return true
  }

  /** The stream is over: nothing more is sent on it, and those waiting to send are told. */
  protected finish(): void {
    this.active = false
    this.full = false
    this.link.setStream(this.stream, null)
    // Whoever waits to send more must not wait for a drain that will never come.
    for (const waiter of this.drainWaiters.splice(0)) waiter()
  }

  protected control(kind: Kind, payload?: Buffer | string): void {
    if (this.active) this.link.writer.control(kind, this.stream, payload)
  }
}

/** The gateway's side of a lease on a remote backend: the same verbs as an in-process lease. */
class RemoteLease extends RemoteBackend implements Lease {
  readonly backendId: number
  private readonly mirrorOf: Mirror
  /** ReadyForQuery messages handed to receivers (see Kind.Abandon). */
  private delivered = 0
  private closedError: Error | null = null
  private readonly queries = new InternalQueries()
  /** The pooler ends this lease at its last ReadyForQuery (see releaseEarly). */
  private endsItself = false

  constructor(link: LinkConnection, stream: number, backendId: number, mirror: Mirror) {
    super(link, stream)
    this.backendId = backendId
    this.mirrorOf = mirror
  }

  get prepared(): Set<string> {
    return this.mirrorOf.prepared
  }

  get preparedGeneration(): number {
    return this.mirrorOf.generation
  }

  dropPrepared(): void {
    this.mirrorOf.prepared.clear()
    // Only the lease holder changes it: the pooler's count moves the same way.
    this.mirrorOf.generation++
    this.control(Kind.DropPrepared)
  }

  attach(receiver: BackendReceiver): void {
    this.receiver = receiver
    if (this.closedError !== null) receiver.onBackendClosed(this.closedError, false)
  }

  /** For internal queries (simpleQuery). */
  write(data: Buffer): boolean {
    return this.send(data)
  }

  release(): void {
    if (this.queries.deferred(() => this.release())) return
    // After releaseEarly the pooler ended the lease at the ReadyForQuery just received.
    if (this.end() && !this.endsItself) this.link.writer.control(Kind.Release, this.stream)
  }

  releaseEarly(syncPoints: number): void {
    if (this.queries.busy) return
    this.endsItself = true
    const payload = Buffer.allocUnsafe(8)
    payload.writeUInt32BE(syncPoints, 0)
    payload.writeUInt32BE(this.delivered >>> 0, 4)
    this.control(Kind.ReleaseEarly, payload)
  }

  abandon(syncPoints: number, unsynced: boolean, reset: boolean): void {
    if (this.queries.deferred(() => this.abandon(syncPoints, unsynced, reset))) return
    if (!this.end()) return
    const payload = Buffer.allocUnsafe(10)
    payload.writeUInt32BE(syncPoints, 0)
    payload.writeUInt32BE(this.delivered >>> 0, 4)
    payload[8] = unsynced ? 1 : 0
    payload[9] = reset ? 1 : 0
    this.link.writer.control(Kind.Abandon, this.stream, payload)
  }

  releaseDirty(unsynced: boolean, reset: boolean): void {
    if (this.queries.deferred(() => this.releaseDirty(unsynced, reset))) return
    if (this.end())
      this.link.writer.control(Kind.ReleaseDirty, this.stream, Buffer.from([unsynced ? 1 : 0, reset ? 1 : 0]))
  }

  discard(reason: string): void {
    if (this.queries.deferred(() => this.discard(reason))) return
    if (this.end()) this.link.writer.control(Kind.Discard, this.stream, reason)
  }

  query(sql: string): Promise<QueryResult> {
    return this.queries.track(simpleQuery(this, sql))
  }

  setSettings(settings: ReadonlyMap<string, string>, key: string): void {
    this.control(Kind.SetSettings, JSON.stringify({ settings: [...settings], key }))
  }

  setPinned(pinned: boolean): void {
    this.control(Kind.SetPinned, Buffer.from([pinned ? 1 : 0]))
  }

  override onMessage(type: number, frame: Buffer): void {
    if (type === Backend.ReadyForQuery) this.delivered++
    super.onMessage(type, frame)
  }

  onControl(kind: Kind, payload: Buffer): void {
    if (this.flowControl(kind) || kind !== Kind.Closed) return
    const { unserved, ...error } = JSON.parse(payload.toString()) as LinkError & { unserved: boolean }
    this.closed(fromLinkError(error), unserved)
  }

  linkLost(error: Error): void {
    this.closed(error, false)
  }

  private closed(error: Error, unserved: boolean): void {
    this.finish()
    this.closedError = error
    this.receiver?.onBackendClosed(error, unserved)
  }

  private end(): boolean {
    if (!this.active) return false
    this.finish()
    this.receiver = null
    return true
  }
}

/** A remote dedicated backend: bytes pass through the stream both ways. */
class RemoteDedicated extends RemoteBackend implements DedicatedConnection {
  readonly parameters = new Map<string, string>()
  private opening: { resolve: (backend: DedicatedConnection) => void; reject: (error: Error) => void } | null

  constructor(
    link: LinkConnection,
    stream: number,
    resolve: (backend: DedicatedConnection) => void,
    reject: (error: Error) => void,
  ) {
    super(link, stream)
    this.opening = { resolve, reject }
  }

  attach(receiver: BackendReceiver): void {
    this.receiver = receiver
  }

  close(): void {
    if (!this.active) return
    this.control(Kind.CloseDedicated)
    this.finish()
  }

  onControl(kind: Kind, payload: Buffer): void {
    if (this.flowControl(kind)) return
    switch (kind) {
      case Kind.DedicatedReady: {
        const { parameters } = JSON.parse(payload.toString()) as { parameters: [string, string][] }
        for (const [name, value] of parameters) this.parameters.set(name, value)
        const opening = this.opening
        this.opening = null
        opening?.resolve(this)
        return
      }
      case Kind.LeaseError:
        this.failed(asPgError(parseError(payload)))
        return
      case Kind.Closed:
        this.failed(fromLinkError(parseError(payload)))
        return
    }
  }

  linkLost(error: Error): void {
    this.failed(error)
  }

  private failed(error: Error): void {
    this.finish()
    const opening = this.opening
    this.opening = null
    if (opening !== null) opening.reject(error)
    else this.receiver?.onBackendClosed(error, false)
  }
}

/**
 * LISTEN through a remote pooler's shared listening connection: channels are counted
 * here, and the pooler is told only of the first listener and the last to leave.
 */
class RemoteNotifications implements NotificationChannels {
  private readonly pooler: RemotePooler
  private readonly database: string
  private readonly channels = new Map<string, Set<NotificationListener>>()

  constructor(pooler: RemotePooler, database: string) {
    this.pooler = pooler
    this.database = database
  }

  get active(): boolean {
    return this.channels.size > 0
  }

  async listen(channel: string, listener: NotificationListener): Promise<void> {
    let listeners = this.channels.get(channel)
    if (listeners === undefined) {
      listeners = new Set()
      this.channels.set(channel, listeners)
    }
    listeners.add(listener)
    if (listeners.size === 1) await this.pooler.request({ op: 'listen', database: this.database, channel })
  }

  async unlisten(channel: string, listener: NotificationListener): Promise<void> {
    const listeners = this.channels.get(channel)
    if (listeners === undefined || !listeners.delete(listener) || listeners.size > 0) return
    this.channels.delete(channel)
    await this.pooler.request({ op: 'unlisten', database: this.database, channel })
  }

  async unlistenAll(listener: NotificationListener, channels: Iterable<string>): Promise<void> {
    await Promise.all([...channels].map((channel) => this.unlisten(channel, listener)))
  }

  /** A NotificationResponse frame (a copy) from the pooler. */
  deliver(frame: Buffer): void {
    const channelEnd = frame.indexOf(0, 9)
    const listeners = this.channels.get(frame.toString('utf8', 9, channelEnd))
    if (listeners === undefined) return
    for (const listener of listeners) listener.onNotification(frame)
  }

  /** The control link came back: the pooler listens again for every channel still wanted. */
  resubscribe(): void {
    for (const channel of this.channels.keys()) {
      void this.pooler.request({ op: 'listen', database: this.database, channel }).catch(() => {})
    }
  }
}

function parseError(payload: Buffer): LinkError {
  return JSON.parse(payload.toString()) as LinkError
}

function asPgError(error: Error | LinkError): PgError {
  if (error instanceof PgError) return error
  const converted = error instanceof Error ? error : fromLinkError(error)
  return converted instanceof PgError ? converted : new PgError(SqlState.ConnectionFailure, converted.message)
}
