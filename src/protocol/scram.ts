/**
 * SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL speaks it, for both ends of the gateway:
 *
 * - server side: authenticate a client against the verifier in `pg_authid.rolpassword`
 *   ({@link serverFirst}, {@link serverFinal}), recovering the client's ClientKey;
 * - client side: log in to a backend ({@link clientFirst}, {@link clientFinal},
 *   {@link verifyServerFinal}) either with the password or with a recovered
 *   ClientKey + ServerKey (what PgBouncer does, and what PostgreSQL 18 itself does for
 *   `use_scram_passthrough` in postgres_fdw/dblink via `MyProcPort->scram_ClientKey`).
 *
 * Pure functions: no I/O, no timers; node:crypto, node:buffer and the sibling SQLSTATE
 * table only. State between the two round trips is a plain frozen object the caller keeps.
 *
 * PostgreSQL differences from the RFC that we copy (src/backend/libpq/auth-scram.c):
 * - the SCRAM `n=` username is ignored (the role comes from the startup packet); libpq
 *   sends it empty, so does {@link clientFirst};
 * - the password is SASLprep'ed, but if SASLprep rejects it (invalid UTF-8, prohibited
 *   characters) the raw bytes are used instead of failing ({@link saslprep});
 * - unknown users get a "mock" exchange with a deterministic salt so the server-first
 *   message does not reveal whether the role exists ({@link mockScramVerifier});
 * - authzid (`a=`) and mandatory extensions (`m=`) are refused as unsupported.
 *
 * Messages are JS strings; the AuthMessage is hashed as their UTF-8 encoding. Everything
 * PostgreSQL and its drivers put on the wire here is ASCII except the ignored `n=` value,
 * and a mis-decoded `n=` can only make the proof fail, never pass.
 */
import { Buffer, isUtf8 } from 'node:buffer'
import { createHash, createHmac, pbkdf2Sync, randomBytes, timingSafeEqual } from 'node:crypto'
import { SqlState } from './sqlstate.ts'

/** SASL mechanism name advertised in AuthenticationSASL (RFC 7677 §3). */
export const SCRAM_SHA_256 = 'SCRAM-SHA-256'

/**
 * Channel-binding variant (RFC 5802 §6). Tidepool does not advertise it yet; a client
 * that nevertheless asks for binding (`p=` gs2 flag) is refused, as PostgreSQL does
 * when it did not offer PLUS.
 */
export const SCRAM_SHA_256_PLUS = 'SCRAM-SHA-256-PLUS'

/** SHA-256 output length; StoredKey, ServerKey, proofs and signatures are all this long. */
export const SCRAM_KEY_LENGTH = 32

/** PostgreSQL's SCRAM_SHA_256_DEFAULT_ITERATIONS (and the `scram_iterations` default). */
export const SCRAM_DEFAULT_ITERATIONS = 4096

/** PostgreSQL's SCRAM_DEFAULT_SALT_LEN: salts it generates (and mock salts) are 16 bytes. */
export const SCRAM_DEFAULT_SALT_LENGTH = 16

/** PostgreSQL's SCRAM_RAW_NONCE_LEN: 18 random bytes, base64 to 24 characters, no padding. */
export const SCRAM_RAW_NONCE_LENGTH = 18

/**
 * PostgreSQL's PG_MAX_SASL_MESSAGE_LENGTH. The framer should already enforce it on the
 * SASLInitialResponse/SASLResponse frame; the parsers re-check so they stay bounded alone.
 */
export const SCRAM_MAX_MESSAGE_LENGTH = 1024

/** `pg_authid.rolpassword` stores iterations as a C `int` (scram_iterations max INT_MAX). */
const MAX_ITERATIONS = 0x7fffffff

// ---------------------------------------------------------------------------------------
// Errors

/**
 * Stable codes for every SCRAM failure. Tests and metrics match on these, never on text.
 *
 * - `SCRAM_MALFORMED`: syntax violation of RFC 5802 §7 (missing/misordered attribute,
 *   bad base64, wrong key length, over-long message, garbage after the proof).
 * - `SCRAM_CHANNEL_BINDING`: client asked for `p=` binding we did not offer, or its
 *   `c=` does not repeat its gs2 header.
 * - `SCRAM_UNSUPPORTED`: authzid `a=` or a mandatory extension `m=`.
 * - `SCRAM_NONCE_MISMATCH`: final nonce is not client nonce + server nonce (server side),
 *   or the server's nonce does not extend ours (client side).
 * - `SCRAM_INVALID_PROOF`: wrong password, or a mock exchange for an unknown role. One
 *   code for both so nothing upstream can leak which it was.
 * - `SCRAM_SERVER_ERROR`: the server answered with `e=<server-error-value>`.
 * - `SCRAM_KEYS_MISMATCH`: keys-mode credentials were derived from a different salt or
 *   iteration count than the server announced, so the proof could never verify.
 * - `SCRAM_INVALID_ARGUMENT`: a caller bug (bad nonce option, short mock secret).
 */
export type ScramErrorCode =
  | 'SCRAM_MALFORMED'
  | 'SCRAM_CHANNEL_BINDING'
  | 'SCRAM_UNSUPPORTED'
  | 'SCRAM_NONCE_MISMATCH'
  | 'SCRAM_INVALID_PROOF'
  | 'SCRAM_SERVER_ERROR'
  | 'SCRAM_KEYS_MISMATCH'
  | 'SCRAM_INVALID_ARGUMENT'

/**
 * SQLSTATE the gateway should report for each code, following auth-scram.c: syntax and
 * nonce problems are `ereport(ERROR, ERRCODE_PROTOCOL_VIOLATION)`, `a=`/`m=` are
 * `ERRCODE_FEATURE_NOT_SUPPORTED`, and a bad proof surfaces as the generic
 * "password authentication failed" (28P01) like every other password method.
 */
