/**
 * pgbench through the gateway: the TPC-B-like default script in every query mode with
 * 100 clients on a pool of 5, and a connection-per-transaction run. The server side is
 * watched while the load runs (never more than 5 pooled backends) and the TPC-B
 * invariant is checked afterwards (every committed transaction is whole).
 */
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import type { Gateway } from '../../src/gateway/index.ts'
import { watchBackends } from '../support/backends.ts'
import { startTestGateway } from '../support/gateway.ts'
import { startTestPostgres, type TestPostgres } from '../support/postgres.ts'
import { connectArgs, type ProgramResult, runPgProgram } from '../support/programs.ts'

const POOL_SIZE = 5
/** Long enough for 95 queued clients behind 5 busy backends, short enough to fail fast. */
const WAIT_TIMEOUT_MS = 10_000
/** A pgbench run still going after this long is stuck: it is killed and the test fails. */
const RUN_TIMEOUT_MS = 30_000

interface Outcome {
  result: ProgramResult
  processed: number | null
  expected: number | null
  failed: number | null
  maxBackends: number
  samples: number
}

describe('pgbench through the gateway (pool of 5)', () => {
  let server: TestPostgres
  let gateway: Gateway

  before(async () => {
    server = await startTestPostgres({ settings: { max_connections: 50 } })
    gateway = await startTestGateway(server, { poolSize: POOL_SIZE, waitTimeoutMs: WAIT_TIMEOUT_MS })
    const init = await runPgProgram('pgbench', [
      ...connectArgs('127.0.0.1', gateway.port),
      '-i',
      '-s',
      '2',
      '-q',
      'postgres',
    ])
    assert.equal(init.code, 0, `pgbench -i failed:\n${init.stderr}`)
  })

  after(async () => {
    await gateway?.close()
    await server?.stop()
  })

  /** Runs pgbench with `args` while sampling the backends the gateway holds. */
  async function bench(args: string[], timeoutMs = RUN_TIMEOUT_MS): Promise<Outcome> {
    const watch = await watchBackends(server)
    let result: ProgramResult
    try {
      result = await runPgProgram(
        'pgbench',
        [...connectArgs('127.0.0.1', gateway.port), ...args, 'postgres'],
        {
          timeoutMs,
        },
      )
    } finally {
      await watch.stop().catch(() => {})
    }
    const processed = /number of transactions actually processed: (\d+)(?:\/(\d+))?/.exec(result.stdout)
    const failed = /number of failed transactions: (\d+)/.exec(result.stdout)
    return {
      result,
      processed: processed ? Number(processed[1]) : null,
      expected: processed?.[2] ? Number(processed[2]) : null,
      failed: failed ? Number(failed[1]) : null,
      maxBackends: watch.max,
      samples: watch.samples,
    }
  }

  function assertClean(outcome: Outcome, transactions: number): void {
    const { result } = outcome
    const output = `stdout:\n${result.stdout}\nstderr (first 2000 chars):\n${result.stderr.slice(0, 2000)}`
    assert.equal(result.signal, null, `pgbench was killed after ${result.ms}ms (stuck)\n${output}`)
    assert.equal(result.code, 0, `pgbench exited ${result.code}\n${output}`)
    assert.equal(outcome.failed, 0, `failed transactions\n${output}`)
    assert.equal(outcome.processed, transactions, output)
    assert.equal(outcome.expected, transactions, output)
    assert.ok(outcome.samples >= 1, 'pg_stat_activity was never sampled')
    assert.ok(outcome.maxBackends >= 1, 'no pooled backend was ever seen: the sampler is not looking')
    assert.ok(
      outcome.maxBackends <= POOL_SIZE,
      `saw ${outcome.maxBackends} backends in pg_stat_activity, pool size is ${POOL_SIZE}`,
    )
  }

  test('TPC-B-like, -M simple, 100 clients, 2 threads', async () => {
    assertClean(await bench(['-n', '-c', '100', '-j', '2', '-t', '50', '-M', 'simple']), 5000)
  })

  test('TPC-B-like, -M extended, 100 clients, 2 threads', async () => {
    assertClean(await bench(['-n', '-c', '100', '-j', '2', '-t', '50', '-M', 'extended']), 5000)
  })

  test('TPC-B-like, -M prepared, 100 clients, one thread each', async () => {
    // Each pgbench thread blocks in a synchronous PQprepare; with one client per
    // thread that never holds up another client, so this isolates the gateway's
    // prepared-statement path from the test below.
    assertClean(await bench(['-n', '-c', '100', '-j', '100', '-t', '20', '-M', 'prepared']), 2000)
  })

  test('TPC-B-like, -M prepared, 100 clients, 2 threads', async () => {
    // pgbench prepares each statement on first use with a blocking PQprepare (Parse +
    // Sync) while its other clients on the same thread may sit in open transactions
    // holding every backend. Only because the gateway answers the Parse of a statement
    // the pool already prepared without taking a lease does the thread not wait for a
    // backend only it can free (before that, this run deadlocked until the wait timeout).
    // Working, this takes 2-3 s; stuck, it is killed after 20 s.
    assertClean(await bench(['-n', '-c', '100', '-j', '2', '-t', '20', '-M', 'prepared'], 20_000), 2000)
  })

  test('connection per transaction: -C -S, 20 clients', async () => {
    assertClean(await bench(['-n', '-C', '-S', '-c', '20', '-j', '2', '-t', '20']), 400)
  })

  test('TPC-B invariant holds: every committed transaction is whole', async () => {
    const [accounts, tellers, branches, history, rows] = (
      await server.psql(
        `SELECT sum(abalance) FROM pgbench_accounts;
         SELECT sum(tbalance) FROM pgbench_tellers;
         SELECT sum(bbalance) FROM pgbench_branches;
         SELECT coalesce(sum(delta), 0) FROM pgbench_history;
         SELECT count(*) FROM pgbench_history;`,
      )
    ).split('\n')
    assert.ok(Number(rows) > 0, 'no transaction reached pgbench_history')
    assert.equal(accounts, history, 'sum(abalance) != sum(delta)')
    assert.equal(tellers, history, 'sum(tbalance) != sum(delta)')
    assert.equal(branches, history, 'sum(bbalance) != sum(delta)')
  })
})
