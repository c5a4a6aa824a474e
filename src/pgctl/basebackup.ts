/**
 * basebackup: make a streaming replica's data directory from a running primary.
 *
 * @module
 */
import { pgBinary } from './bin.ts'
import { lastLines, PgctlError, prepareServiceDir, run } from './exec.ts'

/** Options for {@link basebackup}. */
export interface BasebackupOptions {
  /** The new replica's data directory (created; must not hold a cluster). */
  dataDir: string
  /** The primary: its socket directory (or host) and port, and a role with REPLICATION. */
  host: string
  port: number
  user: string
  /** A physical replication slot on the primary, created by the backup (`-C -S`). */
  slot: string
  /** How the replica reaches the primary afterwards (primary_conninfo); default host/port/user above. */
  primaryConninfo?: string
  timeoutMs?: number
  binDir?: string
}

/**
 * Runs pg_basebackup with WAL streamed alongside (`-X stream`) and `-R`, which writes
 * `standby.signal` and `primary_conninfo`: the directory starts as a streaming replica.
 *
 * @throws PgctlError `PGCTL_COMMAND_FAILED` with pg_basebackup's stderr
 */
export async function basebackup(opts: BasebackupOptions): Promise<void> {
  const program = await pgBinary('pg_basebackup', opts.binDir)
  await prepareServiceDir(opts.dataDir, 0o700)
  const args = [
    `--pgdata=${opts.dataDir}`,
    `--host=${opts.host}`,
    `--port=${opts.port}`,
    `--username=${opts.user}`,
    '--wal-method=stream',
    '--write-recovery-conf',
    '--create-slot',
    `--slot=${opts.slot}`,
    '--checkpoint=fast',
    '--no-password',
  ]
  const result = await run(program, args, { asServiceUser: true, timeoutMs: opts.timeoutMs ?? 300_000 })
  if (result.code !== 0) {
    throw new PgctlError(
      'PGCTL_COMMAND_FAILED',
      `pg_basebackup into ${opts.dataDir} failed (exit ${result.code ?? result.signal}):\n${lastLines(result.stderr || result.stdout)}`,
    )
  }
}
