/**
 * The only module in `src/` that starts processes (STYLE item 22, enforced by lint).
 *
 * Every Postgres program refuses to run as root, so when Tidepool itself runs as
 * root each child is started through `setpriv` as the unprivileged service user
 * (`postgres` unless `TIDEPOOL_SERVICE_USER` says otherwise). Children get an
 * explicit environment: inheriting ours would leak `PGHOST`, `PGDATA`, `PGPORT` and
 * friends into pg tools and make them talk to the wrong server.
 *
 * @module
 */

import type { ChildProcess, StdioOptions } from 'node:child_process'
import { spawn } from 'node:child_process'
import { constants as fsConstants } from 'node:fs'
import { access, chmod, chown, mkdir, open } from 'node:fs/promises'
import { userInfo } from 'node:os'
import { basename, delimiter, join } from 'node:path'

/** Stable codes for everything pgctl can fail with; tests match on these, never on message text. */
export type PgctlErrorCode =
  /** A program (a Postgres binary, or setpriv) is not installed where we looked. */
  | 'PGCTL_BINARY_NOT_FOUND'
  /** The OS refused to start a program that exists (permissions, bad interpreter). */
  | 'PGCTL_SPAWN_FAILED'
  /** A program ran past its deadline and was killed. */
  | 'PGCTL_TIMEOUT'
  /** A program exited non-zero where success was required. */
  | 'PGCTL_COMMAND_FAILED'
  /** initdb failed. */
  | 'PGCTL_INITDB_FAILED'
  /** The postmaster exited before accepting connections. */
  | 'PGCTL_START_FAILED'
  /** The postmaster did not accept connections before the start deadline. */
  | 'PGCTL_START_TIMEOUT'
  /** Neither a fast nor an immediate shutdown stopped the server. */
  | 'PGCTL_STOP_FAILED'
  /** An option cannot work (e.g. a socket path longer than the kernel allows). */
  | 'PGCTL_BAD_OPTION'
  /** The service user does not exist on this machine. */
  | 'PGCTL_NO_SERVICE_USER'

/** A pgctl failure with a stable {@link PgctlErrorCode}. */
export class PgctlError extends Error {
  /** Stable identifier of the condition. */
  readonly code: PgctlErrorCode

  /**
   * @param code - stable condition code
   * @param message - human-readable explanation, including how to fix it where we know
   * @param options - standard `cause`
   */
  constructor(code: PgctlErrorCode, message: string, options?: ErrorOptions) {
    super(message, options)
    this.name = 'PgctlError'
    this.code = code
  }
}

/** Outcome of a finished process. `code` is null when a signal ended it. */
export interface ExitInfo {
  code: number | null
  signal: NodeJS.Signals | null
}

/** What {@link run} collected. Output is decoded as UTF-8. */
export interface RunResult extends ExitInfo {
  stdout: string
  stderr: string
}

/** Options shared by {@link run} and {@link spawnLongRunning}. */
export interface ProcessOptions {
  /** The child's whole environment. Defaults to {@link defaultEnv}; never merged with ours. */
  env?: Record<string, string>
  /**
   * Working directory. Defaults to `/` for service-user children, whose user may not
   * be able to enter our cwd (initdb and pg_ctl fail on an unreadable cwd).
   */
  cwd?: string
  /** Run as the service user when we are root (required for every Postgres program). */
  asServiceUser?: boolean
}

/** Options for {@link run}. */
export interface RunOptions extends ProcessOptions {
  /** Kill the child (SIGTERM, then SIGKILL after `graceMs`) after this long. Default 60 s. */
  timeoutMs?: number
  /** Time between SIGTERM and SIGKILL on timeout. Default 5 s. */
  graceMs?: number
  /** Written to the child's stdin, which is then closed. Without it stdin is /dev/null. */
  input?: string | Buffer
  /** Each of stdout/stderr keeps at most this many bytes (the rest is dropped). Default 16 MiB. */
  maxOutputBytes?: number
}

