/**
 * What a session sees when its backend dies or it vanishes itself, and what the next
 * session on the same pool sees: no statement is sent twice (A), a transaction whose
 * backend died is reported lost and stays lost until the client ends it (B), a pinned
 * session whose backend died is ended (C), state a vanished session left on a backend
 * never reaches another session (D), pipelining never hands on a backend that is not idle
 * (E), cancels reach only their own session (F), and every pin has an idle bound (G).
 * Every expectation is checked on the replies and, where it can be, on the server itself
 * from a direct connection.
 */
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { after, afterEach, before, describe, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import pg from 'pg'
import { GATEWAY_OPTIONS, loadGatewayConfig, parseDuration } from '../../src/config/index.ts'
import type { Gateway } from '../../src/gateway/index.ts'
import { Backend } from '../../src/protocol/index.ts'
import { directClient } from '../support/backends.ts'
import {
  commandTag,
  describeReply,
  errorsOf,
  eventually,
  extendedQuery,
  type Reply,
  readReply,
  runningBackend,
  significant,
  terminateBackend,
  terminateOthers,
} from '../support/faults.ts'
import { startTestGateway, type TestGatewayOptions } from '../support/gateway.ts'
import { createRole, startTestPostgres, type TestPostgres } from '../support/postgres.ts'
import { decodeDataRow, errorFields, query, RawClient, sendCancel, terminate } from '../support/raw-client.ts'
import { describeErrors, trackUncaught } from '../support/uncaught.ts'

/** A non-superuser, so that SET ROLE and current_user mean something. */
const APP = 'app'
/** A role granted to APP, for SET ROLE. */
const OTHER_ROLE = 'evil_role'

let server: TestPostgres
let direct: pg.Client
const uncaught = trackUncaught()

before(async () => {
  server = await startTestPostgres()
  await createRole(server, { name: APP, password: 'app-password', encryption: 'scram-sha-256' })
  await createRole(server, { name: OTHER_ROLE, password: 'other-password', encryption: 'scram-sha-256' })
  await server.psql(`
    GRANT ${OTHER_ROLE} TO ${APP};
    CREATE SCHEMA evil;
    GRANT USAGE ON SCHEMA evil TO ${APP};
    -- Which of the abandoned statements reached Postgres at all (D): the log says.
    ALTER ROLE ${APP} SET log_statement = 'all';
    CREATE TABLE replay_rows (v int);
    CREATE PROCEDURE replay_proc() LANGUAGE plpgsql AS $$
      BEGIN INSERT INTO replay_rows VALUES (1); COMMIT; PERFORM pg_sleep(30); END $$;
    CREATE TABLE lost_rows (id int);
    -- A COMMIT that takes its time, so that the backend can die under it (B9).
    CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN PERFORM pg_sleep(30); RETURN NULL; END $$;
    CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON lost_rows DEFERRABLE INITIALLY DEFERRED
      FOR EACH ROW WHEN (NEW.id < -1000000) EXECUTE FUNCTION slow_commit();
    CREATE TABLE pipelined_rows (id int);
    CREATE SEQUENCE idle_seq;
  `)
  direct = await directClient(server)
})

after(async () => {
  uncaught.stop()
  await direct?.end().catch(() => {})
  await server?.stop()
})

afterEach(() => {
  assert.deepEqual(describeErrors(uncaught.take()), [], 'the gateway threw out of a callback')
})

/** A gateway for one test, and the clients it opened, closed together. */
class Target {
  readonly gateway: Gateway
  private readonly raws: RawClient[] = []
  private readonly pgs: pg.Client[] = []

  private constructor(gateway: Gateway) {
    this.gateway = gateway
  }

  static async open(options: TestGatewayOptions = {}): Promise<Target> {
    return new Target(await startTestGateway(server, { waitTimeoutMs: 10_000, ...options }))
  }

  /** A logged-in raw client. */
  async raw(user = 'postgres', parameters: Record<string, string> = {}): Promise<RawClient> {
    const { client } = await RawClient.login(this.gateway.port, { user, database: 'postgres', ...parameters })
    this.raws.push(client)
    return client
  }

  /** A raw client with its BackendKeyData. */
  async rawWithKey(user = 'postgres'): Promise<{ client: RawClient; processId: number; secretKey: number }> {
    const { client, login } = await RawClient.login(this.gateway.port, { user, database: 'postgres' })
    this.raws.push(client)
    return { client, processId: login.processId, secretKey: login.secretKey }
  }

  /** A node-postgres client; connection errors are left to the test to look at. */
  async pg(config: pg.ClientConfig = {}): Promise<pg.Client> {
    const client = new pg.Client({
      host: '127.0.0.1',
      port: this.gateway.port,
      user: 'postgres',
      database: 'postgres',
      ...config,
    })
    client.on('error', () => {})
    await client.connect()
    this.pgs.push(client)
    return client
  }

  leased(): number {
    return this.gateway.pooler.stats().reduce((sum, pool) => sum + pool.leased, 0)
  }

  async close(): Promise<void> {
    for (const client of this.raws) client.destroy()
    await Promise.all(this.pgs.map((client) => Promise.race([client.end().catch(() => {}), sleep(2000)])))
    await this.gateway.close()
    // Whatever still runs on the server (a replayed pg_sleep(30)) must not reach the next test.
    await terminateOthers(direct)
  }
}

async function withTarget(
  options: TestGatewayOptions,
  body: (target: Target) => Promise<void>,
): Promise<void> {
  const target = await Target.open(options)
  try {
    await body(target)
  } finally {
    await target.close()
  }
}

/** Sends one simple Query and reads its reply, tolerating a close or no reply. */
async function send(client: RawClient, sql: string, timeoutMs = 5000): Promise<Reply> {
  client.write(query(sql))
  return readReply(client, timeoutMs)
}

async function sendExtended(client: RawClient, sql: string, timeoutMs = 5000): Promise<Reply> {
  client.write(extendedQuery(sql))
  return readReply(client, timeoutMs)
}

/** Message letters without notices and parameter statuses. */
function letters(reply: Reply): string {
  return significant(reply.messages)
    .map((m) => String.fromCharCode(m.type))
    .join('')
}

function rowsOf(reply: Reply): (string | null)[][] {
  return reply.messages.filter((m) => m.type === Backend.DataRow).map((m) => decodeDataRow(m.body))
}

function tagsOf(reply: Reply): string[] {
  return reply.messages.filter((m) => m.type === Backend.CommandComplete).map(commandTag)
}

function noticeCodes(reply: Reply): string[] {
  return reply.messages.filter((m) => m.type === Backend.NoticeResponse).map((m) => errorFields(m).code)
}

/** A reply that completed normally: ReadyForQuery `status`, no error. */
function assertSucceeded(reply: Reply, status: string, what: string): void {
  const seen = describeReply(reply)
  assert.ok(!reply.closed && !reply.timedOut, `${what}: ${seen}`)
  assert.deepEqual(errorsOf(reply.messages), [], `${what}: ${seen}`)
  assert.equal(reply.status, status, `${what}: ReadyForQuery status in ${seen}`)
}

/** `SELECT 1` (or any one-row query) answered with `expected` and ReadyForQuery 'I'. */
function assertRow(reply: Reply, expected: string, what: string): void {
  assertSucceeded(reply, 'I', what)
  assert.deepEqual(rowsOf(reply), [[expected]], `${what}: ${describeReply(reply)}`)
}

/** One ERROR (the session survives) whose SQLSTATE passes `code`, then ReadyForQuery `status`. */
function assertError(
  reply: Reply,
  code: (sqlState: string) => boolean,
  codeText: string,
  status: string,
  what: string,
): void {
  const seen = describeReply(reply)
  assert.ok(!reply.timedOut, `${what}: no reply within the time allowed: ${seen}`)
  assert.ok(!reply.closed, `${what}: the connection closed: ${seen}`)
  const errors = errorsOf(reply.messages)
  assert.equal(errors.length, 1, `${what}: expected one ErrorResponse, got ${seen}`)
  assert.equal(errors[0].severity, 'ERROR', `${what}: severity must be ERROR (the session lives): ${seen}`)
  assert.ok(code(errors[0].code), `${what}: expected SQLSTATE ${codeText}, got ${seen}`)
  assert.deepEqual(tagsOf(reply), [], `${what}: no CommandComplete expected: ${seen}`)
  assert.deepEqual(rowsOf(reply), [], `${what}: no rows expected: ${seen}`)
  assert.equal(reply.status, status, `${what}: ReadyForQuery status in ${seen}`)
}

const connectionClass = (code: string): boolean => code.startsWith('08')
/** A lost connection as the rule 2 words it: class 08, or 57P as the backend said before dying. */
const lostConnection = (code: string): boolean => connectionClass(code) || code.startsWith('57P')
const inFailedTransaction = (code: string): boolean => code === '25P02'
const anyCode = (): boolean => true

async function rowCount(table: string): Promise<number> {
  const { rows } = await direct.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${table}`)
  return rows[0].n
}

// ---------------------------------------------------------------------------------------

describe('A. no replay: a statement written to a backend that dies is never sent again', () => {
  const cases = [
    {
      name: 'A1: a DO block that commits, then sleeps (simple query)',
      sql: (marker: string) =>
        `DO $$ BEGIN INSERT INTO replay_rows VALUES (1); COMMIT; PERFORM pg_sleep(30); END $$ /* ${marker} */`,
      extended: false,
    },
    {
      name: 'A2: a CALL of a procedure that commits, then sleeps (simple query)',
      sql: (marker: string) => `CALL replay_proc() /* ${marker} */`,
      extended: false,
    },
    {
      name: 'A3: the same DO block through Parse/Bind/Execute/Sync',
      sql: (marker: string) =>
        `DO $$ BEGIN INSERT INTO replay_rows VALUES (1); COMMIT; PERFORM pg_sleep(30); END $$ /* ${marker} */`,
      extended: true,
    },
    {
      name: 'A4: the CALL through Parse/Bind/Execute/Sync',
      sql: (marker: string) => `CALL replay_proc() /* ${marker} */`,
      extended: true,
    },
  ]
  let n = 0
  for (const testCase of cases) {
    test(`${testCase.name}: pg_terminate_backend gives an ERROR, one row, and the session goes on`, async () => {
      await direct.query('TRUNCATE replay_rows')
      await withTarget({ poolSize: 2 }, async (target) => {
        const marker = `replay-${++n}`
        const client = await target.raw()
        client.write(testCase.extended ? extendedQuery(testCase.sql(marker)) : query(testCase.sql(marker)))
        const pid = await runningBackend(direct, marker)
        await eventually(async () => (await rowCount('replay_rows')) >= 1, 'the committed INSERT')
        await terminateBackend(direct, pid)
        const reply = await readReply(client, 5000)
        // A replay would have inserted again by now (it commits at once, then sleeps).
        await sleep(500)
        const rows = await rowCount('replay_rows')
        assert.equal(
          rows,
          1,
          `replay_rows holds ${rows} rows: the statement ran again after its backend died; the client got ${describeReply(reply)}`,
        )
        const accept = (code: string) => code === '57P01' || connectionClass(code)
        assertError(reply, accept, '57P01 or class 08', 'I', 'the statement whose backend died')
        if (testCase.extended) {
          assert.match(letters(reply), /^1?2?EZ$/, `extended reply: ${describeReply(reply)}`)
        }
        assertRow(await send(client, 'SELECT 1'), '1', 'the next query on the same session')
        assert.equal(await rowCount('replay_rows'), 1)
      })
    })
  }
})

// ---------------------------------------------------------------------------------------

describe('B. a transaction whose backend died is lost, and says so until it is ended', () => {
  let nextId = 0

  /** BEGIN, INSERT a fresh id, then terminate the backend while idle in transaction. */
  async function lostTransaction(target: Target): Promise<{ client: RawClient; id: number }> {
    const id = ++nextId
    const client = await target.raw()
    assertSucceeded(await send(client, 'BEGIN'), 'T', 'BEGIN')
    assertSucceeded(await send(client, `INSERT INTO lost_rows VALUES (${id})`), 'T', 'INSERT')
    const pidReply = await send(client, 'SELECT pg_backend_pid()')
    assertSucceeded(pidReply, 'T', 'SELECT pg_backend_pid()')
    await terminateBackend(direct, Number(rowsOf(pidReply)[0][0]))
    return { client, id }
  }

  async function assertRowAbsent(id: number): Promise<void> {
    const { rows } = await direct.query('SELECT 1 FROM lost_rows WHERE id = $1', [id])
    assert.equal(rows.length, 0, `the lost transaction's row ${id} was committed`)
  }

  /** lostTransaction through node-postgres. */
  async function lostPgTransaction(target: Target): Promise<{ client: pg.Client; id: number }> {
    const id = ++nextId
    const client = await target.pg()
    await client.query('BEGIN')
    await client.query('INSERT INTO lost_rows VALUES ($1)', [id])
    const { rows } = await client.query('SELECT pg_backend_pid() AS pid')
    await terminateBackend(direct, rows[0].pid)
    return { client, id }
  }

  /** The first statement after the death gets the loss, and the block stays aborted. */
  async function assertLossReported(client: RawClient): Promise<void> {
    const reply = await send(client, 'SELECT 1')
    assertError(reply, lostConnection, 'class 08 or 57P', 'E', 'first statement after the death')
  }

  /** The replies that follow the first error: 25P02 on everything until the block ends. */
  async function assertStillAborted(client: RawClient): Promise<void> {
    assertError(
      await send(client, 'SELECT 2'),
      inFailedTransaction,
      '25P02',
      'E',
      'SELECT 2 in the lost block',
    )
    assertError(
      await send(client, `INSERT INTO lost_rows VALUES (${-nextId})`),
      inFailedTransaction,
      '25P02',
      'E',
      'INSERT in the lost block',
    )
  }

  test('B1: idle in transaction: the next statement gets 08, then 25P02, COMMIT fails and ends the block', async () => {
    await withTarget({ poolSize: 2 }, async (target) => {
      const { client, id } = await lostTransaction(target)
      await assertLossReported(client)
      await assertStillAborted(client)
      const commit = await send(client, 'COMMIT')
      assertError(commit, anyCode, 'an error', 'I', 'COMMIT of the lost block (never a success tag)')
      assertRow(await send(client, 'SELECT 1'), '1', 'SELECT 1 after the failed COMMIT')
      await assertRowAbsent(id)
    })
  })

  test('B2: idle in transaction: after the 08 error, ROLLBACK completes with ROLLBACK and no warning', async () => {
    await withTarget({ poolSize: 2 }, async (target) => {
      const { client, id } = await lostTransaction(target)
      await assertLossReported(client)
      await assertStillAborted(client)
      const rollback = await send(client, 'ROLLBACK')
      assertSucceeded(rollback, 'I', 'ROLLBACK of the lost block')
      assert.deepEqual(tagsOf(rollback), ['ROLLBACK'], describeReply(rollback))
      assert.deepEqual(noticeCodes(rollback), [], `ROLLBACK warned: ${describeReply(rollback)}`)
      assertRow(await send(client, 'SELECT 1'), '1', 'SELECT 1 after ROLLBACK')
      assertRow(await send(client, 'SELECT 3'), '3', 'and again (pooled normally)')
      await assertRowAbsent(id)
    })
  })

  test('B3: END of the lost block fails like COMMIT and ends it', async () => {
    await withTarget({ poolSize: 2 }, async (target) => {
      const { client, id } = await lostTransaction(target)
      await assertLossReported(client)
      assertError(await send(client, 'END'), anyCode, 'an error', 'I', 'END of the lost block')
      assertRow(await send(client, 'SELECT 1'), '1', 'SELECT 1 after the failed END')
      await assertRowAbsent(id)
    })
  })

  test('B4: COMMIT as the first statement after the death fails with 08 and ends the block', async () => {
    await withTarget({ poolSize: 2 }, async (target) => {
      const { client, id } = await lostTransaction(target)
      const commit = await send(client, 'COMMIT')
      assertError(commit, lostConnection, 'class 08 or 57P', 'I', 'COMMIT right after the death')
      assertRow(await send(client, 'SELECT 1'), '1', 'SELECT 1 after the failed COMMIT')
      await assertRowAbsent(id)
    })
  })

  test('B5: a statement of the transaction running when the backend dies gets 08, then 25P02 until ROLLBACK', async () => {
    await withTarget({ poolSize: 2 }, async (target) => {
      const id = ++nextId
      const client = await target.raw()
      assertSucceeded(await send(client, 'BEGIN'), 'T', 'BEGIN')
      assertSucceeded(await send(client, `INSERT INTO lost_rows VALUES (${id})`), 'T', 'INSERT')
      client.write(query('SELECT pg_sleep(30) /* lost-in-flight */'))
      await terminateBackend(direct, await runningBackend(direct, 'lost-in-flight'))
      const reply = await readReply(client, 5000)
      assertError(
        reply,
        lostConnection,
        'class 08 or 57P',
        'E',
        'the statement running when the backend died',
      )
      await assertStillAborted(client)
      const rollback = await send(client, 'ROLLBACK')
      assertSucceeded(rollback, 'I', 'ROLLBACK')
      assert.deepEqual(tagsOf(rollback), ['ROLLBACK'])
      assert.deepEqual(noticeCodes(rollback), [], `ROLLBACK warned: ${describeReply(rollback)}`)
      assertRow(await send(client, 'SELECT 1'), '1', 'SELECT 1 after ROLLBACK')
      await assertRowAbsent(id)
    })
  })

  test('B9: the backend dies under COMMIT: an error and an idle session, never COMMIT, never 25P02', async () => {
    await withTarget({ poolSize: 2 }, async (target) => {
      const id = -1000000 - ++nextId
      const client = await target.raw()
      assertSucceeded(await send(client, 'BEGIN'), 'T', 'BEGIN')
      assertSucceeded(await send(client, `INSERT INTO lost_rows VALUES (${id})`), 'T', 'INSERT')
      client.write(query('COMMIT /* commit-in-flight */'))
      await terminateBackend(direct, await runningBackend(direct, 'commit-in-flight'))
      const reply = await readReply(client, 5000)
      assertError(reply, lostConnection, 'class 08 or 57P', 'I', 'the COMMIT running when the backend died')
      assertRow(await send(client, 'SELECT 1'), '1', 'SELECT 1 after the failed COMMIT')
      // Killed in its deferred trigger, before the commit record: rolled back.
      await assertRowAbsent(id)
    })
  })

  test('B6: extended protocol in the lost block: 08, then 25P02 on Parse, ROLLBACK gives 1 2 C Z(I)', async () => {
    await withTarget({ poolSize: 2 }, async (target) => {
      const { client, id } = await lostTransaction(target)
      const first = await sendExtended(client, 'SELECT 1')
      assertError(
        first,
        lostConnection,
        'class 08 or 57P',
        'E',
        'Parse/Bind/Execute/Sync right after the death',
      )
      const select = await sendExtended(client, 'SELECT 1')
      assertError(
        select,
        inFailedTransaction,
        '25P02',
        'E',
        'Parse/Bind/Execute/Sync of SELECT 1 in the lost block',
      )
      assert.equal(letters(select), 'EZ', describeReply(select))
      const rollback = await sendExtended(client, 'ROLLBACK')
      assert.equal(letters(rollback), '12CZ', `extended ROLLBACK: ${describeReply(rollback)}`)
      assert.deepEqual(tagsOf(rollback), ['ROLLBACK'])
      assert.equal(rollback.status, 'I')
      assert.deepEqual(noticeCodes(rollback), [], `ROLLBACK warned: ${describeReply(rollback)}`)
      const after = await sendExtended(client, 'SELECT 1')
      assert.equal(letters(after), '12DCZ', `SELECT 1 after ROLLBACK: ${describeReply(after)}`)
      assert.equal(after.status, 'I')
      await assertRowAbsent(id)
    })
  })

  test('B7: node-postgres: BEGIN, INSERT, backend terminated, COMMIT rejects, SELECT 1 works', async () => {
    await withTarget({ poolSize: 2 }, async (target) => {
      const { client, id } = await lostPgTransaction(target)
      await assert.rejects(client.query('COMMIT'), (error: pg.DatabaseError) => {
        assert.ok(lostConnection(error.code ?? ''), `COMMIT failed with ${error.code} ${error.message}`)
        return true
      })
      assert.deepEqual((await client.query('SELECT 1 AS one')).rows, [{ one: 1 }])
      await assertRowAbsent(id)
    })
  })

  test('B8: node-postgres: the next statement rejects with 08, then 25P02, ROLLBACK works, then SELECT 1', async () => {
    await withTarget({ poolSize: 2 }, async (target) => {
      const { client, id } = await lostPgTransaction(target)
      const code = (expected: (c: string) => boolean) => (error: pg.DatabaseError) => {
        assert.ok(expected(error.code ?? ''), `got ${error.code} ${error.message}`)
        return true
      }
      await assert.rejects(client.query('SELECT 1'), code(lostConnection))
      await assert.rejects(client.query('SELECT 1'), code(inFailedTransaction))
      await assert.rejects(client.query('SELECT $1::int', [1]), code(inFailedTransaction))
      await client.query('ROLLBACK')
      assert.deepEqual((await client.query('SELECT 1 AS one')).rows, [{ one: 1 }])
      assert.deepEqual((await client.query('SELECT $1::int AS n', [2])).rows, [{ n: 2 }])
      await assertRowAbsent(id)
    })
  })
})

