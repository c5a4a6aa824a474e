import assert from 'node:assert'
import type net from 'node:net'
import type { Logger } from '../log.ts'
import { Batch, FixedQueue } from '../net/index.ts'
import {
  type BackendReceiver,
  errorFromFrame,
  type Lease,
  type LeaseRequest,
  type NotificationListener,
  type PoolerClient,
  settingsKey,
} from '../pooler/index.ts'
import {
  Backend,
  closeComplete,
  commandComplete,
  customSettingNames,
  DO_BLOCK,
  errorResponse,
  FRONTEND_TYPE_LIMITS,
  type FrameHandler,
  Framer,
  FrameTooLargeError,
  Frontend,
  frontend,
  InvalidMessageTypeError,
  isPipelineSafe,
  keepsPipelinePromise,
  type ListenStatement,
  mayPin,
  mentionsExecute,
  mentionsPreparedStatementsView,
  mentionsSequenceFunction,
  mentionsSetConfig,
  PgError,
  parseComplete,
  parseListen,
  parsePreparedCommand,
  readyForQuery,
  rewriteErrorFields,
  SqlState,
  TxStatus,
  transactionExit,
  userCodeCalls,
} from '../protocol/index.ts'
import {
  changesSettings,
  dropsAllStatements,
  dropsSequenceState,
  listenTag,
  mayChangePins,
  PIN_ROW,
  sessionProbe,
} from './command-tags.ts'
import { LostTransaction } from './lost-transaction.ts'
import { type CanonicalStatement, readCString, replaceCString, type StatementRegistry } from './statements.ts'

/** What a client message expects back, in order. */
const Kind = { Parse: 1, Bind: 2, Describe: 3, Execute: 4, Close: 5, Sync: 6, Query: 7, Error: 8 } as const
/**
 * What happens to the reply: forwarded, swallowed (we sent the request), made up here, or
 * swallowed errors included (an internal query whose failure the client must not see);
 * the last two pair a client's query with an internal one that completes it.
 */
const Action = { Forward: 0, Skip: 1, Fake: 2, Internal: 3, ForwardHoldReady: 4, InternalReady: 5 } as const

/** Actions whose replies reach the client, ReadyForQuery aside. */
function forwards(reply: Reply | undefined): boolean {
  if (reply === undefined) return true
  const action = reply.action
  return action === Action.Forward || action === Action.Fake || action === Action.ForwardHoldReady
}

/**
 * Whether a ReadyForQuery reaches the client: an internal query that finishes a client's
 * command (InternalReady) sends the one the client's own (ForwardHoldReady) held back.
 */
function forwardsReady(reply: Reply | undefined): boolean {
  if (reply === undefined) return true
  const action = reply.action
  return action === Action.Forward || action === Action.Fake || action === Action.InternalReady
}

/** A portal of our own for running SQL PREPARE inside a client's batch. */
const INTERNAL_PORTAL = 'tp_portal'

/** How a rewritten EXECUTE's errors are shown in the client's terms. */
interface Rename {
  /** The canonical name the backend saw, and the client's. */
  from: string
  to: string
  /** 1-based character position of the name in the client's text. */
  at: number
}

/** One expected reply (STYLE item 14: PgBouncer's and PgDog's outstanding-request queue). */
interface Reply {
  kind: number
  action: number
  /** The frame to send for a Fake reply. */
  fake: Buffer | null
  /** For Parse: the statement it prepares, so a failure can be undone. */
  statement: CanonicalStatement | null
  clientName: string | null
  /** For a rewritten EXECUTE. */
  rename: Rename | null
}

/** Session identity and what it needs from the gateway around it. */
export interface SessionContext {
  id: number
  database: string
  user: string
  settings: ReadonlyMap<string, string>
  settingsKey: string
  pooler: PoolerClient
  statements: StatementRegistry
  /** Whether this session may promise statements idle so others pipeline behind them. */
  pipelining: boolean
  /** A pinned session idle this long is ended (0: never). */
  pinnedIdleTimeoutMs: number
  log: Logger
  onClose(session: Session): void
}

/**
 * One client session: all of its logical state lives here, none on a backend between
 * leases. A backend is leased from the first message that needs one until Postgres
 * reports ReadyForQuery idle with nothing outstanding; prepared statements are mapped
 * to canonical ones and prepared transparently on whichever backend the lease lands.
 */
export class Session implements FrameHandler, BackendReceiver, LeaseRequest, NotificationListener {
  readonly id: number
  readonly processId: number
  readonly secretKey: number
  /** The session's settings, as Postgres last reported them (see probeSettings). */
  settings: Map<string, string>
  settingsKey: string
  private readonly client: net.Socket
  private readonly ctx: SessionContext
  private readonly framer: Framer
  private lease: Lease | null = null
  private waiting = false
  /** Client frames received while waiting for a lease, in order. */
  private pending: Buffer[] = []
  private pendingBytes = 0
  private readonly replies = new FixedQueue<Reply>()
  private readonly toBackend = new Batch(false)
  /** Backend frames are views of the pooler's shared read buffer (see BackendReceiver). */
  private readonly toClient = new Batch(true)
  private txStatus: number = TxStatus.Idle
  /** Extended-protocol messages went out since the last Sync: the backend holds unsynced state. */
  private unsynced = false
  /** After an error in an extended-protocol batch, Postgres ignores everything until Sync. */
  private skipUntilSync = false
  /** Client statement names and what they stand for. */
  private readonly statements = new Map<string, CanonicalStatement>()
  private closed = false
  private pausedLease: Lease | null = null
  /** Syncs and Queries sent and not yet answered by ReadyForQuery. */
  private syncPoints = 0
  /** Everything sent since the last batch boundary is known to leave no state (see isPipelineSafe). */
  private batchSafe = true
  /** Whether the unnamed statement, which outlives its batch, is pipeline-safe. */
  private unnamedSafe = false
  /**
   * The session's unnamed statement (its last unnamed Parse, copied): Postgres keeps it
   * across Syncs until the next unnamed Parse or simple Query, so a later lease on
   * another backend must prepare it there again before a Bind or Describe uses it.
   */
  private unnamed: Buffer | null = null
  /** The current lease's backend holds this session's unnamed statement. */
  private unnamedHere = false
  /**
   * The lease was released early (pipelining): its replies are still to come, but
   * nothing more may be sent on it; new client messages wait for the next lease.
   */
  private draining = false
  /**
   * Something in this lease may have changed settings (a SET or RESET tag, a
   * ParameterStatus, a call of set_config): ask Postgres before the lease ends.
   */
  private settingsDirty = false
  /**
   * Something in this lease may have created or dropped state that lives only on this
   * backend (a temporary table, a session advisory lock, a WITH HOLD cursor, an SQL
   * PREPARE): ask Postgres whether the session must stay pinned to it.
   */
  private pinsDirty = false
  /** Postgres holds state of this session that cannot move: the lease is kept between transactions. */
  private pinned = false
  /**
   * The session called a sequence function by name: its backend holds currval and
   * lastval for it, which Postgres cannot report or move, until DISCARD SEQUENCES or ALL.
   */
  private sequenceState = false
  /**
   * Client names of statements made by SQL PREPARE, with the query text that made each:
   * the backend knows them by canonical names (see sqlPreparedCommand).
   */
  private readonly sqlPrepared = new Map<string, string>()
  /**
   * The session's SQL prepared statements were made on its backend under their own
   * names (see materialize), which pins it: its SQL goes to Postgres as sent.
   */
  private materialized = false
  /** A statement prepared here for the client's next EXECUTE or Bind failed (see onBackendMessage). */
  private preparingFailed = false
  /** Functions the session called since the last probe (see noteUserCode). */
  private readonly calledFunctions = new Set<string>()
  /** Custom (dotted) settings the session named; the probe asks for them by name. */
  readonly customSettingNames = new Set<string>()
  /** Ends the session when it stays idle while pinned (see pinnedIdleTimeoutMs). */
  private pinnedIdleTimer: NodeJS.Timeout | null = null
  /** Channels this session listens to through the pooler's shared listening connection. */
  private readonly listening = new Set<string>()
  /** Notifications that arrived while the session was in a transaction, delivered after it. */
  private notifications: Buffer[] = []
  /** The backend is in COPY FROM STDIN and waits for this session's data. */
  private copyIn = false
  /**
   * Something of the client's was written on the current lease. Until then its messages
   * may go to another backend if this one dies; after, never (it may have run them).
   */
  private sentOnLease = false
  /** A FATAL error the backend sent before closing, reported once it has closed. */
  private backendFatal: PgError | null = null
  /** The session's transaction block died with its backend (see LostTransaction). */
  private lost: LostTransaction | null = null
  /** The session probe is on the wire: what the session holds on its backend is unknown. */
  private probing = false
  /**
   * The probe on the wire looks for state that pins (the text may have made temporary
   * tables, locks, cursors): if the backend dies under it, that state may be lost.
   */
  private probingPins = false
  /**
   * Everything sent on this lease was pipeline-safe: it left no session state behind,
   * so the backend needs no reset if the session leaves mid-request.
   */
  private leaseStateFree = true
  /**
   * A batch released early (see endBatch) showed it was not what it promised (a
   * command that changes session state, or a transaction left open): the backend is
   * closed rather than handed on, and this session, whose state went with it, too.
   */
  private brokenPromise = false
  /**
   * The batch in flight is a simple Query that ends the open transaction block (COMMIT,
   * ROLLBACK, PREPARE TRANSACTION): if the backend dies under it, the block is over
   * either way, and what became of it is unknown (see onBackendClosed).
   */
  private exitInFlight = false