/** Options for {@link spawnLongRunning}. */
export interface SpawnOptions extends ProcessOptions {
  /** Append the child's stdout and stderr to this file (created, owned by the child's user). */
  logFile?: string
}

/** Handle on a process started by {@link spawnLongRunning}. */
export interface LongRunningProcess {
  /** OS process id of the program itself (setpriv execs, so no wrapper pid sits between). */
  readonly pid: number
  /** Settles once the process has exited; never rejects. */
  readonly exited: Promise<ExitInfo>
  /** True once the process has exited. */
  readonly hasExited: boolean
  /**
   * Send `signal`, wait up to `graceMs` for exit, then SIGKILL and wait again.
   * Resolves at once if the process already exited.
   */
  stop(signal?: NodeJS.Signals, graceMs?: number): Promise<ExitInfo>
  /** Send a signal without waiting; false if the process is already gone. Safe in `process.on('exit')`. */
  kill(signal: NodeJS.Signals): boolean
}

/** Identity that Postgres programs run as. */
export interface ServiceUser {
  name: string
  uid: number
  gid: number
}

const DEFAULT_TIMEOUT_MS = 60_000
const DEFAULT_GRACE_MS = 5_000
const DEFAULT_MAX_OUTPUT = 16 * 1024 * 1024
/** How long to wait for stdio to close after exit before giving up on it (see {@link run}). */
const STDIO_DRAIN_MS = 1_000

/** True when this process runs as root and must drop privileges for Postgres programs. */
export function isRoot(): boolean {
  return process.getuid?.() === 0
}

/**
 * The environment children get unless a caller passes one: our PATH and the C locale,
 * so tool messages are stable English we can put into errors. No HOME on purpose:
 * libpq then looks the home directory up for the user it runs as, not root's.
 */
export function defaultEnv(): Record<string, string> {
  return { PATH: process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin', LC_ALL: 'C' }
}

/** Last `maxLines` non-empty lines of `text`, for putting tool output into error messages. */
export function lastLines(text: string, maxLines = 20): string {
  const lines = text.split('\n').filter((line) => line.trim() !== '')
  return lines.slice(-maxLines).join('\n')
}

const PG_PROGRAM = /^(postgres|postmaster|initdb|psql|pgbench|pg_[a-z_]+)$/

function installHint(program: string): string {
  if (PG_PROGRAM.test(program)) {
    return 'Install PostgreSQL (apt-get install postgresql-15) or set PG_BIN to the directory holding its binaries.'
  }
  if (program === 'setpriv' || program === 'runuser' || program === 'id') {
    return `Install util-linux/coreutils (apt-get install util-linux), which provides ${program}.`
  }
  return `Install ${program} or put it on PATH.`
}

async function isExecutable(file: string): Promise<boolean> {
  try {
    await access(file, fsConstants.X_OK)
    return true
  } catch {
    return false
  }
}

/**
 * Resolve `command` to an executable path, or throw `PGCTL_BINARY_NOT_FOUND`.
 * Checked up front because through setpriv a missing program is only an exit code
 * 127 and a line on stderr, not a spawn error.
 */
export async function resolveCommand(
  command: string,
  env: Record<string, string> = defaultEnv(),
): Promise<string> {
  if (command.includes('/')) {
    if (await isExecutable(command)) return command
    throw new PgctlError(
      'PGCTL_BINARY_NOT_FOUND',
      `${command} does not exist or is not executable. ${installHint(basename(command))}`,
    )
  }
  const searched = (env.PATH ?? '').split(delimiter).filter(Boolean)
  for (const dir of searched) {
    const candidate = join(dir, command)
    if (await isExecutable(candidate)) return candidate
  }
  throw new PgctlError(
    'PGCTL_BINARY_NOT_FOUND',
    `${command} was not found on PATH (${searched.join(delimiter)}). ${installHint(command)}`,
  )
}

let serviceUserPromise: Promise<ServiceUser> | undefined

/**
 * The user Postgres programs run as: `TIDEPOOL_SERVICE_USER` (default `postgres`) when
 * we are root, else ourselves. Looked up once through `id` so NSS users work too.
 */
export function serviceUser(): Promise<ServiceUser> {
  serviceUserPromise ??= lookupServiceUser()
  return serviceUserPromise
}

async function lookupServiceUser(): Promise<ServiceUser> {
  if (!isRoot()) {
    const me = userInfo()
    return { name: me.username, uid: me.uid, gid: me.gid }
  }
  const name = process.env.TIDEPOOL_SERVICE_USER || 'postgres'
  const [uid, gid] = await Promise.all([run('id', ['-u', name]), run('id', ['-g', name])])
  if (uid.code !== 0 || gid.code !== 0) {
    serviceUserPromise = undefined
    throw new PgctlError(
      'PGCTL_NO_SERVICE_USER',
      `Postgres refuses to run as root and the service user "${name}" does not exist. ` +
        'Create it (installing postgresql-15 does) or set TIDEPOOL_SERVICE_USER to an unprivileged user.',
    )
  }
  return { name, uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) }
}

