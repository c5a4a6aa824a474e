import assert from 'node:assert'
import net from 'node:net'
import {
  AuthCode,
  Backend,
  clientFinal,
  clientFirst,
  type FrameHandler,
  Framer,
  frontend,
  md5Response,
  md5ResponseFromPassword,
  PgError,
  parseErrorFields,
  SqlState,
  verifyServerFinal,
} from '../protocol/index.ts'

/** Where a backend connects: a TCP address or a Unix-socket directory. */
export interface Endpoint {
  host?: string
  port: number
  socketDir?: string
}

/** What a backend login may present, whichever method the server asks for. */
export interface BackendCredentials {
  password?: string
  /** SCRAM keys recovered from a client's proof (PgBouncer's "SCRAM pass-through"). */
  scramKeys?: { clientKey: Buffer; serverKey: Buffer }
  /** pg_authid's `md5…` hash, enough to answer an MD5 challenge. */
  md5Hash?: string
}

/** Receives what a leased backend sends. Exactly one receiver (the head) at a time. */
export interface BackendReceiver {
  onBackendMessage(type: number, frame: Buffer): void
  onBackendMessagePart(type: number, piece: Buffer, first: boolean, last: boolean): void
  /** End of one socket read: a good moment to flush what was gathered. */
  onBackendFlush(): void
  /**
   * The backend is gone. `unserved` means it never started on this receiver's requests
   * (the lease was queued behind another), so they may safely be sent elsewhere.
   */
  onBackendClosed(error: Error, unserved: boolean): void
}

export type BackendState = 'connecting' | 'idle' | 'leased' | 'closed'

/** A lease granted behind the head's, whose requests are already queued on the socket. */
export interface QueuedLease {
  readonly receiver: BackendReceiver | null
  /** Called when the leases before it are done and the backend now answers it. */
  becameHead(): void
  /** Whether a cancel meant for a lease ahead of it could land on it harmlessly. */
  retrySafe(): boolean
  /** A cancel for a lease ahead of it was sent: it may land on this one's statement. */
  exposeToCancel(): void
}

let nextBackendId = 1

/** Backend messages handed on in pieces when large: rows and COPY data. */
const BACKEND_STREAM_TYPES = [Backend.DataRow, Backend.CopyData]

/** The read buffer every backend socket shares (see BackendConn.connect). */
const sharedReadBuffer = Buffer.allocUnsafe(64 * 1024)

/**
 * One connection to Postgres, owned by a pool. After login it frames everything the
 * server sends and hands it to its current receiver (the session holding the lease);
 * with no receiver, only notices may arrive, anything else marks it broken.
 */
export class BackendConn implements FrameHandler {
  readonly id = nextBackendId++
  readonly socket: net.Socket
  state: BackendState = 'connecting'
  processId = 0
  secretKey = 0
  /** ParameterStatus values reported at login. */
  readonly parameters = new Map<string, string>()
  /** Canonical prepared statements present on this backend. */
  readonly prepared = new Set<string>()
  /** Bumped when all of them were dropped (a gateway elsewhere then forgets its view). */
  preparedGeneration = 0
  /** Session settings applied with set_config, and their canonical key. */
  settings = new Map<string, string>()
  settingsKey = ''
  /**
   * Custom (dotted) setting names ever set on this backend. Postgres cannot drop a
   * placeholder (a name no loaded module defines): RESET leaves it defined, and the
   * module that later claims its prefix warns about it to whichever session loads it.
   */
  readonly customNames = new Set<string>()
  readonly createdAt = Date.now()
  lastUsedAt = Date.now()
  receiver: BackendReceiver | null = null
  /** Leases pipelined behind the head, in the order their requests were written. */
  readonly queued: QueuedLease[] = []
  /** Its session keeps it between transactions (statistics only). */
  pinned = false
  /**
   * CancelRequests sent for it that the server has not yet acted on: until they have,
   * it goes to no other session, whose statement the signal would cancel.
   */
  cancelsInFlight = 0
  /** A cancel may still arrive at any time (it timed out): never reused. */
  cancelUndelivered = false
  /**
   * A cancel was sent since it was last idle: a signal may still be pending in the
   * backend, so no lease is pipelined onto it until it is idle again.
   */
  cancelExposed = false
  /** Runs once the last cancel in flight is done (a return to the pool put off). */
  afterCancels: (() => void) | null = null
  /** The server this connection went to (a cancel goes there too). */
  readonly endpoint: Endpoint
  /** When it was last granted or last finished a batch (performance.now()). */
  activeAt = 0
  /** Set once the connection failed or was closed. */
  closeError: Error | null = null
  private readonly framer: Framer
  private onClose: ((conn: BackendConn, error: Error) => void) | null = null

