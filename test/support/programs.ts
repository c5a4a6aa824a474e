/**
 * Client programs (psql, pgbench) run by integration tests against a gateway or a
 * test Postgres. Unlike server programs these run fine as root, so they are started
 * directly, with an explicit environment (never ours: a stray PGHOST or PGPORT would
 * point them at the wrong server).
 *
 * @module
 */
import { execFileSync, spawn } from 'node:child_process'
import { join } from 'node:path'

/** Where Debian's PostgreSQL 15 client programs live. */
export const PG_BIN_DIR = process.env.TIDEPOOL_PG_BIN_DIR ?? '/usr/lib/postgresql/15/bin'

/** What a finished program printed and how it ended. */
export interface ProgramResult {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
  /** Wall-clock run time. */
  ms: number
}

export interface ProgramOptions {
  /** Written to stdin, which is then closed; without it stdin is /dev/null. */
  input?: string
  /** Extra environment on top of a minimal one (PATH, LANG=C). */
  env?: Record<string, string>
  /** Working directory (psql prints script paths relative to it). */
  cwd?: string
  /** SIGKILL after this long; the result then has `signal` set. Default 60 s. */
  timeoutMs?: number
}

/** Runs `program` (a name in {@link PG_BIN_DIR}) to completion and collects its output. */
export function runPgProgram(
  program: string,
  args: string[],
  options: ProgramOptions = {},
): Promise<ProgramResult> {
  return runProgram(join(PG_BIN_DIR, program), args, options)
}

/**
 * Runs the program at `file` to completion without blocking the event loop (the
 * gateway under test lives in this process) and collects its output.
 */
export function runProgram(
  file: string,
  args: string[],
  options: ProgramOptions = {},
): Promise<ProgramResult> {
  const started = Date.now()
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, {
      cwd: options.cwd,
      env: { PATH: '/usr/bin:/bin', LANG: 'C', LC_ALL: 'C', ...options.env },
      stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk))
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk))
    if (options.input !== undefined) child.stdin!.end(options.input)
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 60_000)
    child.on('error', (error) => {
      clearTimeout(timer)
      reject(error)
    })
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      resolve({ code, signal, stdout, stderr, ms: Date.now() - started })
    })
  })
}

/**
 * `-h/-p/-U` arguments for a client program reaching `host:port` as postgres. The
 * database goes last as a plain argument: pgbench's `-d` means `--debug`.
 */
export function connectArgs(host: string, port: number): string[] {
  return ['-h', host, '-p', String(port), '-U', 'postgres']
}

/**
 * Runs `program` synchronously and returns its stdout. This blocks the event loop, and
 * with it an in-process gateway: tests use that to make a server-side event happen
 * while the gateway cannot react, then let it see everything at once.
 */
export function runPgProgramSync(program: string, args: string[], timeoutMs = 30_000): string {
  return execFileSync(join(PG_BIN_DIR, program), args, {
    env: { PATH: '/usr/bin:/bin', LANG: 'C', LC_ALL: 'C' },
    encoding: 'utf8',
    timeout: timeoutMs,
    stdio: ['ignore', 'pipe', 'pipe'],
  })
}
