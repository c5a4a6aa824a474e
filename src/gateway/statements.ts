import { randomBytes } from 'node:crypto'
import {
  customSettingNames,
  Frontend,
  isPipelineSafe,
  mayPin,
  mentionsSequenceFunction,
  mentionsSetConfig,
  userCodeCalls,
} from '../protocol/index.ts'

/**
 * A prepared statement as backends know it: one canonical name per distinct
 * (query text, parameter types), shared by every session, so that a backend prepares
 * each statement at most once however many sessions use it under their own names.
 */
export interface CanonicalStatement {
  /** The name backends know it by. */
  readonly name: string
  /**
   * A complete Parse frame under that name, to prepare it on a backend that lacks it;
   * null for a statement made by SQL PREPARE (see prepareSql).
   */
  readonly parse: Buffer | null
  /** For a statement made by SQL PREPARE: `PREPARE <name> <body>`, which makes it on a backend. */
  readonly prepareSql: string | null
  /** Executing it leaves no session state and ends idle (see isPipelineSafe). */
  readonly pipelineSafe: boolean
  /** Its text mentions set_config(): running it may change settings. */
  readonly setsConfig: boolean
  /** Its text may create state that pins a session to its backend (see mayPin). */
  readonly mayPin: boolean
  /** The user code its text calls, which may change settings (see userCodeCalls). */
  readonly userCode: readonly string[]
  /** Its text calls a sequence function by name (see mentionsSequenceFunction). */
  readonly usesSequences: boolean
  /** The custom settings its text names (see customSettingNames). */
  readonly customSettings: readonly string[]
  /**
   * A backend of this pool prepared it successfully once: the text parses, so a later
   * Parse of it can be acknowledged without a backend (it is prepared where needed).
   */
  validated: boolean
}

/**
 * Maps statement bodies (query text and parameter types, the Parse frame after its
 * name) to canonical statements, for the backends of one (database, user) pool. The key is the raw body, so equal text with other
 * types is another statement, as it is to Postgres.
 */
export class StatementRegistry {
  private readonly byBody = new Map<string, CanonicalStatement>()
  private nextId = 1
  /** Unique to this registry (see StatementRegistries). */
  private readonly namespace: string

  constructor(namespace: string) {
    this.namespace = namespace
  }

  /** The canonical statement for a Parse body (frame bytes after the statement name). */
  intern(body: Buffer): CanonicalStatement {
    const key = body.toString('latin1')
    let statement = this.byBody.get(key)
    if (statement === undefined) {
      const name = `tp_${this.namespace}_${(this.nextId++).toString(36)}`
      const nameBytes = Buffer.byteLength(name)
      const parse = Buffer.allocUnsafe(5 + nameBytes + 1 + body.length)
      parse[0] = Frontend.Parse
      parse.writeInt32BE(parse.length - 1, 1)
      parse.write(name, 5, 'latin1')
      parse[5 + nameBytes] = 0
      body.copy(parse, 6 + nameBytes)
      const textEnd = body.indexOf(0)
      statement = {
        name,
        parse,
        prepareSql: null,
        pipelineSafe: isPipelineSafe(body, 0, textEnd),
        setsConfig: mentionsSetConfig(body, 0, textEnd),
        userCode: userCodeCalls(body, 0, textEnd),
        mayPin: mayPin(body, 0, textEnd),
        usesSequences: mentionsSequenceFunction(body, 0, textEnd),
        customSettings: customSettingNames(body, 0, textEnd),
        validated: false,
      }
      this.byBody.set(key, statement)
    }
    return statement
  }

  /** The canonical statement of an SQL PREPARE body (parameter types, AS, statement). */
  internSql(body: string): CanonicalStatement {
    const key = `S${body}`
    let statement = this.byBody.get(key)
    if (statement === undefined) {
      const name = `tps_${this.namespace}_${(this.nextId++).toString(36)}`
      const text = Buffer.from(body)
      statement = {
        name,
        parse: null,
        prepareSql: `PREPARE ${name} ${body}`,
        pipelineSafe: false,
        setsConfig: mentionsSetConfig(text),
        userCode: userCodeCalls(text),
        mayPin: mayPin(text),
        usesSequences: mentionsSequenceFunction(text),
        customSettings: customSettingNames(text),
        validated: false,
      }
      this.byBody.set(key, statement)
    }
    return statement
  }
}

/** Reads the NUL-terminated string at `offset`; returns it and the offset after its NUL. */
export function readCString(frame: Buffer, offset: number): [string, number] {
  const end = frame.indexOf(0, offset)
  if (end < 0) throw new RangeError('unterminated string in message')
  return [frame.toString('utf8', offset, end), end + 1]
}

/** A copy of `frame` with the C string in [nameStart, nameEnd) replaced by `name`. */
export function replaceCString(frame: Buffer, nameStart: number, nameEnd: number, name: string): Buffer {
  const nameBytes = Buffer.byteLength(name)
  const out = Buffer.allocUnsafe(frame.length - (nameEnd - nameStart) + nameBytes)
  frame.copy(out, 0, 0, nameStart)
  out.write(name, nameStart, 'latin1')
  frame.copy(out, nameStart + nameBytes, nameEnd)
  out.writeInt32BE(out.length - 1, 1)
  return out
}

/**
 * One registry per (database, user): backends, and so canonical names, are per pool.
 * A pooler's backends may serve several gateways (over the lease link), each with its
 * own registries: every set of registries names its statements in a namespace of its
 * own, so that two gateways never mean different statements by one name.
 */
export class StatementRegistries {
  private readonly registries = new Map<string, StatementRegistry>()
  private readonly namespace = randomBytes(6).readUIntBE(0, 6).toString(36)

  for(database: string, user: string): StatementRegistry {
    const key = `${database}\0${user}`
    let registry = this.registries.get(key)
    if (registry === undefined) {
      registry = new StatementRegistry(this.namespace)
      this.registries.set(key, registry)
    }
    return registry
  }
}