  private constructor(socket: net.Socket, endpoint: Endpoint) {
    this.socket = socket
    this.endpoint = endpoint
    this.framer = new Framer(this, {
      streamTypes: BACKEND_STREAM_TYPES,
      transientChunks: true,
    })
  }

  /** Connects and logs in; resolves once the server sent ReadyForQuery. */
  static connect(
    endpoint: Endpoint,
    startup: Record<string, string>,
    credentials: BackendCredentials,
    timeoutMs: number,
  ): Promise<BackendConn> {
    let onChunk: (chunk: Buffer) => void = () => {}
    // Reads land in one shared buffer (no allocation and no stream machinery per read):
    // everything read is handled before the callback returns, and what must outlive it
    // is copied (partial frames in the Framer, bytes queued for a client).
    const onread = {
      buffer: sharedReadBuffer,
      callback: (length: number): boolean => {
        onChunk(sharedReadBuffer.subarray(0, length))
        return true
      },
    }
    const socket = endpoint.socketDir
      ? net.connect({ path: `${endpoint.socketDir}/.s.PGSQL.${endpoint.port}`, onread })
      : net.connect({ host: endpoint.host ?? '127.0.0.1', port: endpoint.port, noDelay: true, onread })
    const conn = new BackendConn(socket, endpoint)
    return new Promise((resolve, reject) => {
      const login = new Login(conn, startup, credentials, resolve, reject)
      const timer = setTimeout(
        () =>
          login.fail(new PgError(SqlState.ConnectionFailure, `backend login timed out after ${timeoutMs}ms`)),
        timeoutMs,
      )
      timer.unref()
      login.onSettle = () => clearTimeout(timer)
      socket.once('connect', () => socket.write(frontend.startupMessage(startup)))
      onChunk = (chunk: Buffer) => {
        const connecting = conn.state === 'connecting'
        try {
          if (connecting) login.feed(chunk)
          else conn.feed(chunk)
        } catch (error) {
          // A malformed server message (or SCRAM reply) ends the connection, never the process.
          const failure =
            error instanceof PgError
              ? error
              : new PgError(SqlState.ProtocolViolation, (error as Error).message)
          if (connecting) login.fail(failure)
          else conn.destroy(failure)
        }
      }
      socket.on('error', (error) => {
        if (conn.state === 'connecting') login.fail(new PgError(SqlState.ConnectionFailure, error.message))
        else conn.destroy(error)
      })
      socket.on('close', () => {
        if (conn.state === 'connecting')
          login.fail(new PgError(SqlState.ConnectionFailure, 'server closed the connection during login'))
        else
          conn.destroy(new PgError(SqlState.ConnectionFailure, 'server closed the connection unexpectedly'))
      })
    })
  }

  /** Registers the single close listener (the owning pool). */
  setCloseListener(listener: (conn: BackendConn, error: Error) => void): void {
    this.onClose = listener
  }

  write(data: Buffer): boolean {
    return this.socket.write(data)
  }

  /** Feeds post-login bytes. */
  feed(chunk: Buffer): void {
    this.framer.feed(chunk)
    this.receiver?.onBackendFlush()
  }

  onMessage(type: number, frame: Buffer): void {
    if (this.receiver !== null) {
      // Finishing a batch is progress; rows streaming out of a long query are not.
      if (type === Backend.ReadyForQuery) this.activeAt = performance.now()
      this.receiver.onBackendMessage(type, frame)
      return
    }
    // Idle: a notice or a setting report can arrive unasked; anything else (an
    // ErrorResponse such as 57P01 admin_shutdown) means the connection is done.
    if (type === Backend.NoticeResponse || type === Backend.ParameterStatus) return
    const error =
      type === Backend.ErrorResponse
        ? errorFromFrame(frame)
        : new PgError(
            SqlState.ProtocolViolation,
            `unexpected message 0x${type.toString(16)} from idle backend`,
          )
    this.destroy(error)
  }

