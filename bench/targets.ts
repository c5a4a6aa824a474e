/**
 * The poolers under test, each in a process of its own: PgBouncer (as the service
 * user, in a temp dir it owns) and the Tidepool gateway (`bin/tidepool.js gateway`).
 *
 * @module
 */
import { spawn } from 'node:child_process'
import { closeSync, openSync } from 'node:fs'
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import {
  type ExitInfo,
  type LongRunningProcess,
  lastLines,
  ownByServiceUser,
  pgBinary,
  prepareServiceDir,
  run,
  spawnLongRunning,
} from '../src/pgctl/index.ts'

/** A pooler process the bench started and must stop. */
export interface PoolerProcess {
  readonly name: string
  readonly port: number
  readonly pid: number
  /** Every process of it whose CPU counts as the pooler's (the gateway and its pooler process). */
  readonly pids: readonly number[]
  /** Its stdout/stderr (and for PgBouncer, its whole log). */
  readonly logFile: string
  readonly hasExited: boolean
  readonly exited: Promise<ExitInfo>
  /** Stop it (SIGTERM, SIGKILL after a grace period) and remove its temp dir. Safe to call twice. */
  stop(): Promise<void>
  /** Synchronous last-resort kill for `process.on('exit')`. */
  killNow(): void
}

/** Reads what a log file gained since the last call. */
export class LogTail {
  private offset = 0
  readonly file: string

  constructor(file: string) {
    this.file = file
  }

  /** Lines appended since the previous call (or since construction after {@link skipToEnd}). */
  async newLines(): Promise<string[]> {
    let handle: Awaited<ReturnType<typeof open>> | undefined
    try {
      handle = await open(this.file, 'r')
      const { size } = await handle.stat()
      if (size <= this.offset) return []
      const buffer = Buffer.alloc(size - this.offset)
      await handle.read(buffer, 0, buffer.length, this.offset)
      this.offset = size
      return buffer
        .toString('utf8')
        .split('\n')
        .filter((line) => line.trim() !== '')
    } catch {
      return []
    } finally {
      await handle?.close()
    }
  }

  async skipToEnd(): Promise<void> {
    await this.newLines()
  }
}

/**
 * Waits until `SELECT 1` succeeds through host:port, so the target is proven to
 * serve queries (not only to accept TCP) before it is measured.
 *
 * @throws Error with psql's last error when the deadline passes or `alive()` turns false
 */
export async function waitForQuery(
  host: string,
  port: number,
  alive: () => boolean,
  timeoutMs = 30_000,
): Promise<void> {
  const psql = await pgBinary('psql')
  const deadline = Date.now() + timeoutMs
  let last = ''
  while (Date.now() < deadline) {
    if (!alive()) throw new Error(`the process behind ${host}:${port} exited before serving a query`)
    const result = await run(
      psql,
      ['-X', '-q', '-t', '-A', '-h', host, '-p', String(port), '-U', 'postgres', '-d', 'postgres'],
      {
        input: 'SELECT 1',
        timeoutMs: 10_000,
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LC_ALL: 'C' },
      },
    )
    if (result.code === 0 && result.stdout.trim() === '1') return
    last = lastLines(result.stderr, 3)
    await sleep(100)
  }
  throw new Error(`${host}:${port} did not answer SELECT 1 within ${timeoutMs} ms: ${last}`)
}

/** Options for {@link startPgbouncer}. */
export interface PgbouncerOptions {
  binary: string
  port: number
  poolSize: number
  /** Unix socket directory and port of the Postgres behind it. */
  socketDir: string
  pgPort: number
}

/**
 * The PgBouncer config the comparison uses: transaction pooling, trust auth, one
 * pool of `poolSize` for postgres/postgres over the Unix socket. Per-connection
 * logging is off, as Tidepool at `--log-level warn` logs nothing per connection.
 */
export function pgbouncerIni(opts: PgbouncerOptions, dir: string): string {
  return [
    '[databases]',
    `postgres = host=${opts.socketDir} port=${opts.pgPort} dbname=postgres user=postgres`,
    '',
    '[pgbouncer]',
    'listen_addr = 127.0.0.1',
    `listen_port = ${opts.port}`,
    // No Unix socket: it would default to /tmp/.s.PGSQL.<port>.
    'unix_socket_dir =',
    'listen_backlog = 4096',
    'auth_type = trust',
    // trust still requires the user to be listed in auth_file.
    `auth_file = ${join(dir, 'userlist.txt')}`,
    'pool_mode = transaction',
    `default_pool_size = ${opts.poolSize}`,
    'min_pool_size = 0',
    'reserve_pool_size = 0',
    'max_client_conn = 2000',
    'max_db_connections = 0',
    `pidfile = ${join(dir, 'pgbouncer.pid')}`,
    'log_connections = 0',
    'log_disconnections = 0',
    'log_stats = 0',
    'ignore_startup_parameters = extra_float_digits',
    '',
  ].join('\n')
}

/**
 * Starts PgBouncer in the foreground as the service user (it refuses root), with its
 * config, auth file, pidfile and log in a temp dir the service user owns, and waits
 * until it serves a query.
 */
