/**
 * Message type bytes and protocol limits of the PostgreSQL v3 wire protocol.
 * https://www.postgresql.org/docs/15/protocol-message-formats.html
 *
 * Plain numeric constants (not an enum): they compile to nothing under type stripping
 * and the hot path switches on the type byte directly.
 */

/** Messages a client (frontend) sends. */
export const Frontend = {
  Bind: 0x42, // B
  Close: 0x43, // C
  CopyData: 0x64, // d
  CopyDone: 0x63, // c
  CopyFail: 0x66, // f
  Describe: 0x44, // D
  Execute: 0x45, // E
  Flush: 0x48, // H
  FunctionCall: 0x46, // F
  Parse: 0x50, // P
  PasswordMessage: 0x70, // p (also SASLInitialResponse, SASLResponse, GSSResponse)
  Query: 0x51, // Q
  Sync: 0x53, // S
  Terminate: 0x58, // X
} as const

/** Messages a server (backend) sends. */
export const Backend = {
  Authentication: 0x52, // R
  BackendKeyData: 0x4b, // K
  BindComplete: 0x32, // 2
  CloseComplete: 0x33, // 3
  CommandComplete: 0x43, // C
  CopyBothResponse: 0x57, // W
  CopyData: 0x64, // d
  CopyDone: 0x63, // c
  CopyInResponse: 0x47, // G
  CopyOutResponse: 0x48, // H
  DataRow: 0x44, // D
  EmptyQueryResponse: 0x49, // I
  ErrorResponse: 0x45, // E
  FunctionCallResponse: 0x56, // V
  NegotiateProtocolVersion: 0x76, // v
  NoData: 0x6e, // n
  NoticeResponse: 0x4e, // N
  NotificationResponse: 0x41, // A
  ParameterDescription: 0x74, // t
  ParameterStatus: 0x53, // S
  ParseComplete: 0x31, // 1
  PortalSuspended: 0x73, // s
  ReadyForQuery: 0x5a, // Z
  RowDescription: 0x54, // T
} as const

/** Authentication request codes carried in an 'R' message. */
export const AuthCode = {
  Ok: 0,
  CleartextPassword: 3,
  MD5Password: 5,
  SASL: 10,
  SASLContinue: 11,
  SASLFinal: 12,
} as const

/** Codes in the int32 that starts an untyped startup-phase packet. */
export const StartupCode = {
  ProtocolV3: 196608, // 3.0
  CancelRequest: 80877102,
  SSLRequest: 80877103,
  GSSENCRequest: 80877104,
} as const

/** Transaction status byte of ReadyForQuery. */
export const TxStatus = {
  Idle: 0x49, // I
  InTransaction: 0x54, // T
  Failed: 0x45, // E
} as const

/** Type byte plus int32 length. */
export const HEADER_LENGTH = 5

/**
 * Largest message body we accept from a client. PostgreSQL allows up to 1 GB for
 * most messages (PQ_LARGE_MESSAGE_LIMIT); a longer length is garbage or an attack.
 */
export const MAX_MESSAGE_LENGTH = 0x3fffffff

/** PostgreSQL's MAX_STARTUP_PACKET_LENGTH (src/include/libpq/pqcomm.h). */
export const MAX_STARTUP_PACKET_LENGTH = 10000

/**
 * Length limits of the messages a client may send once the session runs: small
 * control messages are capped at 10000 bytes as PostgreSQL does (PQ_SMALL_MESSAGE_LIMIT
 * in SocketBackend); the rest at the large-message limit. Other types are refused.
 */
export const FRONTEND_TYPE_LIMITS: ReadonlyMap<number, number> = new Map([
  [Frontend.Query, MAX_MESSAGE_LENGTH],
  [Frontend.Parse, MAX_MESSAGE_LENGTH],
  [Frontend.Bind, MAX_MESSAGE_LENGTH],
  [Frontend.FunctionCall, MAX_MESSAGE_LENGTH],
  [Frontend.CopyData, MAX_MESSAGE_LENGTH],
  [Frontend.Describe, 10000],
  [Frontend.Execute, 10000],
  [Frontend.Close, 10000],
  [Frontend.Sync, 10000],
  [Frontend.Flush, 10000],
  [Frontend.Terminate, 10000],
  [Frontend.CopyDone, 10000],
  [Frontend.CopyFail, 10000],
])
