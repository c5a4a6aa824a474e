/**
 * pgbench against direct Postgres, PgBouncer (transaction mode) and the Tidepool
 * gateway on one throwaway Postgres, cell by cell with the three targets back to
 * back so machine drift hits them alike.
 *
 *   node bench/pgbench-compare.ts [--duration 10] [--clients 10,50,500] [--pool-size 20]
 *     [--scale 10] [--warmup 2] [--modes simple,prepared,connect] [--json out.json]
 *     [--gateway-log-level warn] [--tidepool-rev <git rev>] [--pooler-process] [--quick]
 *
 * --pooler-process runs Tidepool as `tidepool up` does: the pool in a `tidepool pooler`
 * process, the gateway leasing from it over the lease link (its CPU counts both).
 *
 * Every failure pgbench or a server reports (non-zero exit, failed transactions,
 * error lines, new WARNING/ERROR/FATAL log lines, a pooler that died) is printed
 * next to the numbers and kept in the JSON; nothing is dropped to make a table look clean.
 *
 * @module
 */
import type { ChildProcess } from 'node:child_process'
import { mkdtemp, rm, symlink, writeFile } from 'node:fs/promises'
import { availableParallelism, loadavg, release, tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { findPgBinDir, run } from '../src/pgctl/index.ts'
import { freePort } from '../test/support/ports.ts'
import { startTestPostgres, type TestPostgres } from '../test/support/postgres.ts'
import { type CpuUsage, cpuBetween, sampleCpu } from './cpu.ts'
import { type PgbenchMode, type PgbenchResult, pgbenchArgs, runPgbench } from './pgbench.ts'
import { LogTail, type PoolerProcess, startPgbouncer, startTidepool } from './targets.ts'

const PGBOUNCER = '/usr/sbin/pgbouncer'
const TARGETS = ['direct', 'pgbouncer', 'tidepool'] as const
type TargetName = (typeof TARGETS)[number]
const MODES: readonly PgbenchMode[] = ['simple', 'prepared', 'connect']
const MODE_LABEL: Record<PgbenchMode, string> = {
  simple: '-S -M simple',
  prepared: '-S -M prepared',
  connect: '-S -C',
}
const PGBENCH_ENV = { PATH: process.env.PATH ?? '/usr/bin:/bin', LC_ALL: 'C' }

interface Options {
  durationSec: number
  warmupSec: number
  clients: number[]
  poolSize: number
  scale: number
  modes: PgbenchMode[]
  json: string | null
  gatewayLogLevel: string
  /** Run the gateway of this commit (exported to a temp dir) instead of the working tree. */
  tidepoolRev: string | null
  /** Pool in a `tidepool pooler` process the gateway leases from (as `tidepool up` does). */
  poolerProcess: boolean
}

/** One (mode, clients, target) measurement, as written to the JSON. */
interface RunRecord {
  mode: PgbenchMode
  clients: number
  target: TargetName
  /** Null when the cell does not apply (PgBouncer 1.18 cannot run -M prepared in transaction mode). */
  skipped: string | null
  args: string[]
  warmup: PgbenchResult | null
  result: PgbenchResult | null
  /** WARNING/ERROR/FATAL lines the servers logged during warm-up and run. */
  serverLog: string[]
  /** Everything that makes this run not clean; empty when it is. */
  problems: string[]
  /**
   * CPU during the measured run, in cores: all, this benchmark's process tree,
   * everything else on the machine (noise), and the pooler process alone.
   */
  cpu: CpuUsage | null
}

function usage(message: string): never {
  console.error(`pgbench-compare: ${message}`)
  console.error(
    'usage: node bench/pgbench-compare.ts [--duration 10] [--clients 10,50,500] [--pool-size 20] [--scale 10]\n' +
      '         [--warmup 2] [--modes simple,prepared,connect] [--json out.json] [--gateway-log-level warn]\n' +
      '         [--tidepool-rev <git rev>] [--quick]',
  )
  process.exit(2)
}

function positiveInt(value: string, flag: string): number {
  const n = Number(value)
  if (!Number.isInteger(n) || n < 1) usage(`${flag} must be a positive integer, got ${JSON.stringify(value)}`)
  return n
}

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      duration: { type: 'string' },
      warmup: { type: 'string' },
      clients: { type: 'string' },
      'pool-size': { type: 'string', default: '20' },
      scale: { type: 'string', default: '10' },
      modes: { type: 'string', default: MODES.join(',') },
      json: { type: 'string' },
      'gateway-log-level': { type: 'string', default: 'warn' },
      'tidepool-rev': { type: 'string' },
      'pooler-process': { type: 'boolean', default: false },
      quick: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  })
  if (values.help) usage('compare pgbench -S through direct Postgres, PgBouncer and Tidepool')
  // --quick: a smoke run (3 s cells, 1 s warm-up, 10 and 50 clients) unless told otherwise.
  const duration = values.duration ?? (values.quick ? '3' : '10')
  const warmup = values.warmup ?? (values.quick ? '1' : '2')
  const clients = values.clients ?? (values.quick ? '10,50' : '10,50,500')
  const modes = values.modes.split(',').map((mode) => mode.trim())
  for (const mode of modes) if (!MODES.includes(mode as PgbenchMode)) usage(`unknown mode ${mode}`)
  return {
    durationSec: positiveInt(duration, '--duration'),
    warmupSec: warmup === '0' ? 0 : positiveInt(warmup, '--warmup'),
    clients: clients.split(',').map((c) => positiveInt(c.trim(), '--clients')),
    poolSize: positiveInt(values['pool-size'], '--pool-size'),
    scale: positiveInt(values.scale, '--scale'),
    modes: modes as PgbenchMode[],
    json: values.json ?? null,
    gatewayLogLevel: values['gateway-log-level'],
    tidepoolRev: values['tidepool-rev'] ?? null,
    poolerProcess: values['pooler-process'],
  }
}