export async function startPgbouncer(opts: PgbouncerOptions): Promise<PoolerProcess> {
  const dir = await mkdtemp(join(tmpdir(), 'tidepool-bench-pgbouncer-'))
  let child: LongRunningProcess | undefined
  const cleanup = async (): Promise<void> => {
    if (child !== undefined) await child.stop('SIGTERM', 5_000)
    await rm(dir, { recursive: true, force: true })
  }
  try {
    await prepareServiceDir(dir, 0o700)
    const ini = join(dir, 'pgbouncer.ini')
    const userlist = join(dir, 'userlist.txt')
    await writeFile(ini, pgbouncerIni(opts, dir), { mode: 0o600 })
    await writeFile(userlist, '"postgres" ""\n', { mode: 0o600 })
    await ownByServiceUser(ini)
    await ownByServiceUser(userlist)
    const logFile = join(dir, 'pgbouncer.log')
    child = await spawnLongRunning(opts.binary, [ini], { asServiceUser: true, logFile })
    const started = child
    await waitForQuery('127.0.0.1', opts.port, () => !started.hasExited)
    let stopped: Promise<void> | undefined
    return {
      name: 'pgbouncer',
      port: opts.port,
      pid: started.pid,
      pids: [started.pid],
      logFile,
      get hasExited() {
        return started.hasExited
      },
      exited: started.exited,
      stop: () => {
        stopped ??= cleanup()
        return stopped
      },
      killNow: () => {
        started.kill('SIGKILL')
      },
    }
  } catch (err) {
    const log = await new LogTail(join(dir, 'pgbouncer.log')).newLines()
    await cleanup()
    throw new Error(`pgbouncer failed to start: ${(err as Error).message}\n${log.slice(-20).join('\n')}`)
  }
}

/** Options for {@link startTidepool}. */
export interface TidepoolOptions {
  /** Path of `bin/tidepool.js`. */
  bin: string
  port: number
  poolSize: number
  socketDir: string
  pgPort: number
  logLevel: string
  /** Pool in a `tidepool pooler` process the gateway leases from over the lease link. */
  poolerProcess?: boolean
}

/** The upstream as a URL: the Postgres Unix socket (libpq `?host=/dir`). */
function upstreamOf(opts: TidepoolOptions): string {
  return `postgresql://postgres@/postgres?host=${encodeURIComponent(opts.socketDir)}&port=${opts.pgPort}`
}

/** The gateway's argv after `node`; `link` when it leases from a pooler process. */
export function tidepoolArgs(opts: TidepoolOptions, link?: string): string[] {
  const backends =
    link === undefined
      ? ['--upstream', upstreamOf(opts), '--pool-size', String(opts.poolSize)]
      : ['--pooler', link]
  return [
    opts.bin,
    'gateway',
    '--listen',
    `127.0.0.1:${opts.port}`,
    ...backends,
    '--auth',
    'trust',
    '--log-level',
    opts.logLevel,
  ]
}

/**
 * Starts the Tidepool gateway as a child process (its own event loop and CPU, as
 * PgBouncer has), and with `poolerProcess` a `tidepool pooler` child it leases from,
 * output to a log file in a temp dir, and waits until it serves a query.
 */
export async function startTidepool(opts: TidepoolOptions): Promise<PoolerProcess> {
  const dir = await mkdtemp(join(tmpdir(), 'tidepool-bench-gateway-'))
  const logFile = join(dir, 'gateway.log')
  // Only what the gateway needs: TIDEPOOL_* or PG* variables of ours would change its config.
  const env: Record<string, string> = {}
  for (const [name, value] of Object.entries(process.env)) {
    if (value !== undefined && !name.startsWith('TIDEPOOL_') && !name.startsWith('PG')) env[name] = value
  }
  const fd = openSync(logFile, 'a', 0o600)
  const link = opts.poolerProcess ? join(dir, 'pooler.link') : undefined
  const commands: string[][] = []
  if (link !== undefined) {
    commands.push([
      opts.bin,
      'pooler',
      '--link',
      link,
      '--upstream',
      upstreamOf(opts),
      '--pool-size',
      String(opts.poolSize),
      '--log-level',
      opts.logLevel,
    ])
  }
  const args = tidepoolArgs(opts, link)
  commands.push(args)
  const children = commands.map((command) =>
    spawn(process.execPath, command, { env, stdio: ['ignore', fd, fd] }),
  )
  closeSync(fd)
  let done = false
  const exited = Promise.race(
    children.map(
      (child) =>
        new Promise<ExitInfo>((resolve) => {
          child.once('exit', (code, signal) => {
            done = true
            resolve({ code, signal })
          })
          child.once('error', () => {
            done = true
            resolve({ code: null, signal: null })
          })
        }),
    ),
  )
  const gateway = children[children.length - 1]
  let stopped: Promise<void> | undefined
  const stop = (): Promise<void> => {
    stopped ??= (async () => {
      // The gateway first, then the pooler it leases from.
      for (const child of children.toReversed()) {
        if (child.exitCode !== null || child.signalCode !== null) continue
        const gone = new Promise((resolve) => child.once('exit', resolve))
        child.kill('SIGTERM')
        const timer = setTimeout(() => child.kill('SIGKILL'), 10_000)
        await gone
        clearTimeout(timer)
      }
      await rm(dir, { recursive: true, force: true })
    })()
    return stopped
  }
  try {
    await waitForQuery('127.0.0.1', opts.port, () => !done)
  } catch (err) {
    const log = await new LogTail(logFile).newLines()
    await stop()
    throw new Error(
      `tidepool gateway failed to start (node ${args.join(' ')}): ${(err as Error).message}\n${log.slice(-30).join('\n')}`,
    )
  }
  return {
    name: 'tidepool',
    port: opts.port,
    pid: gateway.pid!,
    pids: children.map((child) => child.pid!),
    logFile,
    get hasExited() {
      return done
    },
    exited,
    stop,
    killNow: () => {
      for (const child of children) if (child.exitCode === null) child.kill('SIGKILL')
    },
  }
}
