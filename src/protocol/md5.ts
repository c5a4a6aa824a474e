/**
 * PostgreSQL's MD5 password method (AuthenticationMD5Password, auth code 5), both ends:
 *
 * - pg_authid stores `'md5' || md5(password || username)` (35 characters);
 * - the server sends a random 4-byte salt, and the client answers
 *   `'md5' || md5(hex(md5(password || username)) || salt)`
 *   (src/backend/libpq/crypt.c md5_crypt_verify, src/common/md5_common.c pg_md5_encrypt).
 *
 * The client response needs only the stored hash, not the password, so the gateway can
 * log in to a backend with nothing but pg_authid's value ({@link md5Response}), as
 * PgBouncer does with its auth_query. That makes the stored hash password-equivalent.
 *
 * Pure functions over node:crypto and node:buffer. Strings are hashed as UTF-8, which is
 * what PostgreSQL hashes for a UTF-8 client (it hashes the bytes it received).
 */
import { Buffer } from 'node:buffer'
import { createHash, timingSafeEqual } from 'node:crypto'
import { SqlState } from './sqlstate.ts'

/** Length of `md5` + 32 hex digits: PostgreSQL's MD5_PASSWD_LEN. */
export const MD5_PASSWORD_LENGTH = 35

/** The salt in AuthenticationMD5Password is exactly 4 bytes. */
export const MD5_SALT_LENGTH = 4

/**
 * Stable codes for MD5 failures; match on these, never on text.
 * - `MD5_INVALID_HASH`: the stored hash is not `md5` + 32 lowercase hex digits.
 * - `MD5_INVALID_SALT`: the salt is not a 4-byte Buffer.
 */
export type Md5ErrorCode = 'MD5_INVALID_HASH' | 'MD5_INVALID_SALT'

/**
 * A caller passed something that is not an MD5 hash or salt. Client responses are never
 * a reason to throw: {@link verifyMd5Response} just returns false for them.
 */
export class Md5Error extends Error {
  /** Stable machine-readable code. */
  readonly code: Md5ErrorCode
  /** Both codes are configuration or caller bugs, hence internal_error. */
  readonly sqlstate: string

  constructor(code: Md5ErrorCode, message: string) {
    super(message)
    this.name = 'Md5Error'
    this.code = code
    this.sqlstate = SqlState.InternalError
  }
}

/**
 * PostgreSQL recognises a stored MD5 hash by exactly this shape (crypt.c
 * get_password_type: "md5" prefix, MD5_PASSWD_LEN, MD5_PASSWD_CHARSET "0123456789abcdef").
 */
const STORED_HASH = /^md5[0-9a-f]{32}$/
const BARE_HASH = /^[0-9a-f]{32}$/

function md5Hex(...parts: (string | Buffer)[]): string {
  const hash = createHash('md5')
  for (const part of parts) hash.update(part)
  return hash.digest('hex')
}

/**
 * True when `value` is a stored MD5 hash in pg_authid form (`md5` + 32 lowercase hex).
 * Anything else in rolpassword is SCRAM or, historically, plaintext.
 */
export function isMd5Hash(value: string): boolean {
  return typeof value === 'string' && STORED_HASH.test(value)
}

/**
 * The pg_authid form of an MD5 password: `'md5' || md5(password || username)`. The
 * username is the salt, which is why renaming a role clears an MD5 password.
 */
export function md5Hash(password: string, username: string): string {
  return `md5${md5Hex(password, username)}`
}

function checkSalt(salt: Buffer): void {
  if (!Buffer.isBuffer(salt) || salt.length !== MD5_SALT_LENGTH) {
    throw new Md5Error('MD5_INVALID_SALT', `MD5 salt must be a ${MD5_SALT_LENGTH}-byte Buffer`)
  }
}

/**
 * The PasswordMessage answer to AuthenticationMD5Password, computed from the stored hash
 * alone: `'md5' || md5(<32 hex digits of the stored hash> || salt)`. Accepts the pg_authid
 * form (`md5…`, 35 characters) or the bare 32 hex digits.
 *
 * @throws Md5Error `MD5_INVALID_HASH` or `MD5_INVALID_SALT`.
 */
export function md5Response(storedHashOrPasswordHash: string, salt: Buffer): string {
  checkSalt(salt)
  let hex: string
  if (isMd5Hash(storedHashOrPasswordHash)) hex = storedHashOrPasswordHash.slice(3)
  else if (typeof storedHashOrPasswordHash === 'string' && BARE_HASH.test(storedHashOrPasswordHash)) {
    hex = storedHashOrPasswordHash
  } else throw new Md5Error('MD5_INVALID_HASH', 'not an MD5 password hash')
  return `md5${md5Hex(hex, salt)}`
}

/**
 * The PasswordMessage answer to AuthenticationMD5Password from the password, as libpq
 * computes it (fe-auth.c pg_password_sendauth: hash with the username, then with salt).
 */
export function md5ResponseFromPassword(password: string, username: string, salt: Buffer): string {
  return md5Response(md5Hash(password, username), salt)
}

/**
 * Checks a client's MD5 response against the stored hash, timing-safe (PostgreSQL's
 * md5_crypt_verify uses strcmp; we don't leak the prefix match length). A response of the
 * wrong length or type is simply false: it comes from an unauthenticated peer.
 *
 * @throws Md5Error when `storedHash` or `salt` is invalid (caller/config bug). A role
 *   whose rolpassword is a SCRAM secret cannot be verified with MD5; PostgreSQL then runs
 *   SCRAM instead when pg_hba says md5, and so should the caller.
 */
export function verifyMd5Response(storedHash: string, salt: Buffer, clientResponse: string): boolean {
  if (!isMd5Hash(storedHash)) throw new Md5Error('MD5_INVALID_HASH', 'stored password is not an MD5 hash')
  const expected = Buffer.from(md5Response(storedHash, salt), 'latin1')
  if (typeof clientResponse !== 'string' || clientResponse.length !== MD5_PASSWORD_LENGTH) return false
  const actual = Buffer.from(clientResponse, 'utf8')
  // Non-ASCII input has more bytes than characters; timingSafeEqual needs equal lengths.
  if (actual.length !== expected.length) return false
  return timingSafeEqual(actual, expected)
}
