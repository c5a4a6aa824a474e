/**
 * Cross-session isolation under fire: 30 sessions share a pool of 3. Most of them set
 * state of their own (search_path to their own schema, application_name, a custom
 * setting, SET ROLE, a temporary table, a session advisory lock), often inside a
 * transaction block, and vanish at random points of their exchange: half a message
 * written, replies in flight, right after a reply, Terminate in the same write as the
 * statement. Meanwhile checker sessions verify on every statement that they see exactly
 * their own state and nothing of anyone else's, as Postgres would give a session of its
 * own. The run is bounded in time; its seed is printed (TIDEPOOL_TEST_SEED replays it).
 */
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import pg from 'pg'
import type { Gateway } from '../../src/gateway/index.ts'
import { directClient } from '../support/backends.ts'
import { describeReply, errorsOf, readReply } from '../support/faults.ts'
import { startTestGateway } from '../support/gateway.ts'
import { createRole, startTestPostgres, type TestPostgres } from '../support/postgres.ts'
import { query, RawClient, terminate } from '../support/raw-client.ts'
import { describeErrors, trackUncaught } from '../support/uncaught.ts'

const APP = 'app'
const ROLES = ['iso_r0', 'iso_r1', 'iso_r2', 'iso_r3']
const POOL_SIZE = 3
/** Sessions that set state and vanish. */
const CHAOS_WORKERS = 24
/** Long-lived sessions with state of their own, checking on every statement. */
const OWN_STATE_CHECKERS = 3
/** Loops of short-lived sessions with no state of their own, checking they got none. */
const FRESH_CHECKERS = 3
const SCHEMAS = CHAOS_WORKERS + OWN_STATE_CHECKERS
const RUN_MS = Number(process.env.TIDEPOOL_TEST_ISOLATION_MS ?? 20_000)
const DEFAULT_SEARCH_PATH = '"$user", public'

/** A small seeded PRNG (mulberry32), so that a failing run can be replayed. */
function random(seed: number): { next(): number; int(n: number): number; pick<T>(items: readonly T[]): T } {
  let state = seed >>> 0
  const next = (): number => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  const int = (n: number): number => Math.floor(next() * n)
  return { next, int, pick: (items) => items[int(items.length)] }
}

const VANISH_KINDS = [
  'half a message, then the socket closed',
  'statement written, socket closed with the reply in flight',
  'socket closed right after a reply',
  'Terminate in the same write as the statement',
  'clean Terminate after the reply',
] as const
type VanishKind = (typeof VANISH_KINDS)[number]

/** What a checker expects of its own session. */
interface OwnState {
  searchPath: string
  applicationName: string
  tenant: string | null
  user: string
}

const CHECK_SQL = `SELECT current_setting('search_path') AS search_path,
  current_setting('application_name') AS application_name,
  current_setting('myapp.tenant', true) AS tenant,
  current_user::text AS "user",
  ARRAY(SELECT objid::int FROM pg_locks
         WHERE locktype = 'advisory' AND pid = pg_backend_pid() ORDER BY objid) AS locks,
  ARRAY(SELECT relname::text FROM pg_class
         WHERE relnamespace = pg_my_temp_schema() AND relkind = 'r' ORDER BY relname) AS temp_tables`

interface Seen {
  search_path: string
  application_name: string
  tenant: string | null
  user: string
  locks: number[]
  temp_tables: string[]
}

