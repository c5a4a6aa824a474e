/**
 * start: run the postmaster on a chosen port and wait until it accepts connections.
 *
 * We spawn `postgres` ourselves rather than `pg_ctl start`: we then hold the
 * postmaster's pid and learn of its exit at once (a crash, or a failed start such as
 * a port in use) instead of polling, and arguments need no shell quoting (pg_ctl
 * passes `-o` through `/bin/sh`). Stopping still goes through `pg_ctl stop`, which
 * works from postmaster.pid whoever started the server.
 *
 * @module
 */
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { pgBinary } from './bin.ts'
import type { ConfigValue } from './config.ts'
import type { ExitInfo, LongRunningProcess } from './exec.ts'
import { lastLines, PgctlError, prepareServiceDir, run, spawnLongRunning } from './exec.ts'
import type { StopOptions } from './stop.ts'
import { stop } from './stop.ts'

/** Options for {@link start}. */
export interface StartOptions {
  /** An initialised data directory. */
  dataDir: string
  /** TCP port; also names the Unix socket (`.s.PGSQL.<port>`). */
  port: number
  /** `listen_addresses`; default `127.0.0.1`. Empty string: Unix socket only. */
  listenAddresses?: string
  /**
   * Private directory for the Unix socket, created and given to the service user.
   * Kept out of /var/run/postgresql so instances never collide or need root.
   */
  socketDir: string
  /** Mode of `socketDir`. Default 0700; widen (e.g. 0711) to let other local users connect. */
  socketDirMode?: number
  /** Extra settings passed as `-c name=value`; they override postgresql.conf. */
  settings?: Readonly<Record<string, ConfigValue>>
  /** Server log (stderr). Default `<dataDir>/postmaster.log`. */
  logFile?: string
  /** Give up (and kill the postmaster) after this long. Default 60 s. */
  timeoutMs?: number
  /** Directory of the Postgres binaries; searched for when omitted. */
  binDir?: string
}

/** A postmaster started by {@link start}. */
export interface RunningPostgres {
  readonly pid: number
  readonly dataDir: string
  readonly port: number
  readonly socketDir: string
  readonly logFile: string
  /** Settles when the postmaster exits, however that happens. */
  readonly exited: Promise<ExitInfo>
  /** {@link stop} this server (fast, escalating to immediate). */
  stop(opts?: Omit<StopOptions, 'dataDir' | 'process'>): Promise<void>
}

/** Options for {@link isReady}. */
export interface ReadyOptions {
  /** Socket directory (a path) or host name/address. */
  host: string
  port: number
  /** pg_isready's own connect timeout in seconds. Default 3. */
  connectTimeoutSec?: number
  binDir?: string
}

/**
 * Unix socket paths are limited to 107 bytes (sun_path); Postgres refuses longer
 * ones, and deep temp directories hit that.
 */
const MAX_SOCKET_PATH = 107
const POLL_MIN_MS = 10
const POLL_MAX_MS = 200

/**
 * Whether a server answers connection attempts with "accepting connections"
 * (pg_isready exit 0). Starting up, shutting down or unreachable all give false.
 */
export async function isReady(opts: ReadyOptions): Promise<boolean> {
  const pgIsReady = await pgBinary('pg_isready', opts.binDir)
  const seconds = opts.connectTimeoutSec ?? 3
  const result = await run(
    pgIsReady,
    ['--quiet', `--host=${opts.host}`, `--port=${opts.port}`, `--timeout=${seconds}`, '--dbname=postgres'],
    // As the service user: the socket directory is private to it.
    { asServiceUser: true, timeoutMs: (seconds + 5) * 1000 },
  )
  return result.code === 0
}

async function readLogTail(logFile: string): Promise<string> {
  try {
    return lastLines(await readFile(logFile, 'utf8'), 30)
  } catch (err) {
    return `(could not read ${logFile}: ${(err as Error).message})`
  }
}

/**
 * Start Postgres and resolve once it accepts connections on the Unix socket.
 *
 * @throws PgctlError `PGCTL_START_FAILED` if the postmaster exits first, or
 *   `PGCTL_START_TIMEOUT` (after killing it); both carry the tail of the server log
 */
export async function start(opts: StartOptions): Promise<RunningPostgres> {
  const socketPath = join(opts.socketDir, `.s.PGSQL.${opts.port}`)
  if (Buffer.byteLength(socketPath) > MAX_SOCKET_PATH) {
    throw new PgctlError(
      'PGCTL_BAD_OPTION',
      `Unix socket path ${socketPath} is longer than ${MAX_SOCKET_PATH} bytes; choose a shorter socketDir`,
    )
  }
  const postgres = await pgBinary('postgres', opts.binDir)
  await prepareServiceDir(opts.socketDir, opts.socketDirMode ?? 0o700)
  const logFile = opts.logFile ?? join(opts.dataDir, 'postmaster.log')
  const settings: Record<string, ConfigValue> = {
    ...opts.settings,
    port: opts.port,
    listen_addresses: opts.listenAddresses ?? '127.0.0.1',
    unix_socket_directories: opts.socketDir,
  }
  const args = ['-D', opts.dataDir]
  for (const [name, value] of Object.entries(settings)) args.push('-c', `${name}=${value}`)

  const child = await spawnLongRunning(postgres, args, { asServiceUser: true, logFile })
  const timeoutMs = opts.timeoutMs ?? 60_000
  try {
    await waitUntilReady(child, opts, timeoutMs)
  } catch (err) {
    // Never leave a half-started postmaster behind: SIGQUIT is immediate shutdown.
    await child.stop('SIGQUIT', 5_000)
    const isStartError =
      err instanceof PgctlError && (err.code === 'PGCTL_START_FAILED' || err.code === 'PGCTL_START_TIMEOUT')
    // Anything else (pg_isready missing, say) is not about the server: report it as is.
    if (!isStartError) throw err
    const tail = await readLogTail(logFile)
    const what =
      err.code === 'PGCTL_START_FAILED'
        ? err.message
        : `Postgres in ${opts.dataDir} did not accept connections within ${timeoutMs} ms`
    throw new PgctlError(err.code, `${what}\n--- ${logFile} ---\n${tail}`)
  }
  return {
    pid: child.pid,
    dataDir: opts.dataDir,
    port: opts.port,
    socketDir: opts.socketDir,
    logFile,
    exited: child.exited,
    stop: (stopOpts) => stop({ ...stopOpts, dataDir: opts.dataDir, process: child, binDir: opts.binDir }),
  }
}

async function waitUntilReady(
  child: LongRunningProcess,
  opts: StartOptions,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs
  let delay = POLL_MIN_MS
  for (;;) {
    if (child.hasExited) {
      const exit = await child.exited
      throw new PgctlError(
        'PGCTL_START_FAILED',
        `Postgres in ${opts.dataDir} exited during startup (${exit.code === null ? `signal ${exit.signal}` : `exit ${exit.code}`})`,
      )
    }
    const left = deadline - Date.now()
    if (left <= 0) throw new PgctlError('PGCTL_START_TIMEOUT', 'start deadline passed')
    const connectTimeoutSec = Math.max(1, Math.min(3, Math.ceil(left / 1000)))
    if (await isReady({ host: opts.socketDir, port: opts.port, connectTimeoutSec, binDir: opts.binDir }))
      return
    // Wake early if the postmaster dies, rather than sleeping out the interval.
    await Promise.race([sleep(delay), child.exited])
    delay = Math.min(delay * 2, POLL_MAX_MS)
  }
}