// ---------------------------------------------------------------------------------------

describe('C. a pinned session whose backend dies is ended with FATAL class 08', () => {
  const pins = [
    {
      name: 'a temporary table',
      sql: 'CREATE TEMP TABLE pinned_here (v int)',
      gone: "to_regclass('pinned_here')",
    },
    { name: 'a session advisory lock', sql: 'SELECT pg_advisory_lock(4343)', gone: null },
    {
      name: 'a WITH HOLD cursor',
      sql: 'DECLARE held_here CURSOR WITH HOLD FOR SELECT generate_series(1, 3)',
      gone: null,
    },
  ]
  for (const [i, pin] of pins.entries()) {
    for (const running of [false, true]) {
      test(`C${i * 2 + (running ? 2 : 1)}: ${pin.name}, backend terminated ${running ? 'while a statement runs' : 'while idle'}`, async () => {
        await withTarget({ poolSize: 1 }, async (target) => {
          const client = await target.raw()
          assertSucceeded(await send(client, pin.sql), 'I', pin.name)
          const pidReply = await send(client, 'SELECT pg_backend_pid()')
          assertSucceeded(pidReply, 'I', 'pg_backend_pid()')
          const pid = Number(rowsOf(pidReply)[0][0])
          if (running) {
            client.write(query('SELECT pg_sleep(30) /* pinned-running */'))
            await terminateBackend(direct, await runningBackend(direct, 'pinned-running'))
          } else await terminateBackend(direct, pid)
          let end = await client.drain(2000)
          const messages = [...end.messages]
          if (!end.closed) {
            // Not told yet: the next statement must be the one that learns it.
            client.write(query('SELECT 1'))
            end = await client.drain(5000)
            messages.push(...end.messages)
          }
          const seen = describeReply({ messages, closed: end.closed })
          const fatal = errorsOf(messages).filter((e) => e.severity === 'FATAL')
          assert.equal(fatal.length, 1, `expected one FATAL: ${seen}`)
          assert.ok(connectionClass(fatal[0].code), `expected a FATAL of class 08: ${seen}`)
          assert.ok(end.closed, `the connection stayed open: ${seen}`)
          assert.ok(!messages.some((m) => m.type === Backend.DataRow), `a statement ran elsewhere: ${seen}`)
          // The pool serves the next session, without the dead session's state.
          const next = await target.raw()
          assertRow(await send(next, 'SELECT 1'), '1', 'a new session after the pinned one died')
          if (pin.gone !== null) assertRow(await send(next, `SELECT ${pin.gone} IS NULL`), 't', 'state gone')
        })
      })
    }
  }
})

