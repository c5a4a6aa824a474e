import {
  bindComplete,
  closeComplete,
  commandComplete,
  errorResponse,
  Frontend,
  frontend,
  noData,
  noParameters,
  type PgError,
  parseComplete,
  readyForQuery,
  SqlState,
  type TransactionExit,
  TxStatus,
  transactionExit,
} from '../protocol/index.ts'
import { readCString } from './statements.ts'

/** What the lost block needs of its session. */
export interface LostTransactionHost {
  /** Queues a reply for the client. */
  reply(frame: Buffer): void
  /**
   * Gives the client a statement name for `body` (a Parse body: text and parameter
   * types), as a Parse between leases would; an ErrorResponse frame if it cannot.
   */
  nameStatement(name: string, body: Buffer): Buffer | null
  /** The SQL text of a client's statement name; undefined if it has none. */
  statementText(name: string): Buffer | undefined
  forgetStatement(name: string): void
  /**
   * The block is over (a ROLLBACK, or a COMMIT refused): the session is idle again and,
   * when `skipUntilSync`, skips the rest of an extended batch after the error it got.
   */
  ended(skipUntilSync: boolean): void
  /** The rest of a query whose first statement ended the block, to run as usual. */
  runRest(query: Buffer): void
  terminate(): void
}

/**
 * A transaction block whose backend died under it (ARCHITECTURE.md, "Faults"). The
 * transaction is gone, rolled back with its backend; the client must not believe
 * otherwise. It is told at the statement in flight, or at its next one, with the error
 * that lost it; from then on it is answered here, as Postgres answers an aborted
 * transaction: every statement fails with 25P02 until ROLLBACK, which ends the block.
 * COMMIT, END and PREPARE TRANSACTION end it too, but with an error: the transaction
 * they would keep no longer exists. No backend is used meanwhile.
 */
export class LostTransaction {
  private readonly host: LostTransactionHost
  private readonly cause: PgError
  /** The client has been told that the transaction was lost. */
  private reported: boolean
  /** After an error in an extended batch, everything up to Sync is ignored, as by Postgres. */
  private skipping: boolean
  /** What the unnamed statement and each portal would run, if it ends the block. */
  private unnamed: TransactionExit | null = null
  private readonly portals = new Map<string, TransactionExit>()

  /**
   * `reported`: the statement in flight already got the error; `skipping`: it was in an
   * extended batch whose Sync has not come yet.
   */
  constructor(host: LostTransactionHost, cause: PgError, reported: boolean, skipping: boolean) {
    this.host = host
    this.cause = cause
    this.reported = reported
    this.skipping = skipping
  }

  /** The error for the statement in flight when the backend was lost. */
  static lossError(cause: PgError): Buffer {
    return errorResponse(
      'ERROR',
      cause.code,
      cause.message,
      'The server connection was lost, and with it the transaction in progress: it was rolled back, unless the statement in flight was its COMMIT, whose outcome is unknown.',
      'End the transaction block with ROLLBACK.',
    )
  }

  /** Answers one client message. False: not a message a client may send (a protocol violation). */
  onMessage(type: number, frame: Buffer): boolean {
    if (type === Frontend.Terminate) {
      this.host.terminate()
      return true
    }
    if (type === Frontend.Sync) {
      this.skipping = false
      this.host.reply(readyForQuery[TxStatus.Failed])
      return true
    }
    if (this.skipping) return true
    switch (type) {
      case Frontend.Query:
        this.query(frame)
        return true
      case Frontend.Parse:
        this.parse(frame)
        return true
      case Frontend.Bind:
        this.bind(frame)
        return true
      case Frontend.Describe:
        this.describe(frame)
        return true
      case Frontend.Execute:
        this.execute(frame)
        return true
      case Frontend.Close: {
        const [name] = readCString(frame, 6)
        if (frame[5] === 0x53) {
          if (name === '') this.unnamed = null
          else this.host.forgetStatement(name)
        } else this.portals.delete(name)
        this.host.reply(closeComplete)
        return true
      }
      case Frontend.FunctionCall:
        this.host.reply(this.refusal())
        this.host.reply(readyForQuery[TxStatus.Failed])
        return true
      case Frontend.Flush:
      case Frontend.CopyData:
      case Frontend.CopyDone:
      case Frontend.CopyFail:
        return true
      default:
        return false
    }
  }

