import assert from 'node:assert/strict'
import { Buffer } from 'node:buffer'
import { describe, test } from 'node:test'
import { Backend, Frontend, HEADER_LENGTH, MAX_MESSAGE_LENGTH } from './constants.ts'
import { type FrameHandler, Framer, type FramerOptions, FrameTooLargeError } from './framer.ts'

/** One typed message: type byte, int32 length (counting itself), body. */
function message(type: number, body: Buffer | string = ''): Buffer {
  const payload = typeof body === 'string' ? Buffer.from(body) : body
  const frame = Buffer.alloc(HEADER_LENGTH + payload.length)
  frame[0] = type
  frame.writeInt32BE(4 + payload.length, 1)
  payload.copy(frame, HEADER_LENGTH)
  return frame
}

/** A header with an arbitrary length field, for invalid lengths. */
function header(type: number, length: number): Buffer {
  const frame = Buffer.alloc(HEADER_LENGTH)
  frame[0] = type
  frame.writeUInt32BE(length >>> 0, 1)
  return frame
}

interface Piece {
  type: number
  piece: Buffer
  first: boolean
  last: boolean
}

/**
 * Records what a Framer hands on. Frames are copied at once: the framer hands out
 * subarrays of the fed chunk, and the tests reuse nothing, but copying makes the
 * recording independent of what the caller does with its chunks afterwards.
 */
class Recorder implements FrameHandler {
  readonly events: ({ kind: 'message'; type: number; frame: Buffer } | ({ kind: 'part' } & Piece))[] = []

  onMessage(type: number, frame: Buffer): void {
    this.events.push({ kind: 'message', type, frame: Buffer.from(frame) })
  }

  onMessagePart(type: number, piece: Buffer, first: boolean, last: boolean): void {
    this.events.push({ kind: 'part', type, piece: Buffer.from(piece), first, last })
  }

  /**
   * The message sequence with streamed pieces put back together, checking that pieces
   * come as first … last runs of one type with nothing in between.
   */
  messages(): { type: number; frame: Buffer; streamed: boolean }[] {
    const out: { type: number; frame: Buffer; streamed: boolean }[] = []
    let open: { type: number; pieces: Buffer[] } | null = null
    for (const event of this.events) {
      if (event.kind === 'message') {
        assert.equal(open, null, 'whole message in the middle of a streamed one')
        assert.equal(event.frame[0], event.type, 'type argument differs from the frame type byte')
        assert.equal(event.frame.readInt32BE(1) + 1, event.frame.length, 'frame length differs from header')
        out.push({ type: event.type, frame: event.frame, streamed: false })
        continue
      }
      if (event.first) {
        assert.equal(open, null, 'a streamed message started inside another')
        open = { type: event.type, pieces: [] }
      }
      assert.notEqual(open, null, 'a continuation piece without a first piece')
      assert.equal(event.type, open!.type, 'piece type changed mid-message')
      open!.pieces.push(event.piece)
      if (event.last) {
        const frame = Buffer.concat(open!.pieces)
        assert.equal(frame[0], open!.type)
        assert.equal(frame.readInt32BE(1) + 1, frame.length, 'streamed message length differs from header')
        out.push({ type: open!.type, frame, streamed: true })
        open = null
      }
    }
    assert.equal(open, null, 'a streamed message never finished')
    return out
  }
}

function frameAll(
  chunks: readonly Buffer[],
  options?: FramerOptions,
): { recorder: Recorder; framer: Framer } {
  const recorder = new Recorder()
  const framer = new Framer(recorder, options)
  for (const chunk of chunks) framer.feed(chunk)
  return { recorder, framer }
}

function assertSameMessages(actual: { type: number; frame: Buffer }[], expected: readonly Buffer[]): void {
  assert.equal(actual.length, expected.length, 'message count')
  for (let i = 0; i < expected.length; i++) {
    assert.equal(actual[i].type, expected[i][0], `type of message ${i}`)
    assert.ok(actual[i].frame.equals(expected[i]), `bytes of message ${i}`)
  }
}

