/**
 * The pooler's side of the lease link, driven by a raw link client that behaves badly:
 * a gateway that stops reading its link must not make the pooler buffer a backend's
 * whole output (reading stops until the link drains), and the lease still completes.
 */
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { frame, Kind, type LinkHandler, LinkReader } from '../../src/link/frames.ts'
import { type LeaseLinkServer, serveLeaseLink } from '../../src/link/index.ts'
import { createLogger } from '../../src/log.ts'
import { Pooler } from '../../src/pooler/index.ts'
import { frontend } from '../../src/protocol/index.ts'
import { startTestPostgres, type TestPostgres } from '../support/postgres.ts'

/** Frames read from the link: control frames in order, Data bytes counted per stream. */
class LinkClient implements LinkHandler {
  readonly socket: net.Socket
  readonly control: { kind: number; stream: number; payload: Buffer }[] = []
  dataBytes = 0
  private tail = Buffer.alloc(0)
  readyForQuery = 0
  private waiters: (() => void)[] = []

  constructor(socket: net.Socket) {
    this.socket = socket
    const reader = new LinkReader(this)
    socket.on('data', (chunk: Buffer) => reader.feed(chunk))
  }

  onData(_stream: number, piece: Buffer): void {
    this.dataBytes += piece.length
    // Only ReadyForQuery matters here: look for its 6 bytes across piece boundaries.
    const joined = Buffer.concat([this.tail, piece])
    for (let at = joined.indexOf(0x5a); at >= 0; at = joined.indexOf(0x5a, at + 1)) {
      if (at + 6 <= joined.length && joined.readInt32BE(at + 1) === 5 && joined[at + 5] === 0x49)
        this.readyForQuery++
    }
    this.tail = Buffer.from(joined.subarray(Math.max(0, joined.length - 5)))
  }

  onControl(kind: number, stream: number, payload: Buffer): void {
    this.control.push({ kind, stream, payload: Buffer.from(payload) })
  }

  onChunkEnd(): void {
    for (const waiter of this.waiters.splice(0)) waiter()
  }

  async until(what: string, check: () => boolean, timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs
    while (!check()) {
      if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`)
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve)
        setTimeout(resolve, 50)
      })
    }
  }
}

describe('the lease link, from the pooler side', () => {
  let postgres: TestPostgres
  let pooler: Pooler
  let server: LeaseLinkServer
  let dir: string

  before(async () => {
    postgres = await startTestPostgres()
    pooler = new Pooler(
      {
        upstream: {
          socketDir: postgres.socketDir,
          port: postgres.port,
          user: 'postgres',
          database: 'postgres',
        },
        pool: {
          maxSize: 1,
          minSize: 0,
          idleTimeoutMs: 60_000,
          maxLifetimeMs: 0,
          waitTimeoutMs: 10_000,
          pipelineDepth: 4,
        },
        authCacheTtlMs: 1000,
      },
      createLogger('error'),
    )
    dir = await mkdtemp(join(tmpdir(), 'tidepool-link-test-'))
    server = await serveLeaseLink(pooler, { path: join(dir, 'link.sock') }, createLogger('error'))
  })

  after(async () => {
    await server?.close()
    await pooler?.close()
    await postgres?.stop()
    if (dir !== undefined) await rm(dir, { recursive: true, force: true })
  })

  test('a gateway that stops reading: the pooler stops reading the backend, then the lease completes', async () => {
    const socket = net.connect('path' in server.address ? server.address.path : '')
    await new Promise((resolve) => socket.once('connect', resolve))
    const client = new LinkClient(socket)
    const definition = {
      database: 'postgres',
      user: 'postgres',
      settings: [],
      settingsKey: '',
      customSettingNames: [],
    }
    socket.write(
      Buffer.concat([
        frame(Kind.Define, 1, JSON.stringify(definition)),
        frame(Kind.Acquire, 7, Buffer.from([0, 0, 0, 1])),
      ]),
    )
    await client.until('the grant', () => client.control.some((c) => c.kind === Kind.Grant && c.stream === 7))
    // Some 300 MB of rows, and a gateway that reads none of them for a while.
    socket.pause()
    const before = process.memoryUsage().arrayBuffers
    socket.write(
      frame(Kind.Data, 7, frontend.query("SELECT repeat('x', 1000) FROM generate_series(1, 300000)")),
    )
    await new Promise((resolve) => setTimeout(resolve, 2000))
    const grown = process.memoryUsage().arrayBuffers - before
    assert.ok(
      grown < 64 * 1024 * 1024,
      `the pooler buffered ${Math.round(grown / 1024 / 1024)} MB for a stalled link`,
    )
    socket.resume()
    await client.until('every row and ReadyForQuery', () => client.readyForQuery === 1, 60_000)
    assert.ok(client.dataBytes > 300 * 1000 * 1000, `only ${client.dataBytes} bytes of rows arrived`)
    socket.write(frame(Kind.Release, 7))
    const idle = async () => pooler.stats().every((pool) => pool.leased === 0)
    const deadline = Date.now() + 5000
    while (!(await idle())) {
      if (Date.now() > deadline) assert.fail('the backend did not go back to the pool')
      await new Promise((resolve) => setTimeout(resolve, 25))
    }
    socket.destroy()
  })
})