  constructor(client: net.Socket, ctx: SessionContext, processId: number, secretKey: number) {
    this.client = client
    this.ctx = ctx
    this.id = ctx.id
    this.processId = processId
    this.secretKey = secretKey
    this.settings = new Map(ctx.settings)
    this.settingsKey = ctx.settingsKey
    for (const name of ctx.settings.keys()) if (name.includes('.')) this.customSettingNames.add(name)
    this.framer = new Framer(this, { streamTypes: CLIENT_STREAM_TYPES, typeLimits: FRONTEND_TYPE_LIMITS })
  }

  /** Takes over the client socket after startup; `leftover` are bytes already read past startup. */
  start(leftover: Buffer | null): void {
    this.client.on('data', (chunk: Buffer) => this.onClientData(chunk))
    this.client.on('error', () => this.close('client socket error'))
    this.client.on('close', () => this.close('client disconnected'))
    if (leftover !== null && leftover.length > 0) this.onClientData(leftover)
  }

  /** A CancelRequest with this session's key arrived. */
  cancel(): void {
    this.lease?.cancel()
  }

  private onClientData(chunk: Buffer): void {
    try {
      this.framer.feed(chunk)
    } catch (error) {
      if (error instanceof FrameTooLargeError || error instanceof InvalidMessageTypeError) {
        this.fatal(new PgError(SqlState.ProtocolViolation, error.message))
        return
      }
      throw error
    }
    this.flushBackend()
  }

  // ---- client → backend ----

  onMessage(type: number, frame: Buffer): void {
    if (this.closed) return
    if (this.pinnedIdleTimer !== null) {
      clearTimeout(this.pinnedIdleTimer)
      this.pinnedIdleTimer = null
    }
    if (this.lost !== null) {
      this.answerLost(type, frame)
      return
    }
    if (this.lease !== null && !this.draining) {
      this.handleClientMessage(type, frame)
      return
    }
    if (type === Frontend.Terminate) {
      this.close('client terminated')
      return
    }
    if (!this.waiting && !this.draining) {
      if (this.answerLocally(type, frame)) return
      if (type === Frontend.CopyData || type === Frontend.CopyDone || type === Frontend.CopyFail) {
        return // Postgres ignores copy messages outside COPY, and so does a session with no lease
      }
      // Skipping after an error needs no backend (the Sync was answered above).
      if (this.skipUntilSync) return
    }
    this.pending.push(frame)
    this.pendingBytes += frame.length
    if (this.pendingBytes > MAX_PENDING_BYTES) this.client.pause()
    if (!this.waiting && !this.draining) this.requestLease()
  }

  /**
   * Between leases, some messages need no backend: a Parse of a statement this pool
   * has prepared before (it is prepared on whichever backend needs it later), a Close
   * of a statement name, and a Sync that ends a batch of only such messages. Answering
   * them here also keeps clients that prepare synchronously (pgbench -M prepared) from
   * waiting for a backend while holding others.
   */
  private answerLocally(type: number, frame: Buffer): boolean {
    switch (type) {
      case Frontend.Query: {
        if (this.sqlPreparedLocally(frame)) return true
        const statements = parseListen(frame, 5)
        if (statements === undefined || statements === null) return false
        // Between transactions LISTEN takes effect at once: through the shared listener.
        this.waiting = true
        Promise.all(statements.map((statement) => this.applyListen(statement))).then(
          () => this.finishLocal(Buffer.concat(statements.map(listenTag))),
          (error: Error) =>
            this.finishLocal(errorResponse('ERROR', SqlState.ConnectionFailure, error.message)),
        )
        return true
      }
      case Frontend.Parse: {
        if (frame[5] === 0 || this.skipUntilSync) return false
        const [name, bodyStart] = readCString(frame, 5)
        const statement = this.ctx.statements.intern(frame.subarray(bodyStart))
        if (!statement.validated || this.statements.has(name)) return false
        this.statements.set(name, statement)
        this.toClient.push(parseComplete)
        this.flushClient()
        return true
      }
      case Frontend.Close:
        if (frame[5] !== 0x53 || frame[6] === 0 || this.skipUntilSync) return false
        this.forgetStatement(readCString(frame, 6)[0])
        this.toClient.push(closeComplete)
        this.flushClient()
        return true
      case Frontend.Sync:
        // With no lease, every reply so far went out: ready again, as after an error skip.
        this.skipUntilSync = false
        this.toClient.push(readyForQuery[this.txStatus])
        this.flushClient()
        return true
      case Frontend.Flush:
        return true
      default:
        return false
    }
  }

  /** Subscribes or unsubscribes this session at the pooler's listener of its database. */
  private applyListen(statement: ListenStatement): Promise<void> {
    const hub = this.ctx.pooler.notifications(this.ctx.database)
    if (statement.channel === null) {
      const channels = [...this.listening]
      this.listening.clear()
      return hub.unlistenAll(this, channels)
    }
    if (statement.listen) {
      if (this.listening.has(statement.channel)) return Promise.resolve()
      this.listening.add(statement.channel)
      return hub.listen(statement.channel, this)
    }
    this.listening.delete(statement.channel)
    return hub.unlisten(statement.channel, this)
  }