/** Give `path` to the service user (no-op unless root, since otherwise we already are that user). */
export async function ownByServiceUser(path: string): Promise<void> {
  if (!isRoot()) return
  const user = await serviceUser()
  await chown(path, user.uid, user.gid)
}

/**
 * Create `dir` (and parents) and make it the service user's with exactly `mode`;
 * chmod is explicit because mkdir's mode is filtered by the umask.
 */
export async function prepareServiceDir(dir: string, mode = 0o700): Promise<void> {
  await mkdir(dir, { recursive: true })
  await ownByServiceUser(dir)
  await chmod(dir, mode)
}

let dropPrivilegesPromise: Promise<string[]> | undefined

/** The argv prefix that runs a program as the service user: setpriv if present, else runuser. */
function dropPrivilegesPrefix(): Promise<string[]> {
  dropPrivilegesPromise ??= (async () => {
    const user = await serviceUser()
    try {
      // setpriv execs the target, so the pid we hold is the program's own and signals reach it.
      const setpriv = await resolveCommand('setpriv')
      return [setpriv, `--reuid=${user.name}`, `--regid=${user.name}`, '--init-groups', '--']
    } catch {
      // runuser forks and waits, forwarding signals; good enough where setpriv is missing.
      const runuser = await resolveCommand('runuser')
      return [runuser, '-u', user.name, '--']
    }
  })()
  dropPrivilegesPromise.catch(() => {
    dropPrivilegesPromise = undefined
  })
  return dropPrivilegesPromise
}

interface Prepared {
  file: string
  args: string[]
  env: Record<string, string>
  cwd: string | undefined
}

async function prepare(command: string, args: readonly string[], opts: ProcessOptions): Promise<Prepared> {
  const env = opts.env ?? defaultEnv()
  const resolved = await resolveCommand(command, env)
  const drop = opts.asServiceUser === true && isRoot()
  const cwd = opts.cwd ?? (opts.asServiceUser ? '/' : undefined)
  if (!drop) return { file: resolved, args: [...args], env, cwd }
  const [wrapper, ...wrapperArgs] = await dropPrivilegesPrefix()
  return { file: wrapper, args: [...wrapperArgs, resolved, ...args], env, cwd }
}

function describe(command: string, args: readonly string[]): string {
  return [command, ...args].join(' ')
}

function spawnChild(prepared: Prepared, stdio: StdioOptions): ChildProcess {
  return spawn(prepared.file, prepared.args, { env: prepared.env, cwd: prepared.cwd, stdio })
}

