import { quoteLiteral } from '../pooler/index.ts'
import { commandComplete, type ListenStatement } from '../protocol/index.ts'

/**
 * What the session learns from command tags, and the query that asks Postgres for the
 * truth afterwards: cheap triggers first, Postgres decides (ARCHITECTURE.md, "Session
 * state without modes").
 */

/** Name of the probe row that counts pinning state (no setting has an empty name). */
export const PIN_ROW = ''

/**
 * The query that asks Postgres what a session of login role `user` holds: the settings
 * it set (names in lower case, as startup settings are kept, with current values; role and session
 * authorization are hidden from pg_settings, so they are asked for by name when they
 * differ from the login's), and one row counting what pins it to its backend: session
 * advisory locks, WITH HOLD cursors, SQL prepared statements under the client's own names
 * (canonical ones, tps_…, move with the session), relations in its temporary
 * schema, channels it listens on.
 */
export function sessionProbe(
  user: string,
  customSettings: Iterable<string> = [],
  calledFunctions: Iterable<string> = [],
): string {
  const login = quoteLiteral(user)
  const custom = [...customSettings].map(quoteLiteral)
  const functions = [...calledFunctions].map(quoteLiteral)
  // Placeholder settings (a dotted name no loaded module defines) are in no view: they
  // are asked for by name, names the session used and dotted words in the source of
  // functions it called.
  const candidates = [
    custom.length > 0 ? `SELECT pg_catalog.unnest(ARRAY[${custom.join(', ')}]::text[])` : null,
    functions.length > 0
      ? `SELECT pg_catalog.lower(m[1]) FROM pg_catalog.pg_proc, pg_catalog.regexp_matches(prosrc, '([A-Za-z_][A-Za-z_0-9$]*[.][A-Za-z_][A-Za-z_0-9$]*)', 'g') m WHERE proname IN (${functions.join(', ')})`
      : null,
  ].filter((query) => query !== null)
  const placeholders =
    candidates.length === 0
      ? ''
      : `
UNION ALL SELECT n, pg_catalog.current_setting(n, true) FROM (${candidates.join(' UNION ')}) c(n)
  WHERE pg_catalog.current_setting(n, true) IS NOT NULL AND n NOT IN (SELECT name FROM pg_catalog.pg_settings)`
  return `SELECT pg_catalog.lower(name), pg_catalog.current_setting(name) FROM pg_catalog.pg_settings WHERE source = 'session'${placeholders}
UNION ALL SELECT 'session_authorization', session_user WHERE session_user <> ${login}
UNION ALL SELECT 'role', pg_catalog.current_setting('role') WHERE pg_catalog.current_setting('role') <> 'none'
UNION ALL SELECT '', ((SELECT count(*) FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND pid = pg_catalog.pg_backend_pid())
  + (SELECT count(*) FROM pg_catalog.pg_cursors WHERE is_holdable)
  + (SELECT count(*) FROM pg_catalog.pg_prepared_statements WHERE from_sql AND name NOT LIKE 'tps\\_%')
  + (SELECT count(*) FROM pg_catalog.pg_class WHERE relnamespace = pg_catalog.pg_my_temp_schema())
  + (SELECT count(*) FROM pg_catalog.pg_listening_channels()))::text`
}

/** CommandComplete tags of commands that may create or drop backend-bound state. */
const PIN_TAGS = [
  'CREATE',
  'DROP',
  'DECLARE',
  'CLOSE',
  'PREPARE',
  'DEALLOCATE',
  'DISCARD',
  'LISTEN',
  'UNLISTEN',
]

export function mayChangePins(frame: Buffer): boolean {
  const first = frame[5]
  // Fast exit for the common tags (SELECT, INSERT, UPDATE, DELETE, BEGIN, COMMIT …).
  if (first !== 0x43 && first !== 0x44 && first !== 0x50 && first !== 0x4c && first !== 0x55) return false
  const tag = frame.toString('latin1', 5, frame.length - 1)
  return PIN_TAGS.some((word) => tag === word || tag.startsWith(`${word} `))
}

/**
 * CommandComplete tags after which settings may differ: SET, RESET, DISCARD …, and
 * LOAD (a module that claims a prefix removes the placeholders under it).
 */
export function changesSettings(frame: Buffer): boolean {
  const first = frame[5]
  if (first === 0x53) return frame[6] === 0x45 && frame[7] === 0x54 && frame[8] === 0 // SET
  if (first === 0x52) return frame.toString('latin1', 5, 11) === 'RESET\0'
  if (first === 0x4c) return frame.toString('latin1', 5, 10) === 'LOAD\0'
  return first === 0x44 && frame.toString('latin1', 5, 12) === 'DISCARD'
}

const LISTEN_TAG = commandComplete('LISTEN')
const UNLISTEN_TAG = commandComplete('UNLISTEN')

export function listenTag(statement: ListenStatement): Buffer {
  return statement.listen ? LISTEN_TAG : UNLISTEN_TAG
}

/** CommandComplete of DISCARD SEQUENCES or DISCARD ALL: currval and lastval are gone. */
export function dropsSequenceState(frame: Buffer): boolean {
  const tag = frame.toString('latin1', 5, frame.length - 1)
  return tag === 'DISCARD ALL' || tag === 'DISCARD SEQUENCES'
}

/** CommandComplete of DISCARD ALL or DEALLOCATE ALL. */
export function dropsAllStatements(frame: Buffer): boolean {
  const tag = frame.toString('latin1', 5, frame.length - 1)
  return tag === 'DISCARD ALL' || tag === 'DEALLOCATE ALL'
}