  /** Ends a statement answered without a backend, then carries on with what waited for it. */
  private finishLocal(reply: Buffer): void {
    this.waiting = false
    if (this.closed) return
    this.toClient.push(reply)
    this.toClient.push(readyForQuery[this.txStatus])
    this.flushClient()
    this.deliverNotifications()
    const pending = this.pending
    this.pending = []
    this.pendingBytes = 0
    for (const frame of pending) this.onMessage(frame[0], frame)
  }

  /** A notification for a channel this session listens to (NotificationListener). */
  onNotification(frame: Buffer): void {
    if (this.closed) return
    this.notifications.push(frame)
    // As in Postgres, only between transactions: now if idle, else when the transaction ends.
    if (this.lease === null && !this.waiting && this.lost === null) this.deliverNotifications()
  }

  private deliverNotifications(): void {
    if (this.notifications.length === 0) return
    for (const frame of this.notifications) this.toClient.push(frame)
    this.notifications = []
    this.flushClient()
  }

  private requestLease(): void {
    this.waiting = true
    this.ctx.pooler.acquire(this.ctx.database, this.ctx.user, this)
  }

  onMessagePart(type: number, piece: Buffer, first: boolean, last: boolean): void {
    // Only CopyData streams; it needs the lease a COPY already holds.
    if (this.lease === null || this.draining) {
      if (first && !last)
        this.fatal(new PgError(SqlState.ProtocolViolation, 'unexpected CopyData outside COPY'))
      return
    }
    void type
    this.toBackend.push(piece)
    this.flushBackend()
  }

  onLease(lease: Lease): void {
    this.waiting = false
    if (this.closed) {
      lease.release()
      return
    }
    this.lease = lease
    this.unnamedHere = false
    this.sentOnLease = false
    this.leaseStateFree = true
    this.brokenPromise = false
    this.backendFatal = null
    lease.attach(this)
    // Attaching to a backend that just died reports it at once (and asks for another).
    if (this.lease !== lease) return
    this.sendPending()
  }

  /** Sends the client messages that waited for a lease (or for a probe) on the current one. */
  private sendPending(): void {
    const pending = this.pending
    this.pending = []
    this.pendingBytes = 0
    for (let i = 0; i < pending.length; i++) {
      if (this.closed || this.lease === null) break
      if (this.draining) {
        // A batch released the lease early: the rest waits for the next lease.
        this.pending = pending.slice(i)
        for (const frame of this.pending) this.pendingBytes += frame.length
        break
      }
      this.handleClientMessage(pending[i][0], pending[i])
    }
    this.flushBackend()
    if (this.client.isPaused()) this.client.resume()
  }

  onLeaseError(error: PgError): void {
    this.waiting = false
    if (this.closed) return
    // As after any error, drop the batch up to its Sync, then report ready again.
    const pending = this.pending
    this.pending = []
    this.pendingBytes = 0
    this.toClient.push(errorResponse('ERROR', error.code, error.message, error.detail, error.hint))
    let synced = false
    for (const frame of pending) {
      const type = frame[0]
      if (type === Frontend.Sync || type === Frontend.Query || type === Frontend.FunctionCall) {
        synced = true
        break
      }
    }
    if (synced) this.toClient.push(readyForQuery[this.txStatus])
    else this.skipUntilSync = true
    this.flushClient()
    if (this.client.isPaused()) this.client.resume()
  }

  private handleClientMessage(type: number, frame: Buffer): void {
    if (this.skipUntilSync) {
      if (type === Frontend.Sync) {
        this.skipUntilSync = false
        this.batchSafe = false
        this.endBatch(Kind.Sync, frame)
      } else if (type === Frontend.Terminate) this.close('client terminated')
      return
    }
    switch (type) {
      case Frontend.Query:
        if (this.txStatus === TxStatus.Idle && this.replies.length === 0 && this.listenHere(frame)) return
        // A simple Query drops the unnamed statement (exec_simple_query).
        this.unnamed = null
        this.unnamedHere = false
        if (this.batchSafe && this.ctx.pipelining) this.batchSafe = isPipelineSafe(frame, 5)
        this.noteText(frame, 5, frame.length)
        if (!this.materialized && this.sqlPreparedCommand(frame)) return
        this.endBatch(Kind.Query, frame)
        return
      case Frontend.FunctionCall:
        this.batchSafe = false
        this.endBatch(Kind.Query, frame)
        return
      case Frontend.Bind:
        this.bind(frame)
        return
      case Frontend.Execute:
        this.expect(Kind.Execute, Action.Forward)
        this.unsynced = true
        this.toBackend.push(frame)
        return
      case Frontend.Sync:
        this.endBatch(Kind.Sync, frame)
        return
      case Frontend.Parse:
        this.parse(frame)
        return
      case Frontend.Describe:
        this.describe(frame)
        return
      case Frontend.Close:
        this.closeStatement(frame)
        return
      case Frontend.Flush:
        this.toBackend.push(frame)
        return
      case Frontend.CopyData:
      case Frontend.CopyDone:
      case Frontend.CopyFail:
        this.batchSafe = false
        this.toBackend.push(frame)
        return
      case Frontend.Terminate:
        this.close('client terminated')
        return
      default:
        this.fatal(new PgError(SqlState.ProtocolViolation, `invalid frontend message type ${type}`))
    }
  }

  /**
   * LISTEN/UNLISTEN of a session that holds a lease between transactions (pinned):
   * through the shared listener too, answered here. Inside a transaction, or in any
   * other form, the statement runs on the backend, which then pins the session.
   */
  private listenHere(frame: Buffer): boolean {
    const statements = parseListen(frame, 5)
    if (statements === undefined || statements === null) return false
    const warn = (error: Error) =>
      this.ctx.log.warn({ session: this.id, err: error.message }, 'LISTEN failed')
    if (this.pinned) {
      // The backend may listen itself (a LISTEN that ran in a transaction): let it run
      // there too, and the probe after it decides whether the session stays pinned.
      for (const statement of statements) if (!statement.listen) this.applyListen(statement).catch(warn)
      return false
    }
    for (const statement of statements) this.applyListen(statement).catch(warn)
    this.expect(
      Kind.Query,
      Action.Fake,
      Buffer.concat([...statements.map(listenTag), readyForQuery[this.txStatus]]),
    )
    return true
  }

  /**
   * Sends a Sync or Query, the end of a batch. When everything outstanding is this one
   * batch, the backend is idle now and the batch is known to leave it so, the lease is
   * released early: another session's transaction may queue behind it on the backend.
   */
  private endBatch(
    kind: number,
    frame: Buffer,
    statement: CanonicalStatement | null = null,
    clientName: string | null = null,
    rename: Rename | null = null,
  ): void {
    this.expect(kind, Action.Forward, null, statement, clientName, rename)
    this.unsynced = false
    this.syncPoints++
    this.exitInFlight =
      this.txStatus !== TxStatus.Idle &&
      frame[0] === Frontend.Query &&
      transactionExit(frame, 5, frame.length - 1) !== null
    this.toBackend.push(frame)
    const safe = this.batchSafe
    this.batchSafe = true
    this.leaseStateFree &&= safe && this.ctx.pipelining
    if (
      safe &&
      this.ctx.pipelining &&
      !this.pinned &&
      this.syncPoints === 1 &&
      this.txStatus === TxStatus.Idle
    ) {
      // Our bytes must be on the wire before anything queued behind them.
      this.flushBackend()
      this.draining = true
      this.lease!.releaseEarly(this.syncPoints)
    }
  }

