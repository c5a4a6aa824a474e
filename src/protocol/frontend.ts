import { Frontend, StartupCode } from './constants.ts'
import { MessageWriter, untypedPacket } from './writer.ts'

/** Builders for the frontend messages the pooler originates when it acts as a client. */

export const sync = Buffer.from([Frontend.Sync, 0, 0, 0, 4])
export const terminate = Buffer.from([Frontend.Terminate, 0, 0, 0, 4])

export function startupMessage(parameters: Record<string, string>): Buffer {
  const writer = new MessageWriter(0, 128).int32(StartupCode.ProtocolV3)
  for (const [name, value] of Object.entries(parameters)) writer.cstring(name).cstring(value)
  return untypedPacket(writer.int8(0))
}

export function cancelRequest(processId: number, secretKey: number): Buffer {
  return untypedPacket(
    new MessageWriter(0, 17).int32(StartupCode.CancelRequest).int32(processId).int32(secretKey),
  )
}

export function query(sql: string): Buffer {
  return new MessageWriter(Frontend.Query, sql.length + 8).cstring(sql).finish()
}

export function passwordMessage(password: string): Buffer {
  return new MessageWriter(Frontend.PasswordMessage).cstring(password).finish()
}

export function saslInitialResponse(mechanism: string, data: string): Buffer {
  const payload = Buffer.from(data)
  return new MessageWriter(Frontend.PasswordMessage)
    .cstring(mechanism)
    .int32(payload.length)
    .bytes(payload)
    .finish()
}

export function saslResponse(data: string): Buffer {
  return new MessageWriter(Frontend.PasswordMessage).bytes(Buffer.from(data)).finish()
}

/** Parse with the given statement name, SQL text and parameter type OIDs. */
export function parse(name: string, sql: string, parameterTypes: readonly number[]): Buffer {
  const writer = new MessageWriter(Frontend.Parse, sql.length + name.length + 16).cstring(name).cstring(sql)
  writer.int16(parameterTypes.length)
  for (const oid of parameterTypes) writer.int32(oid)
  return writer.finish()
}

/** Bind of a statement without parameters to a portal, results in text. */
export function bind(portal: string, statement: string): Buffer {
  return new MessageWriter(Frontend.Bind, portal.length + statement.length + 16)
    .cstring(portal)
    .cstring(statement)
    .int16(0)
    .int16(0)
    .int16(0)
    .finish()
}

/** Execute of a portal, all rows. */
export function execute(portal: string): Buffer {
  return new MessageWriter(Frontend.Execute, portal.length + 10).cstring(portal).int32(0).finish()
}

/** Close of a statement ('S') or portal ('P'). */
export function close(kind: 'S' | 'P', name: string): Buffer {
  return new MessageWriter(Frontend.Close, name.length + 8).int8(kind.charCodeAt(0)).cstring(name).finish()
}