const SQLSTATE_BY_CODE: Record<ScramErrorCode, string> = {
  SCRAM_MALFORMED: SqlState.ProtocolViolation,
  SCRAM_CHANNEL_BINDING: SqlState.ProtocolViolation,
  SCRAM_UNSUPPORTED: SqlState.FeatureNotSupported,
  SCRAM_NONCE_MISMATCH: SqlState.ProtocolViolation,
  SCRAM_INVALID_PROOF: SqlState.InvalidPassword,
  SCRAM_SERVER_ERROR: SqlState.InvalidAuthorizationSpecification,
  SCRAM_KEYS_MISMATCH: SqlState.InvalidAuthorizationSpecification,
  SCRAM_INVALID_ARGUMENT: SqlState.InternalError,
}

/**
 * A SCRAM failure. `code` is stable; `sqlstate` is what to send the client in the
 * ErrorResponse; `message` is for logs. Messages echo peer text only sanitized
 * (printable ASCII, 30 characters), as auth-scram.c's sanitize_str does, so an
 * unauthenticated peer cannot spam logs with arbitrary bytes.
 */
export class ScramError extends Error {
  /** Stable machine-readable code. */
  readonly code: ScramErrorCode
  /** SQLSTATE matching PostgreSQL's behaviour for this failure. */
  readonly sqlstate: string

  constructor(code: ScramErrorCode, message: string) {
    super(message)
    this.name = 'ScramError'
    this.code = code
    this.sqlstate = SQLSTATE_BY_CODE[code]
  }
}

/** Printable-ASCII, 30-character rendering of peer text for error messages (auth-scram.c sanitize_str). */
function sanitize(text: string): string {
  return text.slice(0, 30).replace(/[^\x21-\x7e]/g, '?')
}

function malformed(detail: string): ScramError {
  return new ScramError('SCRAM_MALFORMED', `malformed SCRAM message: ${detail}`)
}

// ---------------------------------------------------------------------------------------
// Primitives

/** H() of RFC 5802 §2.2, SHA-256 per RFC 7677. */
function sha256(data: Buffer): Buffer {
  return createHash('sha256').update(data).digest()
}

/** HMAC() of RFC 5802 §2.2 with SHA-256; string data is hashed as UTF-8. */
function hmac(key: Buffer, data: string | Buffer): Buffer {
  return createHmac('sha256', key).update(data).digest()
}

function xor(a: Buffer, b: Buffer): Buffer {
  const out = Buffer.allocUnsafe(a.length)
  for (let i = 0; i < a.length; i++) out[i] = a[i] ^ b[i]
  return out
}

/** Canonical padded base64. Node's decoder silently skips junk, so validate first. */
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/

/**
 * Strict base64 decode, or null. Stricter than PostgreSQL's pg_b64_decode, which also
 * skips embedded whitespace; no SCRAM implementation emits whitespace there.
 */
function decodeBase64(text: string): Buffer | null {
  return BASE64.test(text) ? Buffer.from(text, 'base64') : null
}

/** RFC 5802 §7 `printable`: %x21-2B / %x2D-7E, i.e. printable ASCII except ",". */
const PRINTABLE = /^[\x21-\x2b\x2d-\x7e]*$/

// ---------------------------------------------------------------------------------------
// SASLprep (RFC 4013 over RFC 3454), as src/common/saslprep.c applies it

type Ranges = readonly number[] // flattened inclusive [first, last] pairs, sorted

function inRanges(code: number, ranges: Ranges): boolean {
  let lo = 0
  let hi = ranges.length / 2 - 1
  while (lo <= hi) {
    const mid = (lo + hi) >> 1
    if (code < ranges[mid * 2]) hi = mid - 1
    else if (code > ranges[mid * 2 + 1]) lo = mid + 1
    else return true
  }
  return false
}

/** RFC 3454 C.1.2 non-ASCII space characters; RFC 4013 §2.1 maps them to U+0020. */
const NON_ASCII_SPACE: Ranges = [
  0xa0, 0xa0, 0x1680, 0x1680, 0x2000, 0x200b, 0x202f, 0x202f, 0x205f, 0x205f, 0x3000, 0x3000,
]

/** RFC 3454 B.1 "commonly mapped to nothing"; RFC 4013 §2.1 removes them. */
const MAPPED_TO_NOTHING: Ranges = [
  0xad, 0xad, 0x34f, 0x34f, 0x1806, 0x1806, 0x180b, 0x180d, 0x200b, 0x200d, 0x2060, 0x2060, 0xfe00, 0xfe0f,
  0xfeff, 0xfeff,
]

/**
 * RFC 4013 §2.3 prohibited output: union of RFC 3454 tables C.1.2, C.2.1, C.2.2, C.3,
 * C.4, C.5, C.6, C.7, C.8 and C.9, with adjacent ranges merged.
 */
const PROHIBITED: Ranges = [
  0x0000, 0x001f, 0x007f, 0x00a0, 0x0340, 0x0341, 0x06dd, 0x06dd, 0x070f, 0x070f, 0x1680, 0x1680, 0x180e,
  0x180e, 0x2000, 0x200f, 0x2028, 0x202f, 0x205f, 0x2063, 0x206a, 0x206f, 0x2ff0, 0x2ffb, 0x3000, 0x3000,
  0xd800, 0xf8ff, 0xfdd0, 0xfdef, 0xfeff, 0xfeff, 0xfff9, 0xffff, 0x1d173, 0x1d17a, 0x1fffe, 0x1ffff, 0x2fffe,
  0x2ffff, 0x3fffe, 0x3ffff, 0x4fffe, 0x4ffff, 0x5fffe, 0x5ffff, 0x6fffe, 0x6ffff, 0x7fffe, 0x7ffff, 0x8fffe,
  0x8ffff, 0x9fffe, 0x9ffff, 0xafffe, 0xaffff, 0xbfffe, 0xbffff, 0xcfffe, 0xcffff, 0xdfffe, 0xdffff, 0xe0001,
  0xe0001, 0xe0020, 0xe007f, 0xefffe, 0xeffff, 0xf0000, 0x10ffff,
]

