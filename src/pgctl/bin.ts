/**
 * Finds the Postgres programs: `PG_BIN`, else the highest version under
 * `/usr/lib/postgresql/<major>/bin` (Debian/Ubuntu keep them off PATH), else PATH.
 *
 * @module
 */
import { constants as fsConstants } from 'node:fs'
import { access, readdir } from 'node:fs/promises'
import { delimiter, join } from 'node:path'
import { PgctlError } from './exec.ts'

/** Programs pgctl runs. */
export type PgProgram =
  | 'postgres'
  | 'initdb'
  | 'pg_ctl'
  | 'pg_isready'
  | 'psql'
  | 'pg_basebackup'
  | 'pg_rewind'
  | 'pg_controldata'

/** Where Debian-style packages install each major version. */
const DEBIAN_ROOT = '/usr/lib/postgresql'

const INSTALL_HINT =
  'Install PostgreSQL (apt-get install postgresql-15) or set PG_BIN to the directory holding its binaries.'

async function hasPostgres(dir: string): Promise<boolean> {
  try {
    await access(join(dir, 'postgres'), fsConstants.X_OK)
    return true
  } catch {
    return false
  }
}

async function debianBinDirs(): Promise<string[]> {
  let entries: string[]
  try {
    entries = await readdir(DEBIAN_ROOT)
  } catch {
    return []
  }
  // Numeric order, so 9.6 < 10 < 15 (a string sort would put "9.6" last).
  return entries
    .filter((name) => /^\d+(\.\d+)?$/.test(name))
    .sort((a, b) => Number(b) - Number(a))
    .map((version) => join(DEBIAN_ROOT, version, 'bin'))
}

/**
 * The directory holding the Postgres binaries.
 *
 * @param env - where to read `PG_BIN` and `PATH` from (default `process.env`)
 * @throws PgctlError `PGCTL_BINARY_NOT_FOUND` naming every place looked at
 */
export async function findPgBinDir(env: NodeJS.ProcessEnv = process.env): Promise<string> {
  if (env.PG_BIN) {
    if (await hasPostgres(env.PG_BIN)) return env.PG_BIN
    // An explicit choice that is wrong must not silently fall back to another version.
    throw new PgctlError(
      'PGCTL_BINARY_NOT_FOUND',
      `PG_BIN=${env.PG_BIN} does not contain an executable "postgres". ${INSTALL_HINT}`,
    )
  }
  for (const dir of await debianBinDirs()) {
    if (await hasPostgres(dir)) return dir
  }
  const pathDirs = (env.PATH ?? '').split(delimiter).filter(Boolean)
  for (const dir of pathDirs) {
    if (await hasPostgres(dir)) return dir
  }
  throw new PgctlError(
    'PGCTL_BINARY_NOT_FOUND',
    `No PostgreSQL binaries found (PG_BIN unset, nothing under ${DEBIAN_ROOT}/<version>/bin, no "postgres" on PATH). ${INSTALL_HINT}`,
  )
}

/**
 * Absolute path of one Postgres program.
 *
 * @param program - which program
 * @param binDir - use this directory instead of searching
 * @throws PgctlError `PGCTL_BINARY_NOT_FOUND` if the program is missing there
 */
export async function pgBinary(program: PgProgram, binDir?: string): Promise<string> {
  const dir = binDir ?? (await findPgBinDir())
  const file = join(dir, program)
  try {
    await access(file, fsConstants.X_OK)
  } catch {
    throw new PgctlError(
      'PGCTL_BINARY_NOT_FOUND',
      `${file} does not exist or is not executable. ${INSTALL_HINT}`,
    )
  }
  return file
}
