/**
 * Running pgbench and reading its report. The parser is pure so the table and the
 * JSON can never disagree about what pgbench printed.
 *
 * @module
 */
import { type ChildProcess, spawn } from 'node:child_process'

/** The three ways the comparison drives pgbench. */
export type PgbenchMode = 'simple' | 'prepared' | 'connect'

/** What one pgbench run reported, plus anything that went wrong. */
export interface PgbenchResult {
  /** Transactions per second, or null when pgbench printed none (it failed). */
  tps: number | null
  /** `latency average` in ms, or null. */
  latencyMs: number | null
  /** `average connection time` in ms (printed for `-C` runs), or null. */
  connectMs: number | null
  /** `number of transactions actually processed`. */
  transactions: number | null
  /** `number of failed transactions` (PG 15 reports it), 0 when absent. */
  failedTransactions: number
  /** pgbench's exit code (null if a signal ended it); 0 is the only clean outcome. */
  exitCode: number | null
  /** Every line of output mentioning an error, abort or FATAL, in order. */
  errorLines: string[]
  /** True when the run was killed for overrunning its deadline. */
  timedOut: boolean
  stdout: string
  stderr: string
}

/** Options for one pgbench run. */
export interface PgbenchRun {
  pgbench: string
  host: string
  port: number
  mode: PgbenchMode
  clients: number
  durationSec: number
  /** Environment of the child; never ours, so PGHOST and friends cannot leak in. */
  env: Record<string, string>
  /** Called with the child as soon as it exists, so an interrupt can kill it. */
  onChild?: (child: ChildProcess | null) => void
}

const ERROR_LINE = /\b(error|fatal|abort(ed)?|panic)\b/i

/** pgbench's argv for one run (database `postgres`, user `postgres`, no vacuum). */
export function pgbenchArgs(run: Omit<PgbenchRun, 'pgbench' | 'env' | 'onChild'>): string[] {
  const args = ['-h', run.host, '-p', String(run.port), '-U', 'postgres', '-n', '-S']
  args.push('-M', run.mode === 'prepared' ? 'prepared' : 'simple')
  if (run.mode === 'connect') args.push('-C')
  // -j may not exceed -c.
  args.push('-c', String(run.clients), '-j', String(Math.min(2, run.clients)), '-T', String(run.durationSec))
  args.push('postgres')
  return args
}

function numberAfter(text: string, pattern: RegExp): number | null {
  const match = pattern.exec(text)
  return match === null ? null : Number(match[1])
}

/** Reads tps, latency, connection time, counts and error lines from pgbench's output. */
export function parsePgbenchOutput(
  stdout: string,
  stderr: string,
): Omit<PgbenchResult, 'exitCode' | 'timedOut' | 'stdout' | 'stderr'> {
  const all = `${stdout}\n${stderr}`
  return {
    tps: numberAfter(all, /^tps = ([\d.]+)/m),
    latencyMs: numberAfter(all, /^latency average = ([\d.]+) ms/m),
    connectMs: numberAfter(all, /^average connection time = ([\d.]+) ms/m),
    transactions: numberAfter(all, /^number of transactions actually processed: (\d+)/m),
    failedTransactions: numberAfter(all, /^number of failed transactions: (\d+)/m) ?? 0,
    errorLines: all.split('\n').filter((line) => ERROR_LINE.test(line) && !/^number of failed/.test(line)),
  }
}

/**
 * Runs pgbench to completion and parses its report. Never throws for a failed
 * benchmark: failures are data (exit code, error lines) the caller must show.
 * Killed (SIGTERM, then SIGKILL) if it runs 60 s past its duration.
 */
export function runPgbench(run: PgbenchRun): Promise<PgbenchResult> {
  const args = pgbenchArgs(run)
  return new Promise((resolve) => {
    const child = spawn(run.pgbench, args, { env: run.env, cwd: '/', stdio: ['ignore', 'pipe', 'pipe'] })
    run.onChild?.(child)
    const out: Buffer[] = []
    const err: Buffer[] = []
    child.stdout.on('data', (chunk: Buffer) => out.push(chunk))
    child.stderr.on('data', (chunk: Buffer) => err.push(chunk))
    let timedOut = false
    let killTimer: NodeJS.Timeout | undefined
    const deadline = setTimeout(
      () => {
        timedOut = true
        child.kill('SIGTERM')
        killTimer = setTimeout(() => child.kill('SIGKILL'), 5_000)
      },
      (run.durationSec + 60) * 1000,
    )
    let settled = false
    const finish = (exitCode: number | null, extraError?: string): void => {
      if (settled) return
      settled = true
      clearTimeout(deadline)
      clearTimeout(killTimer)
      run.onChild?.(null)
      const stdout = Buffer.concat(out).toString('utf8')
      let stderr = Buffer.concat(err).toString('utf8')
      if (extraError !== undefined) stderr += `\n${extraError}`
      if (timedOut)
        stderr += `\nbench: pgbench did not finish within ${run.durationSec + 60} s and was killed`
      resolve({ ...parsePgbenchOutput(stdout, stderr), exitCode, timedOut, stdout, stderr })
    }
    child.once('error', (error) => finish(null, `bench: could not run pgbench: error: ${error.message}`))
    child.once('close', (code) => finish(code))
  })
}
