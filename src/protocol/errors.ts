import { Backend } from './constants.ts'

/** Severity words PostgreSQL puts in the S and V fields. */
export type Severity = 'ERROR' | 'FATAL' | 'PANIC' | 'WARNING' | 'NOTICE' | 'DEBUG' | 'INFO' | 'LOG'

/**
 * An error a client will see as an ErrorResponse. Everything a client can cause ends in
 * one of these (ARCHITECTURE.md principle 5); `code` is the SQLSTATE.
 */
export class PgError extends Error {
  readonly code: string
  readonly severity: Severity
  readonly detail: string | undefined
  readonly hint: string | undefined

  constructor(
    code: string,
    message: string,
    options: { severity?: Severity; detail?: string; hint?: string; cause?: unknown } = {},
  ) {
    super(message, { cause: options.cause })
    this.name = 'PgError'
    this.code = code
    this.severity = options.severity ?? 'ERROR'
    this.detail = options.detail
    this.hint = options.hint
  }

  /** The error as a complete ErrorResponse frame. */
  toFrame(): Buffer {
    return errorResponse(this.severity, this.code, this.message, this.detail, this.hint)
  }
}

/**
 * Builds an ErrorResponse ('E') or, with `type`, a NoticeResponse ('N'). Fields: S and V
 * (severity, localized and not), C (SQLSTATE), M, optional D and H.
 */
export function errorResponse(
  severity: Severity,
  code: string,
  message: string,
  detail?: string,
  hint?: string,
  type: number = Backend.ErrorResponse,
): Buffer {
  const fields: [number, string][] = [
    [0x53, severity], // S
    [0x56, severity], // V
    [0x43, code], // C
    [0x4d, message], // M
  ]
  if (detail !== undefined) fields.push([0x44, detail]) // D
  if (hint !== undefined) fields.push([0x48, hint]) // H
  let length = 4 + 1
  for (const [, value] of fields) length += 1 + Buffer.byteLength(value) + 1
  const frame = Buffer.allocUnsafe(1 + length)
  frame[0] = type
  frame.writeInt32BE(length, 1)
  let offset = 5
  for (const [field, value] of fields) {
    frame[offset++] = field
    offset += frame.write(value, offset)
    frame[offset++] = 0
  }
  frame[offset++] = 0
  return frame
}

/** Fields of an ErrorResponse or NoticeResponse body, keyed by their one-letter code. */
export interface ErrorFields {
  severity: string
  code: string
  message: string
  detail?: string
  hint?: string
}

/** Decodes the body (after the 5-byte header) of an ErrorResponse or NoticeResponse. */
export function parseErrorFields(body: Buffer): ErrorFields {
  const fields: ErrorFields = { severity: '', code: '', message: '' }
  let offset = 0
  while (offset < body.length && body[offset] !== 0) {
    const field = body[offset]
    const end = body.indexOf(0, offset + 1)
    if (end < 0) break
    const value = body.toString('utf8', offset + 1, end)
    if (field === 0x56 || (field === 0x53 && fields.severity === '')) fields.severity = value
    else if (field === 0x43) fields.code = value
    else if (field === 0x4d) fields.message = value
    else if (field === 0x44) fields.detail = value
    else if (field === 0x48) fields.hint = value
    offset = end + 1
  }
  return fields
}

/**
 * A copy of an ErrorResponse or NoticeResponse frame with each field's value passed
 * through `rewrite(field code, value)`; null drops the field.
 */
export function rewriteErrorFields(
  frame: Buffer,
  rewrite: (field: number, value: string) => string | null,
): Buffer {
  const parts: Buffer[] = [frame.subarray(0, 5)]
  let offset = 5
  while (offset < frame.length && frame[offset] !== 0) {
    const field = frame[offset]
    const end = frame.indexOf(0, offset + 1)
    if (end < 0) return frame
    const value = frame.toString('utf8', offset + 1, end)
    const rewritten = rewrite(field, value)
    if (rewritten !== null)
      parts.push(
        rewritten === value
          ? frame.subarray(offset, end + 1)
          : Buffer.from(`${String.fromCharCode(field)}${rewritten}\0`),
      )
    offset = end + 1
  }
  parts.push(Buffer.from([0]))
  const out = Buffer.concat(parts)
  out.writeInt32BE(out.length - 1, 1)
  return out
}
