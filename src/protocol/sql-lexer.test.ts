import assert from 'node:assert/strict'
import { test } from 'node:test'
import {
  customSettingNames,
  DO_BLOCK,
  isPipelineSafe,
  mayPin,
  mentionsSequenceFunction,
  mentionsSetConfig,
  parseListen,
  parsePreparedCommand,
  userCodeCalls,
} from './sql-lexer.ts'

const safe = (sql: string) => isPipelineSafe(Buffer.from(sql))

test('plain reads and writes in their own implicit transaction are safe', () => {
  assert.equal(safe('SELECT abalance FROM pgbench_accounts WHERE aid = 42;'), true)
  assert.equal(safe('select count(*), max(x) from t where y in (1, 2) -- trailing comment'), true)
  assert.equal(safe('INSERT INTO t (a, b) VALUES ($1, $2) RETURNING id'), true)
  assert.equal(safe('UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2'), true)
  assert.equal(safe("SELECT 'it''s; BEGIN', $$ set_config( $$, E'\\' ; '  ;  "), true)
  assert.equal(safe('WITH x AS (SELECT 1) SELECT * FROM x'), true)
  assert.equal(safe('SELECT pg_catalog.count(*) FROM t'), true)
})

test('anything that can leave session state or open a transaction refuses', () => {
  for (const sql of [
    'BEGIN',
    'SET search_path = x',
    "SELECT set_config('a.b', 'c', false)",
    'SELECT pg_advisory_lock(1)',
    'SELECT my_function(1)',
    'SELECT public.count(*) FROM t',
    'SELECT "count"(1)',
    'SELECT 1; SELECT 2',
    'SELECT 1; BEGIN',
    'CREATE TEMP TABLE t (a int)',
    'SELECT * INTO TEMP t FROM x',
    'DECLARE c CURSOR WITH HOLD FOR SELECT 1',
    'LISTEN ch',
    'PREPARE p AS SELECT 1',
    'SELECT 1 /* unterminated',
    "SELECT 'unterminated",
    '',
    '   ',
    "SELECT nextval('s')",
  ]) {
    assert.equal(safe(sql), false, sql)
  }
})

test('only the given byte range is judged, up to a NUL terminator', () => {
  const frame = Buffer.from('QxxxxSELECT 1\0')
  assert.equal(isPipelineSafe(frame, 5, frame.length), true)
  assert.equal(isPipelineSafe(Buffer.from('BEGIN\0SELECT 1')), false)
})

test('LISTEN and UNLISTEN statements are recognised, alone or in a list', () => {
  const parse = (sql: string) => parseListen(Buffer.from(sql))
  assert.deepEqual(parse('LISTEN jobs'), [{ listen: true, channel: 'jobs' }])
  assert.deepEqual(parse('listen "Mixed Case";'), [{ listen: true, channel: 'Mixed Case' }])
  assert.deepEqual(parse('LISTEN "jobs:insert"; LISTEN "worker:migrate";'), [
    { listen: true, channel: 'jobs:insert' },
    { listen: true, channel: 'worker:migrate' },
  ])
  assert.deepEqual(parse('/* c */ UNLISTEN * -- all'), [{ listen: false, channel: null }])
  assert.deepEqual(parse('UNLISTEN Foo'), [{ listen: false, channel: 'foo' }])
  assert.equal(parse('SELECT 1'), undefined)
  assert.equal(parse('LISTEN *'), null)
  assert.equal(parse('LISTEN a; SELECT 1'), null)
  assert.equal(parse('LISTEN a b'), null)
  assert.equal(parse('LISTEN "unterminated'), null)
})

test('calls of sequence functions are noticed in any letter case', () => {
  const mentions = (sql: string) => mentionsSequenceFunction(Buffer.from(sql))
  assert.equal(mentions("SELECT nextval('s')"), true)
  assert.equal(mentions("select CURRVAL('s')"), true)
  assert.equal(mentions('SELECT LastVal()'), true)
  assert.equal(mentions("SELECT pg_catalog.setval('s', 5)"), true)
  assert.equal(mentions('INSERT INTO t (val) VALUES (1)'), false)
  assert.equal(mentions('SELECT interval_val FROM t'), false)
  assert.equal(mentions('SELECT 1'), false)
})

test('custom setting names are taken from SET, RESET and set_config', () => {
  const names = (sql: string) => customSettingNames(Buffer.from(sql))
  assert.deepEqual(names("SET myapp.tenant = 'a'"), ['myapp.tenant'])
  assert.deepEqual(names('set session "MyApp"."Tenant" to 1; RESET other.x'), ['myapp.tenant', 'other.x'])
  assert.deepEqual(names("SET LOCAL a.b = 1; SET work_mem = '1MB'"), ['a.b'])
  assert.deepEqual(
    names("SELECT set_config('app.user', 'x', false), pg_catalog.set_config('App.Role', 'y', false)"),
    ['app.user', 'app.role'],
  )
  assert.deepEqual(names("UPDATE t SET a = b.c WHERE d = 'SET x.y'"), [])
  assert.deepEqual(names("SELECT $$ SET a.b = 1 $$, E'SET c.d'"), [])
  assert.deepEqual(names('SET "unterminated.x'), [])
})

