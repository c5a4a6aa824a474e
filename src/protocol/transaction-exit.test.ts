import assert from 'node:assert/strict'
import { test } from 'node:test'
import { transactionExit } from './transaction-exit.ts'

function kind(sql: string): string | null {
  return transactionExit(Buffer.from(sql))?.kind ?? null
}

test('ROLLBACK and its spellings end a block by discarding it', () => {
  for (const sql of [
    'ROLLBACK',
    'rollback;',
    'ABORT WORK',
    ' rollback transaction ; ',
    'ROLLBACK AND NO CHAIN',
    '/* x */ -- y\nRollback',
  ])
    assert.equal(kind(sql), 'rollback', sql)
})

test('COMMIT, END and PREPARE TRANSACTION ask to keep it', () => {
  for (const sql of [
    'COMMIT',
    'end',
    'COMMIT WORK;',
    'END TRANSACTION AND CHAIN',
    "PREPARE TRANSACTION 'g1'",
    "prepare transaction 'it''s'",
  ])
    assert.equal(kind(sql), 'commit', sql)
})

test('anything else, savepoints and chained rollbacks included, is not an exit', () => {
  for (const sql of [
    'ROLLBACK TO SAVEPOINT a',
    'ROLLBACK AND CHAIN',
    "ROLLBACK PREPARED 'g'",
    "COMMIT PREPARED 'g'",
    'SELECT 1',
    'BEGIN',
    '',
    "PREPARE TRANSACTION 'a\\'",
    'PREPARE foo AS SELECT 1',
    'COMMIT WORK WORK',
    '/* unterminated ROLLBACK',
  ])
    assert.equal(kind(sql), null, sql)
})

test('the end of the first statement is where the rest of a query starts', () => {
  const sql = Buffer.from('ROLLBACK; SELECT 1')
  const exit = transactionExit(sql)
  assert.deepEqual(exit, { kind: 'rollback', end: 9 })
  assert.equal(sql.toString('utf8', exit!.end), ' SELECT 1')
})