  /**
   * SQL PREPARE, EXECUTE and DEALLOCATE on a lease, served like protocol statements:
   * the session's names map to canonical statements that any backend prepares once.
   * True when the query was sent (rewritten) or answered here.
   */
  private sqlPreparedCommand(frame: Buffer): boolean {
    const end = frame.length - 1
    const command = parsePreparedCommand(frame, 5, end)
    if (command === undefined) {
      if (this.needsOwnNames(frame, 5, end)) this.materialize()
      return false
    }
    switch (command.kind) {
      case 'prepare': {
        if (command.name.startsWith('tp')) {
          if (this.txStatus !== TxStatus.Failed) this.materialize()
          return false
        }
        const existing = this.statements.get(command.name)
        if (existing !== undefined) {
          // Postgres must refuse it itself (in a transaction the refusal aborts it): ask
          // it to prepare the name the backend knows the existing statement by.
          this.executeRenamed(frame, command.nameStart, command.nameEnd, existing, command.name)
          return true
        }
        // Postgres checks the statement as sent (its errors point into the client's
        // text), then the name is dropped on the backend: it stays the session's. The
        // client's ReadyForQuery waits for that, so its next query finds the lease done.
        const statement = this.ctx.statements.internSql(command.body)
        this.statements.set(command.name, statement)
        this.sqlPrepared.set(command.name, frame.toString('utf8', 5, end))
        this.noteStatement(statement)
        this.expect(Kind.Query, Action.ForwardHoldReady, null, statement, command.name)
        this.unsynced = false
        this.syncPoints++
        this.toBackend.push(frame)
        this.batchSafe = true
        this.internalQuery(`DEALLOCATE ${quoteIdentifier(command.name)}`, Action.InternalReady)
        return true
      }
      case 'execute': {
        const statement = this.statements.get(command.name)
        if (statement === undefined) return false // Postgres says it does not exist
        this.noteStatement(statement)
        this.executeRenamed(frame, command.nameStart, command.nameEnd, statement, command.name)
        return true
      }
      case 'deallocate': {
        // DEALLOCATE ALL runs on the backend: everything there goes, as in Postgres.
        if (command.name === null || !this.statements.has(command.name)) return false
        if (this.txStatus === TxStatus.Failed) return false // Postgres refuses it
        if (this.replies.length > 0) {
          this.materialize()
          return false
        }
        this.forgetStatement(command.name)
        this.toClient.push(DEALLOCATE_TAG)
        this.toClient.push(readyForQuery[this.txStatus])
        this.flushClient()
        if (this.txStatus === TxStatus.Idle) {
          // As after a ReadyForQuery from the backend (the lease may be a fresh one).
          if (this.settingsDirty || this.pinsDirty) this.probeSession()
          else if (!this.pinned) this.releaseLease()
          else this.idleWhilePinned()
        }
        return true
      }
    }
  }

  /**
   * Sends the query with the client's statement name in [nameStart, nameEnd) replaced
   * by the canonical one, prepared on this backend first if need be; errors are shown
   * in the client's name and positions.
   */
  private executeRenamed(
    frame: Buffer,
    nameStart: number,
    nameEnd: number,
    statement: CanonicalStatement,
    clientName: string,
  ): void {
    if (!this.lease!.prepared.has(statement.name)) {
      this.prepareOnBackend(statement)
      this.internalSync()
    }
    this.batchSafe = false
    const at = frame.toString('utf8', 5, nameStart).length + 1
    const rename = { from: statement.name, to: clientName, at }
    this.endBatch(
      Kind.Query,
      replaceCString(frame, nameStart, nameEnd, statement.name),
      statement,
      clientName,
      rename,
    )
  }

  /** The same between leases: PREPARE of a statement this pool has prepared before, DEALLOCATE. */
  private sqlPreparedLocally(frame: Buffer): boolean {
    const command = parsePreparedCommand(frame, 5, frame.length - 1)
    if (command === undefined || command.kind === 'execute') return false
    if (command.kind === 'deallocate') {
      if (command.name === null || !this.forgetStatement(command.name)) return false
      this.toClient.push(DEALLOCATE_TAG)
    } else {
      if (command.name.startsWith('tp')) return false
      if (this.statements.has(command.name)) {
        this.toClient.push(
          errorResponse(
            'ERROR',
            SqlState.DuplicatePreparedStatement,
            `prepared statement "${command.name}" already exists`,
          ),
        )
      } else {
        const statement = this.ctx.statements.internSql(command.body)
        if (!statement.validated) return false
        this.statements.set(command.name, statement)
        this.sqlPrepared.set(command.name, frame.toString('utf8', 5, frame.length - 1))
        this.toClient.push(PREPARE_TAG)
      }
    }
    this.toClient.push(readyForQuery[this.txStatus])
    this.flushClient()
    return true
  }

  /**
   * Makes the session's SQL prepared statements on its backend under their own names,
   * as their PREPAREs were sent, after dropping every other statement there (other
   * sessions' canonical ones must not show in pg_prepared_statements). The probe then
   * finds them and pins the session; its SQL goes to Postgres unchanged from here on.
   */
  private materialize(): void {
    this.internalQuery('DEALLOCATE ALL')
    this.lease!.dropPrepared()
    for (const [name, text] of this.sqlPrepared) {
      this.internalQuery(text)
      this.statements.delete(name)
    }
    this.sqlPrepared.clear()
    this.materialized = true
    this.pinsDirty = true
    this.batchSafe = false
  }

  /**
   * Whether SQL in [start, end) needs the session's SQL prepared statements under their
   * own names: other forms of EXECUTE (EXPLAIN EXECUTE q, CREATE TABLE … AS EXECUTE q,
   * several statements) and a look at pg_prepared_statements (see materialize).
   */
  private needsOwnNames(frame: Buffer, start: number, end: number): boolean {
    if (this.txStatus === TxStatus.Failed) return false // Postgres refuses whatever it is
    if (mentionsPreparedStatementsView(frame, start, end)) return true
    return this.sqlPrepared.size > 0 && mentionsExecute(frame, start, end)
  }

  /** Drops a statement name of the session (the backend's canonical copy stays for others). */
  private forgetStatement(name: string): boolean {
    this.sqlPrepared.delete(name)
    return this.statements.delete(name)
  }

  /** A query of ours among the client's, replies and errors unseen. */
  private internalQuery(sql: string, action: number = Action.Internal): void {
    this.unnamedHere = false
    this.expect(Kind.Query, action)
    this.syncPoints++
    this.toBackend.push(frontend.query(sql))
  }

  private internalSync(): void {
    this.expect(Kind.Sync, Action.Internal)
    this.syncPoints++
    this.toBackend.push(frontend.sync)
  }