  onMessagePart(type: number, piece: Buffer, first: boolean, last: boolean): void {
    if (this.receiver !== null) this.receiver.onBackendMessagePart(type, piece, first, last)
    else this.destroy(new PgError(SqlState.ProtocolViolation, 'unexpected data from idle backend'))
  }

  /** Makes the next queued lease the head; false when none is queued. */
  advance(): boolean {
    const next = this.queued.shift()
    if (next === undefined) return false
    this.receiver = next.receiver
    next.becameHead()
    return true
  }

  /** Closes the connection (politely when it is still healthy) and tells the pool once. */
  destroy(error: Error = new PgError(SqlState.AdminShutdown, 'backend closed by pool')): void {
    if (this.state === 'closed') return
    this.state = 'closed'
    this.closeError = error
    if (!this.socket.destroyed) {
      this.socket.end(frontend.terminate)
      this.socket.destroySoon()
    }
    // The pool forgets it first, so that a receiver retrying elsewhere cannot be handed it again.
    this.onClose?.(this, error)
    const receiver = this.receiver
    this.receiver = null
    receiver?.onBackendClosed(error, false)
    for (const lease of this.queued.splice(0)) lease.receiver?.onBackendClosed(error, true)
  }
}

/**
 * What a session's handle on a backend does to the socket itself, shared by pooled
 * leases and dedicated backends: write, wait for drain, and pause or resume reading.
 */
export class BackendHandle {
  protected readonly conn: BackendConn

  constructor(conn: BackendConn) {
    this.conn = conn
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
}

/**
 * Asks the server to cancel what `conn` runs now, on a connection of its own.
 * `onDone(delivered)` follows once the server closed that connection, which the
 * postmaster does only after it signalled the backend (processCancelRequest), or once
 * the request failed or timed out (then the signal may still come, later).
 */
export function sendCancel(
  endpoint: Endpoint,
  conn: BackendConn,
  timeoutMs: number,
  onError: (error: Error) => void,
  onDone: (delivered: boolean) => void = () => {},
): void {
  const { socketDir, host, port } = endpoint
  const socket = socketDir
    ? net.connect(`${socketDir}/.s.PGSQL.${port}`)
    : net.connect({ host: host ?? '127.0.0.1', port })
  let delivered = false
  socket.once('connect', () => socket.end(frontend.cancelRequest(conn.processId, conn.secretKey)))
  socket.once('end', () => {
    delivered = true
  })
  socket.on('error', onError)
  socket.once('close', () => onDone(delivered))
  socket.setTimeout(timeoutMs, () => socket.destroy())
  socket.resume()
}

/** Turns an ErrorResponse frame from the server into a PgError with its fields. */
export function errorFromFrame(frame: Buffer): PgError {
  const fields = parseErrorFields(frame.subarray(5))
  return new PgError(fields.code || SqlState.InternalError, fields.message, {
    severity: fields.severity === 'FATAL' || fields.severity === 'PANIC' ? fields.severity : 'ERROR',
    detail: fields.detail,
    hint: fields.hint,
  })
}

/** The login conversation: authentication, ParameterStatus, BackendKeyData, ReadyForQuery. */
class Login implements FrameHandler {
  onSettle: () => void = () => {}
  private readonly conn: BackendConn
  private readonly credentials: BackendCredentials
  private readonly user: string
  private readonly framer: Framer
  private scram: ReturnType<typeof clientFirst>['state'] | null = null
  private expectedServerSignature: Buffer | null = null
  private settled = false
  private readonly resolve: (conn: BackendConn) => void
  private readonly reject: (error: Error) => void

  constructor(
    conn: BackendConn,
    startup: Record<string, string>,
    credentials: BackendCredentials,
    resolve: (conn: BackendConn) => void,
    reject: (error: Error) => void,
  ) {
    this.conn = conn
    this.credentials = credentials
    this.user = startup.user ?? ''
    this.resolve = resolve
    this.reject = reject
    this.framer = new Framer(this, { maxLength: 1 << 20, transientChunks: true })
  }

  feed(chunk: Buffer): void {
    this.framer.feed(chunk)
  }

  onMessagePart(): void {
    this.fail(new PgError(SqlState.ProtocolViolation, 'oversized message during backend login'))
  }