/**
 * RFC 3454 A.1 (unassigned in Unicode 3.2), supplementary planes only. This part is
 * short and covers the common case that matters (emoji, all post-3.2); for the BMP we
 * approximate A.1 with today's `\p{Cn}` (see {@link saslprep}).
 */
const UNASSIGNED_ASTRAL: Ranges = [
  0x10000, 0x102ff, 0x1031f, 0x1031f, 0x10324, 0x1032f, 0x1034b, 0x103ff, 0x10426, 0x10427, 0x1044e, 0x1cfff,
  0x1d0f6, 0x1d0ff, 0x1d127, 0x1d129, 0x1d1de, 0x1d3ff, 0x1d455, 0x1d455, 0x1d49d, 0x1d49d, 0x1d4a0, 0x1d4a1,
  0x1d4a3, 0x1d4a4, 0x1d4a7, 0x1d4a8, 0x1d4ad, 0x1d4ad, 0x1d4ba, 0x1d4ba, 0x1d4bc, 0x1d4bc, 0x1d4c1, 0x1d4c1,
  0x1d4c4, 0x1d4c4, 0x1d506, 0x1d506, 0x1d50b, 0x1d50c, 0x1d515, 0x1d515, 0x1d51d, 0x1d51d, 0x1d53a, 0x1d53a,
  0x1d53f, 0x1d53f, 0x1d545, 0x1d545, 0x1d547, 0x1d549, 0x1d551, 0x1d551, 0x1d6a4, 0x1d6a7, 0x1d7ca, 0x1d7cd,
  0x1d800, 0x1fffd, 0x2a6d7, 0x2f7ff, 0x2fa1e, 0x2fffd, 0x30000, 0x3fffd, 0x40000, 0x4fffd, 0x50000, 0x5fffd,
  0x60000, 0x6fffd, 0x70000, 0x7fffd, 0x80000, 0x8fffd, 0x90000, 0x9fffd, 0xa0000, 0xafffd, 0xb0000, 0xbfffd,
  0xc0000, 0xcfffd, 0xd0000, 0xdfffd, 0xe0000, 0xe0000, 0xe0002, 0xe001f, 0xe0080, 0xefffd,
]

/** RFC 3454 D.1: characters with bidirectional property R or AL. */
const RAND_AL_CAT: Ranges = [
  0x05be, 0x05be, 0x05c0, 0x05c0, 0x05c3, 0x05c3, 0x05d0, 0x05ea, 0x05f0, 0x05f4, 0x061b, 0x061b, 0x061f,
  0x061f, 0x0621, 0x063a, 0x0640, 0x064a, 0x066d, 0x066f, 0x0671, 0x06d5, 0x06dd, 0x06dd, 0x06e5, 0x06e6,
  0x06fa, 0x06fe, 0x0700, 0x070d, 0x0710, 0x0710, 0x0712, 0x072c, 0x0780, 0x07a5, 0x07b1, 0x07b1, 0x200f,
  0x200f, 0xfb1d, 0xfb1d, 0xfb1f, 0xfb28, 0xfb2a, 0xfb36, 0xfb38, 0xfb3c, 0xfb3e, 0xfb3e, 0xfb40, 0xfb41,
  0xfb43, 0xfb44, 0xfb46, 0xfbb1, 0xfbd3, 0xfd3d, 0xfd50, 0xfd8f, 0xfd92, 0xfdc7, 0xfdf0, 0xfdfc, 0xfe70,
  0xfe74, 0xfe76, 0xfefc,
]

const UNASSIGNED_NOW = /^\p{Cn}$/u
/**
 * Approximation of RFC 3454 D.2 (bidi class L), whose exact table is ~360 ranges:
 * letters and spacing marks outside the right-to-left scripts. Only consulted when the
 * string already contains a D.1 character.
 */
const LEFT_TO_RIGHT = /^[\p{L}\p{Mc}]$/u
const RTL_SCRIPT = /^[\p{Script=Hebrew}\p{Script=Arabic}\p{Script=Syriac}\p{Script=Thaana}\p{Script=Nko}]$/u

function isLCat(code: number): boolean {
  const ch = String.fromCodePoint(code)
  return LEFT_TO_RIGHT.test(ch) && !RTL_SCRIPT.test(ch)
}

function isProhibited(code: number): boolean {
  if (inRanges(code, PROHIBITED)) return true
  if (code >= 0x10000) return inRanges(code, UNASSIGNED_ASTRAL)
  return UNASSIGNED_NOW.test(String.fromCodePoint(code))
}

/**
 * SASLprep (RFC 4013) of a password, following PostgreSQL's pg_saslprep()
 * (src/common/saslprep.c). Returns the prepared string, or null when SASLprep rejects
 * the input; PostgreSQL then hashes the raw password bytes instead of failing, and so
 * does {@link scramKeysFromPassword}.
 *
 * Steps, with PostgreSQL's quirks kept because the verifier in pg_authid was built by
 * them (a different result means a password that never matches):
 * 1. Pure ASCII is returned unchanged, even with control characters.
 * 2. A Buffer that is not valid UTF-8 is rejected (PG: SASLPREP_INVALID_UTF8).
 * 3. Map C.1.2 spaces to U+0020, delete B.1 characters; empty result is rejected.
 * 4. NFKC-normalise the mapped string (String.prototype.normalize).
 * 5. Prohibited-output and bidi checks run on the mapped, *pre-normalisation* code
 *    points, exactly as pg_saslprep does (its loop walks `input_chars`).
 *
 * Known approximations, both only for passwords PostgreSQL would reject and then use raw:
 * BMP characters unassigned in Unicode 3.2 but assigned today are not flagged (A.1), and
 * the bidi L test approximates table D.2. A mismatch needs such a character *and* a
 * character NFKC changes in the same password.
 */
