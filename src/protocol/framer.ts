import { HEADER_LENGTH, MAX_MESSAGE_LENGTH } from './constants.ts'

/** Receives framed messages from a {@link Framer}. */
export interface FrameHandler {
  /**
   * One complete message, header included. `frame` is a subarray of the socket chunk
   * when the message arrived whole: copy it (`Buffer.from`) before keeping it past this
   * call, because it pins the whole chunk.
   */
  onMessage(type: number, frame: Buffer): void
  /**
   * A piece of a large streamable message (see {@link FramerOptions.streamTypes}).
   * The first piece starts with the header; `last` marks the final piece.
   */
  onMessagePart(type: number, piece: Buffer, first: boolean, last: boolean): void
}

export interface FramerOptions {
  /** Message types that may be handed on in pieces instead of being reassembled. */
  streamTypes?: readonly number[]
  /** Messages at least this long (bytes) of a stream type are handed on in pieces. */
  streamThreshold?: number
  /** Largest accepted length field; a longer one is a protocol violation. */
  maxLength?: number
  /**
   * The caller reuses each chunk's memory after `feed` returns (a shared read buffer):
   * the bytes of an incomplete message are then copied before they are kept.
   */
  transientChunks?: boolean
  /**
   * When given, only these message types are accepted, each up to its own length; any
   * other type is refused at its header, without waiting for the body it announces
   * (as SocketBackend does in src/backend/tcop/postgres.c).
   */
  typeLimits?: ReadonlyMap<number, number>
}

const NO_TYPES: readonly number[] = []

/**
 * Lookup tables built once per options object and shared by every framer that uses it:
 * a framer per connection must not cost an allocation of tables per connection.
 */
const tables = new WeakMap<object, Uint8Array | Uint32Array>()

function typeTable<K extends object, T extends Uint8Array | Uint32Array>(key: K, build: (key: K) => T): T {
  let table = tables.get(key) as T | undefined
  if (table === undefined) {
    table = build(key)
    tables.set(key, table)
  }
  return table
}

/** A message type the framer refuses. */
export class InvalidMessageTypeError extends Error {
  readonly type: number
  constructor(type: number) {
    super(`invalid frontend message type ${type}`)
    this.type = type
  }
}

/** A length field the framer refuses. */
export class FrameTooLargeError extends Error {
  readonly length: number
  constructor(type: number, length: number) {
    super(`invalid message length ${length} for message type 0x${type.toString(16)}`)
    this.length = length
  }
}

/**
 * Zero-copy framing of typed messages (type byte, int32 length that counts itself).
 * Whole messages inside a chunk are handed on as subarrays; a message split across
 * chunks is collected in a list and concatenated once, when complete. Large messages
 * of a stream type (DataRow, CopyData) are handed on piece by piece so that a huge row
 * never has to be buffered whole.
 */
export class Framer {
  private readonly handler: FrameHandler
  private readonly streamable: Uint8Array
  private readonly streamThreshold: number
  private readonly maxLength: number
  private readonly transientChunks: boolean
  /** Per-type length limits, 0 for a refused type; null when every type is accepted. */
  private readonly limits: Uint32Array | null
  /** Pieces of the incomplete message at the end of the last chunk. */
  private parts: Buffer[] = []
  private partsLength = 0
  /** Total bytes of the incomplete message, header included; 0 while its header is incomplete. */
  private needed = 0
  /** Type of the message being streamed, and how much of it is still to come. */
  private streamType = -1
  private streamRemaining = 0

  constructor(handler: FrameHandler, options: FramerOptions = {}) {
    this.handler = handler
    this.streamable = typeTable(options.streamTypes ?? NO_TYPES, (types) => {
      const table = new Uint8Array(256)
      for (const type of types) table[type] = 1
      return table
    })
    this.streamThreshold = options.streamThreshold ?? 256 * 1024
    this.maxLength = options.maxLength ?? MAX_MESSAGE_LENGTH
    this.transientChunks = options.transientChunks ?? false
    this.limits =
      options.typeLimits === undefined
        ? null
        : typeTable(options.typeLimits, (limits) => {
            const table = new Uint32Array(256)
            for (const [type, limit] of limits) table[type] = limit
            return table
          })
  }

