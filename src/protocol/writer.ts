/**
 * Builds one message: reserves the 5-byte header, appends fields, backfills the length
 * (the length counts itself but not the type byte). Used only for messages Tidepool
 * originates; forwarded messages are never re-encoded.
 */
export class MessageWriter {
  private buffer: Buffer
  private offset = 5

  constructor(type: number, sizeHint = 64) {
    this.buffer = Buffer.allocUnsafe(Math.max(sizeHint, 16))
    this.buffer[0] = type
  }

  private ensure(extra: number): void {
    if (this.offset + extra <= this.buffer.length) return
    const grown = Buffer.allocUnsafe(Math.max(this.buffer.length * 2, this.offset + extra))
    this.buffer.copy(grown, 0, 0, this.offset)
    this.buffer = grown
  }

  int8(value: number): this {
    this.ensure(1)
    this.buffer[this.offset++] = value
    return this
  }

  int16(value: number): this {
    this.ensure(2)
    this.offset = this.buffer.writeInt16BE(value, this.offset)
    return this
  }

  int32(value: number): this {
    this.ensure(4)
    this.offset = this.buffer.writeInt32BE(value, this.offset)
    return this
  }

  /** A NUL-terminated UTF-8 string. */
  cstring(value: string): this {
    const length = Buffer.byteLength(value)
    this.ensure(length + 1)
    this.offset += this.buffer.write(value, this.offset)
    this.buffer[this.offset++] = 0
    return this
  }

  bytes(value: Uint8Array): this {
    this.ensure(value.length)
    this.buffer.set(value, this.offset)
    this.offset += value.length
    return this
  }

  /** The finished message; the writer must not be used afterwards. */
  finish(): Buffer {
    this.buffer.writeInt32BE(this.offset - 1, 1)
    return this.buffer.subarray(0, this.offset)
  }
}

/**
 * A startup-phase packet: no type byte, int32 length then body. Built by the caller
 * writing into a MessageWriter and dropping the type byte.
 */
export function untypedPacket(writer: MessageWriter): Buffer {
  return writer.finish().subarray(1)
}
