import { quoteLiteral } from './simple-query.ts'

/** A canonical key for a settings map: equal maps give equal keys. */
export function settingsKey(settings: ReadonlyMap<string, string>): string {
  if (settings.size === 0) return ''
  return [...settings.entries()]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([name, value]) => `${name}=${value}`)
    .join('\0')
}

/**
 * SQL that turns a backend's applied settings into `wanted`. set_config parses a value
 * exactly as a startup `-c name=value` does (lists such as search_path included), which
 * `SET name TO 'value'` would not.
 */
export function settingsDiffSql(
  applied: ReadonlyMap<string, string>,
  wanted: ReadonlyMap<string, string>,
): string {
  const statements: string[] = []
  // RESETs first, then sets with session_authorization ahead of the rest: changing the
  // session authorization resets role, so role is set (again) after it.
  for (const name of applied.keys()) {
    if (!wanted.has(name)) statements.push(`RESET "${name.replaceAll('"', '""')}"`)
  }
  const authorizationChanges = applied.get('session_authorization') !== wanted.get('session_authorization')
  const ordered = [...wanted].sort(
    ([a], [b]) => Number(b === 'session_authorization') - Number(a === 'session_authorization'),
  )
  const sets: string[] = []
  for (const [name, value] of ordered) {
    if (applied.get(name) !== value || (authorizationChanges && name === 'role')) {
      sets.push(`pg_catalog.set_config(${quoteLiteral(name)}, ${quoteLiteral(value)}, false)`)
    }
  }
  if (sets.length > 0) statements.push(`SELECT ${sets.join(', ')}`)
  return statements.join('; ')
}