  /** Bytes held for an incomplete message. */
  get buffered(): number {
    return this.partsLength
  }

  /** Feeds one socket chunk. Throws {@link FrameTooLargeError} on an invalid length. */
  feed(chunk: Buffer): void {
    let offset = 0
    if (this.streamRemaining > 0) offset = this.continueStream(chunk)
    else if (this.partsLength > 0) {
      offset = this.continuePartial(chunk)
      if (offset < 0) return
    }
    const end = chunk.length
    while (offset + HEADER_LENGTH <= end) {
      const type = chunk[offset]
      const length = chunk.readInt32BE(offset + 1)
      this.check(type, length)
      const frameEnd = offset + 1 + length
      if (frameEnd > end) {
        if (this.streamable[type] === 1 && length >= this.streamThreshold) {
          this.streamType = type
          this.streamRemaining = frameEnd - end
          this.handler.onMessagePart(type, chunk.subarray(offset), true, false)
          return
        }
        break
      }
      this.handler.onMessage(type, chunk.subarray(offset, frameEnd))
      offset = frameEnd
    }
    if (offset < end) {
      const rest = this.keep(chunk.subarray(offset))
      this.parts.push(rest)
      this.partsLength = rest.length
      this.needed = rest.length >= HEADER_LENGTH ? 1 + rest.readInt32BE(1) : 0
    }
  }

  /** Resets all state, e.g. when the stream changes hands after a TLS upgrade. */
  reset(): void {
    this.parts = []
    this.partsLength = 0
    this.needed = 0
    this.streamRemaining = 0
    this.streamType = -1
  }

  /** A piece of a chunk that is kept past this feed: a copy when chunks are reused. */
  private keep(piece: Buffer): Buffer {
    return this.transientChunks ? Buffer.from(piece) : piece
  }

  /** Refuses an unknown type or an impossible length as soon as the header is read. */
  private check(type: number, length: number): void {
    const limits = this.limits
    if (limits !== null) {
      const limit = limits[type]
      if (limit === 0) throw new InvalidMessageTypeError(type)
      if (length < 4 || length > limit) throw new FrameTooLargeError(type, length)
    } else if (length < 4 || length > this.maxLength) throw new FrameTooLargeError(type, length)
  }

  private continueStream(chunk: Buffer): number {
    const take = Math.min(this.streamRemaining, chunk.length)
    this.streamRemaining -= take
    const last = this.streamRemaining === 0
    this.handler.onMessagePart(
      this.streamType,
      take === chunk.length ? chunk : chunk.subarray(0, take),
      false,
      last,
    )
    if (last) this.streamType = -1
    return take
  }

  /** Completes the pending message if this chunk allows; returns the offset after it, or -1. */
  private continuePartial(chunk: Buffer): number {
    if (this.needed === 0) {
      // The header itself was split: gather just enough to read the length.
      const head = Buffer.concat([...this.parts, chunk.subarray(0, HEADER_LENGTH)])
      if (head.length < HEADER_LENGTH) {
        this.parts.push(this.keep(chunk))
        this.partsLength += chunk.length
        return -1
      }
      const length = head.readInt32BE(1)
      const type = head[0]
      this.check(type, length)
      this.needed = 1 + length
      if (this.streamable[type] === 1 && length >= this.streamThreshold) {
        const held = this.partsLength
        const parts = this.parts
        this.parts = []
        this.partsLength = 0
        this.streamType = type
        this.streamRemaining = this.needed - held
        this.needed = 0
        this.handler.onMessagePart(type, Buffer.concat(parts), true, false)
        return this.continueStream(chunk)
      }
    }
    const missing = this.needed - this.partsLength
    if (chunk.length < missing) {
      this.parts.push(this.keep(chunk))
      this.partsLength += chunk.length
      return -1
    }
    this.parts.push(chunk.subarray(0, missing))
    const frame = Buffer.concat(this.parts, this.needed)
    this.parts = []
    this.partsLength = 0
    this.needed = 0
    this.handler.onMessage(frame[0], frame)
    return missing
  }
}
