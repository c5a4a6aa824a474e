/**
 * The PostgreSQL 15 regression suite (pg_regress, parallel_schedule) run directly
 * against a throwaway Postgres and through a Tidepool gateway whose pool is smaller
 * than the schedule's concurrency; prints passed/total for both and every test that
 * passes directly but fails through Tidepool, with the start of its diff.
 *
 *   npm run test:regress [-- --strict --pool-size 10 --only tidepool …]
 *
 * Options:
 *   --strict             exit 1 when a test fails only through Tidepool, other than the known
 *                        backend-lifetime differences (known-differences.ts) (default: report only)
 *   --pool-size n        the gateway's --pool-size (default 10; the schedule runs up to 20 tests at once)
 *   --wait-timeout d     the gateway's --wait-timeout (default: the gateway's own)
 *   --pipeline-depth n   the gateway's --pipeline-depth (default: the gateway's own)
 *   --pooler-process     pool in a `tidepool pooler` process that the gateway leases from
 *                        over the lease link (`gateway --pooler`), as `tidepool up` does
 *   --only direct|tidepool   run one side only
 *   --tests a,b,c        run these tests (in order, one at a time) instead of the schedule;
 *                        most need `test_setup` first
 *   --schedule file      a schedule instead of parallel_schedule (paths relative to the cwd)
 *   --test-timeout s     kill a test's psql after s seconds (default 60; the slowest test
 *                        takes ~4 s directly), so a hang fails one test, not the run
 *   --timeout-min m      kill a pg_regress run after m minutes (default 20)
 *   --cache-dir dir      where the source, modules and outputs go (default .tmp/regress)
 *   --verbose            stream pg_regress's output
 *   --reanalyze          run nothing: report again on the outputs of the last run
 *
 * Each side gets a fresh cluster (initdb, C locale, UTF8, max_prepared_transactions = 2
 * as pg_regress's own temporary instance has), so one side's leftovers (roles,
 * databases) cannot fail the other's tests. pg_regress runs as the `postgres` OS user:
 * the server writes COPY output into its results directory.
 *
 * @module
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { existsSync, openSync, readdirSync, readFileSync, readlinkSync } from 'node:fs'
import { chown, mkdir, readFile, rm, writeFile } from 'node:fs/promises'
import { connect } from 'node:net'
import { basename, join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { freePort } from '../support/ports.ts'
import { startTestPostgres, type TestPostgres } from '../support/postgres.ts'
import { BACKEND_LIFETIME_DIFFERENCES } from './known-differences.ts'
import { ensurePrerequisites, exec, PG_BIN, type Prerequisites } from './prepare.ts'
import {
  diffExcerpt,
  parseStatusLines,
  probableCause,
  scheduleTests,
  splitDiffs,
  type TestResult,
  type TestStatus,
} from './results.ts'

const REPO = resolve(import.meta.dirname, '../..')
/** The schedule's own bound on concurrent tests (GNUmakefile's REGRESS_OPTS). */
const MAX_CONCURRENT_TESTS = 20
/** What pg_regress's temporary instance configures and results depend on. */
const SERVER_SETTINGS = { max_prepared_transactions: 2 }
const SERVICE_USER = 'postgres'

const { values: opts } = parseArgs({
  options: {
    strict: { type: 'boolean', default: false },
    'pool-size': { type: 'string', default: '10' },
    'wait-timeout': { type: 'string' },
    'pipeline-depth': { type: 'string' },
    'pooler-process': { type: 'boolean' },
    only: { type: 'string' },
    tests: { type: 'string' },
    schedule: { type: 'string' },
    'test-timeout': { type: 'string', default: '60' },
    'timeout-min': { type: 'string', default: '20' },
    'cache-dir': { type: 'string', default: join(REPO, '.tmp/regress') },
    verbose: { type: 'boolean', default: false },
    reanalyze: { type: 'boolean', default: false },
  },
  strict: true,
})

const cacheDir = resolve(opts['cache-dir']!)
const poolSize = Number(opts['pool-size'])
const timeoutMs = Number(opts['timeout-min']) * 60_000
const testTimeoutMs = Number(opts['test-timeout']) * 1000
if (opts.only !== undefined && opts.only !== 'direct' && opts.only !== 'tidepool') {
  throw new Error('--only takes direct or tidepool')
}