  onMessage(type: number, frame: Buffer): void {
    if (this.settled) {
      // Bytes after ReadyForQuery belong to the running connection.
      this.conn.onMessage(type, frame)
      return
    }
    switch (type) {
      case Backend.Authentication:
        this.authenticate(frame)
        return
      case Backend.ParameterStatus: {
        const nameEnd = frame.indexOf(0, 5)
        this.conn.parameters.set(
          frame.toString('utf8', 5, nameEnd),
          frame.toString('utf8', nameEnd + 1, frame.length - 1),
        )
        return
      }
      case Backend.BackendKeyData:
        this.conn.processId = frame.readInt32BE(5)
        this.conn.secretKey = frame.readInt32BE(9)
        return
      case Backend.ReadyForQuery:
        this.settled = true
        this.onSettle()
        this.conn.state = 'idle'
        this.resolve(this.conn)
        return
      case Backend.ErrorResponse:
        this.fail(errorFromFrame(frame))
        return
      case Backend.NoticeResponse:
      case Backend.NegotiateProtocolVersion:
        return
      default:
        this.fail(
          new PgError(SqlState.ProtocolViolation, `unexpected message 0x${type.toString(16)} during login`),
        )
    }
  }

  fail(error: Error): void {
    if (this.settled) return
    this.settled = true
    this.onSettle()
    this.conn.state = 'closed'
    this.conn.closeError = error
    this.conn.socket.destroy()
    this.reject(error)
  }

  private authenticate(frame: Buffer): void {
    const code = frame.readInt32BE(5)
    const { password, scramKeys, md5Hash } = this.credentials
    const socket = this.conn.socket
    switch (code) {
      case AuthCode.Ok:
        return
      case AuthCode.CleartextPassword:
        if (password === undefined) {
          this.fail(missingCredential(this.user, 'a password'))
          return
        }
        socket.write(frontend.passwordMessage(password))
        return
      case AuthCode.MD5Password: {
        const salt = frame.subarray(9, 13)
        if (password !== undefined)
          socket.write(frontend.passwordMessage(md5ResponseFromPassword(password, this.user, salt)))
        else if (md5Hash !== undefined) socket.write(frontend.passwordMessage(md5Response(md5Hash, salt)))
        else {
          this.fail(missingCredential(this.user, 'a password or its md5 hash'))
          return
        }
        return
      }
      case AuthCode.SASL: {
        const mechanisms = frame.toString('utf8', 9).split('\0')
        if (!mechanisms.includes('SCRAM-SHA-256')) {
          this.fail(
            new PgError(
              SqlState.FeatureNotSupported,
              `no supported SASL mechanism among ${mechanisms.join(', ')}`,
            ),
          )
          return
        }
        if (password === undefined && scramKeys === undefined) {
          this.fail(missingCredential(this.user, 'a password or SCRAM keys'))
          return
        }
        const first = clientFirst()
        this.scram = first.state
        socket.write(frontend.saslInitialResponse('SCRAM-SHA-256', first.message))
        return
      }
      case AuthCode.SASLContinue: {
        assert(this.scram !== null, 'SASLContinue before SASL')
        const credentials = password !== undefined ? { password } : scramKeys!
        const final = clientFinal(this.scram, frame.toString('utf8', 9), credentials)
        this.expectedServerSignature = final.expectedServerSignature
        socket.write(frontend.saslResponse(final.message))
        return
      }
      case AuthCode.SASLFinal:
        if (
          this.expectedServerSignature === null ||
          !verifyServerFinal(frame.toString('utf8', 9), this.expectedServerSignature)
        ) {
          this.fail(
            new PgError(SqlState.InvalidAuthorizationSpecification, 'server SCRAM signature does not match'),
          )
        }
        return
      default:
        this.fail(
          new PgError(
            SqlState.FeatureNotSupported,
            `authentication method ${code} is not supported for backend logins`,
          ),
        )
    }
  }
}

function missingCredential(user: string, what: string): PgError {
  return new PgError(
    SqlState.InvalidAuthorizationSpecification,
    `the upstream server asks for ${what} for user "${user}" and Tidepool has none`,
    {
      hint: 'Put a password in the upstream URL, or let clients authenticate with SCRAM so their keys can be reused.',
    },
  )
}
