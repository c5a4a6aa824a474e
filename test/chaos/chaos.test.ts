/**
 * Chaos: a real `tidepool up` cluster (a primary, no replica, a pool of 4 backends) under
 * write load from node-postgres, psycopg 3 and pgx v5 writers, 4 sessions each, through
 * the gateway's read-write port, while the suite injects faults round after round:
 * SIGKILL of the primary's postmaster (its pooler restarts it), pg_terminate_backend of
 * every pooled backend (FATAL 57P01, as an operator's intervention), SIGKILL of the
 * primary's pooler and of the gateway (brought back by `up`, as an operator would), and
 * SIGSTOP of the postmaster for 2 s. Each writer prints every write it was acknowledged
 * (ledger.ts): transactions, autocommit INSERTs, and CALLs of a procedure that commits
 * its INSERT and then sleeps, so that a statement sent again after its backend died
 * would show as a second row.
 *
 * Afterwards, from a direct superuser connection to the primary's Unix socket: every
 * acknowledged (writer, seq) is in the table (none LOST), none is there twice (none
 * DUPLICATED; the table has no unique key on (writer, seq), so a write applied twice
 * shows), no backend is left idle in a transaction and the pooler leases none, and a
 * fresh client is served through the gateway. Writers seeing errors is expected.
 *
 * `npm run test:chaos`; TIDEPOOL_CHAOS_ROUNDS (default 3) and TIDEPOOL_CHAOS_LOAD_MS
 * (load after each fault, default 2500) tune it; the figures of the last run go to
 * .tmp/chaos-summary.json. A writer whose tool is missing (python3 with psycopg, go) is
 * left out with the reason, except under CI=true, where that fails the suite.
 */
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import pg from 'pg'
import { type ClusterConfig, down, isAlive, loadClusterConfig, status, up } from '../../src/cluster/index.ts'
import { createLogger } from '../../src/log.ts'
import { prepareServiceDir } from '../../src/pgctl/index.ts'
import type { InstanceRecord } from '../../src/topology/index.ts'
import { eventuallyValue } from '../support/faults.ts'
import { freePort, freePortRun } from '../support/ports.ts'
import { key, Ledger, WriterProcess } from './ledger.ts'
import { buildGoWriter, CHAOS_DIR, PYTHON_TARGET, preparePython, ROOT } from './tools.ts'

const ROUNDS = Number(process.env.TIDEPOOL_CHAOS_ROUNDS ?? '3')
const LOAD_MS = Number(process.env.TIDEPOOL_CHAOS_LOAD_MS ?? '2500')
const POOL_SIZE = 4
const CONNECTIONS_PER_WRITER = 4
const STOP_MS = 2000
/** How long a component may take to come back after a fault. */
const RECOVERY_MS = 60_000
/** How long a writer may take to finish its write in hand once told to stop. */
const WRITER_GRACE_MS = 30_000
/** How long after the writers stopped the server and the pool may take to show nothing held. */
const SETTLE_MS = 20_000
const FAULTS = [
  'postmaster-kill',
  'backend-terminate',
  'pooler-kill',
  'gateway-kill',
  'postmaster-stop',
] as const
type Fault = (typeof FAULTS)[number]

const log = createLogger('error')
const CI = process.env.CI === 'true'

/** The processes' command lines name the cluster's directory: a pid we may still signal is ours. */
function runsIn(pid: number, dir: string): boolean {
  try {
    return execFileSync('cat', [`/proc/${pid}/cmdline`], { encoding: 'utf8' }).includes(dir)
  } catch {
    return false
  }
}

function gitDescription(): string {
  try {
    const head = execFileSync('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD'], {
      encoding: 'utf8',
    }).trim()
    const dirty = execFileSync('git', ['-C', ROOT, 'status', '--porcelain', '--', 'src'], {
      encoding: 'utf8',
    })
    return dirty.trim() === '' ? head : `${head} (src/ has uncommitted changes)`
  } catch {
    return 'unknown'
  }
}

interface Row {
  writer: string
  seq: number
  n: number
  ids: string[]
  notes: string[]
}