// ---------------------------------------------------------------------------------------

describe('D. state an abandoned session left never reaches the next session (pool of 1)', () => {
  /** Statements that leave session state, and what is checked of it afterwards. */
  const LEAKS = [
    { name: 'SET search_path', sql: 'SET search_path TO evil' },
    { name: 'set_config(search_path)', sql: "SELECT set_config('search_path', 'evil', false)" },
    { name: 'SET ROLE', sql: `SET ROLE ${OTHER_ROLE}` },
    { name: 'SET application_name', sql: "SET application_name = 'evil'" },
    { name: 'SET myapp.tenant', sql: "SET myapp.tenant = 'evil'" },
    { name: 'pg_advisory_lock', sql: 'SELECT pg_advisory_lock(42)' },
    { name: 'CREATE TEMP TABLE', sql: 'CREATE TEMP TABLE leak(x int); INSERT INTO leak VALUES (1)' },
    { name: 'DECLARE WITH HOLD', sql: 'DECLARE leak_cursor CURSOR WITH HOLD FOR SELECT 1' },
    { name: 'SQL PREPARE', sql: 'PREPARE leak_stmt AS SELECT 1' },
  ]

  /** How the client vanishes around the statement. */
  const MODES: { name: string; vanish: (client: RawClient, sql: string, round: number) => Promise<void> }[] =
    [
      {
        name: 'Query and Terminate in one write',
        vanish: async (client, sql) => {
          client.write(Buffer.concat([query(sql), terminate]))
        },
      },
      {
        name: 'Query, then the socket closed with the reply in flight',
        vanish: async (client, sql, round) => {
          client.write(query(sql))
          await sleep([0, 1, 4][round % 3])
          client.destroy()
        },
      },
      {
        name: 'BEGIN, then Query and Terminate in one write',
        vanish: async (client, sql) => {
          assertSucceeded(await send(client, 'BEGIN'), 'T', 'BEGIN')
          client.write(Buffer.concat([query(sql), terminate]))
        },
      },
      {
        name: 'BEGIN, then Query, then the socket closed with the reply in flight',
        vanish: async (client, sql, round) => {
          assertSucceeded(await send(client, 'BEGIN'), 'T', 'BEGIN')
          client.write(query(sql))
          await sleep([0, 1, 4][round % 3])
          client.destroy()
        },
      },
      {
        name: 'BEGIN, the statement completes, then the socket closed',
        vanish: async (client, sql) => {
          assertSucceeded(await send(client, 'BEGIN'), 'T', 'BEGIN')
          await send(client, sql)
          client.destroy()
        },
      },
      {
        name: 'pinned by a temp table, then Query and Terminate in one write',
        vanish: async (client, sql) => {
          assertSucceeded(await send(client, 'CREATE TEMP TABLE pin_anchor (v int)'), 'I', 'pin')
          client.write(Buffer.concat([query(sql), terminate]))
        },
      },
      {
        name: 'the statement completes, then Terminate',
        vanish: async (client, sql) => {
          await send(client, sql)
          client.end()
        },
      },
    ]

  const CHECKER_APP = 'checker'

  /** Everything a fresh session of APP must (not) see; returns what it saw wrong. */
  async function leaksSeen(target: Target): Promise<string[]> {
    const problems: string[] = []
    try {
      await checkSession(target, problems)
    } catch (error) {
      // The checker did nothing wrong: its session must not fail.
      problems.push(`the checking session failed: ${(error as Error).message}`)
    }
    return problems
  }

  async function checkSession(target: Target, problems: string[]): Promise<void> {
    const checker = await target.pg({ user: APP, application_name: CHECKER_APP })
    const one = async (sql: string): Promise<unknown> => Object.values((await checker.query(sql)).rows[0])[0]
    const expectValue = async (sql: string, expected: unknown): Promise<void> => {
      const got = await one(sql).catch((error: Error) => `error ${error.message}`)
      if (got !== expected)
        problems.push(`${sql} -> ${JSON.stringify(got)}, expected ${JSON.stringify(expected)}`)
    }
    const expectCode = async (sql: string, code: string): Promise<void> => {
      const outcome = await checker.query(sql).then(
        (result) => `rows ${JSON.stringify(result.rows)}`,
        (error: pg.DatabaseError) => (error.code === code ? null : `error ${error.code} ${error.message}`),
      )
      if (outcome !== null) problems.push(`${sql} -> ${outcome}, expected ${code}`)
    }
    await expectValue('SHOW search_path', '"$user", public')
    await expectValue('SELECT current_user', APP)
    await expectValue('SELECT session_user', APP)
    await expectValue("SELECT current_setting('application_name')", CHECKER_APP)
    const tenant = await one("SELECT current_setting('myapp.tenant', true)")
    if (tenant !== null && tenant !== '') problems.push(`myapp.tenant is ${JSON.stringify(tenant)}`)
    await expectValue(
      "SELECT count(*)::int FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()",
      0,
    )
    await expectValue('SELECT count(*)::int FROM pg_cursors', 0)
    await expectCode('SELECT * FROM leak', '42P01')
    await expectValue("SELECT to_regclass('pin_anchor') IS NULL", true)
    await expectCode('FETCH leak_cursor', '34000')
    await expectCode('EXECUTE leak_stmt', '26000')
    // A lock held by a backend no session can reach (neither reset nor closed) blocks
    // everyone else; give one that is being closed a moment to exit.
    const deadline = Date.now() + 3000
    for (;;) {
      const { rows } = await direct.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory'",
      )
      if (rows[0].n === 0) break
      if (Date.now() > deadline) {
        problems.push(`${rows[0].n} advisory locks still held on the server`)
        break
      }
      await sleep(50)
    }
  }

  let marker = 0
  const ROUNDS = 2
  for (const [i, mode] of MODES.entries()) {
    test(`D${i + 1}: ${mode.name}`, async (t) => {
      const problems: string[] = []
      let ran = 0
      let tried = 0
      for (let round = 0; round < ROUNDS; round++) {
        for (const leak of LEAKS) {
          await withTarget({ poolSize: 1 }, async (target) => {
            // An idle backend in the pool, as in steady state.
            const warm = await target.pg({ user: APP })
            await warm.query('SELECT 1')
            await warm.end()
            const tag = `/* leak-${++marker} */`
            const client = await target.raw(APP, { application_name: 'abandoner' })
            await mode.vanish(client, `${leak.sql} ${tag}`, round)
            tried++
            for (const problem of await leaksSeen(target)) problems.push(`${leak.name}: ${problem}`)
            if (readFileSync(server.server.logFile, 'utf8').includes(tag)) ran++
          })
        }
      }
      t.diagnostic(`${tried} abandoned statements, ${ran} of them reached Postgres, ${problems.length} leaks`)
      assert.deepEqual(problems, [], 'state of an abandoned session reached the next one')
    })
  }
})

