import assert from 'node:assert/strict'
import { test } from 'node:test'
import { customSettingNames, isPipelineSafe, mentionsSequenceFunction, parseListen } from './sql-lexer.ts'

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
