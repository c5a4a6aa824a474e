import { randomInt } from 'node:crypto'
import type net from 'node:net'
import tls from 'node:tls'
import type { Logger } from '../log.ts'
import type { PoolerClient } from '../pooler/index.ts'
import { settingsKey } from '../pooler/index.ts'
import {
  authenticationOk,
  Backend,
  backendKeyData,
  MessageWriter,
  PgError,
  parameterStatus,
  parseOptionsParameter,
  parseStartupPacket,
  readyForQuery,
  SqlState,
  StartupPacketError,
  TxStatus,
} from '../protocol/index.ts'
import { authenticateClient, type ClientAuthMethod } from './auth.ts'
import { ClientReader } from './client-reader.ts'
import type { ReportedParameters } from './parameters.ts'
import { type ClientSession, RelaySession } from './relay-session.ts'
import { Session } from './session.ts'
import type { StatementRegistries } from './statements.ts'

/** Where a session's backends come from: a pooler and what is kept per pooler. */
export interface SessionRoute {
  pooler: PoolerClient
  parameters: ReportedParameters
  statements: StatementRegistries
}

/** Everything the startup phase needs from the gateway that runs it. */
export interface StartupContext extends SessionRoute {
  authMethod: ClientAuthMethod
  /** Where sessions that ask for read-only go (a cluster's replicas), if anywhere. */
  readOnly: SessionRoute | null
  pipelining: boolean
  secureContext: tls.SecureContext | null
  startupTimeoutMs: number
  pinnedIdleTimeoutMs: number
  log: Logger
  /** Sessions open now, for the max-client-connections limit. */
  sessionCount(): number
  maxClientConnections: number
  nextSessionId(): number
  register(session: ClientSession): void
  unregister(session: ClientSession): void
  cancel(processId: number, secretKey: number): void
}

/** One-byte answers to SSLRequest and GSSENCRequest. */
const REFUSE_ENCRYPTION = Buffer.from('N')
const ACCEPT_ENCRYPTION = Buffer.from('S')

/** Startup parameters that are not settings. */
const NOT_SETTINGS = new Set(['user', 'database', 'options', 'replication', 'target_session_attrs'])

/** target_session_attrs values that ask for a server in recovery, as libpq spells them. */
const READ_ONLY_ATTRS = new Set(['read-only', 'standby', 'prefer-standby'])

/**
 * Whether a session asks to be served read-only: `target_session_attrs=read-only` (or
 * standby) sent as a startup parameter, or `default_transaction_read_only` set on.
 */
function asksReadOnly(parameters: Map<string, string>, settings: Map<string, string>): boolean {
  const attrs = parameters.get('target_session_attrs')
  if (attrs !== undefined && READ_ONLY_ATTRS.has(attrs.toLowerCase())) return true
  const readOnly = settings.get('default_transaction_read_only')?.toLowerCase()
  return readOnly === 'on' || readOnly === 'true' || readOnly === '1' || readOnly === 'yes'
}

/**
 * Runs a new client connection through the startup phase (SSL/GSS negotiation, cancel,
 * StartupMessage, authentication) and hands it to a {@link Session}. The whole phase is
 * bounded by the startup timeout; any failure ends in a FATAL ErrorResponse or a close.
 */
export async function acceptClient(socket: net.Socket, ctx: StartupContext): Promise<void> {
  const reader = new ClientReader(socket)
  const timer = setTimeout(() => {
    reader.socket.destroy()
  }, ctx.startupTimeoutMs)
  try {
    await handshake(reader, ctx)
  } catch (error) {
    const pgError =
      error instanceof PgError
        ? error
        : error instanceof StartupPacketError
          ? new PgError(error.code, error.message)
          : new PgError(SqlState.InternalError, (error as Error).message)
    if (!(error instanceof PgError || error instanceof StartupPacketError))
      ctx.log.error({ err: error }, 'startup failed')
    if (!reader.socket.destroyed) {
      reader.socket.end(errorFrame(pgError))
      reader.socket.destroySoon()
    }
  } finally {
    clearTimeout(timer)
  }
}

function errorFrame(error: PgError): Buffer {
  return new PgError(error.code, error.message, {
    severity: 'FATAL',
    detail: error.detail,
    hint: error.hint,
  }).toFrame()
}

async function handshake(reader: ClientReader, ctx: StartupContext): Promise<void> {
  let encrypted = false
  for (;;) {
    const packet = parseStartupPacket(await reader.readStartupPacket())
    if (packet.kind === 'ssl') {
      if (ctx.secureContext === null || encrypted) {
        reader.socket.write(REFUSE_ENCRYPTION)
        continue
      }
      // Bytes that came before the handshake would be trusted as if encrypted (CVE-2021-23214).
      if (reader.pendingBytes > 0)
        throw new PgError(SqlState.ProtocolViolation, 'received unencrypted data after SSL request')
      reader.socket.write(ACCEPT_ENCRYPTION)
      const secure = new tls.TLSSocket(reader.socket, { isServer: true, secureContext: ctx.secureContext })
      reader.replaceSocket(secure)
      encrypted = true
      continue
    }
    if (packet.kind === 'gssenc') {
      reader.socket.write(REFUSE_ENCRYPTION)
      continue
    }
    if (packet.kind === 'cancel') {
      ctx.cancel(packet.processId, packet.secretKey)
      reader.socket.destroy()
      return
    }
    await startSession(reader, packet.parameters, packet.minorVersion, ctx)
    return
  }
}