export function saslprep(password: string | Buffer): string | null {
  let text: string
  if (typeof password === 'string') {
    text = password
  } else {
    // pg_utf8_islegal: overlongs, surrogates and > U+10FFFF are invalid, as in isUtf8.
    if (!isUtf8(password)) return null
    text = password.toString('utf8')
  }
  // biome-ignore lint/suspicious/noControlCharactersInRegex: ASCII range test, controls included on purpose
  if (/^[\x00-\x7f]*$/.test(text)) return text

  const mapped: number[] = []
  for (const ch of text) {
    const code = ch.codePointAt(0)!
    if (inRanges(code, NON_ASCII_SPACE)) mapped.push(0x20)
    else if (!inRanges(code, MAPPED_TO_NOTHING)) mapped.push(code)
  }
  if (mapped.length === 0) return null

  let hasRandAL = false
  for (const code of mapped) {
    if (isProhibited(code)) return null
    if (inRanges(code, RAND_AL_CAT)) hasRandAL = true
  }
  if (hasRandAL) {
    // RFC 3454 §6: no LCat at all, and RandALCat first and last.
    if (mapped.some(isLCat)) return null
    if (!inRanges(mapped[0], RAND_AL_CAT) || !inRanges(mapped[mapped.length - 1], RAND_AL_CAT)) return null
  }
  return String.fromCodePoint(...mapped).normalize('NFKC')
}

/** Bytes PBKDF2 actually hashes: SASLprep output, or the raw password when SASLprep rejects it. */
function passwordBytes(password: string | Buffer): Buffer {
  const prepared = saslprep(password)
  if (prepared !== null) return Buffer.from(prepared, 'utf8')
  return typeof password === 'string' ? Buffer.from(password, 'utf8') : password
}

// ---------------------------------------------------------------------------------------
// Keys and verifiers

/** The four values RFC 5802 §3 derives from a password, salt and iteration count. */
export interface ScramKeys {
  /** HMAC(SaltedPassword, "Client Key"). Knowing it is enough to log in (it is the secret). */
  readonly clientKey: Buffer
  /** H(ClientKey), as stored in pg_authid. */
  readonly storedKey: Buffer
  /** HMAC(SaltedPassword, "Server Key"), as stored in pg_authid. */
  readonly serverKey: Buffer
  /** Hi(Normalize(password), salt, i) = PBKDF2-HMAC-SHA-256, 32 bytes. */
  readonly saltedPassword: Buffer
}

/**
 * Derives ClientKey, StoredKey, ServerKey and SaltedPassword (RFC 5802 §3) from a
 * password, after {@link saslprep} with PostgreSQL's raw-bytes fallback.
 *
 * PBKDF2 runs synchronously for `iterations` rounds (4096 is a few ms) on the caller's
 * thread. Callers on the event loop should compute keys once per (role, salt, iterations)
 * and log in with keys mode of {@link clientFinal} afterwards.
 */
export function scramKeysFromPassword(
  password: string | Buffer,
  salt: Buffer,
  iterations: number,
): ScramKeys {
  if (typeof password !== 'string' && !Buffer.isBuffer(password)) {
    throw new ScramError('SCRAM_INVALID_ARGUMENT', 'SCRAM password must be a string or Buffer')
  }
  if (!Buffer.isBuffer(salt)) throw new ScramError('SCRAM_INVALID_ARGUMENT', 'SCRAM salt must be a Buffer')
  if (!Number.isInteger(iterations) || iterations < 1 || iterations > MAX_ITERATIONS) {
    throw new ScramError('SCRAM_INVALID_ARGUMENT', `invalid SCRAM iteration count ${iterations}`)
  }
  const saltedPassword = pbkdf2Sync(passwordBytes(password), salt, iterations, SCRAM_KEY_LENGTH, 'sha256')
  const clientKey = hmac(saltedPassword, 'Client Key')
  return {
    clientKey,
    storedKey: sha256(clientKey),
    serverKey: hmac(saltedPassword, 'Server Key'),
    saltedPassword,
  }
}

/**
 * A parsed SCRAM-SHA-256 secret: what the server side needs to run an exchange.
 * `doomed` marks a mock verifier; an exchange against it always ends in
 * `SCRAM_INVALID_PROOF` (auth-scram.c `state->doomed`).
 */
export interface ScramVerifier {
  readonly iterations: number
  readonly salt: Buffer
  readonly storedKey: Buffer
  readonly serverKey: Buffer
  readonly doomed?: boolean
}

/**
 * Parses `pg_authid.rolpassword` of the form
 * `SCRAM-SHA-256$<iterations>:<base64 salt>$<base64 StoredKey>:<base64 ServerKey>`
 * (auth-scram.c parse_scram_secret). Returns null for anything else, including md5
 * hashes and plaintext; the caller should then run a mock exchange
 * ({@link mockScramVerifier}) rather than reveal that the role cannot use SCRAM.
 */
export function parseScramVerifier(rolpassword: string): ScramVerifier | null {
  if (typeof rolpassword !== 'string') return null
  const match = /^SCRAM-SHA-256\$([0-9]+):([^$:]*)\$([^$:]*):([^$:]*)$/.exec(rolpassword)
  if (match === null) return null
  const iterations = Number(match[1])
  if (!Number.isSafeInteger(iterations) || iterations < 1 || iterations > MAX_ITERATIONS) return null
  const salt = decodeBase64(match[2])
  const storedKey = decodeBase64(match[3])
  const serverKey = decodeBase64(match[4])
  if (salt === null || storedKey === null || serverKey === null) return null
  if (storedKey.length !== SCRAM_KEY_LENGTH || serverKey.length !== SCRAM_KEY_LENGTH) return null
  return Object.freeze({ iterations, salt, storedKey, serverKey })
}