// ---- cleanup: one stack, run on success, error and signals ----

const cleanups: Array<{ what: string; fn: () => Promise<void> }> = []
const liveProcesses = new Set<PoolerProcess>()
let currentPgbench: ChildProcess | null = null
let interrupted = false

let cleaning: Promise<void> | null = null

/** Runs every cleanup once, newest first; concurrent callers share the one pass. */
function cleanupAll(): Promise<void> {
  cleaning ??= (async () => {
    for (let item = cleanups.pop(); item !== undefined; item = cleanups.pop()) {
      try {
        await item.fn()
      } catch (err) {
        console.error(`cleanup of ${item.what} failed: ${(err as Error).message}`)
      }
    }
  })()
  return cleaning
}

/**
 * First signal: stop the running pgbench; the main flow then notices `interrupted`,
 * throws and cleans up (with a fallback should it be stuck). Second signal: kill now.
 */
function onSignal(signal: NodeJS.Signals): void {
  if (interrupted) {
    for (const proc of liveProcesses) proc.killNow()
    currentPgbench?.kill('SIGKILL')
    process.exit(130)
  }
  interrupted = true
  console.error(`\n${signal}: stopping pgbench, poolers and Postgres…`)
  currentPgbench?.kill('SIGTERM')
  setTimeout(() => {
    void cleanupAll().finally(() => process.exit(130))
  }, 60_000)
}

function checkInterrupted(): void {
  if (interrupted) throw new Error('interrupted')
}

async function withPortRetry<T>(start: (port: number) => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    const port = await freePort()
    try {
      return await start(port)
    } catch (err) {
      // freePort() races with other processes binding ports; retry a few times.
      if (attempt >= 3 || !/in use|bind|did not answer|exited before/i.test((err as Error).message)) throw err
    }
  }
}

// ---- measuring ----

interface Target {
  name: TargetName
  port: number
  process: PoolerProcess | null
}

/** Server log lines that mean something went wrong. */
const PG_PROBLEM = /\b(WARNING|ERROR|FATAL|PANIC):/
const PGBOUNCER_PROBLEM = /\b(WARNING|ERROR|FATAL|PANIC|NOISE)\b/

function gatewayProblem(line: string): boolean {
  try {
    const entry = JSON.parse(line) as { level?: number }
    return typeof entry.level === 'number' && entry.level >= 40 // pino: 40 warn, 50 error, 60 fatal
  } catch {
    return true // not a log record: a stack trace or a crash message
  }
}

