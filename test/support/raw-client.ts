/**
 * A tiny raw PostgreSQL wire-protocol client for tests that need to send exactly the
 * bytes they choose (malformed packets, cancel requests with a captured key, messages
 * out of phase) and to see exactly what comes back.
 *
 * @module
 */
import net from 'node:net'
import {
  AuthCode,
  Backend,
  type ErrorFields,
  Frontend,
  frontend,
  MessageWriter,
  parseErrorFields,
  StartupCode,
  untypedPacket,
} from '../../src/protocol/index.ts'
import { md5ResponseFromPassword } from '../../src/protocol/md5.ts'
import { clientFinal, clientFirst, verifyServerFinal } from '../../src/protocol/scram.ts'

/** One message from the server. */
export interface RawMessage {
  type: number
  /** The whole message, header included. */
  frame: Buffer
  /** The body after the 5-byte header. */
  body: Buffer
}

/** The connection closed before the awaited data arrived. */
export class ConnectionClosedError extends Error {
  constructor(what: string) {
    super(`connection closed while waiting for ${what}`)
  }
}

/** An ErrorResponse turned into an exception, with its fields. */
export class RawPgError extends Error {
  readonly code: string
  readonly severity: string
  readonly fields: ErrorFields
  constructor(fields: ErrorFields) {
    super(fields.message)
    this.fields = fields
    this.code = fields.code
    this.severity = fields.severity
  }
}

/** What a successful login reported. */
export interface LoginResult {
  processId: number
  secretKey: number
  parameters: Map<string, string>
  /** Authentication request codes the server sent (0 = ok, 5 = md5, 10 = SASL, …). */
  authCodes: number[]
}

/** The replies to one simple query. */
export interface QueryResult {
  messages: RawMessage[]
  rows: (string | null)[][]
  error: ErrorFields | null
  /** ReadyForQuery status byte as a letter. */
  status: string
}

/** A raw client connection. Reads are buffered; `next()` returns one message at a time. */
export class RawClient {
  readonly socket: net.Socket
  /** Resolves when the socket has closed. */
  readonly closed: Promise<void>
  private buffered: Buffer = Buffer.alloc(0)
  private ended = false
  private wake: (() => void) | null = null