/** Collects a stream into a bounded buffer. */
function collect(stream: NodeJS.ReadableStream | null, maxBytes: number): () => string {
  const chunks: Buffer[] = []
  let size = 0
  stream?.on('data', (chunk: Buffer) => {
    if (size >= maxBytes) return
    const kept = chunk.subarray(0, maxBytes - size)
    chunks.push(kept)
    size += kept.length
  })
  return () => Buffer.concat(chunks).toString('utf8')
}

/**
 * Run a program to completion and collect its output. A non-zero exit is returned,
 * not thrown (callers decide what failure means); a missing program, a spawn failure
 * and a timeout are thrown as {@link PgctlError}.
 *
 * @param command - program name (searched on the child env's PATH) or path
 * @param args - arguments, passed without a shell
 * @param opts - see {@link RunOptions}
 */
export async function run(
  command: string,
  args: readonly string[] = [],
  opts: RunOptions = {},
): Promise<RunResult> {
  const prepared = await prepare(command, args, opts)
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS
  const graceMs = opts.graceMs ?? DEFAULT_GRACE_MS
  const maxBytes = opts.maxOutputBytes ?? DEFAULT_MAX_OUTPUT
  const child = spawnChild(prepared, [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'])
  const stdout = collect(child.stdout, maxBytes)
  const stderr = collect(child.stderr, maxBytes)
  if (opts.input !== undefined && child.stdin) {
    // A child that exits without reading its stdin must not crash us with EPIPE.
    child.stdin.on('error', () => {})
    child.stdin.end(opts.input)
  }

  return new Promise<RunResult>((resolve, reject) => {
    let timedOut = false
    let killTimer: NodeJS.Timeout | undefined
    let drainTimer: NodeJS.Timeout | undefined
    let exit: ExitInfo | undefined
    let settled = false
    const deadline = setTimeout(() => {
      timedOut = true
      child.kill('SIGTERM')
      killTimer = setTimeout(() => child.kill('SIGKILL'), graceMs)
    }, timeoutMs)

    const finish = (): void => {
      if (settled || !exit) return
      settled = true
      clearTimeout(deadline)
      clearTimeout(killTimer)
      clearTimeout(drainTimer)
      const result: RunResult = { ...exit, stdout: stdout(), stderr: stderr() }
      if (timedOut) {
        reject(
          new PgctlError(
            'PGCTL_TIMEOUT',
            `${describe(command, args)} did not finish within ${timeoutMs} ms and was killed.\n${lastLines(result.stderr)}`,
          ),
        )
        return
      }
      resolve(result)
    }

    child.once('error', (err) => {
      if (settled) return
      settled = true
      clearTimeout(deadline)
      clearTimeout(killTimer)
      reject(
        new PgctlError('PGCTL_SPAWN_FAILED', `could not start ${describe(command, args)}: ${err.message}`, {
          cause: err,
        }),
      )
    })
    child.once('exit', (code, signal) => {
      exit = { code, signal }
      // A grandchild that inherited our pipes (a daemon started without a log file)
      // would keep them open forever, so 'close' alone could hang us.
      drainTimer = setTimeout(() => {
        child.stdout?.destroy()
        child.stderr?.destroy()
        finish()
      }, STDIO_DRAIN_MS)
    })
    child.once('close', (code, signal) => {
      exit ??= { code, signal }
      finish()
    })
  })
}

/**
 * Start a program that outlives the call (the postmaster). Resolves once the OS has
 * started it; its output goes to `opts.logFile` or is discarded, never to a pipe we
 * would have to keep draining.
 *
 * @param command - program name (searched on the child env's PATH) or path
 * @param args - arguments, passed without a shell
 * @param opts - see {@link SpawnOptions}
 */
export async function spawnLongRunning(
  command: string,
  args: readonly string[] = [],
  opts: SpawnOptions = {},
): Promise<LongRunningProcess> {
  const prepared = await prepare(command, args, opts)
  let logFd: Awaited<ReturnType<typeof open>> | undefined
  if (opts.logFile) {
    logFd = await open(opts.logFile, 'a', 0o600)
    if (opts.asServiceUser) await ownByServiceUser(opts.logFile)
  }
  let child: ChildProcess
  let tracked: Tracked
  try {
    const out = logFd ? logFd.fd : 'ignore'
    child = spawnChild(prepared, ['ignore', out, out])
    // Listen for exit before anything else can await, so a quick death is never missed.
    tracked = trackExit(child)
    await spawned(child, command, args)
  } finally {
    // The child holds its own copy of the descriptor.
    await logFd?.close()
  }
  return wrapChild(child, tracked)
}

/** Settles once the OS started `child`, or rejects with PGCTL_SPAWN_FAILED. */
function spawned(child: ChildProcess, command: string, args: readonly string[]): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    child.once('spawn', resolve)
    child.once('error', (err) =>
      reject(
        new PgctlError('PGCTL_SPAWN_FAILED', `could not start ${describe(command, args)}: ${err.message}`, {
          cause: err,
        }),
      ),
    )
  })
}