// ---------------------------------------------------------------------------------------

describe('E. pipelining never releases a backend that is not idle', () => {
  /**
   * With standard_conforming_strings off, Postgres reads `'a\''` as a literal and the
   * rest as statements; a lexer that assumes it on sees one SELECT of two literals.
   */
  const SET_SEARCH_PATH = String.raw`SELECT 'a\'' ; SET search_path TO x; SELECT 1 --'`
  const OPEN_BLOCK = String.raw`SELECT 'a\'' ; BEGIN; SELECT 1 --'`

  for (const poolSize of [1, 2]) {
    test(`E${poolSize === 1 ? 1 : 2}: other sessions never see the search_path of a hidden SET (pool of ${poolSize})`, async (t) => {
      await withTarget({ poolSize }, async (target) => {
        const violations: string[] = []
        let checks = 0
        let stop = false
        const checkers = await Promise.all(
          [0, 1, 2, 3].map((i) =>
            target.pg(i % 2 === 0 ? {} : { options: '-c standard_conforming_strings=off' }),
          ),
        )
        const loops = checkers.map(async (checker, i) => {
          while (!stop) {
            const seen = await checker.query('SHOW search_path').then(
              (result) => result.rows[0].search_path,
              (error: Error) => `an error: ${error.message}`,
            )
            checks++
            if (seen !== '"$user", public') violations.push(`checker ${i} saw search_path ${seen}`)
            if (seen.startsWith('an error')) break
          }
        })
        const a = await target.pg()
        await a.query('SET standard_conforming_strings = off')
        for (let i = 0; i < 5; i++) {
          await a.query(SET_SEARCH_PATH)
          await sleep(100)
        }
        const own = (await a.query('SHOW search_path')).rows[0].search_path
        await a.end()
        await sleep(500)
        stop = true
        await Promise.all(loops)
        t.diagnostic(`${checks} checks by 4 sessions`)
        assert.deepEqual(
          violations.slice(0, 10),
          [],
          `${violations.length} of ${checks} checks saw search_path x`,
        )
        assert.equal(own, 'x', 'the session that ran the SET sees its own search_path')
      })
    })
  }

  for (const poolSize of [1, 2]) {
    test(`E${poolSize === 1 ? 3 : 4}: every autocommit INSERT that succeeded exists after a hidden BEGIN (pool of ${poolSize})`, async (t) => {
      await direct.query('TRUNCATE pipelined_rows')
      await withTarget({ poolSize }, async (target) => {
        let stop = false
        let nextId = 0
        const succeeded: number[] = []
        const notIdle: string[] = []
        const failed: string[] = []
        const inserters = await Promise.all(
          [0, 1, 2, 3].map((i) =>
            target.raw('postgres', i % 2 === 0 ? {} : { options: '-c standard_conforming_strings=off' }),
          ),
        )
        const loops = inserters.map(async (client) => {
          while (!stop) {
            const id = ++nextId
            const reply = await send(client, `INSERT INTO pipelined_rows VALUES (${id})`, 15_000)
            if (errorsOf(reply.messages).length > 0 || reply.status === '') {
              failed.push(`${id}: ${describeReply(reply)}`)
              continue
            }
            succeeded.push(id)
            if (reply.status !== 'I') notIdle.push(`${id}: ${describeReply(reply)}`)
          }
        })
        const a = await target.raw()
        assertSucceeded(await send(a, 'SET standard_conforming_strings = off'), 'I', 'SET scs off')
        const opened = await send(a, OPEN_BLOCK)
        // Postgres runs the BEGIN, so the block is open: the status says so.
        assert.equal(opened.status, 'T', `the hidden BEGIN: ${describeReply(opened)}`)
        await sleep(1000)
        a.end()
        await a.waitClosed(5000)
        await sleep(500)
        stop = true
        await Promise.all(loops)
        const deadline = Date.now() + 5000
        while (target.leased() > 0 && Date.now() < deadline) await sleep(20)
        const stuck = target.leased()
        const { rows } = await direct.query<{ id: number }>('SELECT id FROM pipelined_rows')
        const present = new Set(rows.map((row) => row.id))
        const missing = succeeded.filter((id) => !present.has(id))
        t.diagnostic(
          `${succeeded.length} INSERTs succeeded, ${failed.length} failed, ${missing.length} missing, ${notIdle.length} not idle, ${stuck} backends stuck`,
        )
        assert.deepEqual(
          missing.slice(0, 20),
          [],
          `${missing.length} of ${succeeded.length} successful INSERTs are gone`,
        )
        assert.deepEqual(
          notIdle.slice(0, 5),
          [],
          `${notIdle.length} autocommit INSERTs ended inside a transaction`,
        )
        assert.ok(succeeded.length > 0, `no INSERT succeeded: ${failed.slice(0, 3).join('; ')}`)
        assert.equal(stuck, 0, 'backends still leased 5 s after every session went quiet')
      })
    })
  }
})