/** One side's outcome. */
interface SideOutcome {
  label: 'direct' | 'tidepool'
  results: Map<string, TestResult>
  diffs: Map<string, string>
  ms: number
  timedOut: boolean
  exitCode: number | null
  outDir: string
  /** Tidepool only: how the gateway fared. */
  gateway?: GatewayHealth
}

interface GatewayHealth {
  /** Exit of the gateway process if it ended before we stopped it. */
  exitedEarly: string | undefined
  /** `SELECT 1` through the gateway after the run. */
  answersAfterRun: boolean
  /** Log lines at level error or fatal. */
  errorLines: string[]
  log: string
}

const children = new Set<ChildProcess>()
/** Set while we stop the gateway ourselves, so its exit is not reported as a crash. */
let stopping = false
const servers = new Set<TestPostgres>()

function log(line: string): void {
  process.stdout.write(`${line}\n`)
}

function fmtDuration(ms: number): string {
  const s = Math.round(ms / 1000)
  return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`
}

async function serviceIds(): Promise<{ uid: number; gid: number }> {
  const [uid, gid] = await Promise.all([exec('id', ['-u', SERVICE_USER]), exec('id', ['-g', SERVICE_USER])])
  return { uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) }
}

const isRoot = process.getuid?.() === 0

/** A fresh output directory the service user owns (the server writes COPY files into results/). */
async function freshOutDir(name: string): Promise<string> {
  const dir = join(cacheDir, name)
  await rm(dir, { recursive: true, force: true })
  await mkdir(dir, { recursive: true })
  if (isRoot) {
    const { uid, gid } = await serviceIds()
    await chown(dir, uid, gid)
  }
  return dir
}

/** Runs pg_regress against host:port, as the service user, in its own process group. */
async function runPgRegress(
  label: SideOutcome['label'],
  prereq: Prerequisites,
  port: number,
  outDir: string,
): Promise<{ stdout: string; ms: number; timedOut: boolean; exitCode: number | null }> {
  const args = [
    `--inputdir=${prereq.regressDir}`,
    `--outputdir=${outDir}`,
    `--bindir=${PG_BIN}`,
    `--dlpath=${prereq.libDir}`,
    `--max-concurrent-tests=${MAX_CONCURRENT_TESTS}`,
    '--host=127.0.0.1',
    `--port=${port}`,
    `--user=${SERVICE_USER}`,
  ]
  if (opts.tests) args.push(...opts.tests.split(',').filter(Boolean))
  else args.push(`--schedule=${scheduleFile(prereq)}`)
  const [file, argv] = isRoot
    ? [
        'setpriv',
        [
          `--reuid=${SERVICE_USER}`,
          `--regid=${SERVICE_USER}`,
          '--init-groups',
          '--',
          prereq.pgRegress,
          ...args,
        ],
      ]
    : [prereq.pgRegress, args]
  const started = Date.now()
  const child = spawn(file, argv, {
    cwd: outDir,
    detached: true,
    env: { PATH: `${PG_BIN}:/usr/bin:/bin`, LANG: 'C', LC_ALL: 'C', HOME: outDir },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  children.add(child)
  let stdout = ''
  let pending = ''
  let done = 0
  const total = opts.tests ? opts.tests.split(',').length : scheduleCount
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk
    pending += chunk
    const lines = pending.split('\n')
    pending = lines.pop() ?? ''
    for (const line of lines) {
      if (opts.verbose) log(`[${label}] ${line}`)
      const [result] = parseStatusLines(line)
      if (!result) continue
      done++
      if (!opts.verbose && result.status !== 'ok') log(`[${label}] ${line.trim()}`)
      if (!opts.verbose && done % 25 === 0) log(`[${label}] ${done}/${total} tests done`)
    }
  })
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
    if (opts.verbose) process.stderr.write(chunk)
  })
  const watchdog = watchTests(label, child, killedTests)
  let timedOut = false
  const timer = setTimeout(() => {
    timedOut = true
    log(`[${label}] pg_regress still running after ${fmtDuration(timeoutMs)}: killing it`)
    killGroup(child, 'SIGTERM')
    setTimeout(() => killGroup(child, 'SIGKILL'), 5000).unref()
  }, timeoutMs)
  const exitCode = await new Promise<number | null>((resolveExit) => {
    child.on('close', (code) => resolveExit(code))
  })
  clearTimeout(timer)
  clearInterval(watchdog)
  children.delete(child)
  return { stdout, ms: Date.now() - started, timedOut, exitCode }
}

/** Tests whose psql the watchdog killed, per side. */
const killedTests = new Map<string, string[]>()

/**
 * Every few seconds, kills each psql child of pg_regress that has been running longer
 * than --test-timeout: pg_regress then reports that test as failed and carries on. The
 * test's name is the results file its stdout goes to.
 */
function watchTests(label: string, child: ChildProcess, killed: Map<string, string[]>): NodeJS.Timeout {
  const firstSeen = new Map<number, number>()
  const list: string[] = []
  killed.set(label, list)
  return setInterval(() => {
    if (child.pid === undefined) return
    let pids: number[] = []
    try {
      pids = readdirSync('/proc')
        .filter((name) => /^\d+$/.test(name))
        .map(Number)
        .filter((pid) => {
          try {
            const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
            const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])
            return ppid === child.pid && readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'psql'
          } catch {
            return false
          }
        })
    } catch {
      return
    }
    const now = Date.now()
    for (const pid of firstSeen.keys()) if (!pids.includes(pid)) firstSeen.delete(pid)
    for (const pid of pids) {
      const seen = firstSeen.get(pid) ?? now
      firstSeen.set(pid, seen)
      if (now - seen < testTimeoutMs) continue
      let test = `pid ${pid}`
      try {
        test = basename(readlinkSync(`/proc/${pid}/fd/1`)).replace(/\.out$/, '')
      } catch {
        // Keep the pid.
      }
      log(`[${label}] ${test}: no end after ${testTimeoutMs / 1000} s, killing its psql`)
      list.push(test)
      try {
        process.kill(pid, 'SIGKILL')
      } catch {
        // Gone meanwhile.
      }
      firstSeen.delete(pid)
    }
  }, 2000)
}

function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined) return
  try {
    process.kill(-child.pid, signal)
  } catch {
    // Already gone.
  }
}

async function collect(
  label: SideOutcome['label'],
  outDir: string,
  run: Awaited<ReturnType<typeof runPgRegress>>,
): Promise<SideOutcome> {
  const results = new Map(parseStatusLines(run.stdout).map((r) => [r.name, r]))
  const diffsFile = join(outDir, 'regression.diffs')
  const diffs = existsSync(diffsFile) ? splitDiffs(await readFile(diffsFile, 'utf8')) : new Map()
  await writeFile(join(outDir, 'pg_regress.out'), run.stdout)
  return { label, results, diffs, ms: run.ms, timedOut: run.timedOut, exitCode: run.exitCode, outDir }
}

/** The sides of the last run, from its outputs and summary.json (for --reanalyze). */
async function previousSides(): Promise<SideOutcome[]> {
  const summary = JSON.parse(await readFile(join(cacheDir, 'summary.json'), 'utf8')) as {
    date: string
    sides: {
      label: SideOutcome['label']
      ms: number
      timedOut: boolean
      killedTests: string[]
      gateway?: GatewayHealth
    }[]
  }
  runDate = summary.date
  const sides: SideOutcome[] = []
  for (const previous of summary.sides) {
    const outDir = join(cacheDir, `out-${previous.label}`)
    const stdout = await readFile(join(outDir, 'pg_regress.out'), 'utf8')
    const run = { stdout, ms: previous.ms, timedOut: previous.timedOut, exitCode: null }
    const side = await collect(previous.label, outDir, run)
    side.gateway = previous.gateway
    killedTests.set(previous.label, previous.killedTests)
    sides.push(side)
  }
  return sides
}

async function startPostgres(): Promise<TestPostgres> {
  const pg = await startTestPostgres({ authHost: 'trust', settings: SERVER_SETTINGS })
  servers.add(pg)
  return pg
}

async function stopPostgres(pg: TestPostgres): Promise<void> {
  await pg.stop()
  servers.delete(pg)
}

async function runDirect(prereq: Prerequisites): Promise<SideOutcome> {
  const pg = await startPostgres()
  try {
    log(`[direct] Postgres on 127.0.0.1:${pg.port}`)
    const outDir = await freshOutDir('out-direct')
    return await collect('direct', outDir, await runPgRegress('direct', prereq, pg.port, outDir))
  } finally {
    await stopPostgres(pg)
  }
}

function waitForPort(port: number, child: ChildProcess, deadlineMs: number): Promise<void> {
  const deadline = Date.now() + deadlineMs
  return new Promise((resolveWait, reject) => {
    const attempt = (): void => {
      if (child.exitCode !== null || child.signalCode !== null) {
        reject(new Error(`the gateway exited during startup (${child.exitCode ?? child.signalCode})`))
        return
      }
      const socket = connect({ host: '127.0.0.1', port })
      socket.once('connect', () => {
        socket.destroy()
        resolveWait()
      })
      socket.once('error', () => {
        socket.destroy()
        if (Date.now() > deadline) reject(new Error(`the gateway did not listen on ${port} in time`))
        else setTimeout(attempt, 100)
      })
    }
    attempt()
  })
}

async function selectOne(port: number): Promise<boolean> {
  const result = await exec(
    join(PG_BIN, 'psql'),
    [
      '-X',
      '-A',
      '-t',
      '-h',
      '127.0.0.1',
      '-p',
      String(port),
      '-U',
      SERVICE_USER,
      '-d',
      'postgres',
      '-c',
      'SELECT 1',
    ],
    { timeoutMs: 15_000 },
  )
  return result.code === 0 && result.stdout.trim() === '1'
}

async function runTidepool(prereq: Prerequisites): Promise<SideOutcome> {
  const pg = await startPostgres()
  const started: ChildProcess[] = []
  try {
    const port = await freePort()
    const logFile = join(cacheDir, 'gateway.log')
    const upstream = `postgresql://${SERVICE_USER}@/postgres?host=${encodeURIComponent(pg.socketDir)}&port=${pg.port}`
    const pool = ['--pool-size', String(poolSize)]
    if (opts['wait-timeout']) pool.push('--wait-timeout', opts['wait-timeout'])
    const logFiles = [logFile]
    let backends = ['--upstream', upstream, ...pool]
    if (opts['pooler-process']) {
      const link = join(cacheDir, 'pooler.link')
      const poolerLog = join(cacheDir, 'pooler.log')
      logFiles.push(poolerLog)
      started.push(
        startChild(
          ['pooler', '--link', link, '--upstream', upstream, ...pool, '--log-level', 'warn'],
          poolerLog,
        ),
      )
      backends = ['--pooler', link, '--wait-timeout', opts['wait-timeout'] ?? '30s']
    }
    const args = [
      'gateway',
      '--listen',
      `127.0.0.1:${port}`,
      ...backends,
      '--auth',
      'trust',
      '--log-level',
      'warn',
    ]
    if (opts['pipeline-depth']) args.push('--pipeline-depth', opts['pipeline-depth'])
    const gateway = startChild(args, logFile)
    started.push(gateway)
    let exitedEarly: string | undefined
    for (const child of started) {
      child.once('exit', (code, signal) => {
        if (stopping) return
        exitedEarly = `exit code ${code}, signal ${signal}`
        log(
          `[tidepool] ${child === gateway ? 'the gateway' : 'the pooler'} exited during the run (${exitedEarly}); see ${logFiles.join(', ')}`,
        )
      })
    }
    await waitForPort(port, gateway, 20_000)
    log(
      `[tidepool] Postgres on 127.0.0.1:${pg.port}, gateway on 127.0.0.1:${port}, pool size ${poolSize}` +
        (opts['pooler-process'] ? ', pooled in a pooler process over the lease link' : ''),
    )
    const outDir = await freshOutDir('out-tidepool')
    const run = await runPgRegress('tidepool', prereq, port, outDir)
    const answersAfterRun = exitedEarly === undefined && (await selectOne(port))
    const side = await collect('tidepool', outDir, run)
    const errorLines: string[] = []
    for (const file of logFiles) {
      const logText = await readFile(file, 'utf8')
      errorLines.push(...logText.split('\n').filter((line) => /"level":(50|60)\b/.test(line)))
    }
    side.gateway = { exitedEarly, answersAfterRun, errorLines, log: logFiles.join(', ') }
    return side
  } finally {
    stopping = true
    for (const child of started.reverse()) await stopChild(child)
    stopping = false
    await stopPostgres(pg)
  }
}