/** Mulberry32: a small seeded PRNG, so a failing iteration can be replayed. */
function prng(seed: number): () => number {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

describe('Framer', () => {
  const query = message(Frontend.Query, 'SELECT 1\0')
  const sync = message(Frontend.Sync)
  const stream = Buffer.concat([query, sync])

  test('whole messages in one chunk come out as subarrays of the chunk', () => {
    const seen: Buffer[] = []
    const framer = new Framer({
      onMessage: (_type, frame) => seen.push(frame),
      onMessagePart: () => assert.fail('nothing streams here'),
    })
    framer.feed(stream)
    assert.equal(seen.length, 2)
    assert.equal(seen[0].buffer, stream.buffer, 'first frame was copied')
    assert.equal(seen[0].byteOffset, stream.byteOffset)
    assert.equal(seen[1].byteOffset, stream.byteOffset + query.length)
    assert.equal(framer.buffered, 0)
  })

  test('every split point of a two-message stream', () => {
    for (let cut = 0; cut <= stream.length; cut++) {
      const { recorder, framer } = frameAll([stream.subarray(0, cut), stream.subarray(cut)])
      assertSameMessages(recorder.messages(), [query, sync])
      assert.equal(framer.buffered, 0, `bytes left buffered after cut ${cut}`)
    }
  })

  test('every pair of split points (three chunks)', () => {
    for (let a = 0; a <= stream.length; a++) {
      for (let b = a; b <= stream.length; b++) {
        const { recorder } = frameAll([stream.subarray(0, a), stream.subarray(a, b), stream.subarray(b)])
        assertSameMessages(recorder.messages(), [query, sync])
      }
    }
  })

  test('one byte at a time', () => {
    const chunks = [...stream].map((byte) => Buffer.from([byte]))
    const { recorder } = frameAll(chunks)
    assertSameMessages(recorder.messages(), [query, sync])
  })

  test('a split header is held until its length can be read', () => {
    const recorder = new Recorder()
    const framer = new Framer(recorder)
    framer.feed(query.subarray(0, 3))
    assert.equal(recorder.events.length, 0)
    assert.equal(framer.buffered, 3)
    framer.feed(query.subarray(3, 4))
    assert.equal(framer.buffered, 4)
    framer.feed(query.subarray(4, 7))
    assert.equal(recorder.events.length, 0)
    assert.equal(framer.buffered, 7)
    framer.feed(query.subarray(7))
    assertSameMessages(recorder.messages(), [query])
    assert.equal(framer.buffered, 0)
  })

  test('a message with an empty body (length 4) frames alone and between others', () => {
    const { recorder } = frameAll([Buffer.concat([sync, sync, query, sync])])
    assertSameMessages(recorder.messages(), [sync, sync, query, sync])
  })

  test('a partial message is completed by a chunk that also carries following messages', () => {
    const three = Buffer.concat([query, sync, query])
    const { recorder } = frameAll([three.subarray(0, 6), three.subarray(6)])
    assertSameMessages(recorder.messages(), [query, sync, query])
  })

  describe('streaming large messages', () => {
    const threshold = 1024
    const options: FramerOptions = { streamTypes: [Backend.DataRow], streamThreshold: threshold }
    const body = Buffer.alloc(10_000)
    for (let i = 0; i < body.length; i++) body[i] = (i * 31 + 7) & 0xff
    const row = message(Backend.DataRow, body)

    test('a large DataRow fed in pieces is handed on in pieces, first and last flagged, byte-exact', () => {
      const chunks: Buffer[] = []
      for (let offset = 0; offset < row.length; offset += 777) chunks.push(row.subarray(offset, offset + 777))
      const { recorder, framer } = frameAll([...chunks, sync], options)
      const parts = recorder.events.filter((event) => event.kind === 'part')
      assert.equal(parts.length, chunks.length, 'one piece per chunk')
      assert.ok(parts.length > 2)
      parts.forEach((part, i) => {
        assert.equal(part.type, Backend.DataRow)
        assert.equal(part.first, i === 0, `first flag of piece ${i}`)
        assert.equal(part.last, i === parts.length - 1, `last flag of piece ${i}`)
      })
      // Nothing of the row is held: pieces pass straight through.
      assert.equal(framer.buffered, 0)
      assertSameMessages(recorder.messages(), [row, sync])
    })

    test('the last piece ends at the message boundary even when the chunk carries more', () => {
      const tail = Buffer.concat([row.subarray(5000), sync, query])
      const { recorder } = frameAll([row.subarray(0, 5000), tail], options)
      const last = recorder.events.findLast((event) => event.kind === 'part')
      assert.ok(last !== undefined && last.kind === 'part' && last.last)
      assert.equal(last.piece.length, row.length - 5000)
      assertSameMessages(recorder.messages(), [row, sync, query])
    })

    test('a large DataRow whose header is split streams too', () => {
      const { recorder } = frameAll([row.subarray(0, 2), row.subarray(2, 3000), row.subarray(3000)], options)
      assert.ok(recorder.events.every((event) => event.kind === 'part'))
      assertSameMessages(recorder.messages(), [row])
    })

    test('every split point around the stream threshold', () => {
      const small = message(Backend.DataRow, Buffer.alloc(threshold - 5, 1)) // length = threshold - 1
      const exact = message(Backend.DataRow, Buffer.alloc(threshold - 4, 2)) // length = threshold
      const all = Buffer.concat([small, exact, sync])
      for (let cut = 0; cut <= all.length; cut += 13) {
        const { recorder } = frameAll([all.subarray(0, cut), all.subarray(cut)], options)
        const messages = recorder.messages()
        assertSameMessages(messages, [small, exact, sync])
        // The message below the threshold is never streamed.
        assert.equal(
          recorder.events.filter((event) => event.kind === 'part' && event.first).length <= 1,
          true,
        )
        assert.equal(recorder.events[0].kind, 'message', `small DataRow streamed at cut ${cut}`)
      }
    })

    test('a large DataRow that arrives whole in one chunk is one message', () => {
      const { recorder } = frameAll([row], options)
      assert.equal(recorder.events.length, 1)
      assert.equal(recorder.events[0].kind, 'message')
      assertSameMessages(recorder.messages(), [row])
    })

    test('a large message of a type that does not stream is reassembled', () => {
      const big = message(Backend.RowDescription, body)
      const chunks: Buffer[] = []
      for (let offset = 0; offset < big.length; offset += 1000)
        chunks.push(big.subarray(offset, offset + 1000))
      const { recorder } = frameAll(chunks, options)
      assert.equal(recorder.events.length, 1)
      assert.equal(recorder.events[0].kind, 'message')
      assertSameMessages(recorder.messages(), [big])
    })
  })

  describe('invalid lengths', () => {
    for (const length of [0, 3, -1, 0x7fffffff, MAX_MESSAGE_LENGTH + 1]) {
      test(`length ${length} throws FrameTooLargeError`, () => {
        const framer = new Framer(new Recorder())
        assert.throws(
          () => framer.feed(header(Frontend.Query, length)),
          (error: unknown) => error instanceof FrameTooLargeError && error.length === length,
        )
      })

      test(`length ${length} with a split header throws FrameTooLargeError`, () => {
        const framer = new Framer(new Recorder())
        const bad = header(Frontend.Query, length)
        framer.feed(bad.subarray(0, 2))
        assert.throws(() => framer.feed(bad.subarray(2)), FrameTooLargeError)
      })
    }

    test('an invalid length after valid messages in the same chunk: valid ones are handed on first', () => {
      const recorder = new Recorder()
      const framer = new Framer(recorder)
      assert.throws(() => framer.feed(Buffer.concat([query, header(0x5a, 2)])), FrameTooLargeError)
      assertSameMessages(recorder.messages(), [query])
    })

    test('maxLength is honoured', () => {
      const framer = new Framer(new Recorder(), { maxLength: 100 })
      framer.feed(message(Frontend.Query, Buffer.alloc(96))) // length 100
      assert.throws(() => framer.feed(message(Frontend.Query, Buffer.alloc(97))), FrameTooLargeError)
    })
  })

  test('reset() drops a partial message', () => {
    const recorder = new Recorder()
    const framer = new Framer(recorder)
    framer.feed(query.subarray(0, 7))
    framer.reset()
    assert.equal(framer.buffered, 0)
    framer.feed(sync)
    assertSameMessages(recorder.messages(), [sync])
  })

  test('property: random messages, random chunking, same message sequence out (seeded, 500 runs)', () => {
    const types = [Backend.DataRow, Frontend.Query, Frontend.Sync, Backend.CopyData, Backend.ReadyForQuery]
    let streamedTotal = 0
    let splitTotal = 0
    for (let iteration = 0; iteration < 500; iteration++) {
      const seed = 0x7d1e + iteration
      const random = prng(seed)
      const threshold = 16 + Math.floor(random() * 200)
      const options: FramerOptions = {
        streamTypes: [Backend.DataRow, Backend.CopyData],
        streamThreshold: threshold,
      }
      const messages: Buffer[] = []
      const count = 1 + Math.floor(random() * 12)
      for (let i = 0; i < count; i++) {
        const type = types[Math.floor(random() * types.length)]
        const roll = random()
        const size =
          roll < 0.3 ? 0 : roll < 0.8 ? Math.floor(random() * threshold) : Math.floor(random() * 2000)
        const body = Buffer.alloc(size)
        for (let j = 0; j < size; j++) body[j] = Math.floor(random() * 256)
        messages.push(message(type, body))
      }
      const all = Buffer.concat(messages)
      const chunks: Buffer[] = []
      for (let offset = 0; offset < all.length; ) {
        const roll = random()
        const size =
          roll < 0.2 ? 1 : roll < 0.5 ? 1 + Math.floor(random() * 6) : 1 + Math.floor(random() * 700)
        // Copy each chunk into its own memory, as a socket delivers it.
        chunks.push(Buffer.from(all.subarray(offset, offset + size)))
        offset += size
      }
      const { recorder, framer } = frameAll(chunks, options)
      try {
        const out = recorder.messages()
        assertSameMessages(out, messages)
        assert.equal(framer.buffered, 0)
        for (const { type, frame, streamed } of out) {
          if (!streamed) continue
          streamedTotal++
          assert.ok(type === Backend.DataRow || type === Backend.CopyData, 'a non-stream type streamed')
          assert.ok(frame.length - 1 >= threshold, 'a message below the threshold streamed')
        }
      } catch (error) {
        throw new Error(`seed ${seed}: ${(error as Error).message}`, { cause: error })
      }
      splitTotal += chunks.length - 1
    }
    // The generator must actually exercise the interesting paths.
    assert.ok(streamedTotal > 200, `only ${streamedTotal} streamed messages`)
    assert.ok(splitTotal > 1000, `only ${splitTotal} chunk boundaries`)
  })
})
