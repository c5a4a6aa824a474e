/**
 * Bytes gathered from one side, written to the other in one call at a batch boundary.
 * Frames that lie back to back in the same memory (consecutive messages of one socket
 * read) are merged into one slice without copying; the rest are concatenated once.
 */
export class Batch {
  /** Frames come from a reused read buffer: what is taken must be a copy. */
  private readonly copy: boolean
  private parts: Buffer[] = []
  private bytes = 0
  /** The open run: a range of one chunk that grows while frames arrive back to back. */
  private run: Buffer | null = null
  private runEnd = 0

  constructor(copy: boolean) {
    this.copy = copy
  }

  get empty(): boolean {
    return this.run === null && this.parts.length === 0
  }

  push(frame: Buffer): void {
    const run = this.run
    if (run !== null && frame.buffer === run.buffer && frame.byteOffset === run.byteOffset + this.runEnd) {
      this.runEnd += frame.length
      return
    }
    this.closeRun()
    // Remember the frame as the start of a run over its underlying memory.
    this.run = frame
    this.runEnd = frame.length
  }

  /** Everything gathered, as one buffer, and empties the batch. */
  take(): Buffer | null {
    this.closeRun()
    const parts = this.parts
    if (parts.length === 0) return null
    const out =
      parts.length > 1 ? Buffer.concat(parts, this.bytes) : this.copy ? Buffer.from(parts[0]) : parts[0]
    this.parts = []
    this.bytes = 0
    return out
  }

  private closeRun(): void {
    const run = this.run
    if (run === null) return
    const piece = this.runEnd === run.length ? run : Buffer.from(run.buffer, run.byteOffset, this.runEnd)
    this.parts.push(piece)
    this.bytes += piece.length
    this.run = null
  }
}
