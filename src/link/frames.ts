import type net from 'node:net'
import type { LinkAddress } from '../config/index.ts'

/**
 * The lease link's wire format (ARCHITECTURE.md, "Lease link"): frames of
 * `{kind: u8, stream: u32, length: u32, payload}`, big-endian. Postgres messages travel
 * unchanged inside Data payloads; a stream is one lease (or dedicated backend) of one
 * link connection, numbered by the gateway. For frames that are not about a stream the
 * stream field carries a request id or a backend id.
 *
 * @module
 */

export const FRAME_HEADER = 9

export const Kind = {
  /** Postgres bytes of a stream, either way. */
  Data: 1,

  // gateway → pooler
  /** stream = definition ref; JSON LeaseDefinition. Refs are per link connection. */
  Define: 2,
  /** Forget every definition of this connection (their number is bounded). */
  ForgetDefinitions: 3,
  /** Ask for a lease on `stream`; payload u32 definition ref. */
  Acquire: 4,
  /** The session no longer waits for the lease it asked for on `stream`. */
  CancelWait: 5,
  Release: 6,
  /** u8 unsynced. */
  ReleaseDirty: 7,
  /** u32 sync points outstanding, u32 ReadyForQuery messages delivered so far, u8 unsynced. */
  Abandon: 8,
  /** utf8 reason. */
  Discard: 9,
  /** Cancel what the stream's backend runs now. */
  Cancel: 10,
  Pause: 11,
  Resume: 12,
  /** JSON { settings: [name, value][], key }. */
  SetSettings: 13,
  /** u8 pinned. */
  SetPinned: 14,
  /** The stream's session saw every prepared statement of its backend dropped. */
  DropPrepared: 15,
  /** JSON { database, user, parameters }: a backend outside the pools (replication). */
  OpenDedicated: 16,
  /** Close the stream's dedicated backend. */
  CloseDedicated: 17,
  /** stream = request id (0: no reply wanted); JSON LinkRequest. */
  Request: 18,
  /**
   * u32 sync points outstanding, u32 ReadyForQuery messages delivered so far: the batch
   * ends idle and leaves no state, so the pooler ends the lease itself at its last
   * ReadyForQuery and may queue another session's lease behind it (Lease.releaseEarly).
   */
  ReleaseEarly: 19,

  // pooler → gateway
  /** JSON { incarnation }: sent first on every connection. */
  Hello: 32,
  /** u32 backend id, u32 prepared-statement generation of that backend. */
  Grant: 33,
  /** JSON LinkError: the lease asked for on `stream` cannot be granted. */
  LeaseError: 34,
  /** JSON LinkError & { unserved }: the stream's backend is gone. */
  Closed: 35,
  /** The stream's backend socket buffer is full: stop sending until Drained. */
  Full: 36,
  Drained: 37,
  /** stream = id of a backend the pooler closed. */
  BackendGone: 38,
  /** stream = request id; JSON { result } or { error: LinkError }. */
  Reply: 39,
  /** database (C string), then a NotificationResponse frame. */
  Notify: 40,
  /** JSON { parameters: [name, value][] }: the dedicated backend of `stream` logged in. */
  DedicatedReady: 41,
} as const

export type Kind = (typeof Kind)[keyof typeof Kind]

/** What a lease request asks for, sent once per link connection and referred to after. */
export interface LeaseDefinition {
  database: string
  user: string
  settings: [string, string][]
  settingsKey: string
  customSettingNames: string[]
}

/** An error as it crosses the link: a PgError's fields, or a system error's code. */
export interface LinkError {
  message: string
  /** SQLSTATE for a PgError, errno code (EPIPE, ECONNRESET) otherwise. */
  code?: string
  pg?: boolean
  severity?: string
  detail?: string
  hint?: string
}

/** Requests that are not about a lease. */
export type LinkRequest =
  | { op: 'role'; user: string }
  | {
      op: 'credentials'
      user: string
      password?: string
      md5Hash?: string
      clientKey?: string
      serverKey?: string
    }
  | { op: 'listen'; database: string; channel: string }
  | { op: 'unlisten'; database: string; channel: string }