  private query(frame: Buffer): void {
    const end = frame.length - 1
    const exit = transactionExit(frame, 5, end)
    if (exit === null) {
      this.host.reply(this.refusal())
      this.host.reply(readyForQuery[TxStatus.Failed])
      return
    }
    if (exit.kind === 'commit') {
      this.host.reply(this.commitRefusal())
      this.host.ended(false)
      this.host.reply(readyForQuery[TxStatus.Idle])
      return
    }
    this.host.reply(ROLLBACK_TAG)
    this.host.ended(false)
    const rest = frame.toString('utf8', exit.end, end)
    // The statements after ROLLBACK run as in any query; its ReadyForQuery ends both.
    if (rest.trim() !== '') this.host.runRest(frontend.query(rest))
    else this.host.reply(readyForQuery[TxStatus.Idle])
  }

  private parse(frame: Buffer): void {
    const [name, bodyStart] = readCString(frame, 5)
    const textEnd = frame.indexOf(0, bodyStart)
    const exit = textEnd < 0 ? null : transactionExit(frame, bodyStart, textEnd)
    if (exit === null) {
      this.fail(this.refusal())
      return
    }
    if (name === '') this.unnamed = exit.kind
    else {
      const error = this.host.nameStatement(name, frame.subarray(bodyStart))
      if (error !== null) {
        this.fail(error)
        return
      }
    }
    this.host.reply(parseComplete)
  }

  private bind(frame: Buffer): void {
    const [portal, statementStart] = readCString(frame, 5)
    const [statement] = readCString(frame, statementStart)
    let kind: TransactionExit | null = this.unnamed
    if (statement !== '') {
      const text = this.host.statementText(statement)
      if (text === undefined) {
        this.fail(
          errorResponse(
            'ERROR',
            SqlState.InvalidSqlStatementName,
            `prepared statement "${statement}" does not exist`,
          ),
        )
        return
      }
      kind = transactionExit(text)?.kind ?? null
    }
    if (kind === null) {
      this.fail(this.refusal())
      return
    }
    this.portals.set(portal, kind)
    this.host.reply(bindComplete)
  }

  private describe(frame: Buffer): void {
    // Statements that end a block take no parameters and return no rows.
    if (frame[5] === 0x53) this.host.reply(noParameters)
    this.host.reply(noData)
  }

  private execute(frame: Buffer): void {
    const [portal] = readCString(frame, 5)
    const kind = this.portals.get(portal)
    if (kind === undefined) {
      this.fail(this.refusal())
      return
    }
    if (kind === 'rollback') {
      this.host.reply(ROLLBACK_TAG)
      this.host.ended(false)
      return
    }
    this.host.reply(this.commitRefusal())
    this.host.ended(true)
  }

  /** An error in an extended batch: the rest up to Sync is ignored. */
  private fail(error: Buffer): void {
    this.host.reply(error)
    this.skipping = true
  }

  /** The first statement after the loss learns of it; later ones get Postgres's 25P02. */
  private refusal(): Buffer {
    if (!this.reported) {
      this.reported = true
      return LostTransaction.lossError(this.cause)
    }
    return errorResponse(
      'ERROR',
      SqlState.InFailedSqlTransaction,
      'current transaction is aborted, commands ignored until end of transaction block',
      'Its server connection was lost, and the transaction rolled back with it.',
    )
  }

  private commitRefusal(): Buffer {
    if (!this.reported) {
      this.reported = true
      return errorResponse(
        'ERROR',
        this.cause.code,
        `the transaction was rolled back, not committed: ${this.cause.message}`,
        'The server connection was lost while the transaction was open, and the transaction with it.',
      )
    }
    return errorResponse(
      'ERROR',
      SqlState.InFailedSqlTransaction,
      'the transaction was rolled back, not committed: its server connection was lost',
    )
  }
}

const ROLLBACK_TAG = commandComplete('ROLLBACK')
