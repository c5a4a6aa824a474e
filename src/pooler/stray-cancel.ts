/**
 * A cancel meant for one lease that lands on the next (rule 5, docs/architecture.md
 * "Faults"). Postgres cancels whatever its backend runs when the signal arrives: when a
 * lease pipelined behind the cancelled one is already written to the backend and the
 * cancelled statement ends just before the signal, the next statement takes the cancel
 * instead. The pool sends such a cancel only when every lease queued behind wrote one
 * statement the lexer proved state-free, run in its own implicit transaction: one that a
 * cancel rolls back whole, so it is written again as if nothing happened, which nothing
 * did. Its session never sees the stray 57014.
 *
 * @module
 */
import { Backend, isPipelineSafe, parseErrorFields, SqlState } from '../protocol/index.ts'
import type { BackendReceiver } from './backend.ts'

/** What a queued lease records of its requests at most; past it, it is not retry-safe. */
export const MAX_RECORDED_BYTES = 16 * 1024

/** Whether `bytes` are exactly one simple Query of one pipeline-safe statement. */
export function isRetrySafe(bytes: Buffer): boolean {
  if (bytes.length < 6 || bytes[0] !== 0x51 || bytes.readUInt32BE(1) !== bytes.length - 1) return false
  return isPipelineSafe(bytes, 5, bytes.length)
}

/** Whether a backend message is the ErrorResponse of a cancelled statement. */
function isCancelError(type: number, frame: Buffer): boolean {
  return type === Backend.ErrorResponse && parseErrorFields(frame.subarray(5)).code === SqlState.QueryCanceled
}

/** What a StrayCancelGuard needs of its lease. */
export interface GuardedLease {
  /** The session's receiver now (it may change while the guard watches). */
  readonly receiver: BackendReceiver | null
  /** The lease asked for a cancel itself: a 57014 is its own. */
  readonly cancelledItself: boolean
  /** Writes the recorded requests again. */
  rewrite(bytes: Buffer): void
  /**
   * The guard is done: the session's receiver takes the backend's messages directly,
   * and what the session sent meanwhile goes out.
   */
  unguard(): void
}

/** How much of a guarded reply is held back at most; past it, it goes through unguarded. */
export const MAX_GUARDED_REPLY_BYTES = 1024 * 1024

/**
 * Stands between a backend and the session of a lease exposed to a stray cancel, for
 * that lease's first reply, which it holds back until the reply's ReadyForQuery: a
 * cancel lands at any point of a statement (after its RowDescription, between rows).
 * A 57014 the lease did not ask for drops the reply and writes the statement again;
 * any other reply goes to the session whole. A reply larger than
 * MAX_GUARDED_REPLY_BYTES goes through as it comes (a cancel that late has landed long
 * since), and so does one with a message too large to hold in one piece.
 */
export class StrayCancelGuard implements BackendReceiver {
  private readonly lease: GuardedLease
  private readonly recorded: Buffer
  private held: { type: number; frame: Buffer }[] = []
  private heldBytes = 0
  private swallowing = false

  constructor(lease: GuardedLease, recorded: Buffer) {
    this.lease = lease
    this.recorded = recorded
  }

  onBackendMessage(type: number, frame: Buffer): void {
    if (this.swallowing) {
      if (type !== Backend.ReadyForQuery) return
      this.lease.rewrite(this.recorded)
      this.lease.unguard()
      return
    }
    if (isCancelError(type, frame) && !this.lease.cancelledItself && isRetrySafe(this.recorded)) {
      this.held = []
      this.swallowing = true
      return
    }
    // Frames may point into a shared read buffer: what is held is copied.
    this.held.push({ type, frame: Buffer.from(frame) })
    this.heldBytes += frame.length
    if (type === Backend.ReadyForQuery || this.heldBytes > MAX_GUARDED_REPLY_BYTES) this.passOn()
  }

  onBackendMessagePart(type: number, piece: Buffer, first: boolean, last: boolean): void {
    this.passOn()
    this.lease.receiver?.onBackendMessagePart(type, piece, first, last)
  }

  onBackendFlush(): void {
    this.lease.receiver?.onBackendFlush()
  }

  onBackendClosed(error: Error, unserved: boolean): void {
    // The reply is cut short: what came of it goes on, then the news.
    this.passOn()
    this.lease.receiver?.onBackendClosed(error, unserved)
  }

  /** Ends the watch: the session gets what was held back, then everything directly. */
  private passOn(): void {
    const held = this.held
    this.held = []
    this.lease.unguard()
    const receiver = this.lease.receiver
    if (receiver === null) return
    for (const { type, frame } of held) receiver.onBackendMessage(type, frame)
    if (held.length > 0) receiver.onBackendFlush()
  }
}
