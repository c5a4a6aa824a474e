/**
 * stop: shut a server down with `pg_ctl stop`, escalating from fast to immediate.
 *
 * @module
 */
import { setTimeout as sleep } from 'node:timers/promises'
import { pgBinary } from './bin.ts'
import type { LongRunningProcess, RunResult } from './exec.ts'
import { lastLines, PgctlError, run } from './exec.ts'

/** Shutdown modes, as in `pg_ctl stop -m`. */
export type ShutdownMode = 'smart' | 'fast' | 'immediate'

/** Options for {@link stop}. */
export interface StopOptions {
  dataDir: string
  /** First mode tried. Default `fast` (roll back open transactions, checkpoint, exit). */
  mode?: ShutdownMode
  /** How long the first mode may take before escalating to `immediate`. Default 30 s. */
  timeoutMs?: number
  /**
   * The postmaster, if this process started it: we then also wait for it to be
   * reaped, and SIGKILL it as a last resort.
   */
  process?: LongRunningProcess
  binDir?: string
}

/** How long an immediate shutdown may take; it only signals children and exits. */
const IMMEDIATE_TIMEOUT_MS = 10_000
/** pg_ctl returns once postmaster.pid is gone, a moment before the process is. */
const REAP_WAIT_MS = 5_000
/** `pg_ctl status` exit code meaning "no server running". */
const STATUS_NOT_RUNNING = 3

async function pgCtl(pgCtlPath: string, args: string[], timeoutMs: number): Promise<RunResult> {
  return run(pgCtlPath, args, { asServiceUser: true, timeoutMs })
}

async function stopWith(
  pgCtlPath: string,
  dataDir: string,
  mode: ShutdownMode,
  timeoutMs: number,
): Promise<RunResult> {
  const seconds = Math.max(1, Math.ceil(timeoutMs / 1000))
  // pg_ctl enforces -t itself; our own timeout is only a backstop should it hang.
  return pgCtl(
    pgCtlPath,
    ['stop', '-D', dataDir, '-m', mode, '-w', '-t', String(seconds), '-s'],
    timeoutMs + 10_000,
  )
}

/** Ask pg_ctl rather than guess from postmaster.pid, which a crash leaves behind. */
async function isStopped(pgCtlPath: string, dataDir: string): Promise<boolean> {
  const status = await pgCtl(pgCtlPath, ['status', '-D', dataDir], 10_000)
  return status.code === STATUS_NOT_RUNNING
}

async function awaitReaped(child: LongRunningProcess | undefined): Promise<void> {
  if (!child || child.hasExited) return
  await Promise.race([child.exited, sleep(REAP_WAIT_MS)])
}

/**
 * Stop the server in `dataDir`. Resolves once it is no longer running, including
 * when it was not running to begin with.
 *
 * @throws PgctlError `PGCTL_STOP_FAILED` with pg_ctl's output if it is still running after all attempts
 */
export async function stop(opts: StopOptions): Promise<void> {
  const pgCtlPath = await pgBinary('pg_ctl', opts.binDir)
  const child = opts.process
  const modes: ShutdownMode[] = opts.mode === 'immediate' ? ['immediate'] : [opts.mode ?? 'fast', 'immediate']
  const failures: string[] = []
  for (const mode of modes) {
    const timeoutMs = mode === 'immediate' ? IMMEDIATE_TIMEOUT_MS : (opts.timeoutMs ?? 30_000)
    const result = await stopWith(pgCtlPath, opts.dataDir, mode, timeoutMs)
    if (result.code === 0 || (await isStopped(pgCtlPath, opts.dataDir))) {
      await awaitReaped(child)
      return
    }
    failures.push(`${mode}: ${lastLines(result.stderr || result.stdout, 5)}`)
  }
  if (child && !child.hasExited) {
    await child.stop('SIGKILL', REAP_WAIT_MS)
    return
  }
  throw new PgctlError(
    'PGCTL_STOP_FAILED',
    `could not stop Postgres in ${opts.dataDir}:\n${failures.join('\n')}`,
  )
}
