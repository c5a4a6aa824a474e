/**
 * Throwaway Postgres servers for integration tests: a temp dir, initdb, start on a
 * free port with a private socket dir, and a `stop()` that removes it all.
 *
 * @module
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { AuthMethod, ConfigValue, HbaEntry, RunningPostgres } from '../../src/pgctl/index.ts'
import {
  appendSettings,
  initdb,
  lastLines,
  PgctlError,
  pgBinary,
  prepareServiceDir,
  run,
  start,
  writeHba,
} from '../../src/pgctl/index.ts'
import { freePort } from './ports.ts'

/** Options for {@link startTestPostgres}. */
export interface TestPostgresOptions {
  /** `--auth-local` for initdb. Default `trust`. */
  authLocal?: AuthMethod
  /** `--auth-host` for initdb. Default `scram-sha-256`. */
  authHost?: AuthMethod
  /** Replace pg_hba.conf with exactly these lines. */
  hba?: HbaEntry[]
  /** postgresql.conf settings on top of the test defaults (`fsync=off` and friends). */
  settings?: Record<string, ConfigValue>
  /** Start deadline. Default 60 s. */
  startTimeoutMs?: number
}

/** A running test server. */
export interface TestPostgres {
  readonly port: number
  readonly host: '127.0.0.1'
  /** Private Unix socket directory; pass it as `host` to a client to use the socket. */
  readonly socketDir: string
  readonly dataDir: string
  readonly superuser: 'postgres'
  /** The postmaster's pid. */
  readonly pid: number
  /** The underlying pgctl handle (log file, exit promise). */
  readonly server: RunningPostgres
  /**
   * Run SQL (psql script, several statements allowed) as the superuser over the
   * socket; resolves to unaligned tuples-only output without its final newline.
   * Rejects with psql's stderr if any statement fails.
   */
  psql(sql: string): Promise<string>
  /** Stop the server and remove its temp dir. Safe to call twice. */
  stop(): Promise<void>
}

/** Options for {@link createRole}. */
export interface CreateRoleOptions {
  name: string
  password: string
  /** How the password is stored, hence which SASL/md5 exchange the server asks for. */
  encryption: 'md5' | 'scram-sha-256'
  /** Extra role attributes, e.g. `SUPERUSER`, `CREATEDB`. */
  attributes?: string[]
}

/**
 * Test-speed defaults: durability off (the cluster is thrown away), nothing
 * that writes outside the temp dir.
 */
const TEST_SETTINGS: Record<string, ConfigValue> = {
  fsync: false,
  synchronous_commit: false,
  full_page_writes: false,
}

/** Temp dir and socket dir must be traversable by client users other than the service user. */
const TRAVERSABLE = 0o711
const START_ATTEMPTS = 3

/** Postmasters still running, SIGQUIT-ed (immediate shutdown) if the test process exits early. */
const live = new Set<RunningPostgres>()
let exitHookInstalled = false

function installExitHook(): void {
  if (exitHookInstalled) return
  exitHookInstalled = true
  process.on('exit', () => {
    for (const server of live) {
      try {
        process.kill(server.pid, 'SIGQUIT')
      } catch {
        // Already gone.
      }
    }
  })
}

/** Quote an SQL identifier. */
export function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`
}

/** Quote an SQL string literal (standard_conforming_strings is on since PG 9.1). */
export function quoteLiteral(value: string): string {
  return `'${value.replaceAll("'", "''")}'`
}

async function startOnFreePort(
  dataDir: string,
  socketDir: string,
  opts: TestPostgresOptions,
): Promise<RunningPostgres> {
  for (let attempt = 1; ; attempt++) {
    const port = await freePort()
    try {
      return await start({
        dataDir,
        port,
        socketDir,
        socketDirMode: TRAVERSABLE,
        timeoutMs: opts.startTimeoutMs,
      })
    } catch (err) {
      // freePort() can race with another process binding the same port.
      const raced =
        err instanceof PgctlError && /could not (bind|create any TCP\/IP sockets)/.test(err.message)
      if (!raced || attempt >= START_ATTEMPTS) throw err
    }
  }
}

/** Start a fresh Postgres for a test. Always pair with `stop()` (e.g. in `after`). */
export async function startTestPostgres(opts: TestPostgresOptions = {}): Promise<TestPostgres> {
  const root = await mkdtemp(join(tmpdir(), 'tidepool-pg-'))
  try {
    await prepareServiceDir(root, TRAVERSABLE)
    const dataDir = join(root, 'data')
    const socketDir = join(root, 'sock')
    await initdb({
      dataDir,
      superuser: 'postgres',
      authLocal: opts.authLocal ?? 'trust',
      authHost: opts.authHost ?? 'scram-sha-256',
      noSync: true,
    })
    await appendSettings(dataDir, { ...TEST_SETTINGS, ...opts.settings })
    if (opts.hba) await writeHba(dataDir, opts.hba)
    const psqlPath = await pgBinary('psql')
    const server = await startOnFreePort(dataDir, socketDir, opts)
    live.add(server)
    installExitHook()
    let stopped: Promise<void> | undefined

    return {
      port: server.port,
      host: '127.0.0.1',
      socketDir,
      dataDir,
      superuser: 'postgres',
      pid: server.pid,
      server,
      async psql(sql: string): Promise<string> {
        const args = ['-X', '-A', '-t', '-q', '-v', 'ON_ERROR_STOP=1']
        args.push('-h', socketDir, '-p', String(server.port), '-U', 'postgres', '-d', 'postgres', '-f', '-')
        const result = await run(psqlPath, args, { asServiceUser: true, input: sql, timeoutMs: 60_000 })
        if (result.code !== 0) {
          throw new PgctlError(
            'PGCTL_COMMAND_FAILED',
            `psql failed (exit ${result.code}): ${lastLines(result.stderr)}`,
          )
        }
        return result.stdout.replace(/\n$/, '')
      },
      stop(): Promise<void> {
        stopped ??= (async () => {
          await server.stop()
          live.delete(server)
          await rm(root, { recursive: true, force: true })
        })()
        return stopped
      },
    }
  } catch (err) {
    await rm(root, { recursive: true, force: true })
    throw err
  }
}

/**
 * Create a login role whose password is stored with `encryption`, which decides the
 * auth exchange (md5 or SCRAM) a `password`/`md5`/`scram-sha-256` hba line runs.
 */
export async function createRole(pg: TestPostgres, opts: CreateRoleOptions): Promise<void> {
  const attributes = ['LOGIN', ...(opts.attributes ?? [])].join(' ')
  await pg.psql(
    `SET password_encryption = ${quoteLiteral(opts.encryption)};\n` +
      `CREATE ROLE ${quoteIdent(opts.name)} ${attributes} PASSWORD ${quoteLiteral(opts.password)};\n`,
  )
}