function problemsOf(result: PgbenchResult, phase: string): string[] {
  const problems: string[] = []
  if (result.timedOut) problems.push(`${phase}: pgbench timed out`)
  if (result.exitCode !== 0) problems.push(`${phase}: pgbench exit ${result.exitCode ?? 'by signal'}`)
  if (result.failedTransactions > 0)
    problems.push(`${phase}: ${result.failedTransactions} failed transactions`)
  if (result.tps === null) problems.push(`${phase}: no tps reported`)
  for (const line of result.errorLines.slice(0, 5)) problems.push(`${phase}: ${line}`)
  if (result.errorLines.length > 5)
    problems.push(`${phase}: …and ${result.errorLines.length - 5} more error lines`)
  return problems
}

function formatRun(r: RunRecord): string {
  if (r.skipped !== null) return 'n/a'
  const res = r.result
  if (res === null) return 'not run'
  const tps = res.tps === null ? '-' : res.tps.toFixed(0)
  const lat = res.latencyMs === null ? '-' : `${res.latencyMs.toFixed(3)} ms`
  const conn = res.connectMs === null ? '' : `, connect ${res.connectMs.toFixed(3)} ms`
  const c = r.cpu
  const cpu =
    c === null
      ? ''
      : `; cpu cores: bench ${c.bench.toFixed(2)}, foreign ${c.foreign.toFixed(2)}` +
        (c.watched === null ? '' : `, ${r.target} ${c.watched.toFixed(2)}`)
  return `${tps} tps, ${lat}${conn}${cpu}${r.problems.length > 0 ? `  PROBLEMS: ${r.problems.length}` : ''}`
}

async function measure(
  opts: Options,
  pgbench: string,
  targets: Target[],
  tails: { pg: LogTail; pgbouncer: LogTail; tidepool: LogTail },
): Promise<RunRecord[]> {
  const records: RunRecord[] = []
  for (const mode of opts.modes) {
    for (const clients of opts.clients) {
      // Interleaved: the three targets of one cell back to back.
      for (const target of targets) {
        checkInterrupted()
        const base = { host: '127.0.0.1', port: target.port, mode, clients, durationSec: opts.durationSec }
        const record: RunRecord = {
          mode,
          clients,
          target: target.name,
          skipped: null,
          args: pgbenchArgs(base),
          warmup: null,
          result: null,
          serverLog: [],
          problems: [],
          cpu: null,
        }
        records.push(record)
        if (target.name === 'pgbouncer' && mode === 'prepared') {
          record.skipped =
            'PgBouncer 1.18 has no max_prepared_statements: -M prepared fails in transaction mode'
          continue
        }
        if (target.process?.hasExited) {
          const exit = await target.process.exited
          record.problems.push(
            `${target.name} is not running (exited: code ${exit.code}, signal ${exit.signal})`,
          )
          console.log(`[${MODE_LABEL[mode]} c=${clients}] ${target.name}: skipped, process gone`)
          continue
        }
        await Promise.all([tails.pg.skipToEnd(), tails.pgbouncer.skipToEnd(), tails.tidepool.skipToEnd()])
        const onChild = (child: ChildProcess | null): void => {
          currentPgbench = child
        }
        if (opts.warmupSec > 0) {
          record.warmup = await runPgbench({
            ...base,
            durationSec: opts.warmupSec,
            pgbench,
            env: PGBENCH_ENV,
            onChild,
          })
          checkInterrupted()
          record.problems.push(...problemsOf(record.warmup, 'warm-up'))
        }
        const cpuBefore = await sampleCpu(target.process?.pids)
        record.result = await runPgbench({ ...base, pgbench, env: PGBENCH_ENV, onChild })
        record.cpu = cpuBetween(cpuBefore, await sampleCpu(target.process?.pids))
        checkInterrupted()
        record.problems.push(...problemsOf(record.result, 'run'))
        const pgLines = (await tails.pg.newLines()).filter((line) => PG_PROBLEM.test(line))
        const bouncerLines = (await tails.pgbouncer.newLines()).filter((line) => PGBOUNCER_PROBLEM.test(line))
        const gatewayLines = (await tails.tidepool.newLines()).filter(gatewayProblem)
        record.serverLog = [
          ...pgLines.map((line) => `postgres: ${line}`),
          ...bouncerLines.map((line) => `pgbouncer: ${line}`),
          ...gatewayLines.map((line) => `tidepool: ${line}`),
        ]
        if (record.serverLog.length > 0) {
          record.problems.push(`${record.serverLog.length} WARNING/ERROR/FATAL server log lines`)
        }
        if (target.process?.hasExited) {
          const exit = await target.process.exited
          record.problems.push(
            `${target.name} exited during the run: code ${exit.code}, signal ${exit.signal}`,
          )
        }
        console.log(`[${MODE_LABEL[mode]} c=${clients}] ${target.name}: ${formatRun(record)}`)
        for (const problem of record.problems) console.log(`    ! ${problem}`)
        for (const line of record.serverLog.slice(0, 10)) console.log(`    log ${line}`)
      }
    }
  }
  return records
}