  private parse(frame: Buffer): void {
    const [name, bodyStart] = readCString(frame, 5)
    // At the start of a batch, queries of ours may go first (psql's \gdesc of EXECUTE q).
    if (
      !this.unsynced &&
      !this.materialized &&
      this.needsOwnNames(frame, bodyStart, frame.indexOf(0, bodyStart))
    ) {
      this.materialize()
    }
    this.unsynced = true
    if (name === '') {
      if (this.ctx.pipelining) {
        this.unnamedSafe = isPipelineSafe(frame, bodyStart)
        this.batchSafe &&= this.unnamedSafe
      }
      this.noteText(frame, bodyStart, frame.indexOf(0, bodyStart))
      this.unnamed = Buffer.from(frame)
      this.unnamedHere = true
      this.expect(Kind.Parse, Action.Forward)
      this.toBackend.push(frame)
      return
    }
    // A new statement may fail to prepare, and a lease queued behind would not know.
    this.batchSafe = false
    if (this.statements.has(name)) {
      this.fakeError(SqlState.DuplicatePreparedStatement, `prepared statement "${name}" already exists`)
      return
    }
    const statement = this.ctx.statements.intern(frame.subarray(bodyStart))
    this.statements.set(name, statement)
    const prepared = this.lease!.prepared
    if (prepared.has(statement.name)) {
      this.expect(Kind.Parse, Action.Fake, parseComplete, statement, name)
      return
    }
    prepared.add(statement.name)
    this.expect(Kind.Parse, Action.Forward, null, statement, name)
    this.toBackend.push(statement.parse!)
  }

  private bind(frame: Buffer): void {
    this.unsynced = true
    const portalEnd = frame.indexOf(0, 5)
    const nameEnd = frame.indexOf(0, portalEnd + 1)
    if (portalEnd < 0 || nameEnd < 0) {
      this.fatal(new PgError(SqlState.ProtocolViolation, 'invalid Bind message'))
      return
    }
    if (nameEnd === portalEnd + 1) {
      this.ensureUnnamed()
      this.batchSafe &&= this.unnamedSafe
      this.expect(Kind.Bind, Action.Forward)
      this.toBackend.push(frame)
      return
    }
    const statement = this.resolveStatement(frame.toString('utf8', portalEnd + 1, nameEnd))
    if (statement === null) return
    this.batchSafe &&= statement.pipelineSafe
    this.noteStatement(statement)
    this.expect(Kind.Bind, Action.Forward)
    this.toBackend.push(replaceCString(frame, portalEnd + 1, nameEnd, statement.name))
  }

  private describe(frame: Buffer): void {
    this.unsynced = true
    if (frame[5] === 0x53 && frame[6] !== 0) {
      // Describe of a named statement ('S'): name it as the backend knows it.
      const nameEnd = frame.indexOf(0, 6)
      const statement = this.resolveStatement(frame.toString('utf8', 6, nameEnd))
      if (statement === null) return
      this.expect(Kind.Describe, Action.Forward)
      this.toBackend.push(replaceCString(frame, 6, nameEnd, statement.name))
      return
    }
    if (frame[5] === 0x53) this.ensureUnnamed()
    this.expect(Kind.Describe, Action.Forward)
    this.toBackend.push(frame)
  }

  /** Prepares the session's unnamed statement on this backend if another lease holds it. */
  private ensureUnnamed(): void {
    if (this.unnamedHere || this.unnamed === null) return
    this.unnamedHere = true
    this.batchSafe = false
    this.expect(Kind.Parse, Action.Skip)
    this.toBackend.push(this.unnamed)
  }

  private closeStatement(frame: Buffer): void {
    this.unsynced = true
    if (frame[5] === 0x53 && frame[6] !== 0) {
      // The backend keeps its canonical copy for other sessions; only the name goes.
      const [name] = readCString(frame, 6)
      this.forgetStatement(name)
      this.expect(Kind.Close, Action.Fake, closeComplete)
      return
    }
    this.expect(Kind.Close, Action.Forward)
    this.toBackend.push(frame)
  }

  /** The canonical statement behind a client name, prepared on the current backend. */
  private resolveStatement(name: string): CanonicalStatement | null {
    const statement = this.statements.get(name)
    if (statement === undefined) {
      this.fakeError(SqlState.InvalidSqlStatementName, `prepared statement "${name}" does not exist`)
      return null
    }
    if (!this.lease!.prepared.has(statement.name)) this.prepareOnBackend(statement)
    return statement
  }

  /** Prepares a canonical statement on the leased backend, replies unseen. */
  private prepareOnBackend(statement: CanonicalStatement): void {
    this.batchSafe = false
    this.lease!.prepared.add(statement.name)
    this.expect(Kind.Parse, Action.Skip, null, statement, null)
    if (statement.parse !== null) {
      this.toBackend.push(statement.parse)
      return
    }
    // Made by SQL PREPARE: run that through the extended protocol (a simple Query would
    // end the client's batch), in the unnamed statement; the client's own unnamed
    // statement is sent again when it is next used.
    this.unnamedHere = false
    this.expect(Kind.Bind, Action.Skip, null, statement)
    this.expect(Kind.Execute, Action.Skip, null, statement)
    this.expect(Kind.Close, Action.Skip, null, statement)
    this.toBackend.push(frontend.parse('', statement.prepareSql!, []))
    this.toBackend.push(frontend.bind(INTERNAL_PORTAL, ''))
    this.toBackend.push(frontend.execute(INTERNAL_PORTAL))
    this.toBackend.push(frontend.close('P', INTERNAL_PORTAL))
  }

  /** An error Postgres would raise for this message; like Postgres, skip to the next Sync. */
  private fakeError(code: string, message: string): void {
    this.expect(Kind.Error, Action.Fake, errorResponse('ERROR', code, message))
    this.skipUntilSync = true
  }

  private expect(
    kind: number,
    action: number,
    fake: Buffer | null = null,
    statement: CanonicalStatement | null = null,
    clientName: string | null = null,
    rename: Rename | null = null,
  ): void {
    if (action === Action.Fake && this.replies.length === 0) {
      this.toClient.push(fake!)
      return
    }
    this.replies.push({ kind, action, fake, statement, clientName, rename })
  }

  private flushBackend(): void {
    const data = this.toBackend.take()
    // A session closed mid-chunk (a protocol violation after a valid message) drops the rest.
    if (data !== null && !this.closed) this.sendToBackend(data)
    // Replies made up here (nothing before them outstanding) go out now.
    if (!this.toClient.empty) this.flushClient()
  }

  private sendToBackend(data: Buffer): void {
    const lease = this.lease
    assert(lease !== null, 'backend bytes without a lease')
    this.sentOnLease = true
    if (!lease.send(data)) {
      this.client.pause()
      lease.onDrain(() => {
        if (this.pendingBytes <= MAX_PENDING_BYTES) this.client.resume()
      })
    }
  }

  // ---- backend → client ----