/**
 * Formats a verifier in the pg_authid form {@link parseScramVerifier} reads, e.g. for a
 * gateway-side user list or tests.
 */
export function formatScramVerifier(verifier: ScramVerifier): string {
  return (
    `SCRAM-SHA-256$${verifier.iterations}:${verifier.salt.toString('base64')}` +
    `$${verifier.storedKey.toString('base64')}:${verifier.serverKey.toString('base64')}`
  )
}

/**
 * Builds a new verifier from a password like pg_be_scram_build_secret(): SASLprep with
 * raw fallback, a fresh 16-byte random salt and 4096 iterations unless given.
 */
export function buildScramVerifier(
  password: string | Buffer,
  options: { salt?: Buffer; iterations?: number } = {},
): ScramVerifier {
  const salt = options.salt ?? randomBytes(SCRAM_DEFAULT_SALT_LENGTH)
  const iterations = options.iterations ?? SCRAM_DEFAULT_ITERATIONS
  const keys = scramKeysFromPassword(password, salt, iterations)
  return Object.freeze({ iterations, salt, storedKey: keys.storedKey, serverKey: keys.serverKey })
}

/**
 * A doomed verifier for a role that does not exist or has no SCRAM secret, so the
 * server-first message looks like a real one and the exchange fails only at the proof,
 * exactly like a wrong password (auth-scram.c mock_scram_secret/scram_mock_salt).
 *
 * The salt is the first 16 bytes of SHA-256(username || secretNonce): stable per
 * username, so repeated probes see the same salt as they would for a real role, and
 * unpredictable without the secret. PostgreSQL uses the cluster's 32-byte
 * mock_authentication_nonce from pg_control; the gateway should keep one random secret
 * of at least 32 bytes for its lifetime (or persist it, so restarts don't change salts).
 *
 * `iterations` defaults to 4096 like PostgreSQL; a deployment whose real verifiers use
 * another count should pass that count so mock and real challenges look alike.
 */
export function mockScramVerifier(
  username: string,
  secretNonce: Buffer,
  iterations: number = SCRAM_DEFAULT_ITERATIONS,
): ScramVerifier {
  if (!Buffer.isBuffer(secretNonce) || secretNonce.length < 16) {
    throw new ScramError('SCRAM_INVALID_ARGUMENT', 'mock SCRAM nonce must be a Buffer of at least 16 bytes')
  }
  const digest = createHash('sha256').update(Buffer.from(username, 'utf8')).update(secretNonce).digest()
  return Object.freeze({
    iterations,
    salt: digest.subarray(0, SCRAM_DEFAULT_SALT_LENGTH),
    // Not used in a doomed exchange; zeros as in PostgreSQL.
    storedKey: Buffer.alloc(SCRAM_KEY_LENGTH),
    serverKey: Buffer.alloc(SCRAM_KEY_LENGTH),
    doomed: true,
  })
}

// ---------------------------------------------------------------------------------------
// Attribute reader (RFC 5802 §7: attr-val = ALPHA "=" value, comma separated)

/** Cursor over a SCRAM message, mirroring auth-scram.c read_attr_value/read_any_attr. */
interface Cursor {
  readonly text: string
  pos: number
}

/** Reads `<attr>=<value>` and the following comma, if any. */
function readAttr(cursor: Cursor, attr: string): string {
  const { text } = cursor
  if (cursor.pos >= text.length) throw malformed(`expected attribute "${attr}" but found end of message`)
  if (text[cursor.pos] !== attr) {
    throw malformed(`expected attribute "${attr}" but found "${sanitize(text[cursor.pos])}"`)
  }
  if (text[cursor.pos + 1] !== '=') throw malformed(`expected "=" after attribute "${attr}"`)
  return readValue(cursor, cursor.pos + 2)
}

/** Reads any `ALPHA=value`; returns the attribute letter and value. */
function readAnyAttr(cursor: Cursor): [string, string] {
  const { text } = cursor
  if (cursor.pos >= text.length) throw malformed('attribute expected, but found end of message')
  const attr = text[cursor.pos]
  if (!/^[A-Za-z]$/.test(attr)) throw malformed(`attribute expected, but found "${sanitize(attr)}"`)
  if (text[cursor.pos + 1] !== '=') throw malformed(`expected "=" after attribute "${attr}"`)
  return [attr, readValue(cursor, cursor.pos + 2)]
}

function readValue(cursor: Cursor, start: number): string {
  const comma = cursor.text.indexOf(',', start)
  const end = comma < 0 ? cursor.text.length : comma
  cursor.pos = comma < 0 ? end : comma + 1
  return cursor.text.slice(start, end)
}

function checkMessage(message: unknown, what: string): string {
  if (typeof message !== 'string') throw malformed(`${what} is not a string`)
  if (message.length === 0) throw malformed(`${what} is empty`)
  if (message.length > SCRAM_MAX_MESSAGE_LENGTH)
    throw malformed(`${what} is longer than ${SCRAM_MAX_MESSAGE_LENGTH}`)
  // A NUL ends a C string: PostgreSQL rejects payloads whose strlen differs from their length.
  if (message.includes('\0')) throw malformed(`${what} contains a NUL byte`)
  return message
}

function randomNonce(): string {
  return randomBytes(SCRAM_RAW_NONCE_LENGTH).toString('base64')
}

function checkNonceOption(nonce: string): string {
  if (typeof nonce !== 'string' || nonce.length === 0 || !PRINTABLE.test(nonce)) {
    throw new ScramError(
      'SCRAM_INVALID_ARGUMENT',
      'SCRAM nonce must be non-empty printable ASCII without ","',
    )
  }
  return nonce
}

