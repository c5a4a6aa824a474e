import type net from 'node:net'
import { HEADER_LENGTH, PgError, SqlState, startupPacketLength } from '../protocol/index.ts'

/** Largest message accepted during authentication (a SASL response is a few hundred bytes). */
const MAX_AUTH_MESSAGE_LENGTH = 8192

/**
 * Reads the startup phase from a client socket, one packet at a time, as promises:
 * this path runs once per connection, so clarity wins over the hot path's zero-copy
 * framing. Hands its socket and any bytes read ahead over to the session afterwards.
 */
export class ClientReader {
  socket: net.Socket
  private buffered: Buffer = Buffer.alloc(0)
  private wake: (() => void) | null = null
  private ended: Error | null = null
  private readonly onData = (chunk: Buffer): void => {
    this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk])
    this.wake?.()
  }
  private readonly onEnd = (): void => {
    this.ended ??= new PgError(SqlState.ConnectionFailure, 'client closed the connection during startup')
    this.wake?.()
  }

  constructor(socket: net.Socket) {
    this.socket = socket
    this.listen(socket)
  }

  /** Bytes received but not yet consumed. */
  get pendingBytes(): number {
    return this.buffered.length
  }

  /** Switches to another socket wrapping the same connection (after a TLS upgrade). */
  replaceSocket(socket: net.Socket): void {
    this.unlisten()
    this.socket = socket
    this.listen(socket)
  }

  /** The next untyped startup-phase packet, length prefix included. */
  async readStartupPacket(): Promise<Buffer> {
    for (;;) {
      const length = startupPacketLength(this.buffered)
      if (length > 0 && this.buffered.length >= length) return this.take(length)
      await this.more()
    }
  }

  /** The next typed message; `expected` is the only type accepted. */
  async readMessage(expected: number, what: string): Promise<Buffer> {
    for (;;) {
      if (this.buffered.length >= HEADER_LENGTH) {
        const type = this.buffered[0]
        const length = this.buffered.readInt32BE(1)
        if (type !== expected) {
          throw new PgError(SqlState.ProtocolViolation, `expected ${what}, got message type ${type}`)
        }
        if (length < 4 || length > MAX_AUTH_MESSAGE_LENGTH) {
          throw new PgError(SqlState.ProtocolViolation, `invalid ${what} length ${length}`)
        }
        if (this.buffered.length >= 1 + length) return this.take(1 + length)
      }
      await this.more()
    }
  }

  /** Stops reading; returns the bytes read ahead, which belong to the session. */
  detach(): Buffer {
    this.unlisten()
    const rest = this.buffered
    this.buffered = Buffer.alloc(0)
    return rest
  }

  private take(length: number): Buffer {
    const packet = this.buffered.subarray(0, length)
    this.buffered = this.buffered.subarray(length)
    return packet
  }

  private more(): Promise<void> {
    if (this.ended !== null) return Promise.reject(this.ended)
    return new Promise((resolve, reject) => {
      this.wake = () => {
        this.wake = null
        if (this.ended !== null) reject(this.ended)
        else resolve()
      }
    })
  }

  private listen(socket: net.Socket): void {
    socket.on('data', this.onData)
    socket.on('end', this.onEnd)
    socket.on('close', this.onEnd)
    socket.on('error', this.onEnd)
  }

  private unlisten(): void {
    this.socket.off('data', this.onData)
    this.socket.off('end', this.onEnd)
    this.socket.off('close', this.onEnd)
    this.socket.off('error', this.onEnd)
  }
}
