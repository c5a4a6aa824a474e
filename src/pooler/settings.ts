import { quoteLiteral } from './simple-query.ts'

/** Adds the custom (dotted) names of `settings` to `names`. */
export function noteCustomNames(names: Set<string>, settings: ReadonlyMap<string, string>): void {
  for (const name of settings.keys()) if (name.includes('.')) names.add(name)
}

/** Whether a backend that had `backendNames` set would show a session names it never used. */
export function hasForeignCustomNames(
  backendNames: ReadonlySet<string>,
  sessionNames: ReadonlySet<string>,
): boolean {
  for (const name of backendNames) if (!sessionNames.has(name)) return true
  return false
}

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
  // Identity goes back to the login's first (a RESET of a superuser-only setting fails
  // under a non-superuser authorization) and is set last (setting it resets role, and
  // what comes after it runs with its privileges): role follows session_authorization.
  const identityFirst = (name: string) => (name === 'role' ? 0 : name === 'session_authorization' ? 1 : 2)
  for (const name of [...applied.keys()].sort((a, b) => identityFirst(a) - identityFirst(b))) {
    if (!wanted.has(name)) statements.push(`RESET "${name.replaceAll('"', '""')}"`)
  }
  const authorizationChanges = applied.get('session_authorization') !== wanted.get('session_authorization')
  const identityLast = (name: string) => (name === 'session_authorization' ? 1 : name === 'role' ? 2 : 0)
  const ordered = [...wanted].sort(([a], [b]) => identityLast(a) - identityLast(b))
  const sets: string[] = []
  for (const [name, value] of ordered) {
    if (applied.get(name) !== value || (authorizationChanges && name === 'role')) {
      sets.push(`pg_catalog.set_config(${quoteLiteral(name)}, ${quoteLiteral(value)}, false)`)
    }
  }
  if (sets.length > 0) statements.push(`SELECT ${sets.join(', ')}`)
  return statements.join('; ')
}
