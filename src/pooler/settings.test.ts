import assert from 'node:assert/strict'
import { test } from 'node:test'
import { settingsDiffSql, settingsKey } from './settings.ts'

test('equal settings give equal keys whatever their order', () => {
  assert.equal(
    settingsKey(
      new Map([
        ['a', '1'],
        ['b', '2'],
      ]),
    ),
    settingsKey(
      new Map([
        ['b', '2'],
        ['a', '1'],
      ]),
    ),
  )
  assert.notEqual(settingsKey(new Map([['a', '1']])), settingsKey(new Map([['a', '2']])))
  assert.equal(settingsKey(new Map()), '')
})

test('the diff resets what is gone and sets what changed, quoting values', () => {
  const sql = settingsDiffSql(
    new Map([
      ['work_mem', '4MB'],
      ['search_path', 'a'],
      ['application_name', 'x'],
    ]),
    new Map([
      ['work_mem', '4MB'],
      ['search_path', "b, 'c'"],
    ]),
  )
  assert.equal(
    sql,
    `RESET "application_name"; SELECT pg_catalog.set_config('search_path', 'b, ''c''', false)`,
  )
  assert.equal(settingsDiffSql(new Map([['a', '1']]), new Map([['a', '1']])), '')
})

test('session_authorization is set before role, and role again when authorization changes', () => {
  const sql = settingsDiffSql(
    new Map([['role', 'reader']]),
    new Map([
      ['role', 'reader'],
      ['session_authorization', 'alice'],
    ]),
  )
  assert.equal(
    sql,
    "SELECT pg_catalog.set_config('session_authorization', 'alice', false), pg_catalog.set_config('role', 'reader', false)",
  )
})

test('identity is reset first and set last, so superuser-only settings move under it', () => {
  const sql = settingsDiffSql(
    new Map([
      ['lo_compat_privileges', 'on'],
      ['session_authorization', 'alice'],
    ]),
    new Map([['work_mem', '8MB']]),
  )
  assert.equal(
    sql,
    `RESET "session_authorization"; RESET "lo_compat_privileges"; SELECT pg_catalog.set_config('work_mem', '8MB', false)`,
  )
  const back = settingsDiffSql(
    new Map(),
    new Map([
      ['session_authorization', 'alice'],
      ['lo_compat_privileges', 'on'],
    ]),
  )
  assert.equal(
    back,
    "SELECT pg_catalog.set_config('lo_compat_privileges', 'on', false), pg_catalog.set_config('session_authorization', 'alice', false)",
  )
})