  private constructor(socket: net.Socket) {
    this.socket = socket
    socket.on('data', (chunk: Buffer) => {
      this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk])
      this.wake?.()
    })
    socket.on('error', () => {})
    this.closed = new Promise((resolve) =>
      socket.once('close', () => {
        this.ended = true
        this.wake?.()
        resolve()
      }),
    )
  }

  /** Opens a TCP connection. */
  static connect(port: number, host = '127.0.0.1'): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host, port, noDelay: true })
      socket.once('connect', () => {
        socket.off('error', reject)
        resolve(new RawClient(socket))
      })
      socket.once('error', reject)
    })
  }

  /** Connects and logs in; throws {@link RawPgError} if the server refuses. */
  static async login(
    port: number,
    parameters: Record<string, string>,
    password?: string,
  ): Promise<{ client: RawClient; login: LoginResult }> {
    const client = await RawClient.connect(port)
    try {
      const login = await client.startup(parameters, password)
      return { client, login }
    } catch (error) {
      client.destroy()
      throw error
    }
  }

  /** Whether the socket has closed. */
  get isClosed(): boolean {
    return this.ended
  }

  write(data: Buffer | string): void {
    this.socket.write(data)
  }

  /** Bytes received but not yet read. */
  get pending(): number {
    return this.buffered.length
  }

  /** Reads exactly `n` raw bytes (e.g. the one-byte answer to SSLRequest). */
  async readBytes(n: number, timeoutMs = 5000): Promise<Buffer> {
    await this.waitFor(() => this.buffered.length >= n, `${n} bytes`, timeoutMs)
    const out = this.buffered.subarray(0, n)
    this.buffered = this.buffered.subarray(n)
    return out
  }

  /** The next typed message. Rejects with {@link ConnectionClosedError} if the connection ends first. */
  async next(timeoutMs = 5000): Promise<RawMessage> {
    const complete = (): boolean =>
      this.buffered.length >= 5 && this.buffered.length >= 1 + this.buffered.readInt32BE(1)
    await this.waitFor(complete, 'a message', timeoutMs)
    const length = 1 + this.buffered.readInt32BE(1)
    const frame = this.buffered.subarray(0, length)
    this.buffered = this.buffered.subarray(length)
    return { type: frame[0], frame, body: frame.subarray(5) }
  }

  /** Messages up to and including the first of type `type`. */
  async readUntil(type: number, timeoutMs = 5000): Promise<RawMessage[]> {
    const deadline = Date.now() + timeoutMs
    const out: RawMessage[] = []
    for (;;) {
      const message = await this.next(Math.max(1, deadline - Date.now()))
      out.push(message)
      if (message.type === type) return out
    }
  }

  /** Messages up to and including ReadyForQuery. */
  readUntilReady(timeoutMs = 5000): Promise<RawMessage[]> {
    return this.readUntil(Backend.ReadyForQuery, timeoutMs)
  }

  /**
   * Resolves true once the connection has closed, false if it is still open after
   * `timeoutMs`. Messages still unread stay readable.
   */
  async waitClosed(timeoutMs = 5000): Promise<boolean> {
    if (this.ended) return true
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), timeoutMs)
    })
    const result = await Promise.race([this.closed.then(() => true), timeout])
    clearTimeout(timer)
    return result
  }

  /**
   * Everything the server sends until it closes the connection (or `timeoutMs`
   * passes): the messages, and whether it closed.
   */
  async drain(timeoutMs = 5000): Promise<{ messages: RawMessage[]; closed: boolean }> {
    const closed = await this.waitClosed(timeoutMs)
    const messages: RawMessage[] = []
    while (this.buffered.length >= 5 && this.buffered.length >= 1 + this.buffered.readInt32BE(1)) {
      messages.push(await this.next())
    }
    return { messages, closed }
  }

  /** Sends a StartupMessage and runs the login; supports trust, md5 and SCRAM-SHA-256. */
  async startup(parameters: Record<string, string>, password?: string): Promise<LoginResult> {
    this.write(frontend.startupMessage(parameters))
    const result: LoginResult = { processId: 0, secretKey: 0, parameters: new Map(), authCodes: [] }
    let scram: ReturnType<typeof clientFirst>['state'] | null = null
    let serverSignature: Buffer | null = null
    for (;;) {
      const message = await this.next()
      switch (message.type) {
        case Backend.Authentication: {
          const code = message.body.readInt32BE(0)
          result.authCodes.push(code)
          if (code === AuthCode.Ok) break
          if (password === undefined) throw new Error(`server asks for authentication ${code}, no password`)
          if (code === AuthCode.MD5Password) {
            const salt = message.body.subarray(4, 8)
            this.write(frontend.passwordMessage(md5ResponseFromPassword(password, parameters.user, salt)))
          } else if (code === AuthCode.CleartextPassword) {
            this.write(frontend.passwordMessage(password))
          } else if (code === AuthCode.SASL) {
            const first = clientFirst()
            scram = first.state
            this.write(frontend.saslInitialResponse('SCRAM-SHA-256', first.message))
          } else if (code === AuthCode.SASLContinue) {
            const final = clientFinal(scram!, message.body.toString('utf8', 4), { password })
            serverSignature = final.expectedServerSignature
            this.write(frontend.saslResponse(final.message))
          } else if (code === AuthCode.SASLFinal) {
            if (!verifyServerFinal(message.body.toString('utf8', 4), serverSignature!)) {
              throw new Error('server SCRAM signature does not match')
            }
          } else throw new Error(`unsupported authentication request ${code}`)
          break
        }
        case Backend.ParameterStatus: {
          const nameEnd = message.body.indexOf(0)
          result.parameters.set(
            message.body.toString('utf8', 0, nameEnd),
            message.body.toString('utf8', nameEnd + 1, message.body.length - 1),
          )
          break
        }
        case Backend.BackendKeyData:
          result.processId = message.body.readInt32BE(0)
          result.secretKey = message.body.readInt32BE(4)
          break
        case Backend.ErrorResponse:
          throw new RawPgError(parseErrorFields(message.body))
        case Backend.ReadyForQuery:
          return result
        default:
          break
      }
    }
  }

  /** Runs one simple query and collects its replies up to ReadyForQuery. */
  async query(sql: string, timeoutMs = 5000): Promise<QueryResult> {
    this.write(frontend.query(sql))
    return collectResult(await this.readUntilReady(timeoutMs))
  }

  /** Sends Terminate and closes. */
  end(): void {
    if (this.ended) return
    this.socket.end(frontend.terminate)
  }

  destroy(): void {
    this.socket.destroy()
  }

  private async waitFor(ready: () => boolean, what: string, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs
    while (!ready()) {
      if (this.ended) throw new ConnectionClosedError(what)
      const left = deadline - Date.now()
      if (left <= 0) throw new Error(`timed out after ${timeoutMs}ms waiting for ${what}`)
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left)
        this.wake = () => {
          clearTimeout(timer)
          resolve()
        }
      })
      this.wake = null
    }
  }
}

