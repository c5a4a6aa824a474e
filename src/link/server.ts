import { unlink } from 'node:fs/promises'
import net from 'node:net'
import type { Logger } from '../log.ts'
import type {
  BackendReceiver,
  DedicatedConnection,
  Lease,
  LeaseRequest,
  NotificationListener,
  Pooler,
} from '../pooler/index.ts'
import { Backend, keepsPipelinePromise, PgError, SqlState, TxStatus } from '../protocol/index.ts'
import { toLinkError } from './errors.ts'
import {
  describeAddress,
  Kind,
  type LeaseDefinition,
  type LinkAddress,
  type LinkHandler,
  LinkReader,
  type LinkRequest,
  LinkWriter,
} from './frames.ts'

/** A pooler serving its backends to gateways in other processes. */
export interface LeaseLinkServer {
  readonly address: LinkAddress
  /** Gateway connections open now. */
  connectionCount(): number
  /** Stops accepting and ends every link connection (their leased backends are closed). */
  close(): Promise<void>
}

/**
 * Serves `pooler` over the lease link at `address` (a Unix socket path, or TCP). Every
 * gateway connection gets its own streams; what a lease does on the backend is the
 * pooler's own lease, driven by the frames the gateway sends.
 */
export async function serveLeaseLink(
  pooler: Pooler,
  address: LinkAddress,
  log: Logger,
): Promise<LeaseLinkServer> {
  const peers = new Set<LinkPeer>()
  const server = net.createServer({ noDelay: true }, (socket) => {
    const peer = new LinkPeer(socket, pooler, log, () => peers.delete(peer))
    peers.add(peer)
  })
  if ('path' in address) await unlink(address.path).catch(() => {})
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    const options = 'path' in address ? { path: address.path } : { host: address.host, port: address.port }
    server.listen({ ...options, backlog: 1024 }, () => {
      server.off('error', reject)
      resolve()
    })
  })
  const bound =
    'path' in address ? address : { host: address.host, port: (server.address() as net.AddressInfo).port }
  const stopWatching = pooler.onBackendGone((backendId) => {
    for (const peer of peers) peer.backendGone(backendId)
  })
  log.info({ link: describeAddress(bound) }, 'lease link listening')
  return {
    address: bound,
    connectionCount: () => peers.size,
    async close() {
      stopWatching()
      const closed = new Promise((resolve) => server.close(resolve))
      for (const peer of [...peers]) peer.close()
      await closed
    },
  }
}

/** One gateway's link connection, as the pooler sees it. */
class LinkPeer implements LinkHandler {
  readonly writer: LinkWriter
  private readonly socket: net.Socket
  private readonly pooler: Pooler
  private readonly log: Logger
  private readonly reader: LinkReader
  private readonly definitions = new Map<number, ServedDefinition>()
  readonly streams = new Map<number, LinkLease | LinkDedicated>()
  /** One forwarder per (database, channel) this gateway listens to. */
  private readonly subscriptions = new Map<string, NotifyForwarder>()
  private closed = false
  private readonly onClosed: () => void

  constructor(socket: net.Socket, pooler: Pooler, log: Logger, onClosed: () => void) {
    this.socket = socket
    this.pooler = pooler
    this.log = log
    this.onClosed = onClosed
    this.writer = new LinkWriter(socket)
    // A gateway that does not keep up with its link must not make the pooler buffer
    // every backend's output: reading stops until the link drains.
    this.writer.onBlocked = (blocked) => {
      for (const served of this.streams.values()) served.gate.setLink(blocked)
    }
    this.reader = new LinkReader(this)
    this.writer.control(Kind.Hello, 0, JSON.stringify({ incarnation: pooler.incarnation }))
    // Chunks from 'data' are fresh buffers: Data pieces may be handed to backend sockets as they are.
    socket.on('data', (chunk: Buffer) => {
      try {
        this.reader.feed(chunk)
      } catch (error) {
        this.log.error({ err: (error as Error).message }, 'malformed lease link frame; closing the link')
        this.close()
      }
    })
    socket.on('error', () => {})
    socket.on('close', () => this.close())
  }