/** Runs `tidepool <args>` with its output in `logFile`. */
function startChild(args: string[], logFile: string): ChildProcess {
  const logFd = openSync(logFile, 'w')
  const child = spawn(process.execPath, [join(REPO, 'bin/tidepool.js'), ...args], {
    cwd: REPO,
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LANG: 'C' },
    stdio: ['ignore', logFd, logFd],
  })
  children.add(child)
  return child
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode === null && child.signalCode === null) {
    const exited = new Promise((r) => child.once('exit', r))
    child.kill('SIGTERM')
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000)
    await exited
    clearTimeout(timer)
  }
  children.delete(child)
}

/** `git describe`-like revision of the Tidepool tree under test, `+dirty` when src/ has uncommitted changes. */
async function tidepoolRevision(): Promise<string> {
  const head = await exec('git', ['-C', REPO, 'rev-parse', '--short', 'HEAD'])
  if (head.code !== 0) return 'unknown revision'
  const dirty = await exec('git', ['-C', REPO, 'status', '--porcelain', '--', 'src', 'bin'])
  return `${head.stdout.trim()}${dirty.stdout.trim() === '' ? '' : '+dirty'}`
}

async function readResult(side: SideOutcome, name: string): Promise<string> {
  const file = join(side.outDir, 'results', `${name}.out`)
  return existsSync(file) ? readFile(file, 'utf8') : ''
}

