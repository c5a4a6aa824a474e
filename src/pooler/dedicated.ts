import type { Logger } from '../log.ts'
import { type BackendConn, type BackendReceiver, type Endpoint, sendCancel } from './backend.ts'

/**
 * A backend that belongs to one session for its whole life, outside every pool: for
 * what cannot be pooled at all, such as replication connections. Bytes pass through.
 */
export class DedicatedBackend {
  private readonly conn: BackendConn
  private readonly endpoint: Endpoint
  private readonly log: Logger

  constructor(conn: BackendConn, endpoint: Endpoint, log: Logger) {
    this.conn = conn
    this.endpoint = endpoint
    this.log = log
    conn.state = 'leased'
  }

  /** ParameterStatus values the server reported at login. */
  get parameters(): ReadonlyMap<string, string> {
    return this.conn.parameters
  }

  attach(receiver: BackendReceiver): void {
    this.conn.receiver = receiver
  }

  send(data: Buffer): boolean {
    return this.conn.write(data)
  }

  onDrain(callback: () => void): void {
    this.conn.socket.once('drain', callback)
  }

  pause(): void {
    this.conn.socket.pause()
  }

  resume(): void {
    this.conn.socket.resume()
  }

  cancel(): void {
    sendCancel(this.endpoint, this.conn, 10_000, (error) =>
      this.log.warn({ err: error.message }, 'cancel request failed'),
    )
  }

  close(): void {
    this.conn.destroy()
  }
}