  backendGone(backendId: number): void {
    this.writer.control(Kind.BackendGone, backendId)
  }

  onData(stream: number, piece: Buffer): void {
    this.streams.get(stream)?.data(piece)
  }

  onChunkEnd(): void {}

  onControl(kind: Kind, stream: number, payload: Buffer): void {
    switch (kind) {
      case Kind.Define: {
        const definition = JSON.parse(payload.toString()) as LeaseDefinition
        this.definitions.set(stream, {
          database: definition.database,
          user: definition.user,
          settings: new Map(definition.settings),
          settingsKey: definition.settingsKey,
          customSettingNames: new Set(definition.customSettingNames),
        })
        return
      }
      case Kind.ForgetDefinitions:
        this.definitions.clear()
        return
      case Kind.Acquire: {
        const definition = this.definitions.get(payload.readUInt32BE(0))
        if (definition === undefined) throw new Error(`lease asked for with an unknown definition`)
        const lease = new LinkLease(this, stream, definition)
        this.streams.set(stream, lease)
        this.pooler.acquire(definition.database, definition.user, lease)
        return
      }
      case Kind.OpenDedicated: {
        const { database, user, parameters } = JSON.parse(payload.toString()) as {
          database: string
          user: string
          parameters: Record<string, string>
        }
        const dedicated = new LinkDedicated(this, stream)
        this.streams.set(stream, dedicated)
        this.pooler.dedicated(database, user, parameters).then(
          (backend) => dedicated.opened(backend),
          (error: Error) => dedicated.failed(error),
        )
        return
      }
      case Kind.Request:
        this.request(stream, JSON.parse(payload.toString()) as LinkRequest)
        return
      default:
        this.streams.get(stream)?.control(kind, payload)
    }
  }

  /** A lease or dedicated backend left the link: its stream id may be used again. */
  forget(stream: number, served: LinkLease | LinkDedicated): void {
    if (this.streams.get(stream) === served) this.streams.delete(stream)
  }

  close(): void {
    if (this.closed) return
    this.closed = true
    this.socket.destroy()
    for (const served of this.streams.values()) served.linkLost()
    this.streams.clear()
    for (const [key, forwarder] of this.subscriptions) {
      const [database, channel] = key.split('\0')
      void this.pooler
        .notifications(database)
        .unlisten(channel, forwarder)
        .catch(() => {})
    }
    this.subscriptions.clear()
    this.onClosed()
  }

  /** Cancels a request that still waits for a lease. */
  cancelWait(lease: LinkLease, definition: ServedDefinition): void {
    this.pooler.cancelWait(definition.database, definition.user, lease)
  }

  private request(id: number, request: LinkRequest): void {
    const reply = (result: Promise<unknown>) => {
      result.then(
        (value) => {
          if (id !== 0) this.writer.control(Kind.Reply, id, JSON.stringify({ result: value ?? null }))
        },
        (error: Error) => {
          if (id !== 0) this.writer.control(Kind.Reply, id, JSON.stringify({ error: toLinkError(error) }))
        },
      )
    }
    switch (request.op) {
      case 'role':
        reply(this.pooler.lookupRole(request.user))
        return
      case 'credentials': {
        const { password, md5Hash, clientKey, serverKey } = request
        this.pooler.setCredentials(request.user, {
          ...(password !== undefined && { password }),
          ...(md5Hash !== undefined && { md5Hash }),
          ...(clientKey !== undefined &&
            serverKey !== undefined && {
              scramKeys: {
                clientKey: Buffer.from(clientKey, 'base64'),
                serverKey: Buffer.from(serverKey, 'base64'),
              },
            }),
        })
        reply(Promise.resolve())
        return
      }
      case 'listen': {
        const key = `${request.database}\0${request.channel}`
        let forwarder = this.subscriptions.get(key)
        if (forwarder === undefined) {
          forwarder = new NotifyForwarder(this.writer, request.database)
          this.subscriptions.set(key, forwarder)
        }
        reply(this.pooler.notifications(request.database).listen(request.channel, forwarder))
        return
      }
      case 'unlisten': {
        const key = `${request.database}\0${request.channel}`
        const forwarder = this.subscriptions.get(key)
        this.subscriptions.delete(key)
        reply(
          forwarder === undefined
            ? Promise.resolve()
            : this.pooler.notifications(request.database).unlisten(request.channel, forwarder),
        )
        return
      }
      default:
        reply(Promise.reject(new Error(`unknown lease link request ${(request as { op: string }).op}`)))
    }
  }
}