test('PREPARE, EXECUTE and DEALLOCATE alone are recognised; other forms are not', () => {
  const parse = (sql: string) => parsePreparedCommand(Buffer.from(sql))
  assert.deepEqual(parse('PREPARE q1 AS SELECT 1 AS a;'), {
    kind: 'prepare',
    name: 'q1',
    nameStart: 8,
    nameEnd: 10,
    body: 'AS SELECT 1 AS a',
  })
  assert.deepEqual(parse('prepare "Q 2"(text, int) AS\n\tSELECT $1; -- done'), {
    kind: 'prepare',
    name: 'Q 2',
    nameStart: 8,
    nameEnd: 13,
    body: '(text, int) AS\n\tSELECT $1',
  })
  assert.deepEqual(parse("PREPARE q AS SELECT ';' || $$;$$"), {
    kind: 'prepare',
    name: 'q',
    nameStart: 8,
    nameEnd: 9,
    body: "AS SELECT ';' || $$;$$",
  })
  assert.deepEqual(parse("EXECUTE Q3('a', 5::smallint);"), {
    kind: 'execute',
    name: 'q3',
    nameStart: 8,
    nameEnd: 10,
  })
  assert.deepEqual(parse('EXECUTE q1'), { kind: 'execute', name: 'q1', nameStart: 8, nameEnd: 10 })
  assert.deepEqual(parse('DEALLOCATE q1;'), { kind: 'deallocate', name: 'q1' })
  assert.deepEqual(parse('DEALLOCATE PREPARE "All"'), { kind: 'deallocate', name: 'All' })
  assert.deepEqual(parse('deallocate all'), { kind: 'deallocate', name: null })
  assert.equal(parse('PREPARE q AS SELECT 1; EXECUTE q'), undefined)
  assert.equal(parse('EXPLAIN EXECUTE q'), undefined)
  assert.equal(parse('CREATE TABLE t AS EXECUTE q'), undefined)
  assert.equal(parse('DEALLOCATE q1 q2'), undefined)
  assert.equal(parse("PREPARE q AS SELECT 'unterminated"), undefined)
  assert.equal(parse('PREPARE q'), undefined)
  assert.equal(parse("PREPARE TRANSACTION 'gid'"), undefined)
  assert.equal(parse('SELECT 1'), undefined)
})

test('calls that may run user code are named; built-ins, types and column lists are not', () => {
  const calls = (sql: string) => userCodeCalls(Buffer.from(sql))
  assert.deepEqual(calls('SELECT set_tenant(42)'), ['set_tenant'])
  assert.deepEqual(calls('SELECT app.login($1)'), ['login'])
  assert.deepEqual(calls('SELECT "MyFunc"()'), ['MyFunc'])
  assert.deepEqual(calls('CALL refresh()'), ['refresh'])
  assert.deepEqual(calls("DO $$ BEGIN PERFORM set_config('a.b', '1', false); END $$"), [DO_BLOCK])
  assert.deepEqual(calls('SELECT 1; do_not_care'), [])
  assert.deepEqual(calls('EXECUTE q(1, 2)'), [])
  assert.deepEqual(calls('PREPARE q(int) AS SELECT $1'), [])
  assert.deepEqual(calls('SELECT count(*), now(), coalesce(a, 1)::varchar(10) FROM t'), [])
  assert.deepEqual(calls('INSERT INTO "T" (a, b) VALUES ($1, $2) ON CONFLICT (a) DO UPDATE SET b = 1'), [])
  assert.deepEqual(calls("SELECT 'f(x)' AS s, $$ g() $$"), [])
  assert.deepEqual(calls('UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2'), [])
})

// Under standard_conforming_strings = off a backslash escapes the quote in a plain
// string, so the texts below hide a statement one way and show it the other.
const HIDDEN_SET = "SELECT 'a\\' ; SET search_path TO x; SELECT 1 --'"
const HIDDEN_BEGIN = "SELECT 'a\\' ; BEGIN; SELECT 1 --'"

test('a plain string holding a backslash never pipelines', () => {
  assert.equal(safe(HIDDEN_SET), false)
  assert.equal(safe(HIDDEN_BEGIN), false)
  assert.equal(safe("SELECT 'C:\\temp'"), false)
  // E'' strings escape under either setting, and read one way only.
  assert.equal(safe("SELECT E'a\\' ; BEGIN; SELECT 1 --'"), true)
})

test('a text that reads two ways answers for both readings', () => {
  const text = (sql: string) => Buffer.from(sql)
  assert.equal(mayPin(text("SELECT 'x\\' ; SELECT pg_try_advisory_lock(1) --'")), true)
  assert.equal(mayPin(text("SELECT 'x\\'")), true)
  assert.equal(mayPin(text("SELECT 'x'")), false)
  assert.equal(mentionsSetConfig(text("SELECT 'x\\'")), true)
  assert.deepEqual(userCodeCalls(text("SELECT 'a\\' ; DO $$ BEGIN END $$; --'")), [DO_BLOCK])
  assert.deepEqual(customSettingNames(text("SELECT 'a\\' ; SET app.tenant = 1; --'")), ['app.tenant'])
  assert.deepEqual(customSettingNames(text("SELECT set_config(E'app\\x2euser', 'x', false)")), ['app.user'])
  assert.equal(parsePreparedCommand(text("PREPARE p AS SELECT 'a\\' ; DEALLOCATE ALL; --'")), undefined)
})

test('a U&"…" name may spell any function', () => {
  const text = (sql: string) => Buffer.from(sql)
  assert.equal(mentionsSequenceFunction(text('SELECT U&"nextv\\0061l"(\'s\')')), true)
  assert.equal(mayPin(text('SELECT U&"pg_\\0061dvisory_lock"(1)')), true)
  assert.equal(mentionsSetConfig(text("SELECT u&\"set_c\\006fnfig\"('a.b', 'c', false)")), true)
})