// ---- report ----

function find(records: RunRecord[], mode: PgbenchMode, clients: number, target: TargetName) {
  return records.find((r) => r.mode === mode && r.clients === clients && r.target === target)
}

function tpsCell(r: RunRecord | undefined): string {
  if (r === undefined) return '-'
  if (r.skipped !== null) return 'n/a'
  const tps = r.result?.tps
  const mark = r.problems.length > 0 ? ' ⚠' : ''
  return tps === null || tps === undefined ? `failed${mark}` : `${tps.toFixed(0)}${mark}`
}

function latencyCell(r: RunRecord | undefined): string {
  if (r === undefined) return '-'
  if (r.skipped !== null) return 'n/a'
  const lat = r.result?.latencyMs
  return lat === null || lat === undefined ? '-' : lat.toFixed(2)
}

function ratioCell(a: RunRecord | undefined, b: RunRecord | undefined): string {
  const x = a?.skipped === null ? a.result?.tps : null
  const y = b?.skipped === null ? b.result?.tps : null
  if (x === null || x === undefined || y === null || y === undefined || y === 0) return 'n/a'
  return `${(x / y).toFixed(2)}x`
}

/** The most CPU (in cores) that other work on the machine took during any run of the row. */
function foreignCell(runs: Array<RunRecord | undefined>): string {
  const foreign = runs.map((r) => r?.cpu?.foreign).filter((f): f is number => f !== undefined)
  return foreign.length === 0 ? '-' : Math.max(...foreign).toFixed(2)
}

/** A Markdown table: readable in a terminal and pasteable into docs/benchmarks.md. */
function renderTable(records: RunRecord[], opts: Pick<Options, 'modes' | 'clients'>): string {
  const header = [
    'mode',
    'clients',
    'direct tps',
    'pgbouncer tps',
    'tidepool tps',
    'direct ms',
    'pgbouncer ms',
    'tidepool ms',
    'tidepool/pgbouncer',
    'tidepool/direct',
    'foreign cpu',
  ]
  const rows = [header, header.map((_, i) => (i < 2 ? '---' : '---:'))]
  for (const mode of opts.modes) {
    for (const clients of opts.clients) {
      const d = find(records, mode, clients, 'direct')
      const b = find(records, mode, clients, 'pgbouncer')
      const t = find(records, mode, clients, 'tidepool')
      rows.push([
        `\`${MODE_LABEL[mode]}\``,
        String(clients),
        tpsCell(d),
        tpsCell(b),
        tpsCell(t),
        latencyCell(d),
        latencyCell(b),
        latencyCell(t),
        ratioCell(t, b),
        ratioCell(t, d),
        foreignCell([d, b, t]),
      ])
    }
  }
  return rows.map((row) => `| ${row.join(' | ')} |`).join('\n')
}

function renderProblems(records: RunRecord[]): string {
  const lines: string[] = []
  for (const r of records) {
    if (r.problems.length === 0) continue
    lines.push(`- ${MODE_LABEL[r.mode]}, ${r.clients} clients, ${r.target}:`)
    for (const problem of r.problems) lines.push(`    - ${problem}`)
    for (const line of r.serverLog.slice(0, 20)) lines.push(`    - log: ${line}`)
  }
  return lines.length === 0
    ? 'No errors: every pgbench run exited 0 with 0 failed transactions.'
    : lines.join('\n')
}

