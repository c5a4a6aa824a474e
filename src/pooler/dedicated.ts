import type { Logger } from '../log.ts'
import {
  type BackendConn,
  BackendHandle,
  type BackendReceiver,
  type Endpoint,
  sendCancel,
} from './backend.ts'
import type { DedicatedConnection } from './lease.ts'

/**
 * A backend that belongs to one session for its whole life, outside every pool: for
 * what cannot be pooled at all, such as replication connections. Bytes pass through.
 */
export class DedicatedBackend extends BackendHandle implements DedicatedConnection {
  private readonly endpoint: Endpoint
  private readonly log: Logger

  constructor(conn: BackendConn, endpoint: Endpoint, log: Logger) {
    super(conn)
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

  cancel(): void {
    sendCancel(this.endpoint, this.conn, 10_000, (error) =>
      this.log.warn({ err: error.message }, 'cancel request failed'),
    )
  }

  close(): void {
    this.conn.destroy()
  }
}