// ---------------------------------------------------------------------------------------

describe('F. a cancel never hits another session', () => {
  test('F1: pool of 1: two sessions cancel themselves around every query while B runs 1200; B never gets 57014', async (t) => {
    await withTarget({ poolSize: 1 }, async (target) => {
      const cancellers = [await target.rawWithKey(), await target.rawWithKey()]
      const bs = await Promise.all([target.pg(), target.pg()])
      let done = false
      const aOutcomes = new Map<string, number>()
      // One cancels while its query is on its way, the other just after its reply came:
      // either cancel may reach the backend when it already runs someone else's query.
      const aLoops = cancellers.map(async (a, which) => {
        while (!done) {
          a.client.write(query('select 1'))
          let cancel = which === 0 ? sendCancel(target.gateway.port, a.processId, a.secretKey) : null
          const reply = await readReply(a.client, 10_000)
          cancel ??= sendCancel(target.gateway.port, a.processId, a.secretKey)
          const key = errorsOf(reply.messages)[0]?.code ?? (reply.status === '' ? 'no reply' : 'ok')
          aOutcomes.set(key, (aOutcomes.get(key) ?? 0) + 1)
          await cancel
          if (reply.status === '') return
        }
      })
      const bErrors = new Map<string, number>()
      let bQueries = 0
      await Promise.all(
        bs.map(async (b) => {
          for (let i = 0; i < 600; i++) {
            bQueries++
            await b.query('select 1').catch((error: pg.DatabaseError) => {
              const code = error.code ?? error.message
              bErrors.set(code, (bErrors.get(code) ?? 0) + 1)
            })
          }
        }),
      )
      done = true
      await Promise.all(aLoops)
      const stats = target.gateway.pooler.stats()
      const pipelined = stats.reduce((sum, pool) => sum + (pool.leasesPipelined ?? 0), 0)
      const retried = stats.reduce((sum, pool) => sum + (pool.strayCancelsRetried ?? 0), 0)
      t.diagnostic(
        `A: ${JSON.stringify([...aOutcomes])}; B: ${bQueries} queries, errors ${JSON.stringify([...bErrors])}; ${pipelined} leases pipelined, ${retried} statements hit by a stray cancel written again`,
      )
      assert.deepEqual([...bErrors], [], `B's queries failed (of ${bQueries})`)
      assert.ok(!aOutcomes.has('no reply'), 'A stopped getting replies')
    })
  })
  test('F2: pool of 1: a pipelined statement a cancel meant for the head lands on is run again; B never gets 57014', async (t) => {
    await withTarget({ poolSize: 1 }, async (target) => {
      const a = await target.rawWithKey()
      const b = await target.raw()
      const aOutcomes = new Map<string, number>()
      const bOutcomes = new Map<string, number>()
      // Each round B's statement is written behind A's on the one backend (both are
      // pipeline-safe, and A's has just started), and A's cancel is timed to land around
      // the end of A's statement: landing just after, Postgres cancels B's instead.
      for (let round = 0; round < 200; round++) {
        // Every fourth statement of A's runs long enough for its cancel to hit it.
        a.client.write(query(`SELECT count(*) FROM generate_series(1, ${round % 4 === 3 ? 400000 : 20000})`))
        await sleep(0)
        b.write(query('SELECT count(*) FROM generate_series(1, 100000)'))
        await sleep(round % 4)
        const cancel = sendCancel(target.gateway.port, a.processId, a.secretKey)
        const [aReply, bReply] = await Promise.all([readReply(a.client, 10_000), readReply(b, 10_000)])
        await cancel
        for (const [outcomes, reply] of [
          [aOutcomes, aReply],
          [bOutcomes, bReply],
        ] as const) {
          const key = errorsOf(reply.messages)[0]?.code ?? (reply.status === '' ? 'no reply' : 'ok')
          outcomes.set(key, (outcomes.get(key) ?? 0) + 1)
        }
        if (aReply.status === '' || bReply.status === '') break
      }
      const stats = target.gateway.pooler.stats()
      const retried = stats.reduce((sum, pool) => sum + (pool.strayCancelsRetried ?? 0), 0)
      const pipelined = stats.reduce((sum, pool) => sum + (pool.leasesPipelined ?? 0), 0)
      t.diagnostic(
        `A: ${JSON.stringify([...aOutcomes])}; B: ${JSON.stringify([...bOutcomes])}; ${pipelined} leases pipelined; ${retried} of B's statements hit by A's cancel and written again`,
      )
      assert.deepEqual([...bOutcomes], [['ok', 200]], "B's statements (it never cancelled)")
      assert.ok(
        (aOutcomes.get('57014') ?? 0) + retried > 0,
        'no cancel reached the backend: the test exercised nothing',
      )
    })
  })
})