  onBackendMessage(type: number, frame: Buffer): void {
    if (this.draining && !this.probing && !keepsPipelinePromise(type, frame)) this.brokenPromise = true
    const head = this.replies.peek()
    const forward = forwards(head)
    switch (type) {
      case Backend.DataRow:
      case Backend.CopyData:
        if (forward) this.toClient.push(frame)
        return
      case Backend.ReadyForQuery:
        this.txStatus = frame[5]
        this.copyIn = false
        this.syncPoints--
        if (forwardsReady(head)) {
          this.preparingFailed = false
          this.toClient.push(frame)
        }
        this.complete()
        if (this.draining) {
          // Released early: the lease ends with the reply to the promised batch.
          if (this.syncPoints === 0) {
            if (this.brokenPromise) this.promiseBroken()
            else this.releaseLease()
          }
        } else if (
          this.replies.length === 0 &&
          this.txStatus === TxStatus.Idle &&
          !this.unsynced &&
          !this.skipUntilSync
        ) {
          if (this.settingsDirty || this.pinsDirty) this.probeSession()
          else if (!this.pinned) this.releaseLease()
          else this.idleWhilePinned()
        }
        return
      case Backend.CopyInResponse:
        this.copyIn = true
        this.toClient.push(frame)
        return
      case Backend.ParseComplete:
        if (head !== undefined && head.statement !== null) head.statement.validated = true
        if (forward) this.toClient.push(frame)
        this.complete()
        return
      case Backend.BindComplete:
      case Backend.CloseComplete:
      case Backend.NoData:
        if (forward) this.toClient.push(frame)
        this.complete()
        return
      case Backend.RowDescription:
        if (forward) this.toClient.push(frame)
        if (head?.kind === Kind.Describe) this.complete()
        return
      case Backend.CommandComplete:
        if (forward) {
          if (changesSettings(frame)) this.settingsDirty = true
          if (mayChangePins(frame)) this.pinsDirty = true
          if (dropsSequenceState(frame)) this.sequenceState = false
          if (dropsAllStatements(frame)) {
            // Every prepared statement on the backend is gone, the canonical ones other
            // sessions rely on included, and, as in Postgres, this session's names.
            this.lease!.dropPrepared()
            this.statements.clear()
            this.sqlPrepared.clear()
          }
          if (head?.kind === Kind.Query && head.statement !== null) head.statement.validated = true
          this.toClient.push(frame)
        }
        if (head?.kind === Kind.Execute) this.complete()
        return
      case Backend.EmptyQueryResponse:
      case Backend.PortalSuspended:
        if (forward) this.toClient.push(frame)
        if (head?.kind === Kind.Execute) this.complete()
        return
      case Backend.ParameterStatus:
        if (forward) {
          this.settingsDirty = true
          this.toClient.push(frame)
        }
        return
      case Backend.ErrorResponse: {
        if (isFatal(frame)) {
          // The backend is about to close; the session may well outlive it, so the
          // error is reported once, by onBackendClosed, with the right severity.
          this.backendFatal = errorFromFrame(frame)
          return
        }
        if (head?.action === Action.Internal || head?.action === Action.InternalReady) return
        let error = frame
        if (head?.action === Action.Skip && head.statement !== null) {
          // Preparing a statement here failed (its table is gone): that is the error the
          // client's EXECUTE or Bind gets, as Postgres re-planning it would report it, with
          // no position in a text the client never sent.
          this.preparingFailed = true
          this.lease!.prepared.delete(head.statement.name)
          if (head.statement.parse === null) error = rewriteErrorFields(frame, dropPosition)
        } else if (this.preparingFailed && head?.rename) {
          return // the EXECUTE of the statement that could not be prepared: said already
        }
        if (head?.kind === Kind.Query && head.statement !== null && head.clientName !== null) {
          if (head.rename !== null) error = renameInError(error, head.rename)
          else if (this.statements.get(head.clientName) === head.statement) {
            // The PREPARE failed: the name was never the session's.
            this.statements.delete(head.clientName)
            this.sqlPrepared.delete(head.clientName)
          }
        }
        // Even an error on a statement we prepared behind the client's back goes out:
        // its Bind is about to fail and the client must learn why.
        this.toClient.push(error)
        if (head !== undefined && head.kind !== Kind.Query) this.failUntilSync()
        return
      }
      case Backend.NoticeResponse:
        if (forward) this.toClient.push(head?.rename ? renameInError(frame, head.rename) : frame)
        return
      default:
        if (forward) this.toClient.push(frame)
    }
  }

  onBackendMessagePart(_type: number, piece: Buffer): void {
    const head = this.replies.peek()
    if (forwards(head)) this.toClient.push(piece)
    this.flushClient()
  }

  onBackendFlush(): void {
    this.flushClient()
  }

  onBackendClosed(error: Error, _unserved: boolean): void {
    const lease = this.lease
    if (lease === null) return
    this.lease = null
    this.pausedLease = null
    // A client paused until the backend drained would wait for a drain that never comes.
    if (this.client.isPaused() && this.pendingBytes <= MAX_PENDING_BYTES) this.client.resume()
    const cause =
      this.backendFatal ?? new PgError(SqlState.ConnectionFailure, `server connection lost: ${error.message}`)
    this.backendFatal = null
    if (!this.sentOnLease) {
      // Nothing of the client's reached this backend (it died as the lease began): its
      // messages go to another one, the only replay that can never run anything twice.
      this.draining = false
      if (this.pending.length > 0) this.requestLease()
      return
    }
    // A probe only for settings loses nothing the session can tell: the next backend
    // gets the settings known before it (a function's set_config since is the limit).
    const stateLost = this.pinned || this.copyIn || (this.probing && this.probingPins) || this.syncPoints > 1
    this.sequenceState = false
    this.pinned = false
    this.draining = false
    this.probing = false
    this.copyIn = false
    if (stateLost) {
      // What lived only on that backend (temporary tables, locks, cursors, a COPY, what
      // the probe was to find out, several batches whose outcome is unknown) died with
      // it: as Postgres would, the connection ends.
      this.fatal(new PgError(SqlState.ConnectionFailure, cause.message))
      return
    }
    const inFlight = this.replies.length > 0 || this.unsynced
    const batchEnded = this.syncPoints === 1
    this.replies.clear()
    this.syncPoints = 0
    this.unsynced = false
    if (this.txStatus !== TxStatus.Idle && inFlight && batchEnded && this.exitInFlight) {
      // The client was ending the block: it is over, committed or not. Postgres's own
      // client would see the connection break here; this one gets the error and an idle
      // session, never the success tag it cannot know.
      this.txStatus = TxStatus.Idle
      this.toClient.push(
        errorResponse(
          'ERROR',
          cause.code,
          cause.message,
          'The server connection was lost while the transaction was being ended: whether it committed is unknown.',
        ),
      )
      this.toClient.push(readyForQuery[TxStatus.Idle])
      this.flushClient()
      if (this.pending.length > 0) this.requestLease()
      return
    }
    if (this.txStatus !== TxStatus.Idle) {
      // The transaction block is gone, rolled back with its backend: the client is told
      // (now if a statement was in flight, else at its next one) and the block stays
      // aborted until it ends it, whatever else arrives meanwhile (rule 2, "Faults").
      if (inFlight) this.toClient.push(LostTransaction.lossError(cause))
      this.loseTransaction(cause, inFlight, inFlight && !batchEnded)
      if (inFlight && batchEnded) this.toClient.push(readyForQuery[TxStatus.Failed])
      this.flushClient()
      const pending = this.pending
      this.pending = []
      this.pendingBytes = 0
      for (const frame of pending) this.onMessage(frame[0], frame)
      return
    }
    if (!inFlight) {
      // Lost between the client's requests: nothing of the client's was outstanding.
      if (this.pending.length > 0) this.requestLease()
      return
    }
    // An autocommit statement was in flight: it may or may not have run; it is never
    // sent again (rule 1), the client gets the error and the session goes on.
    this.toClient.push(errorResponse('ERROR', cause.code, cause.message, cause.detail, cause.hint))
    if (batchEnded) this.toClient.push(readyForQuery[TxStatus.Idle])
    else this.skipUntilSync = true
    this.flushClient()
    if (this.pending.length > 0) this.requestLease()
  }