describe('H. cross-session isolation under fire', () => {
  let server: TestPostgres
  let gateway: Gateway
  let direct: pg.Client
  const uncaught = trackUncaught()

  before(async () => {
    server = await startTestPostgres({ settings: { max_connections: 100 } })
    await createRole(server, { name: APP, password: 'app-password', encryption: 'scram-sha-256' })
    let sql = ''
    for (const role of ROLES) sql += `CREATE ROLE ${role}; GRANT ${role} TO ${APP};\n`
    for (let i = 0; i < SCHEMAS; i++) {
      sql += `CREATE SCHEMA s${i}; GRANT USAGE ON SCHEMA s${i} TO PUBLIC;\n`
    }
    await server.psql(sql)
    gateway = await startTestGateway(server, { poolSize: POOL_SIZE, waitTimeoutMs: 20_000 })
    direct = await directClient(server)
  })

  after(async () => {
    uncaught.stop()
    await direct?.end().catch(() => {})
    await gateway?.close()
    await server?.stop()
  })

  test('sessions that set state and vanish at random never show it to another session', async (t) => {
    const seed = Number(process.env.TIDEPOOL_TEST_SEED ?? Date.now() % 1_000_000)
    t.diagnostic(`seed ${seed} (TIDEPOOL_TEST_SEED=${seed} replays the choices)`)
    const rng = random(seed)
    const deadline = Date.now() + RUN_MS
    const violations: string[] = []
    let violationCount = 0
    /** Violations by what was wrong (the field seen, or the failure), for the summary. */
    const violationKinds = new Map<string, number>()
    const violation = (text: string, kind = 'failure'): void => {
      violationCount++
      violationKinds.set(kind, (violationKinds.get(kind) ?? 0) + 1)
      if (violations.length < 200) violations.push(text)
    }
    const vanished = new Map<VanishKind, number>()
    let chaosSessions = 0
    let chaosStatements = 0
    let chaosErrors = 0
    const chaosErrorCodes = new Map<string, number>()
    let checks = 0
    let pinnedChecks = 0
    let freshSessions = 0
    /** Unique per chaos session: its temp table's and advisory lock's names. */
    let instance = 0

    // ---- sessions that set state and vanish ----

    async function chaosSession(worker: number): Promise<void> {
      const me = ++instance
      chaosSessions++
      const { client } = await RawClient.login(gateway.port, {
        user: APP,
        database: 'postgres',
        application_name: `chaos_${worker}`,
      })
      try {
        const statements = [
          `SET search_path TO s${worker}`,
          `SET application_name = 'chaos_${worker}_${me}'`,
          `SET myapp.tenant = 'chaos_${me}'`,
          `SET ROLE ${rng.pick(ROLES)}`,
          `CREATE TEMP TABLE chaos_${me} (id int); INSERT INTO chaos_${me} VALUES (${me})`,
          `SELECT pg_advisory_lock(${100_000 + me})`,
          `SELECT set_config('search_path', 's${worker}, public', false)`,
        ]
        // A random order and a random subset, sometimes inside a transaction block.
        for (let i = statements.length - 1; i > 0; i--) {
          const j = rng.int(i + 1)
          ;[statements[i], statements[j]] = [statements[j], statements[i]]
        }
        const steps = statements.slice(0, 1 + rng.int(statements.length))
        if (rng.next() < 0.4) steps.splice(rng.int(steps.length + 1), 0, 'BEGIN')
        const vanishAt = rng.int(steps.length + 1)
        const kind = rng.pick(VANISH_KINDS)
        for (const sql of steps.slice(0, vanishAt)) {
          const reply = await send(client, sql)
          chaosStatements++
          const errors = errorsOf(reply.messages)
          if (errors.length > 0) {
            chaosErrors++
            chaosErrorCodes.set(errors[0].code, (chaosErrorCodes.get(errors[0].code) ?? 0) + 1)
          }
          if (reply.closed || reply.timedOut) {
            violation(`chaos session ${me}: "${sql}" got ${describeReply(reply)}`)
            return
          }
        }
        const last = query(steps[vanishAt] ?? 'SELECT 1')
        vanished.set(kind, (vanished.get(kind) ?? 0) + 1)
        switch (kind) {
          case 'half a message, then the socket closed':
            client.write(last.subarray(0, 1 + rng.int(last.length - 1)))
            await sleep(rng.int(3))
            client.destroy()
            break
          case 'statement written, socket closed with the reply in flight':
            client.write(last)
            await sleep(rng.int(4))
            client.destroy()
            break
          case 'socket closed right after a reply':
            client.write(last)
            await readReply(client, 20_000)
            client.destroy()
            break
          case 'Terminate in the same write as the statement':
            client.write(Buffer.concat([last, terminate]))
            await client.waitClosed(20_000)
            break
          case 'clean Terminate after the reply':
            client.write(last)
            await readReply(client, 20_000)
            client.end()
            await client.waitClosed(20_000)
            break
        }
      } finally {
        client.destroy()
      }
    }

    async function chaosWorker(worker: number): Promise<void> {
      while (Date.now() < deadline) {
        await chaosSession(worker).catch((error: Error) =>
          violation(`chaos worker ${worker}: ${error.message}`),
        )
      }
    }

    // ---- sessions that check ----

    async function connect(config: pg.ClientConfig): Promise<pg.Client> {
      const client = new pg.Client({
        host: '127.0.0.1',
        port: gateway.port,
        user: APP,
        database: 'postgres',
        ...config,
      })
      client.on('error', () => {})
      await client.connect()
      return client
    }

    /** Runs the check query; records every difference from `own` and the expected pins. */
    async function check(
      client: pg.Client,
      who: string,
      own: OwnState,
      pins: { locks: number[]; tempTables: string[] },
    ): Promise<void> {
      const { rows } = await client.query<Seen>(CHECK_SQL)
      checks++
      const seen = rows[0]
      const expected: Seen = {
        search_path: own.searchPath,
        application_name: own.applicationName,
        tenant: own.tenant,
        user: own.user,
        locks: pins.locks,
        temp_tables: pins.tempTables,
      }
      // A placeholder this session never set reads as null on a fresh backend and as ''
      // once anyone's RESET defined it there: both mean "not set".
      if (own.tenant === null && seen.tenant === '') seen.tenant = null
      for (const key of Object.keys(expected) as (keyof Seen)[]) {
        if (JSON.stringify(seen[key]) !== JSON.stringify(expected[key])) {
          violation(
            `${who} saw ${key} ${JSON.stringify(seen[key])}, expected ${JSON.stringify(expected[key])}`,
            key,
          )
        }
      }
    }

    /** A long-lived session with settings of its own; now and then it pins itself briefly. */
    async function ownStateChecker(k: number): Promise<void> {
      const schema = `s${CHAOS_WORKERS + k}`
      const who = `checker ${k}`
      const own: OwnState = {
        searchPath: schema,
        applicationName: `checker_${k}`,
        tenant: `checker_${k}`,
        user: k % 2 === 0 ? APP : ROLES[k % ROLES.length],
      }
      const client = await connect({ application_name: own.applicationName })
      try {
        await client.query(`SET search_path TO ${schema}`)
        await client.query(`SET myapp.tenant = '${own.tenant}'`)
        if (own.user !== APP) await client.query(`SET ROLE ${own.user}`)
        const none = { locks: [], tempTables: [] }
        for (let i = 0; Date.now() < deadline; i++) {
          if (i % 25 === 24) {
            // Its own temporary table and lock, seen by itself alone, then gone again.
            await client.query(`CREATE TEMP TABLE mine_${k} (id int); INSERT INTO mine_${k} VALUES (${k})`)
            await client.query(`SELECT pg_advisory_lock(${5000 + k})`)
            const pins = { locks: [5000 + k], tempTables: [`mine_${k}`] }
            await check(client, who, own, pins)
            const { rows } = await client.query(`SELECT id FROM mine_${k}`)
            if (rows.length !== 1 || rows[0].id !== k)
              violation(`${who} read ${JSON.stringify(rows)} from its table`)
            await check(client, who, own, pins)
            pinnedChecks += 2
            await client.query(`DROP TABLE mine_${k}`)
            await client.query('SELECT pg_advisory_unlock_all()')
          }
          await check(client, who, own, none)
          if (i % 10 === 0) {
            // Inside a transaction block too (its own SET LOCAL comes and goes).
            await client.query('BEGIN')
            await client.query(`SET LOCAL application_name = 'checker_${k}_local'`)
            await check(client, who, { ...own, applicationName: `checker_${k}_local` }, none)
            await client.query('COMMIT')
            await check(client, who, own, none)
          }
        }
      } finally {
        await client.end().catch(() => {})
      }
    }

    /** Short-lived sessions with nothing of their own: they must get nothing of anyone's. */
    async function freshChecker(k: number): Promise<void> {
      for (let n = 0; Date.now() < deadline; n++) {
        const applicationName = `fresh_${k}_${n}`
        const client = await connect({ application_name: applicationName })
        freshSessions++
        try {
          const own: OwnState = { searchPath: DEFAULT_SEARCH_PATH, applicationName, tenant: null, user: APP }
          for (let i = 0; i < 5; i++)
            await check(client, `fresh session ${k}/${n}`, own, { locks: [], tempTables: [] })
        } finally {
          await client.end().catch(() => {})
        }
      }
    }

    const guarded = (what: string, run: () => Promise<void>): Promise<void> =>
      run().catch((error: Error) => violation(`${what} failed: ${error.message}`))

    await Promise.all([
      ...Array.from({ length: CHAOS_WORKERS }, (_, w) => chaosWorker(w)),
      ...Array.from({ length: OWN_STATE_CHECKERS }, (_, k) =>
        guarded(`checker ${k}`, () => ownStateChecker(k)),
      ),
      ...Array.from({ length: FRESH_CHECKERS }, (_, k) =>
        guarded(`fresh checker ${k}`, () => freshChecker(k)),
      ),
    ])

    // Afterwards: every backend back in the pool and no lock left held by anyone.
    let leased = -1
    let locks = -1
    const settle = Date.now() + 10_000
    while (Date.now() < settle) {
      leased = gateway.pooler.stats().reduce((sum, pool) => sum + pool.leased, 0)
      const { rows } = await direct.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory'",
      )
      locks = rows[0].n
      if (leased === 0 && locks === 0) break
      await sleep(100)
    }

    t.diagnostic(
      `${chaosSessions} chaos sessions (${chaosStatements} statements, ${chaosErrors} errors ${JSON.stringify([...chaosErrorCodes])}), ` +
        `vanished: ${JSON.stringify(Object.fromEntries(vanished))}`,
    )
    t.diagnostic(
      `${checks} checks (${pinnedChecks} while pinned) by ${OWN_STATE_CHECKERS} long-lived checkers and ${freshSessions} fresh sessions; ${violationCount} violations ${JSON.stringify(Object.fromEntries(violationKinds))}`,
    )
    assert.deepEqual(describeErrors(uncaught.take()), [], 'the gateway threw out of a callback')
    assert.deepEqual(violations.slice(0, 30), [], `${violationCount} isolation violations`)
    assert.ok(chaosSessions > CHAOS_WORKERS * 3, `only ${chaosSessions} chaos sessions ran`)
    assert.ok(checks > 500, `only ${checks} checks ran`)
    assert.equal(leased, 0, 'backends still leased after every session ended')
    assert.equal(locks, 0, 'advisory locks still held after every session ended')
  })
})

async function send(client: RawClient, sql: string) {
  client.write(query(sql))
  return readReply(client, 20_000)
}