// ---------------------------------------------------------------------------------------

describe('G. every pin has an idle bound', () => {
  const PINS = [
    { name: 'nextval (currval state)', sql: ["SELECT nextval('idle_seq')"] },
    { name: 'a temporary table', sql: ['CREATE TEMP TABLE idle_tmp (v int)'] },
    { name: 'a session advisory lock', sql: ['SELECT pg_advisory_lock(777)'] },
    { name: 'a WITH HOLD cursor', sql: ['DECLARE idle_cur CURSOR WITH HOLD FOR SELECT 1'] },
    { name: 'LISTEN inside a transaction', sql: ['BEGIN', 'LISTEN idle_channel', 'COMMIT'] },
    {
      name: 'SQL PREPARE seen in pg_prepared_statements',
      sql: ['PREPARE idle_p AS SELECT 1', 'SELECT name FROM pg_prepared_statements'],
    },
  ]
  for (const [i, pin] of PINS.entries()) {
    test(`G${i + 1}: a session pinned by ${pin.name} that idles is ended with 57P05 and a waiter is served`, async () => {
      await withTarget({ poolSize: 1, pinnedIdleTimeoutMs: 300 }, async (target) => {
        const pinned = await target.pg()
        const ended = new Promise<{ code?: string }>((resolve) =>
          pinned.on('error', (error) => resolve(error as { code?: string })),
        )
        for (const sql of pin.sql) await pinned.query(sql)
        const waiter = await target.pg()
        const started = Date.now()
        const served = await Promise.race([
          waiter.query('SELECT 1 AS one').then((result) => result.rows),
          sleep(5000).then(() => 'not served within 5 s'),
        ])
        assert.deepEqual(served, [{ one: 1 }], 'the waiting session of the pool of 1')
        const error = await Promise.race([ended, sleep(1000).then(() => null)])
        assert.equal(error?.code, '57P05', `the pinned session got ${JSON.stringify(error)}`)
        assert.ok(Date.now() - started < 3000, `served after ${Date.now() - started}ms`)
      })
    })
  }

  test('G7: the default --pinned-idle-timeout is not 0 (never)', () => {
    const config = loadGatewayConfig({
      flags: { upstream: 'postgresql://postgres@127.0.0.1:5432/postgres' },
      env: {},
    })
    assert.ok(config.pinnedIdleTimeoutMs > 0, `default pinnedIdleTimeoutMs is ${config.pinnedIdleTimeoutMs}`)
    const documented = parseDuration(String(GATEWAY_OPTIONS.pinnedIdleTimeout.defaultValue))
    assert.equal(documented, config.pinnedIdleTimeoutMs, 'the documented default is the one applied')
  })
})
