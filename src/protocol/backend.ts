import { AuthCode, Backend } from './constants.ts'
import { MessageWriter } from './writer.ts'

/**
 * Builders for the backend messages the gateway originates itself (authentication,
 * synthesized replies). Constant frames are built once and shared.
 */

function codeOnly(type: number): Buffer {
  return Buffer.from([type, 0, 0, 0, 4])
}

export const parseComplete = codeOnly(Backend.ParseComplete)
export const closeComplete = codeOnly(Backend.CloseComplete)
export const bindComplete = codeOnly(Backend.BindComplete)
export const noData = codeOnly(Backend.NoData)
/** ParameterDescription of a statement without parameters. */
export const noParameters = Buffer.from([Backend.ParameterDescription, 0, 0, 0, 6, 0, 0])

/** ReadyForQuery frames for each transaction status, keyed by the status byte. */
export const readyForQuery: Record<number, Buffer> = {
  73: Buffer.from([Backend.ReadyForQuery, 0, 0, 0, 5, 0x49]),
  84: Buffer.from([Backend.ReadyForQuery, 0, 0, 0, 5, 0x54]),
  69: Buffer.from([Backend.ReadyForQuery, 0, 0, 0, 5, 0x45]),
}

export const authenticationOk = new MessageWriter(Backend.Authentication, 9).int32(AuthCode.Ok).finish()

export function authenticationMd5(salt: Buffer): Buffer {
  return new MessageWriter(Backend.Authentication, 13).int32(AuthCode.MD5Password).bytes(salt).finish()
}

export function authenticationSasl(mechanisms: readonly string[]): Buffer {
  const writer = new MessageWriter(Backend.Authentication).int32(AuthCode.SASL)
  for (const mechanism of mechanisms) writer.cstring(mechanism)
  return writer.int8(0).finish()
}

export function authenticationSaslContinue(data: string): Buffer {
  return new MessageWriter(Backend.Authentication)
    .int32(AuthCode.SASLContinue)
    .bytes(Buffer.from(data))
    .finish()
}

export function authenticationSaslFinal(data: string): Buffer {
  return new MessageWriter(Backend.Authentication).int32(AuthCode.SASLFinal).bytes(Buffer.from(data)).finish()
}

export function parameterStatus(name: string, value: string): Buffer {
  return new MessageWriter(Backend.ParameterStatus).cstring(name).cstring(value).finish()
}

export function backendKeyData(processId: number, secretKey: number): Buffer {
  return new MessageWriter(Backend.BackendKeyData, 13).int32(processId).int32(secretKey).finish()
}

export function commandComplete(tag: string): Buffer {
  return new MessageWriter(Backend.CommandComplete).cstring(tag).finish()
}