// ---------------------------------------------------------------------------------------
// Server side

/** What {@link serverFinal} needs from the first round trip. Treat as opaque. */
export interface ScramServerState {
  /** gs2 header as the client sent it (`n,,` or `y,,`); `c=` must be its base64. */
  readonly gs2Header: string
  readonly clientFirstMessageBare: string
  /** The `n=` value, kept for logs only: PostgreSQL authenticates the startup-packet user. */
  readonly clientUsername: string
  readonly clientNonce: string
  readonly serverNonce: string
  readonly serverFirstMessage: string
  readonly verifier: ScramVerifier
}

/** Result of {@link serverFirst}: the challenge to send and the state to keep. */
export interface ServerFirstResult {
  readonly serverFirstMessage: string
  readonly state: ScramServerState
}

/**
 * Parses the client-first-message (the SASLInitialResponse payload) and builds the
 * server-first-message `r=<client nonce><server nonce>,s=<salt>,i=<iterations>`
 * (auth-scram.c read_client_first_message/build_server_first_message).
 *
 * Accepted gs2 headers are `n,,` (client has no channel binding) and `y,,` (client could
 * bind but thinks we cannot, which is true: RFC 5802 §6 lets a server that does not
 * support binding accept `y`; were we to advertise PLUS, `y` would signal a downgrade
 * and must be refused). `p=` is refused since we never advertise SCRAM-SHA-256-PLUS.
 *
 * Pass a mock verifier from {@link mockScramVerifier} for unknown roles. `options.nonce`
 * overrides the random 18-byte server nonce (tests only).
 *
 * @throws ScramError on malformed or unsupported input; never on a well-formed message.
 */
export function serverFirst(
  clientFirstMessage: string,
  verifier: ScramVerifier,
  options: { nonce?: string } = {},
): ServerFirstResult {
  const message = checkMessage(clientFirstMessage, 'client-first-message')
  const flag = message[0]
  if (flag === 'p') {
    throw new ScramError(
      'SCRAM_CHANNEL_BINDING',
      'the client selected SCRAM-SHA-256 without channel binding, but the SCRAM message includes channel binding data',
    )
  }
  if (flag !== 'n' && flag !== 'y') throw malformed(`unexpected channel-binding flag "${sanitize(flag)}"`)
  if (message[1] !== ',') throw malformed(`comma expected after channel-binding flag`)
  if (message[2] === 'a') {
    throw new ScramError('SCRAM_UNSUPPORTED', 'client uses authorization identity, but it is not supported')
  }
  if (message[2] !== ',') throw malformed('unexpected attribute in gs2 header')
  const gs2Header = message.slice(0, 3)
  const clientFirstMessageBare = message.slice(3)

  // RFC 5802 reserves m= for mandatory extensions; its e=extensions-not-supported can only
  // travel in server-final, so like PostgreSQL we fail right away (the RFC allows that).
  if (clientFirstMessageBare[0] === 'm') {
    throw new ScramError('SCRAM_UNSUPPORTED', 'client requires an unsupported SCRAM extension')
  }
  const cursor: Cursor = { text: clientFirstMessageBare, pos: 0 }
  const clientUsername = readAttr(cursor, 'n')
  const clientNonce = readAttr(cursor, 'r')
  // PostgreSQL accepts an empty c-nonce (only printability is checked); so do we. The
  // server nonce alone already makes the proof fresh from the server's point of view.
  if (!PRINTABLE.test(clientNonce)) throw malformed('non-printable characters in SCRAM nonce')
  // Optional extensions: syntax-checked, then ignored.
  while (cursor.pos < cursor.text.length) readAnyAttr(cursor)

  if (!verifier || !Buffer.isBuffer(verifier.salt)) {
    throw new ScramError('SCRAM_INVALID_ARGUMENT', 'serverFirst needs a ScramVerifier')
  }
  const serverNonce = options.nonce === undefined ? randomNonce() : checkNonceOption(options.nonce)
  const serverFirstMessage = `r=${clientNonce}${serverNonce},s=${verifier.salt.toString('base64')},i=${verifier.iterations}`
  const state: ScramServerState = Object.freeze({
    gs2Header,
    clientFirstMessageBare,
    clientUsername,
    clientNonce,
    serverNonce,
    serverFirstMessage,
    verifier,
  })
  return { serverFirstMessage, state }
}

/** Successful verification: send `serverFinalMessage` in AuthenticationSASLFinal. */
export interface ServerFinalSuccess {
  readonly ok: true
  /** `v=<base64 ServerSignature>`. */
  readonly serverFinalMessage: string
  /**
   * The client's ClientKey, recovered as ClientProof XOR ClientSignature. With the
   * verifier's ServerKey it lets the gateway log in to a backend holding the same
   * verifier as this user without the password (PgBouncer's auth passthrough; PG 18's
   * MyProcPort->scram_ClientKey). It is password-equivalent: keep it in memory only.
   */
  readonly clientKey: Buffer
  /** The verifier's ServerKey, paired with `clientKey` for keys-mode {@link clientFinal}. */
  readonly serverKey: Buffer
}

/** Failed verification. `reason` is stable; `error.sqlstate` is what to report. */
export interface ServerFinalFailure {
  readonly ok: false
  readonly reason: ScramErrorCode
  readonly error: ScramError
}