function lastLines(text: string, count: number): string[] {
  return text.trimEnd().split('\n').slice(-count)
}

function passed(side: SideOutcome, tests: string[]): number {
  return tests.filter((name) => side.results.get(name)?.status === 'ok').length
}

function statusOf(side: SideOutcome, name: string): TestStatus | 'not run' {
  return side.results.get(name)?.status ?? 'not run'
}

let scheduleCount = 0
/** When the run started (for --reanalyze: when the analysed run started). */
let runDate = new Date().toISOString()

function scheduleFile(prereq: Prerequisites): string {
  return opts.schedule ? resolve(opts.schedule) : join(prereq.regressDir, 'parallel_schedule')
}

async function main(): Promise<number> {
  const wallStart = Date.now()
  log(`Preparing prerequisites in ${cacheDir} …`)
  const prereq = await ensurePrerequisites(cacheDir)
  for (const action of prereq.actions) log(`  ${action}`)
  const tests = opts.tests
    ? opts.tests.split(',').filter(Boolean)
    : scheduleTests(await readFile(scheduleFile(prereq), 'utf8'))
  scheduleCount = tests.length
  const revision = await tidepoolRevision()
  log(
    `PostgreSQL ${prereq.version} regression suite: ${opts.tests ? 'selected tests' : basename(scheduleFile(prereq))}, ` +
      `${tests.length} tests, up to ${MAX_CONCURRENT_TESTS} at once; Tidepool ${revision}`,
  )

  const sides: SideOutcome[] = opts.reanalyze ? await previousSides() : []
  if (!opts.reanalyze && opts.only !== 'tidepool') sides.push(await runDirect(prereq))
  if (!opts.reanalyze && opts.only !== 'direct') sides.push(await runTidepool(prereq))

  log('')
  for (const side of sides) {
    const extra = side.label === 'tidepool' ? `, pool size ${poolSize}` : ''
    const problems = side.timedOut ? ', TIMED OUT' : ''
    log(
      `${`${side.label}:`.padEnd(10)} ${passed(side, tests)}/${tests.length} passed ` +
        `(${fmtDuration(side.ms)}${extra}${problems})`,
    )
  }
  const direct = sides.find((s) => s.label === 'direct')
  const tidepool = sides.find((s) => s.label === 'tidepool')
  let tidepoolOnly: string[] = []
  const causes: Record<string, string> = {}
  if (tidepool) {
    const health = tidepool.gateway!
    log(
      `gateway: ${health.exitedEarly ? `EXITED during the run (${health.exitedEarly})` : 'stayed up'}, ` +
        `${health.answersAfterRun ? 'answered SELECT 1 after the run' : 'did NOT answer SELECT 1 after the run'}, ` +
        `${health.errorLines.length} error log lines (${health.log})`,
    )
  }
  if (direct && tidepool) {
    tidepoolOnly = tests.filter(
      (name) => statusOf(direct, name) === 'ok' && statusOf(tidepool, name) !== 'ok',
    )
    const tidepoolPassesOnly = tests.filter(
      (name) => statusOf(direct, name) !== 'ok' && statusOf(tidepool, name) === 'ok',
    )
    const both = tests.filter((name) => statusOf(direct, name) !== 'ok' && statusOf(tidepool, name) !== 'ok')
    log('')
    log(`Pass directly, fail through Tidepool (${tidepoolOnly.length}):`)
    for (const name of tidepoolOnly) {
      const result = tidepool.results.get(name)
      const hung = killedTests.get('tidepool')?.includes(name) ?? false
      const output = await readResult(tidepool, name)
      const diff = tidepool.diffs.get(name) ?? ''
      const cause = probableCause({ note: result?.note ?? '', diff, output, hung })
      causes[name] = cause
      const killed = hung ? ` (no end within ${testTimeoutMs / 1000} s: killed)` : ''
      log(`  ${name}: ${statusOf(tidepool, name)}${result?.note ? ` ${result.note}` : ''}${killed}`)
      const known = BACKEND_LIFETIME_DIFFERENCES.get(name)
      if (known !== undefined) log(`    known backend-lifetime difference: ${known}`)
      log(`    probable cause: ${cause}`)
      // A test cut short is best shown by where it stopped; others by how they differ.
      const excerpt = hung || result?.note ? lastLines(output, 6) : diffExcerpt(diff)
      for (const line of excerpt) log(`      ${line}`)
    }
    if (both.length > 0) log(`Fail both ways (${both.length}): ${both.join(', ')}`)
    if (tidepoolPassesOnly.length > 0) {
      log(
        `Fail directly, pass through Tidepool (${tidepoolPassesOnly.length}): ${tidepoolPassesOnly.join(', ')}`,
      )
    }
  } else {
    for (const side of sides) {
      const failed = tests.filter((name) => statusOf(side, name) !== 'ok')
      log(`${side.label} failures (${failed.length}): ${failed.join(', ')}`)
    }
  }
  log(`Outputs: ${sides.map((s) => s.outDir).join(', ')} (regression.diffs, results/)`)
  log(`Total time ${fmtDuration(Date.now() - wallStart)}`)

  const summary = {
    date: runDate,
    version: prereq.version,
    tidepool: revision,
    tests: tests.length,
    poolSize,
    sides: sides.map((side) => ({
      label: side.label,
      passed: passed(side, tests),
      ms: side.ms,
      timedOut: side.timedOut,
      killedTests: killedTests.get(side.label) ?? [],
      gateway: side.gateway,
      status: Object.fromEntries(tests.map((name) => [name, statusOf(side, name)])),
    })),
    tidepoolOnly,
    causes,
  }
  await writeFile(join(cacheDir, 'summary.json'), `${JSON.stringify(summary, null, 2)}\n`)

  if (!opts.strict) return 0
  const gatewayBroke =
    tidepool?.gateway && (tidepool.gateway.exitedEarly || !tidepool.gateway.answersAfterRun)
  const unexplained = tidepoolOnly.filter((name) => !BACKEND_LIFETIME_DIFFERENCES.has(name))
  if (unexplained.length > 0) log(`strict: ${unexplained.length} unexplained: ${unexplained.join(', ')}`)
  return unexplained.length > 0 || gatewayBroke || sides.some((s) => s.timedOut) ? 1 : 0
}

async function cleanup(): Promise<void> {
  stopping = true
  for (const child of children) {
    killGroup(child, 'SIGKILL')
    child.kill('SIGKILL')
  }
  await Promise.allSettled([...servers].map((pg) => pg.stop()))
}

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    log(`${signal}: stopping`)
    cleanup().finally(() => process.exit(130))
  })
}

try {
  process.exitCode = await main()
} catch (err) {
  process.stderr.write(
    `test:regress failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
  )
  await cleanup()
  process.exitCode = 2
}