  /** Enters the lost-transaction state: answered here until the client ends the block. */
  private loseTransaction(cause: PgError, reported: boolean, skipping: boolean): void {
    this.txStatus = TxStatus.Failed
    this.lost = new LostTransaction(
      {
        reply: (frame) => this.toClient.push(frame),
        nameStatement: (name, body) => {
          if (this.statements.has(name)) {
            return errorResponse(
              'ERROR',
              SqlState.DuplicatePreparedStatement,
              `prepared statement "${name}" already exists`,
            )
          }
          this.statements.set(name, this.ctx.statements.intern(body))
          return null
        },
        statementText: (name) => {
          const parse = this.statements.get(name)?.parse
          if (parse === undefined) return undefined
          if (parse === null) return Buffer.alloc(0)
          const textStart = parse.indexOf(0, 5) + 1
          return parse.subarray(textStart, parse.indexOf(0, textStart))
        },
        forgetStatement: (name) => this.forgetStatement(name),
        ended: (skipUntilSync) => {
          this.lost = null
          this.txStatus = TxStatus.Idle
          this.skipUntilSync = skipUntilSync
        },
        runRest: (query) => this.onMessage(Frontend.Query, query),
        terminate: () => this.close('client terminated'),
      },
      cause,
      reported,
      skipping,
    )
  }

  /** A client message while the transaction block is lost. */
  private answerLost(type: number, frame: Buffer): void {
    let understood = false
    try {
      understood = this.lost!.onMessage(type, frame)
    } catch (error) {
      if (!(error instanceof RangeError)) throw error
    }
    if (!understood) {
      this.fatal(new PgError(SqlState.ProtocolViolation, `invalid frontend message type ${type}`))
      return
    }
    this.flushClient()
    if (this.lost === null) this.deliverNotifications()
  }

  /**
   * The batch released early was not what the lexer judged it (see brokenPromise): the
   * backend may hold this session's state or its open transaction, so it is closed (the
   * leases queued behind get an error, never its state), and so is this session.
   */
  private promiseBroken(): void {
    const lease = this.lease!
    this.lease = null
    this.draining = false
    this.pausedLease = null
    this.ctx.log.error({ session: this.id }, 'a pipelined batch changed session state; closing its backend')
    lease.discard('a pipelined batch changed session state')
    this.fatal(
      new PgError(
        SqlState.ConnectionFailure,
        'server connection closed: a statement changed session state where none was expected',
      ),
    )
  }

  /** The head reply is complete: drop it and send any made-up replies now due. */
  private complete(): void {
    this.replies.shift()
    for (
      let head = this.replies.peek();
      head !== undefined && head.action === Action.Fake;
      head = this.replies.peek()
    ) {
      this.toClient.push(head.fake!)
      this.replies.shift()
    }
  }

  /** After an error, Postgres skips to the next Sync: those replies will never come. */
  private failUntilSync(): void {
    const lease = this.lease!
    for (
      let head = this.replies.peek();
      head !== undefined && head.kind !== Kind.Sync;
      head = this.replies.peek()
    ) {
      this.replies.shift()
      if (head.kind === Kind.Parse && head.statement !== null) {
        // The statement was not created: neither the backend nor the session has it.
        if (head.action !== Action.Fake) lease.prepared.delete(head.statement.name)
        if (head.clientName !== null && this.statements.get(head.clientName) === head.statement) {
          this.statements.delete(head.clientName)
        }
      }
    }
    if (this.replies.length === 0) this.skipUntilSync = true
  }

  private flushClient(): void {
    const data = this.toClient.take()
    if (data === null || this.closed) return
    if (!this.client.write(data) && this.lease !== null && this.pausedLease === null) {
      const lease = this.lease
      this.pausedLease = lease
      lease.pause()
      this.client.once('drain', () => {
        if (this.pausedLease === lease) {
          this.pausedLease = null
          lease.resume()
        }
      })
    }
  }

  /** What the SQL text in [start, end) of a frame may do to session state: cheap triggers for the probe. */
  private noteText(frame: Buffer, start: number, end: number): void {
    if (mentionsSetConfig(frame, start, end)) this.settingsDirty = true
    const calls = userCodeCalls(frame, start, end)
    if (calls.length > 0) this.noteUserCode(calls, frame.toString('utf8', start, end))
    if (mayPin(frame, start, end)) this.pinsDirty = true
    if (mentionsSequenceFunction(frame, start, end)) this.noteSequenceUse()
    for (const name of customSettingNames(frame, start, end)) this.noteCustomSetting(name)
  }

  /** The same triggers for a prepared statement, judged once when it was interned. */
  private noteStatement(statement: CanonicalStatement): void {
    if (statement.setsConfig) this.settingsDirty = true
    if (statement.mayPin) this.pinsDirty = true
    if (statement.userCode.length > 0) this.noteUserCode(statement.userCode, '')
    if (statement.usesSequences) this.noteSequenceUse()
    for (const name of statement.customSettings) this.noteCustomSetting(name)
  }

  /**
   * User code may change settings (the probe then asks Postgres) and set custom ones
   * Postgres lists nowhere: their names are looked for in the called functions' source
   * by the probe, and in a DO block's text here.
   */
  private noteUserCode(calls: readonly string[], text: string): void {
    this.settingsDirty = true
    for (const name of calls) {
      if (name !== DO_BLOCK) {
        if (this.calledFunctions.size < MAX_CUSTOM_SETTINGS) this.calledFunctions.add(name)
      } else for (const [dotted] of text.matchAll(DOTTED_NAME)) this.noteCustomSetting(dotted.toLowerCase())
    }
  }

  private noteSequenceUse(): void {
    this.sequenceState = true
    this.pinsDirty = true
  }

  private noteCustomSetting(name: string): void {
    // Bounded: a session that names settings without end asks for the first ones only.
    if (this.customSettingNames.size < MAX_CUSTOM_SETTINGS) this.customSettingNames.add(name)
  }

