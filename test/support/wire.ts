/**
 * A bare-bones protocol client for tests that must see exactly which messages arrive
 * (drivers hide duplicates and ordering). Self-contained on purpose: it is an oracle
 * for the gateway's own codec, so it shares no code with src/protocol.
 *
 * @module
 */
import net from 'node:net'

/** One backend message: its type letter and body (without type and length). */
export interface WireMessage {
  type: string
  body: Buffer
}

/** Fields of an ErrorResponse or NoticeResponse body, keyed by field letter (S, V, C, M, ...). */
export function errorFields(body: Buffer): Record<string, string> {
  const fields: Record<string, string> = {}
  let at = 0
  while (at < body.length && body[at] !== 0) {
    const end = body.indexOf(0, at + 1)
    fields[String.fromCharCode(body[at])] = body.toString('utf8', at + 1, end)
    at = end + 1
  }
  return fields
}

/** A connected, logged-in raw client. */
export class WireClient {
  private readonly socket: net.Socket
  private buffer = Buffer.alloc(0)
  private readonly queue: WireMessage[] = []
  private waiter: (() => void) | null = null
  private ended = false

  private constructor(socket: net.Socket) {
    this.socket = socket
    socket.on('data', (chunk: Buffer) => {
      this.buffer = Buffer.concat([this.buffer, chunk])
      while (this.buffer.length >= 5) {
        const length = this.buffer.readInt32BE(1)
        if (this.buffer.length < 1 + length) break
        this.queue.push({
          type: String.fromCharCode(this.buffer[0]),
          body: Buffer.from(this.buffer.subarray(5, 1 + length)),
        })
        this.buffer = this.buffer.subarray(1 + length)
      }
      this.wake()
    })
    socket.on('close', () => {
      this.ended = true
      this.wake()
    })
    socket.on('error', () => {})
  }

  /** Connects to `port` on loopback and logs in (trust auth) as postgres. */
  static async connect(port: number, user = 'postgres', database = 'postgres'): Promise<WireClient> {
    const socket = net.connect({ host: '127.0.0.1', port })
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve)
      socket.once('error', reject)
    })
    const client = new WireClient(socket)
    const params = Buffer.from(`user\0${user}\0database\0${database}\0\0`)
    const startup = Buffer.alloc(8 + params.length)
    startup.writeInt32BE(startup.length, 0)
    startup.writeInt32BE(196608, 4)
    params.copy(startup, 8)
    socket.write(startup)
    const login = await client.untilReady()
    const failed = login.find((m) => m.type === 'E')
    if (failed) throw new Error(`login failed: ${errorFields(failed.body).M}`)
    return client
  }

  /** Sends a simple Query. */
  query(sql: string): void {
    const text = Buffer.from(`${sql}\0`)
    const frame = Buffer.alloc(5 + text.length)
    frame[0] = 0x51
    frame.writeInt32BE(4 + text.length, 1)
    text.copy(frame, 5)
    this.socket.write(frame)
  }

  /** Messages up to and including the next ReadyForQuery (or all until the socket closed). */
  async untilReady(timeoutMs = 10_000): Promise<WireMessage[]> {
    const out: WireMessage[] = []
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const message = this.queue.shift()
      if (message !== undefined) {
        out.push(message)
        if (message.type === 'Z') return out
        continue
      }
      if (this.ended) return out
      const left = deadline - Date.now()
      if (left <= 0)
        throw new Error(`no ReadyForQuery within ${timeoutMs}ms; got ${out.map((m) => m.type).join('')}`)
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left)
        this.waiter = () => {
          clearTimeout(timer)
          resolve()
        }
      })
    }
  }

  /** True once the server closed the connection. */
  get closed(): boolean {
    return this.ended
  }

  close(): void {
    if (!this.socket.destroyed) this.socket.end(Buffer.from([0x58, 0, 0, 0, 4]))
  }

  private wake(): void {
    const waiter = this.waiter
    this.waiter = null
    waiter?.()
  }
}
