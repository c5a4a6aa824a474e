/**
 * postgresql.conf settings and pg_hba.conf lines: pure builders that render text,
 * plus writers that put it into a data directory.
 *
 * @module
 */
import { appendFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { ownByServiceUser } from './exec.ts'

/** A postgresql.conf value. Numbers and booleans are written bare, strings quoted. */
export type ConfigValue = string | number | boolean

/** Authentication methods pgctl knows how to configure (pg_hba.conf `method`, initdb `--auth-*`). */
export type AuthMethod = 'trust' | 'reject' | 'peer' | 'ident' | 'password' | 'md5' | 'scram-sha-256' | 'cert'

/** One pg_hba.conf record. See https://www.postgresql.org/docs/15/auth-pg-hba-conf.html */
export interface HbaEntry {
  type: 'local' | 'host' | 'hostssl' | 'hostnossl'
  /** `all`, `replication`, a database name or a comma list. */
  database: string
  /** `all`, a role name, `+group` or a comma list. */
  user: string
  /** CIDR address; required for every type except `local`. */
  address?: string
  method: AuthMethod
  /** Trailing `name=value` auth options. */
  options?: Record<string, string>
}

const SETTING_NAME = /^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$/
/** Characters pg_hba.conf treats as separators or comments inside a token. */
const HBA_UNSAFE = /[\s#"]/

/**
 * Render one postgresql.conf line. Strings are single-quoted with `'` doubled, as the
 * config file parser expects.
 *
 * @throws Error on a name Postgres would reject, or a line break in a value
 */
export function formatSetting(name: string, value: ConfigValue): string {
  if (!SETTING_NAME.test(name))
    throw new Error(`invalid postgresql.conf setting name: ${JSON.stringify(name)}`)
  if (typeof value === 'number' || typeof value === 'boolean') return `${name} = ${value}`
  // The conf parser is line-based; a newline would end the value early.
  if (/[\r\n]/.test(value)) throw new Error(`postgresql.conf value for ${name} contains a line break`)
  return `${name} = '${value.replaceAll('\\', '\\\\').replaceAll("'", "''")}'`
}

/** Render a block of settings, one per line, ending in a newline. */
export function renderSettings(settings: Readonly<Record<string, ConfigValue>>): string {
  return Object.entries(settings)
    .map(([name, value]) => `${formatSetting(name, value)}\n`)
    .join('')
}

function hbaToken(token: string, what: string): string {
  if (token === '' || HBA_UNSAFE.test(token))
    throw new Error(`pg_hba.conf ${what} cannot be ${JSON.stringify(token)}`)
  return token
}

/**
 * Render one pg_hba.conf line.
 *
 * @throws Error when an address is missing/extra for the type, or a token would need quoting
 */
export function hbaLine(entry: HbaEntry): string {
  const fields = [entry.type, hbaToken(entry.database, 'database'), hbaToken(entry.user, 'user')]
  if (entry.type === 'local') {
    if (entry.address !== undefined) throw new Error('pg_hba.conf "local" lines take no address')
  } else {
    if (entry.address === undefined) throw new Error(`pg_hba.conf "${entry.type}" lines need an address`)
    fields.push(hbaToken(entry.address, 'address'))
  }
  fields.push(entry.method)
  for (const [name, value] of Object.entries(entry.options ?? {})) {
    fields.push(`${hbaToken(name, 'option name')}=${hbaToken(value, 'option value')}`)
  }
  return fields.join('\t')
}

/** Render pg_hba.conf text, one entry per line, ending in a newline. First match wins in Postgres. */
export function renderHba(entries: readonly HbaEntry[]): string {
  return entries.map((entry) => `${hbaLine(entry)}\n`).join('')
}

/**
 * Append settings to `<dataDir>/postgresql.conf`. Later lines win in Postgres, so this
 * overrides initdb's defaults without editing them.
 */
export async function appendSettings(
  dataDir: string,
  settings: Readonly<Record<string, ConfigValue>>,
): Promise<void> {
  const file = join(dataDir, 'postgresql.conf')
  await appendFile(file, `\n# added by tidepool\n${renderSettings(settings)}`)
  await ownByServiceUser(file)
}

/**
 * Write `<dataDir>/pg_hba.conf`: replace it entirely (default), or append after the
 * existing lines, where they only apply to connections nothing above matched.
 */
export async function writeHba(
  dataDir: string,
  entries: readonly HbaEntry[],
  opts: { append?: boolean } = {},
): Promise<void> {
  const file = join(dataDir, 'pg_hba.conf')
  const text = `# written by tidepool\n${renderHba(entries)}`
  if (opts.append) await appendFile(file, `\n${text}`)
  else await writeFile(file, text, { mode: 0o600 })
  await ownByServiceUser(file)
}
