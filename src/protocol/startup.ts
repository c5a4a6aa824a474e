import { MAX_STARTUP_PACKET_LENGTH, StartupCode } from './constants.ts'

/** A packet of the startup phase, which has no type byte. */
export type StartupPacket =
  | { kind: 'ssl' }
  | { kind: 'gssenc' }
  | { kind: 'cancel'; processId: number; secretKey: number }
  | { kind: 'startup'; parameters: Map<string, string>; minorVersion: number }

/** Why a startup packet was refused; `code` is the SQLSTATE PostgreSQL would use. */
export class StartupPacketError extends Error {
  readonly code: string
  constructor(code: string, message: string) {
    super(message)
    this.code = code
  }
}

/**
 * Returns the total length of the startup packet at the start of `data`, or 0 when
 * fewer than 4 bytes have arrived. Throws on a length PostgreSQL would refuse
 * (ProcessStartupPacket in src/backend/postmaster/postmaster.c).
 */
export function startupPacketLength(data: Buffer): number {
  if (data.length < 4) return 0
  const length = data.readInt32BE(0)
  if (length < 8 || length > MAX_STARTUP_PACKET_LENGTH) {
    throw new StartupPacketError('08P01', 'invalid length of startup packet')
  }
  return length
}

/** Decodes one complete startup packet (length prefix included). */
export function parseStartupPacket(packet: Buffer): StartupPacket {
  const code = packet.readInt32BE(4)
  switch (code) {
    case StartupCode.SSLRequest:
      return { kind: 'ssl' }
    case StartupCode.GSSENCRequest:
      return { kind: 'gssenc' }
    case StartupCode.CancelRequest:
      if (packet.length !== 16) throw new StartupPacketError('08P01', 'invalid length of cancel request')
      return { kind: 'cancel', processId: packet.readInt32BE(8), secretKey: packet.readInt32BE(12) }
  }
  const major = code >>> 16
  const minor = code & 0xffff
  if (major !== 3) {
    throw new StartupPacketError(
      '0A000',
      `unsupported frontend protocol ${major}.${minor}: server supports 3.0 to 3.0`,
    )
  }
  const parameters = new Map<string, string>()
  let offset = 8
  for (;;) {
    if (offset >= packet.length)
      throw new StartupPacketError('08P01', 'invalid startup packet layout: expected terminator as last byte')
    if (packet[offset] === 0) break
    const nameEnd = packet.indexOf(0, offset)
    const valueEnd = nameEnd < 0 ? -1 : packet.indexOf(0, nameEnd + 1)
    if (valueEnd < 0)
      throw new StartupPacketError('08P01', 'invalid startup packet layout: expected terminator as last byte')
    parameters.set(packet.toString('utf8', offset, nameEnd), packet.toString('utf8', nameEnd + 1, valueEnd))
    offset = valueEnd + 1
  }
  if (offset !== packet.length - 1) {
    throw new StartupPacketError('08P01', 'invalid startup packet layout: expected terminator as last byte')
  }
  if (!parameters.has('user')) {
    throw new StartupPacketError('28000', 'no PostgreSQL user name specified in startup packet')
  }
  return { kind: 'startup', parameters, minorVersion: minor }
}

/**
 * Splits the `options` startup parameter into `-c name=value` / `--name=value` settings,
 * honouring backslash escapes as pg_split_opts does (src/backend/utils/init/postinit.c).
 */
export function parseOptionsParameter(options: string): Map<string, string> {
  const words: string[] = []
  let current = ''
  let inWord = false
  for (let i = 0; i < options.length; i++) {
    const ch = options[i]
    if (ch === '\\') {
      // An escaped character joins the word; a trailing backslash is dropped.
      if (i + 1 < options.length) current += options[++i]
      inWord = true
    } else if (ch === ' ' || ch === '\t' || ch === '\n' || ch === '\r') {
      if (inWord) words.push(current)
      current = ''
      inWord = false
    } else {
      current += ch
      inWord = true
    }
  }
  if (inWord) words.push(current)
  const settings = new Map<string, string>()
  for (let i = 0; i < words.length; i++) {
    let word = words[i]
    if (word === '-c' && i + 1 < words.length) word = words[++i]
    else if (word.startsWith('-c')) word = word.slice(2)
    else if (word.startsWith('--')) word = word.slice(2)
    else throw new StartupPacketError('42601', `invalid command-line argument for server process: ${word}`)
    const eq = word.indexOf('=')
    if (eq <= 0)
      throw new StartupPacketError('42601', `invalid command-line argument for server process: ${word}`)
    settings.set(word.slice(0, eq).replaceAll('-', '_'), word.slice(eq + 1))
  }
  return settings
}