/**
 * Verifies the client-final-message `c=<base64 gs2 header>,r=<nonce>[,ext...],p=<proof>`
 * (auth-scram.c read_client_final_message, verify_final_nonce, verify_client_proof):
 *
 * 1. parse fully first, so syntax errors win over nonce/proof errors as in PostgreSQL;
 * 2. `c=` must equal base64 of the gs2 header the client sent (`biws` for `n,,`, `eSws`
 *    for `y,,`): this is what binds the header into the signed AuthMessage;
 * 3. the nonce must be exactly client nonce + server nonce;
 * 4. ClientSignature = HMAC(StoredKey, AuthMessage), ClientKey = ClientProof XOR
 *    ClientSignature, and H(ClientKey) must equal StoredKey (timing-safe). This runs even
 *    for a doomed (mock) verifier so timing does not reveal whether the role exists;
 * 5. ServerSignature = HMAC(ServerKey, AuthMessage) goes back as `v=`.
 *
 * Never throws for client input; every failure is a {@link ServerFinalFailure}. Call it
 * once per state: the state carries no "used" flag, and the caller's auth state machine
 * must not accept a second client-final-message (PostgreSQL moves to SCRAM_AUTH_FINISHED).
 */
export function serverFinal(
  state: ScramServerState,
  clientFinalMessage: string,
): ServerFinalSuccess | ServerFinalFailure {
  try {
    return verifyClientFinal(state, clientFinalMessage)
  } catch (error) {
    if (error instanceof ScramError) return { ok: false, reason: error.code, error }
    throw error
  }
}

function verifyClientFinal(state: ScramServerState, clientFinalMessage: string): ServerFinalSuccess {
  const message = checkMessage(clientFinalMessage, 'client-final-message')
  const cursor: Cursor = { text: message, pos: 0 }
  const channelBinding = readAttr(cursor, 'c')
  if (channelBinding !== Buffer.from(state.gs2Header, 'latin1').toString('base64')) {
    throw new ScramError(
      'SCRAM_CHANNEL_BINDING',
      'unexpected SCRAM channel-binding attribute in client-final-message',
    )
  }
  const finalNonce = readAttr(cursor, 'r')
  // Extensions may precede p=; the AuthMessage covers everything before ",p=".
  let proofStart: number
  let attr: string
  let proofText: string
  do {
    proofStart = cursor.pos
    ;[attr, proofText] = readAnyAttr(cursor)
  } while (attr !== 'p')
  const proof = decodeBase64(proofText)
  if (proof === null || proof.length !== SCRAM_KEY_LENGTH)
    throw malformed('malformed proof in client-final-message')
  // A trailing comma after p= leaves the cursor at the end; PostgreSQL tolerates it too.
  if (cursor.pos < message.length) throw malformed('garbage found at the end of client-final-message')
  const clientFinalWithoutProof = message.slice(0, proofStart - 1)

  const expectedNonce = state.clientNonce + state.serverNonce
  const a = Buffer.from(finalNonce, 'utf8')
  const b = Buffer.from(expectedNonce, 'utf8')
  if (a.length !== b.length || !timingSafeEqual(a, b)) {
    throw new ScramError('SCRAM_NONCE_MISMATCH', 'invalid SCRAM response: nonce does not match')
  }

  const { storedKey, serverKey, doomed } = state.verifier
  const authMessage = `${state.clientFirstMessageBare},${state.serverFirstMessage},${clientFinalWithoutProof}`
  const clientKey = xor(proof, hmac(storedKey, authMessage))
  const proofOk = timingSafeEqual(sha256(clientKey), storedKey)
  if (!proofOk || doomed === true) {
    throw new ScramError('SCRAM_INVALID_PROOF', 'password authentication failed: invalid SCRAM proof')
  }
  return {
    ok: true,
    serverFinalMessage: `v=${hmac(serverKey, authMessage).toString('base64')}`,
    clientKey,
    serverKey,
  }
}

// ---------------------------------------------------------------------------------------
// Client side

/** What {@link clientFinal} needs from {@link clientFirst}. Treat as opaque. */
export interface ScramClientState {
  readonly gs2Header: string
  readonly clientNonce: string
  readonly clientFirstMessageBare: string
}

/**
 * Credentials for {@link clientFinal}:
 *
 * - `{ password }`: derive the keys from the password with the server's salt and
 *   iteration count (PBKDF2 on every call, see {@link scramKeysFromPassword}).
 * - `{ clientKey, serverKey }`: reuse keys recovered by {@link serverFinal} or read from a
 *   verifier. Both keys are functions of SaltedPassword = PBKDF2(password, salt, i), so
 *   they only prove the password to a server whose verifier has the *same* salt and
 *   iteration count: i.e. the backend must hold the very rolpassword the gateway
 *   authenticated the client against (same cluster, password not changed since). Pass
 *   `salt` and `iterations` of that verifier to have a mismatch caught up front as
 *   `SCRAM_KEYS_MISMATCH` instead of sending a proof that can only fail (and log a
 *   failed login on the backend).
 */
export type ScramCredentials =
  | { readonly password: string | Buffer }
  | {
      readonly clientKey: Buffer
      readonly serverKey: Buffer
      readonly salt?: Buffer
      readonly iterations?: number
    }

/** Result of {@link clientFirst}. */
export interface ClientFirstResult {
  /** The SASLInitialResponse payload. */
  readonly message: string
  readonly state: ScramClientState
}

/** Result of {@link clientFinal}. */
export interface ClientFinalResult {
  /** The SASLResponse payload: `c=biws,r=<nonce>,p=<base64 ClientProof>`. */
  readonly message: string
  /** HMAC(ServerKey, AuthMessage); pass to {@link verifyServerFinal}. */
  readonly expectedServerSignature: Buffer
}

/** RFC 5802 §5.1 saslname: "," and "=" are escaped as "=2C" and "=3D". */
function escapeSaslName(name: string): string {
  return name.replace(/=/g, '=3D').replace(/,/g, '=2C')
}

/**
 * Builds the client-first-message `n,,n=<username>,r=<nonce>`. The gs2 header is `n,,`
 * (we do not do channel binding). PostgreSQL ignores the SCRAM username, and libpq sends
 * it empty, which is the default here. `options.nonce` overrides the random 18-byte
 * nonce (tests only).
 */