const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url))

/** The commit of the working tree, with `+dirty` when src/ or bin/ differ from it (others may be editing). */
async function gitVersion(): Promise<string> {
  const root = REPO_ROOT
  const head = await firstLine('git', ['-C', root, 'rev-parse', '--short', 'HEAD'])
  const dirty = await run('git', ['-C', root, 'status', '--porcelain', '--', 'src', 'bin'], {
    timeoutMs: 10_000,
  })
    .then((r) => r.stdout.trim() !== '')
    .catch(() => false)
  return `${head}${dirty ? '+dirty' : ''}`
}

/**
 * Exports commit `rev` into a temp dir (git archive: the repository and its working
 * tree are left alone) with our node_modules linked in, so a measurement names exactly
 * the code it ran. Returns the gateway entry point and the short commit id.
 */
async function exportRevision(rev: string): Promise<{ bin: string; version: string }> {
  const resolved = await run('git', ['-C', REPO_ROOT, 'rev-parse', '--verify', `${rev}^{commit}`])
  if (resolved.code !== 0) throw new Error(`--tidepool-rev ${rev}: ${resolved.stderr.trim()}`)
  const sha = resolved.stdout.trim()
  const dir = await mkdtemp(join(tmpdir(), 'tidepool-bench-src-'))
  cleanups.push({ what: 'tidepool source export', fn: () => rm(dir, { recursive: true, force: true }) })
  const tar = join(dir, 'source.tar')
  const archive = await run('git', ['-C', REPO_ROOT, 'archive', '--format=tar', '-o', tar, sha])
  if (archive.code !== 0) throw new Error(`git archive ${sha} failed: ${archive.stderr.trim()}`)
  const extract = await run('tar', ['-xf', tar, '-C', dir])
  if (extract.code !== 0) throw new Error(`tar -xf failed: ${extract.stderr.trim()}`)
  await symlink(join(REPO_ROOT, 'node_modules'), join(dir, 'node_modules'))
  return { bin: join(dir, 'bin', 'tidepool.js'), version: sha.slice(0, 7) }
}

async function firstLine(command: string, args: string[]): Promise<string> {
  try {
    const result = await run(command, args, { timeoutMs: 10_000 })
    return result.stdout.split('\n')[0].trim()
  } catch (err) {
    return `unknown (${(err as Error).message})`
  }
}

// ---- main ----

