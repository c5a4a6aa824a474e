import assert from 'node:assert/strict'
import { EventEmitter } from 'node:events'
import type net from 'node:net'
import { describe, it } from 'node:test'
import { frame, Kind, type LinkHandler, LinkReader, LinkWriter } from './frames.ts'

/** What a reader handed on: Data pieces joined per stream, control frames in order. */
class Collected implements LinkHandler {
  readonly data = new Map<number, Buffer[]>()
  readonly control: [number, number, string][] = []
  chunkEnds = 0

  onData(stream: number, piece: Buffer): void {
    // Pieces are views of the chunk: keep copies.
    const pieces = this.data.get(stream) ?? []
    pieces.push(Buffer.from(piece))
    this.data.set(stream, pieces)
  }

  onControl(kind: Kind, stream: number, payload: Buffer): void {
    this.control.push([kind, stream, payload.toString()])
  }

  onChunkEnd(): void {
    this.chunkEnds++
  }

  dataOf(stream: number): string {
    return Buffer.concat(this.data.get(stream) ?? []).toString()
  }
}

/** The bytes a writer wrote, from a stand-in socket that only records them. */
function recordingSocket(): { socket: net.Socket; written: Buffer[] } {
  const written: Buffer[] = []
  const socket = Object.assign(new EventEmitter(), {
    destroyed: false,
    write(chunk: Buffer) {
      written.push(Buffer.from(chunk))
      return true
    },
  })
  return { socket: socket as unknown as net.Socket, written }
}

const STREAM = [
  frame(Kind.Define, 1, '{"database":"app"}'),
  frame(Kind.Acquire, 7, Buffer.from([0, 0, 0, 1])),
  frame(Kind.Data, 7, 'Q\0\0\0\rSELECT 1\0'),
  frame(Kind.Release, 7),
  frame(Kind.Data, 9, 'hello'),
  frame(Kind.Data, 9, ' world'),
  frame(Kind.Reply, 3, '{"result":null}'),
]

describe('LinkReader', () => {
  it('reassembles the same frames whatever the chunk boundaries', () => {
    const bytes = Buffer.concat(STREAM)
    const whole = new Collected()
    new LinkReader(whole).feed(bytes)
    assert.deepEqual(whole.control, [
      [Kind.Define, 1, '{"database":"app"}'],
      [Kind.Acquire, 7, '\0\0\0\u0001'],
      [Kind.Release, 7, ''],
      [Kind.Reply, 3, '{"result":null}'],
    ])
    assert.equal(whole.dataOf(7), 'Q\0\0\0\rSELECT 1\0')
    assert.equal(whole.dataOf(9), 'hello world')
    for (let size = 1; size <= 16; size++) {
      const split = new Collected()
      const reader = new LinkReader(split)
      // A reused chunk buffer, as a socket's read buffer would be.
      const chunk = Buffer.alloc(size)
      for (let at = 0; at < bytes.length; at += size) {
        const length = Math.min(size, bytes.length - at)
        bytes.copy(chunk, 0, at, at + length)
        reader.feed(chunk.subarray(0, length))
        chunk.fill(0xee)
      }
      assert.deepEqual(split.control, whole.control, `chunks of ${size}`)
      assert.equal(split.dataOf(7), whole.dataOf(7), `chunks of ${size}`)
      assert.equal(split.dataOf(9), whole.dataOf(9), `chunks of ${size}`)
    }
  })

  it('calls onChunkEnd once per chunk', () => {
    const collected = new Collected()
    const reader = new LinkReader(collected)
    reader.feed(STREAM[0])
    reader.feed(Buffer.concat(STREAM.slice(1)))
    assert.equal(collected.chunkEnds, 2)
  })
})

describe('LinkWriter', () => {
  it('writes everything of one turn in one write, Data of one stream under one header', async () => {
    const { socket, written } = recordingSocket()
    const writer = new LinkWriter(socket)
    writer.control(Kind.Acquire, 5, Buffer.from([0, 0, 0, 2]))
    writer.data(5, Buffer.from('abc'))
    writer.data(5, Buffer.from('def'))
    writer.data(6, Buffer.from('x'))
    writer.control(Kind.Release, 5)
    assert.equal(written.length, 0, 'nothing is written before the turn ends')
    await new Promise((resolve) => setImmediate(resolve))
    assert.equal(written.length, 1)
    const out = written[0]
    assert.deepEqual(
      out,
      Buffer.concat([
        frame(Kind.Acquire, 5, Buffer.from([0, 0, 0, 2])),
        frame(Kind.Data, 5, 'abcdef'),
        frame(Kind.Data, 6, 'x'),
        frame(Kind.Release, 5),
      ]),
    )
  })

  it('grows past its buffer and round-trips through a reader', async () => {
    const { socket, written } = recordingSocket()
    const writer = new LinkWriter(socket)
    const big = Buffer.alloc(100_000, 'y')
    writer.data(1, big.subarray(0, 70_000))
    writer.data(1, big.subarray(70_000))
    writer.control(Kind.Closed, 1, '{"message":"gone"}')
    await new Promise((resolve) => setImmediate(resolve))
    const collected = new Collected()
    new LinkReader(collected).feed(Buffer.concat(written))
    assert.equal(collected.dataOf(1), big.toString())
    assert.deepEqual(collected.control, [[Kind.Closed, 1, '{"message":"gone"}']])
  })
})