interface Tracked {
  exited: Promise<ExitInfo>
  hasExited: () => boolean
}

function trackExit(child: ChildProcess): Tracked {
  let done = false
  const exited = new Promise<ExitInfo>((resolve) => {
    child.once('exit', (code, signal) => {
      done = true
      resolve({ code, signal })
    })
  })
  return { exited, hasExited: () => done }
}

function wrapChild(child: ChildProcess, tracked: Tracked): LongRunningProcess {
  const { exited } = tracked
  const pid = child.pid
  if (pid === undefined) throw new PgctlError('PGCTL_SPAWN_FAILED', 'spawned process has no pid')

  const kill = (signal: NodeJS.Signals): boolean => {
    if (tracked.hasExited()) return false
    try {
      return child.kill(signal)
    } catch {
      return false
    }
  }

  const waitFor = (ms: number): Promise<boolean> => {
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), ms)
    })
    return Promise.race([exited.then(() => true), timeout]).finally(() => clearTimeout(timer))
  }

  return {
    pid,
    exited,
    get hasExited() {
      return tracked.hasExited()
    },
    kill,
    async stop(signal: NodeJS.Signals = 'SIGTERM', graceMs = 10_000): Promise<ExitInfo> {
      if (tracked.hasExited()) return exited
      kill(signal)
      if (!(await waitFor(graceMs))) kill('SIGKILL')
      return exited
    },
  }
}

/**
 * Starts a program that outlives us: its own session (detached), output appended to
 * `logFile`, nothing of it keeping our event loop alive. For the components `tidepool up`
 * leaves running; they are found again through the topology and stopped by pid.
 *
 * @returns the child's pid
 */
export async function spawnDetached(
  command: string,
  args: readonly string[],
  opts: { logFile: string; env?: Record<string, string>; cwd?: string },
): Promise<number> {
  const prepared = await prepare(command, args, {
    env: opts.env ?? { ...defaultEnv(), ...inheritedEnv() },
    cwd: opts.cwd,
  })
  const logFd = await open(opts.logFile, 'a', 0o600)
  try {
    const child = spawn(prepared.file, prepared.args, {
      env: prepared.env,
      cwd: prepared.cwd,
      stdio: ['ignore', logFd.fd, logFd.fd],
      detached: true,
    })
    await spawned(child, command, args)
    child.unref()
    if (child.pid === undefined) throw new PgctlError('PGCTL_SPAWN_FAILED', 'spawned process has no pid')
    return child.pid
  } finally {
    await logFd.close()
  }
}

/** Our own PATH and TIDEPOOL_* settings, which a component we start needs as we do. */
function inheritedEnv(): Record<string, string> {
  const env: Record<string, string> = {}
  for (const [name, value] of Object.entries(process.env)) {
    if (value !== undefined && (name === 'PATH' || name.startsWith('TIDEPOOL_'))) env[name] = value
  }
  return env
}
