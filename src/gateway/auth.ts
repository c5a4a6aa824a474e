import { randomBytes } from 'node:crypto'
import type { BackendCredentials, PoolerClient } from '../pooler/index.ts'
import {
  authenticationMd5,
  authenticationSasl,
  authenticationSaslContinue,
  authenticationSaslFinal,
  Frontend,
  isMd5Hash,
  mockScramVerifier,
  PgError,
  parseScramVerifier,
  ScramError,
  SqlState,
  serverFinal,
  serverFirst,
  verifyMd5Response,
} from '../protocol/index.ts'
import type { ClientReader } from './client-reader.ts'

export type ClientAuthMethod = 'scram-sha-256' | 'md5' | 'trust'

/**
 * Secret behind the mock SCRAM salts of unknown roles, so probing user names gives
 * the same stable-looking challenge as a real role (PostgreSQL's mock_authentication_nonce).
 */
const mockNonce = randomBytes(32)

/**
 * Authenticates the startup user the way PostgreSQL would for `method`, against the
 * role's secret in pg_authid. Resolves with what backend logins of this user may reuse.
 * Every failure is FATAL with PostgreSQL's SQLSTATE and wording.
 */
export async function authenticateClient(
  reader: ClientReader,
  user: string,
  method: ClientAuthMethod,
  pooler: PoolerClient,
): Promise<BackendCredentials> {
  if (method === 'trust') return {}
  const role = await pooler.lookupRole(user)
  const secret = role?.password ?? null
  let credentials: BackendCredentials
  // Like PostgreSQL, an md5 rule with a SCRAM secret stored does SCRAM (CheckPWChallengeAuth).
  if (method === 'md5' && secret !== null && isMd5Hash(secret))
    credentials = await md5Exchange(reader, user, secret)
  else credentials = await scramExchange(reader, user, secret)
  if (role === null) throw passwordFailed(user)
  if (role.expired) throw passwordFailed(user)
  if (!role.canLogin) {
    throw new PgError(
      SqlState.InvalidAuthorizationSpecification,
      `role "${user}" is not permitted to log in`,
      {
        severity: 'FATAL',
      },
    )
  }
  return credentials
}

async function md5Exchange(
  reader: ClientReader,
  user: string,
  storedHash: string,
): Promise<BackendCredentials> {
  const salt = randomBytes(4)
  reader.socket.write(authenticationMd5(salt))
  const message = await reader.readMessage(Frontend.PasswordMessage, 'password message')
  const response = message.toString('utf8', 5, message.length - 1)
  if (!verifyMd5Response(storedHash, salt, response)) throw passwordFailed(user)
  return { md5Hash: storedHash }
}

async function scramExchange(
  reader: ClientReader,
  user: string,
  secret: string | null,
): Promise<BackendCredentials> {
  const real = secret === null ? null : parseScramVerifier(secret)
  // An unknown role, or one without a SCRAM secret, still gets a full exchange that fails at the end.
  const verifier = real ?? mockScramVerifier(user, mockNonce)
  reader.socket.write(authenticationSasl(['SCRAM-SHA-256']))
  try {
    const initial = await reader.readMessage(Frontend.PasswordMessage, 'SASL response')
    const mechanismEnd = initial.indexOf(0, 5)
    if (mechanismEnd < 0 || initial.toString('utf8', 5, mechanismEnd) !== 'SCRAM-SHA-256') {
      throw new PgError(
        SqlState.ProtocolViolation,
        'client selected an invalid SASL authentication mechanism',
      )
    }
    const dataLength = initial.readInt32BE(mechanismEnd + 1)
    const data = initial.toString('utf8', mechanismEnd + 5, mechanismEnd + 5 + Math.max(0, dataLength))
    const first = serverFirst(data, verifier)
    reader.socket.write(authenticationSaslContinue(first.serverFirstMessage))
    const response = await reader.readMessage(Frontend.PasswordMessage, 'SASL response')
    const final = serverFinal(first.state, response.toString('utf8', 5))
    if (!final.ok && final.reason !== 'SCRAM_INVALID_PROOF') {
      // A malformed message or nonce is a protocol violation, not a wrong password (auth-scram.c).
      throw new PgError(final.error.sqlstate, final.error.message, { severity: 'FATAL' })
    }
    if (!final.ok || real === null) throw passwordFailed(user)
    reader.socket.write(authenticationSaslFinal(final.serverFinalMessage))
    return { scramKeys: { clientKey: final.clientKey, serverKey: final.serverKey } }
  } catch (error) {
    if (error instanceof ScramError) {
      throw new PgError(error.sqlstate, error.message, { severity: 'FATAL' })
    }
    throw error
  }
}

function passwordFailed(user: string): PgError {
  return new PgError(SqlState.InvalidPassword, `password authentication failed for user "${user}"`, {
    severity: 'FATAL',
  })
}