/** Builds one frame. */
export function frame(kind: Kind, stream: number, payload?: Buffer | string): Buffer {
  const body = typeof payload === 'string' ? Buffer.from(payload) : payload
  const length = body?.length ?? 0
  const out = Buffer.allocUnsafe(FRAME_HEADER + length)
  out[0] = kind
  out.writeUInt32BE(stream, 1)
  out.writeUInt32BE(length, 5)
  body?.copy(out, FRAME_HEADER)
  return out
}

/** Smallest output buffer a writer allocates per flush. */
const MIN_OUTPUT = 16 * 1024

/**
 * The one writer of a link socket. Frames gather in a buffer that is written once per
 * event-loop turn (setImmediate runs after the poll phase, so everything the sockets of
 * this turn produced goes in one write); consecutive Data for the same stream share one
 * header. `writable` turns false when the socket's buffer is full, until it drains.
 */
export class LinkWriter {
  private readonly socket: net.Socket
  private out: Buffer = Buffer.allocUnsafe(MIN_OUTPUT)
  private used = 0
  /** Offset of the header of the last frame, when it is Data (else -1), and its stream. */
  private openData = -1
  private openStream = 0
  private scheduled = false
  private blocked = false
  private readonly drainWaiters: (() => void)[] = []
  private readonly flushNow = () => this.flush()
  /** Told when the socket's buffer fills up (true) and when it drained (false). */
  onBlocked: ((blocked: boolean) => void) | null = null

  constructor(socket: net.Socket) {
    this.socket = socket
    const unblock = () => {
      if (!this.blocked) return
      this.blocked = false
      this.onBlocked?.(false)
      for (const waiter of this.drainWaiters.splice(0)) waiter()
    }
    socket.on('drain', unblock)
    // A closed socket never drains: its waiters learn of the loss from their streams.
    socket.on('close', unblock)
  }

  get writable(): boolean {
    return !this.blocked
  }

  /** Calls `callback` once the socket drained (at once if it is not blocked). */
  onDrain(callback: () => void): void {
    if (this.blocked) this.drainWaiters.push(callback)
    else callback()
  }

  /** Appends Postgres bytes of `stream`; they are copied now. */
  data(stream: number, bytes: Buffer): void {
    if (this.openData >= 0 && this.openStream === stream) {
      this.reserve(bytes.length)
      bytes.copy(this.out, this.used)
      this.used += bytes.length
      const header = this.openData
      this.out.writeUInt32BE(this.out.readUInt32BE(header + 5) + bytes.length, header + 5)
      return
    }
    this.reserve(FRAME_HEADER + bytes.length)
    const header = this.used
    this.writeHeader(Kind.Data, stream, bytes.length)
    bytes.copy(this.out, this.used)
    this.used += bytes.length
    this.openData = header
    this.openStream = stream
  }

  /** Appends a frame that is not Data. */
  control(kind: Kind, stream: number, payload?: Buffer | string): void {
    const body = typeof payload === 'string' ? Buffer.from(payload) : payload
    const length = body?.length ?? 0
    this.reserve(FRAME_HEADER + length)
    this.writeHeader(kind, stream, length)
    body?.copy(this.out, this.used)
    this.used += length
    this.openData = -1
  }

  /** Writes what gathered now (normally left to the end of the event-loop turn). */
  flush(): void {
    this.scheduled = false
    if (this.used === 0 || this.socket.destroyed) return
    // The socket keeps the slice until written: the next frames go to a new buffer.
    const chunk = this.out.subarray(0, this.used)
    this.out = Buffer.allocUnsafe(Math.max(MIN_OUTPUT, this.out.length >>> 1))
    this.used = 0
    this.openData = -1
    if (!this.socket.write(chunk) && !this.blocked) {
      this.blocked = true
      this.onBlocked?.(true)
    }
  }