interface ServedDefinition {
  database: string
  user: string
  settings: Map<string, string>
  settingsKey: string
  customSettingNames: Set<string>
}

/** Writes a gateway's bytes to a backend, and tells the gateway when the backend's buffer is full. */
function toBackend(
  peer: LinkPeer,
  stream: number,
  target: { send(data: Buffer): boolean; onDrain(callback: () => void): void },
  piece: Buffer,
  state: { full: boolean; live(): boolean },
): void {
  if (target.send(piece) || state.full) return
  state.full = true
  peer.writer.control(Kind.Full, stream)
  target.onDrain(() => {
    state.full = false
    if (state.live()) peer.writer.control(Kind.Drained, stream)
  })
}

/**
 * Whether a backend's socket is read: not while its session's client is full (Pause
 * from the gateway) nor while the gateway's link is full.
 */
class ReadGate {
  private session = false
  private link = false
  private target: { pause(): void; resume(): void } | null = null

  /** Starts gating `target`, closed at once if the link is full now (or its client was). */
  attach(target: { pause(): void; resume(): void }, linkFull: boolean): void {
    this.target = target
    this.link = linkFull
    if (this.session || this.link) target.pause()
  }

  /** Takes Kind.Pause and Kind.Resume from the gateway; false for any other kind. */
  sessionControl(kind: Kind): boolean {
    if (kind !== Kind.Pause && kind !== Kind.Resume) return false
    this.session = kind === Kind.Pause
    this.apply()
    return true
  }

  setLink(paused: boolean): void {
    if (this.link === paused) return
    this.link = paused
    this.apply()
  }

  private apply(): void {
    if (this.session || this.link) this.target?.pause()
    else this.target?.resume()
  }
}

/**
 * A lease a remote session asked for: waits in the pool like any request, then forwards
 * what the backend sends, as it is, until the gateway ends the lease.
 */
class LinkLease implements LeaseRequest, BackendReceiver {
  readonly settings: ReadonlyMap<string, string>
  readonly settingsKey: string
  readonly customSettingNames: ReadonlySet<string>
  private readonly peer: LinkPeer
  private readonly stream: number
  private readonly definition: ServedDefinition
  private lease: Lease | null = null
  private state: 'waiting' | 'leased' | 'done' = 'waiting'
  /** ReadyForQuery messages forwarded, and the last one's status (see Kind.Abandon). */
  private readyForwarded = 0
  private lastStatus: number = TxStatus.Idle
  /** After Kind.ReleaseEarly: ReadyForQuery messages until the pooler ends the lease itself. */
  private releaseAfter = 0
  /**
   * Whether the replies since the last ReadyForQuery, and those up to the last one, were
   * what a batch released early promises (see keepsPipelinePromise): checked on every
   * batch, since the promise may arrive after its replies were forwarded.
   */
  private batchKeptPromise = true
  private lastBatchKeptPromise = true
  readonly flow = { full: false, live: () => this.state === 'leased' }
  readonly gate = new ReadGate()

  constructor(peer: LinkPeer, stream: number, definition: ServedDefinition) {
    this.peer = peer
    this.stream = stream
    this.definition = definition
    this.settings = definition.settings
    this.settingsKey = definition.settingsKey
    this.customSettingNames = definition.customSettingNames
  }