  /**
   * Asks Postgres, in one query before the lease ends, which settings this session now
   * has (SET LOCAL and SETs of rolled-back transactions are gone by now, set_config ones
   * are there) and whether it holds state that pins it to this backend. Client messages
   * wait meanwhile, as while draining.
   */
  private probeSession(): void {
    const lease = this.lease!
    // A simple query drops the unnamed statement: a pinned session's is sent again.
    this.unnamedHere = false
    this.settingsDirty = false
    this.probingPins = this.pinsDirty
    this.pinsDirty = false
    this.draining = true
    this.probing = true
    this.flushClient()
    const probe = sessionProbe(this.ctx.user, this.customSettingNames, this.calledFunctions)
    this.calledFunctions.clear()
    lease.query(probe).then(
      ({ rows, error }) => {
        if (this.lease !== lease) return
        this.probing = false
        if (error !== null) {
          // Unknown state: the backend may hold anything, so it is not shared again.
          this.ctx.log.warn({ session: this.id, err: error.message }, 'session probe failed')
          this.draining = false
          this.lease = null
          lease.discard('session probe failed')
          if (this.pending.length > 0) this.requestLease()
          return
        }
        const applied = new Map<string, string>()
        let pins = 0
        for (const [name, value] of rows as [string, string][]) {
          if (name === PIN_ROW) pins = Number(value)
          else {
            applied.set(name, value)
            if (name.includes('.')) this.noteCustomSetting(name)
          }
        }
        // RESET returns a startup setting to its startup value in Postgres (the backend
        // has it from set_config, so there it went back to the default): restore it.
        const wanted = new Map(applied)
        for (const [name, value] of this.ctx.settings) if (!wanted.has(name)) wanted.set(name, value)
        const appliedKey = settingsKey(applied)
        this.settings = wanted
        this.settingsKey = wanted.size === applied.size ? appliedKey : settingsKey(wanted)
        lease.setSettings(applied, appliedKey)
        if (pins === 0) this.materialized = false
        this.setPinned(pins > 0 || this.sequenceState, lease)
        if (this.pinned) {
          this.draining = false
          this.sendPending()
          if (this.replies.length === 0 && this.txStatus === TxStatus.Idle) this.idleWhilePinned()
        } else this.releaseLease()
      },
      (error: Error) => {
        // The backend died under the probe: the session's own replies were all in.
        if (this.lease === lease) this.onBackendClosed(error, false)
      },
    )
  }

  /**
   * A pinned session between transactions: notifications are due, and so is the pinned
   * idle timeout, which ends the session as Postgres's idle_session_timeout would.
   */
  private idleWhilePinned(): void {
    this.deliverNotifications()
    const timeoutMs = this.ctx.pinnedIdleTimeoutMs
    if (timeoutMs <= 0 || this.pinnedIdleTimer !== null) return
    this.pinnedIdleTimer = setTimeout(() => {
      this.pinnedIdleTimer = null
      this.fatal(
        new PgError(SqlState.IdleSessionTimeout, 'terminating connection due to idle-session timeout', {
          detail: `The session held a backend (temporary tables, advisory locks, cursors or prepared statements) and was idle for ${timeoutMs}ms.`,
        }),
      )
    }, timeoutMs)
    this.pinnedIdleTimer.unref()
  }

  private setPinned(pinned: boolean, lease: Lease): void {
    if (pinned === this.pinned) return
    this.pinned = pinned
    lease.setPinned(pinned)
    this.ctx.log.debug(
      { session: this.id, pinned },
      pinned ? 'session pinned to its backend' : 'session unpinned',
    )
  }

  private releaseLease(): void {
    this.flushClient()
    const lease = this.lease!
    this.lease = null
    this.pausedLease = null
    this.draining = false
    lease.release()
    this.deliverNotifications()
    // Messages that arrived while the lease drained go out on the next one.
    if (this.pending.length > 0 && !this.closed) this.requestLease()
  }

  // ---- teardown: one exit path ----

  /** Sends a FATAL error and closes. */
  fatal(error: PgError): void {
    if (this.closed) return
    this.toClient.push(errorResponse('FATAL', error.code, error.message, error.detail, error.hint))
    this.flushClient()
    this.close(error.message)
  }

  /** Ends the session; its backend goes back clean, is rolled back, or is closed. */
  close(reason: string): void {
    if (this.closed) return
    this.closed = true
    if (this.pinnedIdleTimer !== null) clearTimeout(this.pinnedIdleTimer)
    this.ctx.log.debug({ session: this.id, reason }, 'session closed')
    if (this.waiting) this.ctx.pooler.cancelWait(this.ctx.database, this.ctx.user, this)
    if (this.listening.size > 0) {
      void this.ctx.pooler
        .notifications(this.ctx.database)
        .unlistenAll(this, this.listening)
        .catch(() => {})
    }
    const lease = this.lease
    this.lease = null
    if (lease !== null) {
      // What the client sent before it went (or broke the protocol) still goes out,
      // as Postgres would have run it; the replies below account for it.
      const unsent = this.toBackend.take()
      if (unsent !== null) lease.send(unsent)
      // Paused for this client's full socket: the probe's reply or the replies the pool
      // swallows must still be read.
      if (this.pausedLease === lease) lease.resume()
      this.pausedLease = null
      // A backend goes back only in a known state (rule 4, "Faults"): what the session
      // sent since the last probe may have left settings, a role, locks or temporary
      // tables there, unless every statement was one the lexer proved harmless.
      const reset = this.probing || !(this.ctx.pipelining && this.leaseStateFree && this.batchSafe)
      if (this.pinned || this.brokenPromise) {
        // Its temporary tables, locks or cursors must not reach another session.
        lease.discard(`pinned session ended: ${reason}`)
      } else if (this.replies.length === 0) {
        if (this.txStatus === TxStatus.Idle && !this.unsynced && !this.probing) lease.release()
        else lease.releaseDirty(this.unsynced, reset)
      } else if (this.copyIn || this.syncPoints === 0) {
        // Postgres waits for COPY data or a Sync that will never come.
        lease.discard(`client went away mid-request: ${reason}`)
      } else if (this.replies.some((reply) => reply.statement !== null)) {
        // A statement is being prepared there and counted as present before its reply:
        // with no one left to see a failure, the backend's record could lie.
        lease.discard(`client went away while a statement was being prepared: ${reason}`)
      } else lease.abandon(this.syncPoints, this.unsynced, reset)
    }
    if (!this.client.destroyed) this.client.destroySoon()
    this.ctx.onClose(this)
  }
}

const PREPARE_TAG = commandComplete('PREPARE')
const DEALLOCATE_TAG = commandComplete('DEALLOCATE')

/** For rewriteErrorFields: an error position ('P') in a text of ours means nothing to the client. */
function dropPosition(field: number, value: string): string | null {
  return field === 0x50 ? null : value
}

function quoteIdentifier(name: string): string {
  return `"${name.replaceAll('"', '""')}"`
}

/** An error or notice of a rewritten EXECUTE as Postgres would word it for the client's text. */
function renameInError(frame: Buffer, rename: Rename): Buffer {
  const end = rename.at + rename.from.length
  const delta = rename.from.length - rename.to.length
  return rewriteErrorFields(frame, (field, value) => {
    if (field === 0x4d || field === 0x44) return value.replaceAll(`"${rename.from}"`, `"${rename.to}"`)
    if (field === 0x50) {
      // A position (1-based characters) after the name moves with it.
      const position = Number(value)
      return position >= end ? String(position - delta) : position > rename.at ? String(rename.at) : value
    }
    return value
  })
}

/** Whether an ErrorResponse frame has severity FATAL or PANIC (its S field comes first). */
function isFatal(frame: Buffer): boolean {
  const severity = errorFromFrame(frame).severity
  return severity === 'FATAL' || severity === 'PANIC'
}

/** Client messages handed on in pieces when large: COPY data. */
const CLIENT_STREAM_TYPES = [Frontend.CopyData]

/** Client bytes a waiting session buffers before it stops reading its socket. */
const MAX_PENDING_BYTES = 1 << 20

/** Most custom setting names (and called functions) one session's probe asks for. */
const MAX_CUSTOM_SETTINGS = 64

/** A dotted name, as a custom setting's. */
const DOTTED_NAME = /[A-Za-z_][A-Za-z_0-9$]*\.[A-Za-z_][A-Za-z_0-9$]*/g
