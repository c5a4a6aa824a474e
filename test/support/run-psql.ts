/**
 * Runs the psql client against a gateway with a connection string, a clean environment
 * (no PGHOST/PGPORT of ours, no ~/.pgpass, no ~/.postgresql/root.crt) and never throws
 * on a non-zero exit: tests assert on the exit code and output.
 *
 * @module
 */
import { execFile } from 'node:child_process'

/** How psql ended. */
export interface PsqlResult {
  /** 0 ok, 1 fatal psql error, 2 connection failed, 3 script error. */
  code: number
  stdout: string
  stderr: string
}

/**
 * `psql -X -A -t -v ON_ERROR_STOP=1 <conninfo> -c <command>` for each command.
 * `env` is added to a minimal environment (use it for PGPASSWORD).
 */
export function runPsql(
  conninfo: string,
  commands: string[],
  env: Record<string, string> = {},
  timeoutMs = 20_000,
): Promise<PsqlResult> {
  const args = ['-X', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-d', conninfo]
  for (const command of commands) args.push('-c', command)
  return new Promise((resolve) => {
    execFile(
      'psql',
      args,
      {
        timeout: timeoutMs,
        env: {
          PATH: process.env.PATH ?? '/usr/bin:/bin',
          LANG: 'C',
          LC_ALL: 'C',
          // A HOME with no .pgpass or .postgresql/ so nothing outside the test applies.
          HOME: '/nonexistent',
          PGCONNECT_TIMEOUT: '10',
          ...env,
        },
      },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof error.code === 'number' ? error.code : -1
        resolve({ code, stdout: stdout.toString(), stderr: stderr.toString() })
      },
    )
  })
}