describe('chaos: acknowledged writes survive faults of Postgres, pooler and gateway', () => {
  let dir: string | undefined
  let config: ClusterConfig | undefined
  let url = ''
  const ledger = new Ledger()
  const writers: WriterProcess[] = []
  const skipped: string[] = []
  const faults = new Map<Fault, number>()
  /** Faults after which a writer acknowledged nothing new within the load period and 30 s more. */
  const stalls: string[] = []
  /** Every pid read from the cluster's status: what `after` may kill if `down` left it. */
  const pids = new Set<number>()
  /** Postmasters stopped with SIGSTOP and not continued yet. */
  const stopped = new Set<number>()
  let loadFinished = false
  /** Backends ended by the backend-terminate faults. */
  let terminated = 0
  let rows: Row[] | undefined
  let leakReport = ''
  let buildDir: string | undefined

  async function primary(): Promise<InstanceRecord> {
    const snapshot = await status(config!)
    for (const instance of snapshot.instances) {
      if (instance.poolerPid !== null) pids.add(instance.poolerPid)
      if (instance.postgresPid !== null) pids.add(instance.postgresPid)
    }
    for (const gateway of snapshot.gateways) pids.add(gateway.pid)
    return snapshot.instances[0]
  }

  async function gatewayPid(): Promise<number> {
    const snapshot = await status(config!)
    assert.equal(snapshot.gateways.length, 1, 'one gateway runs')
    pids.add(snapshot.gateways[0].pid)
    return snapshot.gateways[0].pid
  }

  async function healthy(what: string, accept: (record: InstanceRecord) => boolean = () => true) {
    return eventuallyValue(
      what,
      async () => {
        const record = await primary()
        return record.health === 'healthy' && isAlive(record.postgresPid) && accept(record)
          ? record
          : undefined
      },
      RECOVERY_MS,
    )
  }

  async function direct(): Promise<pg.Client> {
    const record = await primary()
    const client = new pg.Client({
      host: record.socketDir,
      port: record.port,
      user: 'postgres',
      database: config!.user,
      application_name: 'tidepool-chaos-direct',
    })
    await client.connect()
    return client
  }

  async function inject(fault: Fault): Promise<void> {
    const before = await primary()
    if (fault === 'postmaster-kill') {
      process.kill(before.postgresPid!, 'SIGKILL')
      await healthy(
        'the primary restarted by its pooler',
        (record) => record.postgresPid !== before.postgresPid,
      )
    } else if (fault === 'backend-terminate') {
      // What an operator's pg_terminate_backend does: each pooled backend ends with FATAL 57P01.
      const client = await direct()
      try {
        const { rows: ended } = await client.query(
          `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
            WHERE backend_type = 'client backend' AND usename = $1 AND pid <> pg_backend_pid()`,
          [config!.user],
        )
        terminated += ended.length
      } finally {
        await client.end()
      }
    } else if (fault === 'pooler-kill') {
      process.kill(before.poolerPid!, 'SIGKILL')
      await eventuallyValue(
        'the pooler gone',
        async () => (isAlive(before.poolerPid) ? undefined : true),
        RECOVERY_MS,
      )
      await up(config!, log)
      await healthy('a new pooler serving the primary', (record) => record.poolerPid !== before.poolerPid)
    } else if (fault === 'gateway-kill') {
      const pid = await gatewayPid()
      process.kill(pid, 'SIGKILL')
      await eventuallyValue('the gateway gone', async () => (isAlive(pid) ? undefined : true), RECOVERY_MS)
      await up(config!, log)
      assert.notEqual(await gatewayPid(), pid, 'a new gateway runs')
    } else {
      const pid = before.postgresPid!
      process.kill(pid, 'SIGSTOP')
      stopped.add(pid)
      try {
        await sleep(STOP_MS)
      } finally {
        process.kill(pid, 'SIGCONT')
        stopped.delete(pid)
      }
      await healthy('the primary serving after SIGCONT')
    }
    faults.set(fault, (faults.get(fault) ?? 0) + 1)
  }

  /** Load for LOAD_MS; then each writer must have had an ack since `since`, or it is a stall. */
  async function load(phase: string, since: Record<string, number>): Promise<void> {
    await sleep(LOAD_MS)
    for (const writer of writers) {
      const progressed = () => ledger.ackCount(writer.name) > (since[writer.name] ?? 0)
      const deadline = Date.now() + 30_000
      while (!progressed() && Date.now() < deadline && writer.running) await sleep(100)
      if (!progressed()) stalls.push(`${writer.name} after ${phase}`)
    }
  }

  before(
    async () => {
      buildDir = await mkdtemp(join(tmpdir(), 'tidepool-chaos-build-'))
      const [python, go] = await Promise.all([preparePython(), buildGoWriter(buildDir)])
      for (const [name, tool] of [
        ['psycopg', python],
        ['pgx', go],
      ] as const) {
        if (tool.ok) continue
        if (CI) assert.fail(`the ${name} writer cannot run under CI: ${tool.reason}`)
        skipped.push(`${name}: ${tool.reason}`)
      }

      dir = await mkdtemp(join(tmpdir(), 'tidepool-chaos-'))
      await prepareServiceDir(dir, 0o711)
      config = loadClusterConfig({
        flags: {
          dir: join(dir, 'data'),
          port: String(await freePort()),
          replicaPort: String(await freePort()),
          instancePortBase: String(await freePortRun(1)),
          replicas: '0',
          poolSize: String(POOL_SIZE),
          logLevel: 'warn',
        },
        env: {},
      })
      const result = await up(config, log)
      url = result.url
      await primary()
      const setup = new pg.Client({ connectionString: url })
      await setup.connect()
      // No unique key on (writer, seq): a write applied twice must show as two rows.
      await setup.query(`CREATE TABLE chaos (
        id bigserial PRIMARY KEY,
        writer text NOT NULL,
        seq int NOT NULL,
        note text,
        at timestamptz NOT NULL DEFAULT clock_timestamp())`)
      // A statement that commits, then takes a while to reply: sent again after its
      // backend died, it would commit a second row.
      await setup.query(`CREATE PROCEDURE chaos_write(w text, s int, n text, pause_ms int) LANGUAGE plpgsql AS $$
        BEGIN
          INSERT INTO chaos (writer, seq, note) VALUES (w, s, n);
          COMMIT;
          PERFORM pg_sleep(pause_ms / 1000.0);
        END $$`)
      await setup.end()

      const common = { DATABASE_URL: url, CONNECTIONS: String(CONNECTIONS_PER_WRITER) }
      const libpqUrl = `${url}?sslmode=disable&connect_timeout=10`
      writers.push(
        new WriterProcess(
          'node',
          process.execPath,
          [join(CHAOS_DIR, 'writer-node.ts')],
          { ...common, WRITER: 'node' },
          ledger,
        ),
      )
      if (python.ok)
        writers.push(
          new WriterProcess(
            'py',
            python.path,
            [join(CHAOS_DIR, 'writer.py')],
            {
              ...common,
              DATABASE_URL: libpqUrl,
              WRITER: 'py',
              PYTHONPATH: PYTHON_TARGET,
              PYTHONUNBUFFERED: '1',
            },
            ledger,
          ),
        )
      if (go.ok)
        writers.push(
          new WriterProcess('go', go.path, [], { ...common, DATABASE_URL: libpqUrl, WRITER: 'go' }, ledger),
        )
    },
    { timeout: 10 * 60_000 },
  )

  after(async () => {
    for (const pid of stopped) process.kill(pid, 'SIGCONT')
    for (const writer of writers) if (writer.running) writer.child.kill('SIGKILL')
    await Promise.all(writers.map((writer) => writer.exited))
    if (config !== undefined) {
      try {
        await primary()
      } catch {
        // Only to learn pids; down below stops what runs.
      }
      await down(config, log).catch((error: unknown) => console.error(`chaos: down failed: ${String(error)}`))
      for (const pid of pids) if (isAlive(pid) && runsIn(pid, config.dir)) process.kill(pid, 'SIGKILL')
    }
    await printSummary()
    if (buildDir !== undefined) await rm(buildDir, { recursive: true, force: true })
    if (dir !== undefined && process.env.TIDEPOOL_KEEP_TEST_DIRS !== '1')
      await rm(dir, { recursive: true, force: true })
    else if (dir !== undefined) console.log(`chaos: cluster directory kept in ${dir}`)
  })

  test(`${ROUNDS} rounds of ${FAULTS.join(', ')} under load`, { timeout: 10 * 60_000 }, async (t) => {
    for (const reason of skipped) t.diagnostic(`writer left out: ${reason}`)
    try {
      await load('warm-up', {})
      for (let round = 1; round <= ROUNDS; round++) {
        for (const fault of FAULTS) {
          const phase = `round ${round} ${fault}`
          const since = Object.fromEntries(
            writers.map((writer) => [writer.name, ledger.ackCount(writer.name)]),
          )
          ledger.phase = phase
          await inject(fault)
          await load(phase, since)
        }
      }
      ledger.phase = 'stopping'
    } finally {
      for (const writer of writers) {
        const { code, signal } = await writer.stop(WRITER_GRACE_MS)
        if (writer.killed) stalls.push(`${writer.name} did not stop within ${WRITER_GRACE_MS} ms`)
        else if (code !== 0) stalls.push(`${writer.name} exited with ${code ?? signal}: ${writer.stderr}`)
      }
    }
    loadFinished = true
    assert.deepEqual(ledger.protocolProblems, [])
    for (const writer of writers)
      assert.ok(ledger.ackCount(writer.name) > 0, `the ${writer.name} writer was never acknowledged a write`)
  })

  test('no backend is left idle in a transaction, and the pooler leases none', {
    timeout: SETTLE_MS + 30_000,
  }, async () => {
    assert.ok(loadFinished, 'the load did not finish')
    const client = await direct()
    try {
      await eventuallyValue(
        'no session idle in transaction on the primary and no leased backend',
        async () => {
          const { rows: idle } = await client.query(
            `SELECT pid, usename, application_name, state, now() - state_change AS since, left(query, 100) AS query
               FROM pg_stat_activity
              WHERE pid <> pg_backend_pid() AND state LIKE 'idle in transaction%'`,
          )
          const record = await primary()
          leakReport = `idle in transaction: ${JSON.stringify(idle)}; pool: ${JSON.stringify(record.pool)}`
          return idle.length === 0 && record.pool.leased === 0 && record.pool.waiting === 0 ? true : undefined
        },
        SETTLE_MS,
      )
      leakReport = 'none'
    } catch (error) {
      assert.fail(`${(error as Error).message}\n${leakReport}`)
    } finally {
      await client.end()
    }
  })

  test('the cluster serves a fresh client through the gateway', { timeout: 60_000 }, async () => {
    const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 30_000 })
    client.on('error', () => {})
    await client.connect()
    try {
      await client.query("INSERT INTO chaos (writer, seq, note) VALUES ('fresh', 1, 'after the faults')")
      const { rows: found } = await client.query(
        "SELECT count(*)::int AS n FROM chaos WHERE writer = 'fresh'",
      )
      assert.equal(found[0].n, 1)
    } finally {
      await client.end()
    }
  })

  async function tableRows(): Promise<Row[]> {
    if (rows !== undefined) return rows
    const client = await direct()
    try {
      const result = await client.query<Row>(
        `SELECT writer, seq, count(*)::int AS n, array_agg(id::text ORDER BY id) AS ids,
                array_agg(note ORDER BY id) AS notes
           FROM chaos WHERE writer <> 'fresh' GROUP BY writer, seq`,
      )
      rows = result.rows
      return rows
    } finally {
      await client.end()
    }
  }

  function describeWrite(writer: string, seq: number): string {
    const ack = ledger.acks.get(key(writer, seq))
    const error = ledger.failed.get(key(writer, seq))
    if (ack !== undefined) return `acknowledged (${ack.kind}) during ${ack.phase}`
    if (error !== undefined)
      return `failed at ${error.step} with ${error.code} during ${error.phase}: ${error.message}`
    return 'no report from its writer'
  }

  test('every acknowledged write is in the table (none lost)', { timeout: 60_000 }, async () => {
    assert.ok(loadFinished, 'the load did not finish')
    const present = new Set((await tableRows()).map((row) => key(row.writer, row.seq)))
    const lost = [...ledger.acks.values()].filter((ack) => !present.has(key(ack.writer, ack.seq)))
    assert.equal(
      lost.length,
      0,
      `${lost.length} acknowledged writes LOST, e.g.:\n${lost
        .slice(0, 20)
        .map((ack) => `  ${ack.writer}/${ack.seq} ${describeWrite(ack.writer, ack.seq)}`)
        .join('\n')}`,
    )
  })

  test('no write is in the table twice (none duplicated)', { timeout: 60_000 }, async () => {
    assert.ok(loadFinished, 'the load did not finish')
    const twice = (await tableRows()).filter((row) => row.n > 1)
    assert.equal(
      twice.length,
      0,
      `${twice.length} writes DUPLICATED, e.g.:\n${twice
        .slice(0, 20)
        .map(
          (row) =>
            `  ${row.writer}/${row.seq} ${row.n} rows (ids ${row.ids.join(', ')}, ${row.notes[0]}), ${describeWrite(row.writer, row.seq)}`,
        )
        .join('\n')}`,
    )
  })

  async function printSummary(): Promise<void> {
    const present = rows === undefined ? undefined : new Set(rows.map((row) => key(row.writer, row.seq)))
    const lost =
      present === undefined
        ? null
        : [...ledger.acks.values()].filter((ack) => !present.has(key(ack.writer, ack.seq))).length
    const duplicated = rows === undefined ? null : rows.filter((row) => row.n > 1).length
    const inDoubt =
      rows === undefined ? null : rows.filter((row) => !ledger.acks.has(key(row.writer, row.seq))).length
    const lostByPhase: Record<string, number> = {}
    const duplicatedByPhase: Record<string, number> = {}
    if (present !== undefined) {
      for (const ack of ledger.acks.values())
        if (!present.has(key(ack.writer, ack.seq))) lostByPhase[ack.phase] = (lostByPhase[ack.phase] ?? 0) + 1
      for (const row of rows!.filter((candidate) => candidate.n > 1)) {
        const phase =
          ledger.acks.get(key(row.writer, row.seq))?.phase ??
          ledger.failed.get(key(row.writer, row.seq))?.phase ??
          '?'
        duplicatedByPhase[phase] = (duplicatedByPhase[phase] ?? 0) + 1
      }
    }
    const errors = Object.fromEntries([...ledger.errorsByCode].sort((a, b) => b[1] - a[1]))
    const summary = {
      date: new Date().toISOString(),
      command: 'npm run test:chaos',
      code: gitDescription(),
      rounds: ROUNDS,
      loadMs: LOAD_MS,
      poolSize: POOL_SIZE,
      writers: writers.map((writer) => `${writer.name}×${CONNECTIONS_PER_WRITER}`),
      skipped,
      faults: Object.fromEntries(faults),
      backendsTerminated: terminated,
      acknowledged: ledger.acks.size,
      acknowledgedBy: ledger.acksByProgram(),
      lost,
      lostByPhase,
      duplicated,
      duplicatedByPhase,
      inDoubtCommitted: inDoubt,
      errors,
      errorSamples: Object.fromEntries(ledger.sampleByCode),
      errorsByPhase: Object.fromEntries(
        [...ledger.errorsByPhase].map(([phase, counts]) => [phase, Object.fromEntries(counts)]),
      ),
      stalls,
      leaks: leakReport,
    }
    const faultText = Object.entries(summary.faults)
      .map(([name, count]) => `${name} ${count}`)
      .join(', ')
    const errorText = Object.entries(errors)
      .map(([code, count]) => `${code} ${count}`)
      .join(', ')
    console.log(
      `chaos: rounds ${ROUNDS}; faults ${faultText || 'none'}; acknowledged ${summary.acknowledged} ` +
        `(${Object.entries(summary.acknowledgedBy)
          .map(([name, count]) => `${name} ${count}`)
          .join(', ')}); lost ${lost ?? '?'}; duplicated ${duplicated ?? '?'}; ` +
        `committed but not acknowledged ${inDoubt ?? '?'}; writer errors ${errorText || 'none'}` +
        (stalls.length > 0 ? `; stalls: ${stalls.join('; ')}` : ''),
    )
    await mkdir(join(ROOT, '.tmp'), { recursive: true })
    await writeFile(join(ROOT, '.tmp', 'chaos-summary.json'), `${JSON.stringify(summary, null, 2)}\n`)
  }
})