  private writeHeader(kind: Kind, stream: number, length: number): void {
    const out = this.out
    out[this.used] = kind
    out.writeUInt32BE(stream, this.used + 1)
    out.writeUInt32BE(length, this.used + 5)
    this.used += FRAME_HEADER
  }

  private reserve(bytes: number): void {
    if (!this.scheduled) {
      this.scheduled = true
      setImmediate(this.flushNow)
    }
    if (this.used + bytes <= this.out.length) return
    const grown = Buffer.allocUnsafe(Math.max(this.out.length * 2, this.used + bytes))
    this.out.copy(grown, 0, 0, this.used)
    this.out = grown
  }
}

/** Receives what a {@link LinkReader} takes apart. */
export interface LinkHandler {
  /** A piece of a Data frame's payload (a view of the chunk being read). */
  onData(stream: number, piece: Buffer): void
  /** A whole frame that is not Data; `payload` is a view, valid during the call. */
  onControl(kind: Kind, stream: number, payload: Buffer): void
  /** The chunk was read to its end: a good moment to flush what it produced. */
  onChunkEnd(): void
}

/**
 * Takes link frames apart, whatever the chunk boundaries. Data payloads are handed on
 * as they come, in pieces (the stream's own framer reassembles Postgres messages);
 * other frames are small and handed on whole.
 */
export class LinkReader {
  private readonly handler: LinkHandler
  /** The chunk memory is reused after feed returns: partial frames are copied. */
  private readonly header = Buffer.allocUnsafe(FRAME_HEADER)
  private headerUsed = 0
  private kind = 0
  private stream = 0
  /** Payload bytes of the current frame still to come (-1: reading a header). */
  private remaining = -1
  private partial: Buffer | null = null
  private partialUsed = 0

  constructor(handler: LinkHandler) {
    this.handler = handler
  }

  feed(chunk: Buffer): void {
    let offset = 0
    const end = chunk.length
    while (offset < end) {
      if (this.remaining < 0) {
        if (this.headerUsed === 0 && end - offset >= FRAME_HEADER) {
          this.startFrame(chunk, offset)
          offset += FRAME_HEADER
        } else {
          const take = Math.min(FRAME_HEADER - this.headerUsed, end - offset)
          chunk.copy(this.header, this.headerUsed, offset, offset + take)
          this.headerUsed += take
          offset += take
          if (this.headerUsed < FRAME_HEADER) break
          this.headerUsed = 0
          this.startFrame(this.header, 0)
        }
        if (this.remaining === 0) this.endFrame(EMPTY)
        continue
      }
      const take = Math.min(this.remaining, end - offset)
      if (this.kind === Kind.Data) {
        this.handler.onData(this.stream, chunk.subarray(offset, offset + take))
        this.remaining -= take
        offset += take
        if (this.remaining === 0) this.remaining = -1
        continue
      }
      if (this.partial === null && take === this.remaining) {
        offset += take
        this.endFrame(chunk.subarray(offset - take, offset))
        continue
      }
      this.partial ??= Buffer.allocUnsafe(this.remaining)
      chunk.copy(this.partial, this.partialUsed, offset, offset + take)
      this.partialUsed += take
      this.remaining -= take
      offset += take
      if (this.remaining === 0) {
        const payload = this.partial
        this.partial = null
        this.partialUsed = 0
        this.endFrame(payload)
      }
    }
    this.handler.onChunkEnd()
  }

  private startFrame(source: Buffer, at: number): void {
    this.kind = source[at]
    this.stream = source.readUInt32BE(at + 1)
    this.remaining = source.readUInt32BE(at + 5)
  }

  private endFrame(payload: Buffer): void {
    this.remaining = -1
    if (this.kind !== Kind.Data) this.handler.onControl(this.kind as Kind, this.stream, payload)
  }
}

const EMPTY = Buffer.alloc(0)

export type { LinkAddress }

export function describeAddress(address: LinkAddress): string {
  return 'path' in address ? address.path : `${address.host}:${address.port}`
}
