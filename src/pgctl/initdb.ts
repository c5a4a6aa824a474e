/**
 * initdb: create a new data directory owned by the service user.
 *
 * @module
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pgBinary } from './bin.ts'
import type { AuthMethod } from './config.ts'
import { lastLines, ownByServiceUser, PgctlError, prepareServiceDir, run, serviceUser } from './exec.ts'

/** Options for {@link initdb}. */
export interface InitdbOptions {
  /** Data directory to create; must be absent or empty. */
  dataDir: string
  /** Name of the bootstrap superuser. Default `postgres`. */
  superuser?: string
  /** Superuser password, set through a private `--pwfile` so it never appears in argv. */
  superuserPassword?: string
  /** `--auth-local` (Unix socket lines of pg_hba.conf). Default `trust`. */
  authLocal?: AuthMethod
  /** `--auth-host` (TCP lines of pg_hba.conf). Default `scram-sha-256`. */
  authHost?: AuthMethod
  /** Skip fsync of the new cluster (`--no-sync`): much faster, for throwaway clusters only. */
  noSync?: boolean
  /** Directory of the Postgres binaries; searched for when omitted. */
  binDir?: string
  /** Default 120 s. */
  timeoutMs?: number
}

/**
 * Write the password to a file only the service user can read, in a directory of
 * its own, so no other local user can read it during initdb.
 */
async function writePasswordFile(password: string): Promise<{ file: string; dispose: () => Promise<void> }> {
  // initdb reads only the first line; a line break would silently truncate the password.
  if (/[\r\n]/.test(password)) {
    throw new PgctlError('PGCTL_BAD_OPTION', 'superuserPassword must not contain a line break')
  }
  const dir = await mkdtemp(join(tmpdir(), 'tidepool-pwfile-'))
  const dispose = () => rm(dir, { recursive: true, force: true })
  try {
    await ownByServiceUser(dir)
    const file = join(dir, 'pwfile')
    await writeFile(file, `${password}\n`, { mode: 0o600 })
    await ownByServiceUser(file)
    return { file, dispose }
  } catch (err) {
    await dispose()
    throw err
  }
}

/**
 * Run initdb with encoding UTF8 and locale C (byte-order collation that does not
 * depend on the host's glibc, so replicas and rebuilt hosts sort identically).
 *
 * @throws PgctlError `PGCTL_BINARY_NOT_FOUND`, `PGCTL_INITDB_FAILED` (with initdb's stderr), `PGCTL_TIMEOUT`
 */
export async function initdb(opts: InitdbOptions): Promise<void> {
  const initdbPath = await pgBinary('initdb', opts.binDir)
  await prepareServiceDir(opts.dataDir, 0o700)
  const args = [
    `--pgdata=${opts.dataDir}`,
    `--username=${opts.superuser ?? 'postgres'}`,
    `--auth-local=${opts.authLocal ?? 'trust'}`,
    `--auth-host=${opts.authHost ?? 'scram-sha-256'}`,
    '--encoding=UTF8',
    '--locale=C',
    '--no-instructions',
  ]
  if (opts.noSync) args.push('--no-sync')
  const pwfile =
    opts.superuserPassword === undefined ? undefined : await writePasswordFile(opts.superuserPassword)
  try {
    if (pwfile) args.push(`--pwfile=${pwfile.file}`)
    const result = await run(initdbPath, args, { asServiceUser: true, timeoutMs: opts.timeoutMs ?? 120_000 })
    if (result.code !== 0) {
      const output = lastLines(result.stderr || result.stdout)
      // The usual cause as root: a parent made by mkdtemp (0700, root) that the service user cannot enter.
      const hint = /Permission denied/.test(output)
        ? `\nEvery parent directory of ${opts.dataDir} must be searchable by the service user (${(await serviceUser()).name}).`
        : ''
      throw new PgctlError(
        'PGCTL_INITDB_FAILED',
        `initdb of ${opts.dataDir} failed (exit ${result.code ?? result.signal}):\n${output}${hint}`,
      )
    }
  } finally {
    await pwfile?.dispose()
  }
}