export function clientFirst(username = '', options: { nonce?: string } = {}): ClientFirstResult {
  const clientNonce = options.nonce === undefined ? randomNonce() : checkNonceOption(options.nonce)
  const gs2Header = 'n,,'
  const clientFirstMessageBare = `n=${escapeSaslName(username)},r=${clientNonce}`
  return {
    message: gs2Header + clientFirstMessageBare,
    state: Object.freeze({ gs2Header, clientNonce, clientFirstMessageBare }),
  }
}

/**
 * Parses the server-first-message `r=<nonce>,s=<salt>,i=<iterations>` and builds the
 * client-final-message with ClientProof = ClientKey XOR HMAC(StoredKey, AuthMessage)
 * (RFC 5802 §3; libpq fe-auth-scram.c read_server_first_message/calculate_client_proof).
 *
 * The server nonce must start with our nonce and add at least one character (RFC 5802
 * §5.1: the server appends its own; libpq's prefix check).
 *
 * @throws ScramError `SCRAM_MALFORMED`, `SCRAM_NONCE_MISMATCH`, `SCRAM_UNSUPPORTED` (m=),
 *   `SCRAM_KEYS_MISMATCH` (keys mode, see {@link ScramCredentials}).
 */
export function clientFinal(
  state: ScramClientState,
  serverFirstMessage: string,
  credentials: ScramCredentials,
): ClientFinalResult {
  const message = checkMessage(serverFirstMessage, 'server-first-message')
  if (message[0] === 'm')
    throw new ScramError('SCRAM_UNSUPPORTED', 'server requires an unsupported SCRAM extension')
  const cursor: Cursor = { text: message, pos: 0 }
  const nonce = readAttr(cursor, 'r')
  if (!PRINTABLE.test(nonce)) throw malformed('non-printable characters in SCRAM nonce')
  if (nonce.length <= state.clientNonce.length || !nonce.startsWith(state.clientNonce)) {
    throw new ScramError('SCRAM_NONCE_MISMATCH', 'invalid SCRAM response: nonce mismatch')
  }
  const salt = decodeBase64(readAttr(cursor, 's'))
  if (salt === null || salt.length === 0) throw malformed('invalid salt in server-first-message')
  const iterationsText = readAttr(cursor, 'i')
  const iterations = Number(iterationsText)
  if (!/^[1-9][0-9]{0,9}$/.test(iterationsText) || iterations > MAX_ITERATIONS) {
    throw malformed('invalid iteration count in server-first-message')
  }
  while (cursor.pos < message.length) readAnyAttr(cursor) // RFC 5802 §7: [","extensions]

  let clientKey: Buffer
  let serverKey: Buffer
  if (credentials !== null && typeof credentials === 'object' && 'password' in credentials) {
    const keys = scramKeysFromPassword(credentials.password, salt, iterations)
    clientKey = keys.clientKey
    serverKey = keys.serverKey
  } else if (
    credentials !== null &&
    typeof credentials === 'object' &&
    Buffer.isBuffer(credentials.clientKey) &&
    Buffer.isBuffer(credentials.serverKey) &&
    credentials.clientKey.length === SCRAM_KEY_LENGTH &&
    credentials.serverKey.length === SCRAM_KEY_LENGTH
  ) {
    if (
      (credentials.salt !== undefined && !credentials.salt.equals(salt)) ||
      (credentials.iterations !== undefined && credentials.iterations !== iterations)
    ) {
      throw new ScramError(
        'SCRAM_KEYS_MISMATCH',
        'the server announced a different SCRAM salt or iteration count than the keys were derived from',
      )
    }
    clientKey = credentials.clientKey
    serverKey = credentials.serverKey
  } else {
    throw new ScramError(
      'SCRAM_INVALID_ARGUMENT',
      'SCRAM credentials need a password or 32-byte clientKey and serverKey',
    )
  }

  const withoutProof = `c=${Buffer.from(state.gs2Header, 'latin1').toString('base64')},r=${nonce}`
  const authMessage = `${state.clientFirstMessageBare},${message},${withoutProof}`
  const clientProof = xor(clientKey, hmac(sha256(clientKey), authMessage))
  return {
    message: `${withoutProof},p=${clientProof.toString('base64')}`,
    expectedServerSignature: hmac(serverKey, authMessage),
  }
}

/**
 * Checks the server-final-message (AuthenticationSASLFinal payload). Returns true when
 * `v=` carries the expected ServerSignature (timing-safe), false when it carries another
 * one: the server does not know our verifier (wrong server, or a man in the middle), and
 * the login must be abandoned even though the server may be about to send
 * AuthenticationOk.
 *
 * @throws ScramError `SCRAM_SERVER_ERROR` for `e=<server-error-value>` (RFC 5802 §7),
 *   `SCRAM_MALFORMED` for anything unparsable.
 */
export function verifyServerFinal(serverFinalMessage: string, expectedServerSignature: Buffer): boolean {
  const message = checkMessage(serverFinalMessage, 'server-final-message')
  const cursor: Cursor = { text: message, pos: 0 }
  if (message.startsWith('e=')) {
    const value = readAttr(cursor, 'e')
    throw new ScramError(
      'SCRAM_SERVER_ERROR',
      `error received from server in SCRAM exchange: ${sanitize(value)}`,
    )
  }
  const signature = decodeBase64(readAttr(cursor, 'v'))
  if (signature === null || signature.length !== SCRAM_KEY_LENGTH) {
    throw malformed('invalid server signature in server-final-message')
  }
  while (cursor.pos < message.length) readAnyAttr(cursor) // RFC 5802 §7: [","extensions]
  if (!Buffer.isBuffer(expectedServerSignature) || expectedServerSignature.length !== SCRAM_KEY_LENGTH) {
    throw new ScramError('SCRAM_INVALID_ARGUMENT', 'expected server signature must be 32 bytes')
  }
  return timingSafeEqual(signature, expectedServerSignature)
}