  onLease(lease: Lease): void {
    if (this.state !== 'waiting') {
      lease.release()
      return
    }
    this.state = 'leased'
    this.lease = lease
    const grant = Buffer.allocUnsafe(8)
    grant.writeUInt32BE(lease.backendId, 0)
    grant.writeUInt32BE(lease.preparedGeneration, 4)
    this.peer.writer.control(Kind.Grant, this.stream, grant)
    lease.attach(this)
    this.gate.attach(lease, !this.peer.writer.writable)
  }

  onLeaseError(error: PgError): void {
    if (this.state !== 'waiting') return
    this.done()
    this.peer.writer.control(Kind.LeaseError, this.stream, JSON.stringify(toLinkError(error)))
  }

  onBackendMessage(type: number, frame: Buffer): void {
    if (this.state !== 'leased') return
    if (!keepsPipelinePromise(type, frame)) this.batchKeptPromise = false
    if (type !== Backend.ReadyForQuery) {
      this.peer.writer.data(this.stream, frame)
      return
    }
    this.readyForwarded++
    this.lastStatus = frame[5]
    this.lastBatchKeptPromise = this.batchKeptPromise
    this.batchKeptPromise = true
    this.peer.writer.data(this.stream, frame)
    // The promised batch is answered: whatever the backend sends next is for the lease
    // queued behind (if any), so the lease ends now, not when the gateway says so.
    if (this.releaseAfter > 0 && --this.releaseAfter === 0) this.endEarly()
  }

  /** Ends a lease whose batch was promised to end idle (see Kind.ReleaseEarly). */
  private endEarly(): void {
    const lease = this.lease!
    this.done()
    // A promise broken (the batch changed session state or left a transaction open)
    // must not reach the leases queued behind it, nor anyone after.
    if (!this.lastBatchKeptPromise) lease.discard('a pipelined batch changed session state')
    else lease.release()
  }

  onBackendMessagePart(_type: number, piece: Buffer): void {
    if (this.state === 'leased') this.peer.writer.data(this.stream, piece)
  }

  onBackendFlush(): void {}

  onBackendClosed(error: Error, unserved: boolean): void {
    if (this.state !== 'leased') return
    this.done()
    this.peer.writer.control(Kind.Closed, this.stream, JSON.stringify({ ...toLinkError(error), unserved }))
  }

  data(piece: Buffer): void {
    if (this.lease !== null && this.state === 'leased')
      toBackend(this.peer, this.stream, this.lease, piece, this.flow)
  }

  control(kind: Kind, payload: Buffer): void {
    if (this.state === 'waiting') {
      if (kind === Kind.CancelWait) {
        this.done()
        this.peer.cancelWait(this, this.definition)
        // The answer frees the gateway's stream (a Grant may cross the cancel instead).
        this.peer.writer.control(
          Kind.LeaseError,
          this.stream,
          JSON.stringify(toLinkError(new PgError(SqlState.QueryCanceled, 'lease request withdrawn'))),
        )
      }
      return
    }
    const lease = this.lease
    if (lease === null || this.state !== 'leased' || this.gate.sessionControl(kind)) return
    // The pooler ends an early-released lease at its last ReadyForQuery: the session's
    // own release of it is moot (an abandon still stops the forwarding of its replies).
    if (this.releaseAfter > 0 && (kind === Kind.Release || kind === Kind.ReleaseDirty)) return
    switch (kind) {
      case Kind.ReleaseEarly: {
        const remaining = payload.readUInt32BE(0) - (this.readyForwarded - payload.readUInt32BE(4))
        if (remaining <= 0) {
          this.endEarly()
          return
        }
        this.releaseAfter = remaining
        lease.releaseEarly(remaining)
        return
      }
      case Kind.Release:
        this.done()
        lease.release()
        return
      case Kind.ReleaseDirty:
        this.done()
        lease.releaseDirty(payload[0] === 1, payload[1] === 1)
        return
      case Kind.Abandon: {
        this.done()
        const syncPoints = payload.readUInt32BE(0)
        const delivered = payload.readUInt32BE(4)
        const unsynced = payload[8] === 1
        const reset = payload[9] === 1
        // Replies already on their way to the gateway answered some of its sync points.
        const remaining = syncPoints - (this.readyForwarded - delivered)
        if (remaining > 0) lease.abandon(remaining, unsynced, reset)
        else if (this.lastStatus === TxStatus.Idle && !unsynced && !reset) lease.release()
        else lease.releaseDirty(unsynced, reset)
        return
      }
      case Kind.Discard:
        this.done()
        lease.discard(payload.toString())
        return
      case Kind.Cancel:
        lease.cancel()
        return
      case Kind.SetSettings: {
        const { settings, key } = JSON.parse(payload.toString()) as {
          settings: [string, string][]
          key: string
        }
        lease.setSettings(new Map(settings), key)
        return
      }
      case Kind.SetPinned:
        lease.setPinned(payload[0] === 1)
        return
      case Kind.DropPrepared:
        lease.dropPrepared()
        return
    }
  }