async function startSession(
  reader: ClientReader,
  parameters: Map<string, string>,
  minorVersion: number,
  ctx: StartupContext,
): Promise<void> {
  const user = parameters.get('user')!
  const database = parameters.get('database') || user
  const replication = parameters.get('replication')
  const dedicated =
    replication !== undefined && !['false', 'off', 'no', '0'].includes(replication.toLowerCase())
  const settings = new Map<string, string>()
  const unsupported: string[] = []
  for (const [name, value] of parameters) {
    if (name.startsWith('_pq_.')) unsupported.push(name)
    else if (!NOT_SETTINGS.has(name)) settings.set(name.toLowerCase(), value)
  }
  // Setting names are case-insensitive; lower case is how pg_settings spells them.
  const options = parameters.get('options')
  if (options !== undefined) {
    for (const [name, value] of parseOptionsParameter(options)) settings.set(name.toLowerCase(), value)
  }
  if (ctx.sessionCount() >= ctx.maxClientConnections) {
    throw new PgError(SqlState.TooManyConnections, 'sorry, too many clients already')
  }

  if (minorVersion > 0 || unsupported.length > 0) reader.socket.write(negotiateProtocolVersion(unsupported))
  const credentials = await authenticateClient(reader, user, ctx.authMethod, ctx.pooler)
  if (credentials.scramKeys !== undefined || credentials.md5Hash !== undefined)
    ctx.pooler.setCredentials(user, credentials)
  if (dedicated) {
    await startRelay(reader, database, user, parameters, ctx)
    return
  }
  const route = ctx.readOnly !== null && asksReadOnly(parameters, settings) ? ctx.readOnly : ctx
  const key = settingsKey(settings)
  const reported = await route.parameters.get(database, user, settings, key)
  const id = ctx.nextSessionId()
  const secretKey = randomInt(1, 0x7fffffff)
  const parts = [authenticationOk]
  for (const [name, value] of reported) parts.push(parameterStatus(name, value))
  parts.push(backendKeyData(id, secretKey), readyForQuery[TxStatus.Idle])
  const socket = reader.socket
  if (socket.destroyed) return
  const leftover = reader.detach()
  const session = new Session(
    socket,
    {
      id,
      database,
      user,
      settings,
      settingsKey: key,
      pooler: route.pooler,
      statements: route.statements.for(database, user),
      pipelining: ctx.pipelining,
      pinnedIdleTimeoutMs: ctx.pinnedIdleTimeoutMs,
      log: ctx.log,
      onClose: (closed) => ctx.unregister(closed),
    },
    id,
    secretKey,
  )
  ctx.register(session)
  socket.write(Buffer.concat(parts))
  session.start(leftover)
}

/**
 * A connection that cannot be pooled (replication=…) gets a backend of its own, logged
 * in with the client's own startup parameters, and every byte after that passes through.
 */
async function startRelay(
  reader: ClientReader,
  database: string,
  user: string,
  parameters: Map<string, string>,
  ctx: StartupContext,
): Promise<void> {
  const startup: Record<string, string> = {}
  for (const [name, value] of parameters) if (name !== 'user' && name !== 'database') startup[name] = value
  const backend = await ctx.pooler.dedicated(database, user, startup)
  const socket = reader.socket
  if (socket.destroyed) {
    backend.close()
    return
  }
  const id = ctx.nextSessionId()
  const secretKey = randomInt(1, 0x7fffffff)
  const parts = [authenticationOk]
  for (const [name, value] of backend.parameters) parts.push(parameterStatus(name, value))
  parts.push(backendKeyData(id, secretKey), readyForQuery[TxStatus.Idle])
  const leftover = reader.detach()
  const session = new RelaySession(socket, backend, { id, secretKey }, ctx.log, (closed) =>
    ctx.unregister(closed),
  )
  ctx.register(session)
  socket.write(Buffer.concat(parts))
  session.start(leftover)
}

/** NegotiateProtocolVersion: we speak 3.0 and none of the `_pq_.` extensions. */
function negotiateProtocolVersion(unsupported: readonly string[]): Buffer {
  const writer = new MessageWriter(Backend.NegotiateProtocolVersion).int32(0).int32(unsupported.length)
  for (const name of unsupported) writer.cstring(name)
  return writer.finish()
}
