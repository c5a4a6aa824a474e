import type net from 'node:net'
import type { Logger } from '../log.ts'
import type { BackendReceiver, DedicatedConnection } from '../pooler/index.ts'
import { errorResponse, type PgError } from '../protocol/index.ts'

/** What the gateway keeps of every open session, pooled or not. */
export interface ClientSession {
  readonly id: number
  readonly secretKey: number
  /** A CancelRequest with this session's key arrived. */
  cancel(): void
  /** Ends the session with a FATAL error. */
  fatal(error: PgError): void
}

/**
 * A session that owns a backend for its whole life (a replication connection): every
 * byte passes through unchanged both ways, with backpressure; either side closing ends
 * both. Nothing of it is pooled, so there is nothing to track.
 */
export class RelaySession implements ClientSession, BackendReceiver {
  readonly id: number
  readonly secretKey: number
  private readonly client: net.Socket
  private readonly backend: DedicatedConnection
  private readonly log: Logger
  private readonly onClose: (session: RelaySession) => void
  private closed = false

  constructor(
    client: net.Socket,
    backend: DedicatedConnection,
    identity: { id: number; secretKey: number },
    log: Logger,
    onClose: (session: RelaySession) => void,
  ) {
    this.client = client
    this.backend = backend
    this.id = identity.id
    this.secretKey = identity.secretKey
    this.log = log
    this.onClose = onClose
  }

  start(leftover: Buffer): void {
    this.backend.attach(this)
    this.client.on('data', (chunk: Buffer) => {
      if (!this.backend.send(chunk)) {
        this.client.pause()
        this.backend.onDrain(() => this.client.resume())
      }
    })
    this.client.on('error', () => this.close('client socket error'))
    this.client.on('close', () => this.close('client disconnected'))
    if (leftover.length > 0) this.backend.send(leftover)
  }

  cancel(): void {
    this.backend.cancel()
  }

  fatal(error: PgError): void {
    if (this.closed) return
    this.client.write(errorResponse('FATAL', error.code, error.message, error.detail, error.hint))
    this.close(error.message)
  }

  onBackendMessage(_type: number, frame: Buffer): void {
    // Frames are views of a shared read buffer: the socket gets a copy it may keep.
    this.forward(Buffer.from(frame))
  }

  onBackendMessagePart(_type: number, piece: Buffer): void {
    this.forward(Buffer.from(piece))
  }

  onBackendFlush(): void {}

  onBackendClosed(): void {
    this.close('server closed the connection')
  }

  private forward(data: Buffer): void {
    if (this.closed) return
    if (!this.client.write(data)) {
      this.backend.pause()
      this.client.once('drain', () => this.backend.resume())
    }
  }

  private close(reason: string): void {
    if (this.closed) return
    this.closed = true
    this.log.debug({ session: this.id, reason }, 'dedicated session closed')
    this.backend.close()
    if (!this.client.destroyed) this.client.destroySoon()
    this.onClose(this)
  }
}