  /** The gateway is gone: a waiting request is withdrawn, a lease in unknown state is closed. */
  linkLost(): void {
    const state = this.state
    this.state = 'done'
    if (state === 'waiting') this.peer.cancelWait(this, this.definition)
    else if (state === 'leased') this.lease?.discard('the gateway lease link closed')
  }

  private done(): void {
    this.state = 'done'
    this.peer.forget(this.stream, this)
  }
}

/** A dedicated backend a remote session asked for: bytes pass through both ways. */
class LinkDedicated implements BackendReceiver {
  private readonly peer: LinkPeer
  private readonly stream: number
  private backend: DedicatedConnection | null = null
  private closed = false
  readonly flow = { full: false, live: () => !this.closed }
  readonly gate = new ReadGate()

  constructor(peer: LinkPeer, stream: number) {
    this.peer = peer
    this.stream = stream
  }

  opened(backend: DedicatedConnection): void {
    if (this.closed) {
      backend.close()
      return
    }
    this.backend = backend
    this.peer.writer.control(
      Kind.DedicatedReady,
      this.stream,
      JSON.stringify({ parameters: [...backend.parameters] }),
    )
    backend.attach(this)
    this.gate.attach(backend, !this.peer.writer.writable)
  }

  failed(error: Error): void {
    if (this.closed) return
    this.closed = true
    this.peer.forget(this.stream, this)
    this.peer.writer.control(Kind.LeaseError, this.stream, JSON.stringify(toLinkError(error)))
  }

  onBackendMessage(_type: number, frame: Buffer): void {
    if (!this.closed) this.peer.writer.data(this.stream, frame)
  }

  onBackendMessagePart(_type: number, piece: Buffer): void {
    if (!this.closed) this.peer.writer.data(this.stream, piece)
  }

  onBackendFlush(): void {}

  onBackendClosed(error: Error): void {
    if (this.closed) return
    this.closed = true
    this.peer.forget(this.stream, this)
    this.peer.writer.control(
      Kind.Closed,
      this.stream,
      JSON.stringify({ ...toLinkError(error), unserved: false }),
    )
  }

  data(piece: Buffer): void {
    if (this.backend !== null && !this.closed)
      toBackend(this.peer, this.stream, this.backend, piece, this.flow)
  }

  control(kind: Kind): void {
    if (this.gate.sessionControl(kind)) return
    switch (kind) {
      case Kind.CloseDedicated:
        this.linkLost()
        this.peer.forget(this.stream, this)
        return
      case Kind.Cancel:
        this.backend?.cancel()
        return
    }
  }

  linkLost(): void {
    if (this.closed) return
    this.closed = true
    this.backend?.close()
  }
}

/** Hands the notifications of one (database, channel) to the gateway that listens. */
class NotifyForwarder implements NotificationListener {
  private readonly writer: LinkWriter
  private readonly prefix: Buffer

  constructor(writer: LinkWriter, database: string) {
    this.writer = writer
    this.prefix = Buffer.from(`${database}\0`)
  }

  onNotification(frame: Buffer): void {
    this.writer.control(Kind.Notify, 0, Buffer.concat([this.prefix, frame]))
  }
}