async function main(): Promise<number> {
  const opts = parseOptions(process.argv.slice(2))
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  process.on('exit', () => {
    for (const proc of liveProcesses) proc.killNow()
    currentPgbench?.kill('SIGKILL')
  })

  // Beside the postgres that startTestPostgres runs (pgctl's PgProgram list has no pgbench).
  const pgbench = join(await findPgBinDir(), 'pgbench')
  const started = new Date()
  const loadBefore = loadavg()
  console.log(`starting Postgres (max_connections 700, shared_buffers 256MB, fsync off)…`)
  const pg: TestPostgres = await startTestPostgres({
    authHost: 'trust', // pg_hba: trust on 127.0.0.1 too, for the direct target
    settings: { max_connections: 700, shared_buffers: '256MB', fsync: false, synchronous_commit: false },
  })
  cleanups.push({ what: 'postgres', fn: () => pg.stop() })
  checkInterrupted()
  const pgVersion = await pg.psql('SHOW server_version')
  console.log(`postgres ${pgVersion} on port ${pg.port}, socket ${pg.socketDir}`)

  console.log(`pgbench -i -s ${opts.scale} over the Unix socket…`)
  const init = await run(
    pgbench,
    [
      '-i',
      '-q',
      '-s',
      String(opts.scale),
      '-h',
      pg.socketDir,
      '-p',
      String(pg.port),
      '-U',
      'postgres',
      'postgres',
    ],
    { env: PGBENCH_ENV, timeoutMs: 30 * 60_000 },
  )
  if (init.code !== 0) throw new Error(`pgbench -i failed (exit ${init.code}):\n${init.stderr}`)
  checkInterrupted()

  const bouncer = await withPortRetry((port) =>
    startPgbouncer({
      binary: PGBOUNCER,
      port,
      poolSize: opts.poolSize,
      socketDir: pg.socketDir,
      pgPort: pg.port,
    }),
  )
  liveProcesses.add(bouncer)
  cleanups.push({
    what: 'pgbouncer',
    fn: () => bouncer.stop().then(() => void liveProcesses.delete(bouncer)),
  })
  console.log(`pgbouncer pid ${bouncer.pid} on 127.0.0.1:${bouncer.port}`)
  checkInterrupted()

  // The version is read when the gateway starts: it loads its code then, whatever changes later.
  const { bin, version: tidepoolVersion } =
    opts.tidepoolRev === null
      ? { bin: join(REPO_ROOT, 'bin', 'tidepool.js'), version: await gitVersion() }
      : await exportRevision(opts.tidepoolRev)
  const gateway = await withPortRetry((port) =>
    startTidepool({
      bin,
      port,
      poolSize: opts.poolSize,
      socketDir: pg.socketDir,
      pgPort: pg.port,
      logLevel: opts.gatewayLogLevel,
      poolerProcess: opts.poolerProcess,
    }),
  )
  liveProcesses.add(gateway)
  // Registered before the stop, which deletes the log: report a gateway that died first.
  cleanups.push({
    what: 'tidepool gateway',
    fn: async () => {
      if (gateway.hasExited) {
        const exit = await gateway.exited
        const tail = (await new LogTail(gateway.logFile).newLines()).slice(-40)
        console.error(`tidepool gateway had exited (code ${exit.code}, signal ${exit.signal}); its log:`)
        console.error(tail.join('\n'))
      }
      await gateway.stop()
      liveProcesses.delete(gateway)
    },
  })
  console.log(
    `tidepool gateway pid ${gateway.pid} on 127.0.0.1:${gateway.port} (${tidepoolVersion}, log level ${opts.gatewayLogLevel})` +
      (opts.poolerProcess ? `, leasing from pooler process pid ${gateway.pids[0]} over the lease link` : ''),
  )

  const targets: Target[] = [
    { name: 'direct', port: pg.port, process: null },
    { name: 'pgbouncer', port: bouncer.port, process: bouncer },
    { name: 'tidepool', port: gateway.port, process: gateway },
  ]
  const tails = {
    pg: new LogTail(pg.server.logFile),
    pgbouncer: new LogTail(bouncer.logFile),
    tidepool: new LogTail(gateway.logFile),
  }
  const records = await measure(opts, pgbench, targets, tails)

  const table = renderTable(records, opts)
  const problems = renderProblems(records)
  console.log(`\n${table}\n\n${problems}`)
  const dirty = records.filter((r) => r.problems.length > 0).length
  if (opts.json !== null) {
    const meta = {
      started: started.toISOString(),
      finished: new Date().toISOString(),
      tidepool: tidepoolVersion,
      command: `node bench/pgbench-compare.ts ${process.argv.slice(2).join(' ')}`.trim(),
      cpus: availableParallelism(),
      kernel: release(),
      node: process.version,
      postgres: pgVersion,
      pgbench: await firstLine(pgbench, ['--version']),
      pgbouncer: await firstLine(PGBOUNCER, ['--version']),
      loadavgBefore: loadBefore,
      loadavgAfter: loadavg(),
      options: opts,
    }
    await writeFile(opts.json, `${JSON.stringify({ meta, table, runs: records }, null, 2)}\n`)
    console.log(`\nraw results written to ${opts.json}`)
  }
  return dirty > 0 ? 1 : 0
}

main()
  .then(
    async (code) => {
      await cleanupAll()
      process.exitCode = code
    },
    async (err: unknown) => {
      if (!interrupted) console.error(`pgbench-compare failed: ${(err as Error).stack ?? String(err)}`)
      await cleanupAll()
      process.exitCode = interrupted ? 130 : 1
    },
  )
  // Poolers and Postgres are stopped above; nothing else may keep the process alive.
  .finally(() => process.exit())