/** Rows, error and status out of the replies to a query (up to ReadyForQuery). */
export function collectResult(messages: RawMessage[]): QueryResult {
  const rows: (string | null)[][] = []
  let error: ErrorFields | null = null
  let status = ''
  for (const message of messages) {
    if (message.type === Backend.DataRow) rows.push(decodeDataRow(message.body))
    else if (message.type === Backend.ErrorResponse) error ??= parseErrorFields(message.body)
    else if (message.type === Backend.ReadyForQuery) status = String.fromCharCode(message.body[0])
  }
  return { messages, rows, error, status }
}

/** Text-format columns of a DataRow body. */
export function decodeDataRow(body: Buffer): (string | null)[] {
  const count = body.readInt16BE(0)
  const out: (string | null)[] = []
  let offset = 2
  for (let i = 0; i < count; i++) {
    const length = body.readInt32BE(offset)
    offset += 4
    if (length < 0) out.push(null)
    else {
      out.push(body.toString('utf8', offset, offset + length))
      offset += length
    }
  }
  return out
}

/** The fields of an ErrorResponse/NoticeResponse message. */
export function errorFields(message: RawMessage): ErrorFields {
  return parseErrorFields(message.body)
}

/** Message type letters, for readable assertion messages. */
export function typeLetters(messages: readonly RawMessage[]): string {
  return messages.map((message) => String.fromCharCode(message.type)).join('')
}

/**
 * Sends a CancelRequest on a connection of its own and waits until the server closes
 * it (the server never answers a cancel request).
 */
export async function sendCancel(port: number, processId: number, secretKey: number): Promise<void> {
  const client = await RawClient.connect(port)
  client.write(frontend.cancelRequest(processId, secretKey))
  if (!(await client.waitClosed(5000))) {
    client.destroy()
    throw new Error('server kept the cancel connection open')
  }
}

// ---- message builders for what src/protocol does not build ----

/** An untyped startup-phase packet with the given code and raw body. */
export function startupPacket(code: number, body: Buffer = Buffer.alloc(0)): Buffer {
  return untypedPacket(new MessageWriter(0, 16 + body.length).int32(code).bytes(body))
}

export const sslRequest = startupPacket(StartupCode.SSLRequest)

/** A typed message with a raw body. */
export function typed(type: number, body: Buffer | string = ''): Buffer {
  return new MessageWriter(type).bytes(typeof body === 'string' ? Buffer.from(body) : body).finish()
}

/** A header with an arbitrary length field and no body. */
export function rawHeader(type: number, length: number): Buffer {
  const out = Buffer.alloc(5)
  out[0] = type
  out.writeUInt32BE(length >>> 0, 1)
  return out
}

/** Bind with text parameters and text results. */
export function bind(portal: string, statement: string, parameters: readonly (string | null)[] = []): Buffer {
  const writer = new MessageWriter(Frontend.Bind).cstring(portal).cstring(statement).int16(0)
  writer.int16(parameters.length)
  for (const value of parameters) {
    if (value === null) writer.int32(-1)
    else {
      const bytes = Buffer.from(value)
      writer.int32(bytes.length).bytes(bytes)
    }
  }
  return writer.int16(0).finish()
}

export function describe(kind: 'S' | 'P', name: string): Buffer {
  return new MessageWriter(Frontend.Describe).int8(kind.charCodeAt(0)).cstring(name).finish()
}

export function execute(portal = '', maxRows = 0): Buffer {
  return new MessageWriter(Frontend.Execute).cstring(portal).int32(maxRows).finish()
}

export function closeMessage(kind: 'S' | 'P', name: string): Buffer {
  return new MessageWriter(Frontend.Close).int8(kind.charCodeAt(0)).cstring(name).finish()
}

export const flush = Buffer.from([Frontend.Flush, 0, 0, 0, 4])
export const { sync, terminate, parse, query } = frontend
