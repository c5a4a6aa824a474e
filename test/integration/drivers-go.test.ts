/**
 * pgx (Go) through the gateway: 100 separate pgx.Connect sessions on a pool of 5, each
 * with pgx's default QueryExecModeCacheStatement, so every parameterized query is
 * prepared once per session under a name derived from its text and then executed by
 * name: the same name and text in every session for the shared query, a name of its
 * own for each session's private text, pipelined batches, transactions committed and
 * rolled back, and the other query modes once each. The program (test/drivers/pgx)
 * checks every result and the end state itself; this test builds it, runs it, and
 * watches that the server never holds more than the pool's 5 backends for the gateway.
 *
 * Skipped when `go` is not on PATH. The first build may download the pinned modules.
 */
import assert from 'node:assert/strict'
import { constants } from 'node:fs'
import { access, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { delimiter, join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { fileURLToPath } from 'node:url'
import type { Gateway } from '../../src/gateway/index.ts'
import { watchBackends } from '../support/backends.ts'
import { startTestGateway } from '../support/gateway.ts'
import { startTestPostgres, type TestPostgres } from '../support/postgres.ts'
import { type ProgramResult, runProgram } from '../support/programs.ts'

const POOL_SIZE = 5
const CLIENTS = 100
const ITERATIONS = 30
/** Per client and iteration the program runs at least this many statements. */
const MIN_QUERIES_PER_ITERATION = 12
/** First build may fetch the modules go.sum pins. */
const BUILD_TIMEOUT_MS = 5 * 60_000
/** The program gives up by itself after 4 minutes; this is the backstop. */
const RUN_TIMEOUT_MS = 5 * 60_000
const PROGRAM_DIR = fileURLToPath(new URL('../drivers/pgx/', import.meta.url))

/** The absolute path of `go` on PATH, or null. */
async function findGo(): Promise<string | null> {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir === '') continue
    const candidate = join(dir, 'go')
    try {
      await access(candidate, constants.X_OK)
      return candidate
    } catch {
      // Not here.
    }
  }
  return null
}

function describeRun(result: ProgramResult): string {
  return `exit ${result.code} signal ${result.signal} after ${result.ms} ms\nstdout:\n${result.stdout}\nstderr:\n${result.stderr}`
}

const goPath = await findGo()

describe('pgx (Go) through the gateway (pool of 5)', () => {
  let buildDir: string | undefined
  let binary: string
  let server: TestPostgres | undefined
  let gateway: Gateway | undefined

  before(
    async () => {
      if (goPath === null) return
      buildDir = await mkdtemp(join(tmpdir(), 'tidepool-pgx-'))
      binary = join(buildDir, 'pgx-driver')
      const build = await runProgram(goPath, ['build', '-mod=mod', '-buildvcs=false', '-o', binary, '.'], {
        cwd: PROGRAM_DIR,
        env: { ...(process.env as Record<string, string>), GOFLAGS: '-mod=mod' },
        timeoutMs: BUILD_TIMEOUT_MS,
      })
      assert.equal(build.code, 0, `go build failed: ${describeRun(build)}`)
      server = await startTestPostgres({ settings: { max_connections: 50 } })
      gateway = await startTestGateway(server, { poolSize: POOL_SIZE })
    },
    { timeout: BUILD_TIMEOUT_MS + 2 * 60_000 },
  )

  after(async () => {
    await gateway?.close()
    await server?.stop()
    if (buildDir !== undefined) await rm(buildDir, { recursive: true, force: true })
  })

  test(`${CLIENTS} pgx connections with the automatic statement cache, batches and transactions`, {
    timeout: RUN_TIMEOUT_MS + 60_000,
  }, async (t) => {
    if (goPath === null || server === undefined || gateway === undefined) {
      t.skip('go is not on PATH: the pgx driver program cannot be built')
      return
    }
    const watch = await watchBackends(server)
    let result: ProgramResult
    try {
      result = await runProgram(binary, [], {
        // Nothing of ours: pgx reads PGHOST, PGPORT and friends as defaults.
        env: {
          PATH: '/usr/bin:/bin',
          DATABASE_URL: `postgres://postgres@127.0.0.1:${gateway.port}/postgres?sslmode=disable`,
          CLIENTS: String(CLIENTS),
          ITERATIONS: String(ITERATIONS),
        },
        timeoutMs: RUN_TIMEOUT_MS,
      })
    } finally {
      await watch.stop()
    }
    assert.equal(result.code, 0, `pgx driver program failed: ${describeRun(result)}`)
    const summary = JSON.parse(result.stdout.trim()) as {
      clients: number
      iterations: number
      queries: number
    }
    assert.equal(summary.clients, CLIENTS)
    assert.equal(summary.iterations, ITERATIONS)
    assert.ok(
      summary.queries >= CLIENTS * ITERATIONS * MIN_QUERIES_PER_ITERATION,
      `only ${summary.queries} queries ran`,
    )
    assert.ok(watch.max >= 1, 'no pooled backend was ever seen: the sampler is not looking')
    assert.ok(
      watch.max <= POOL_SIZE,
      `saw ${watch.max} backends in pg_stat_activity, pool size is ${POOL_SIZE}`,
    )
  })
})
