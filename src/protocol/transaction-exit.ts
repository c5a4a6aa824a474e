import { skipBlank } from './sql-lexer.ts'

/**
 * Recognises the statements that end a transaction block, the only ones Postgres runs in
 * an aborted transaction (IsTransactionExitStmt in src/backend/tcop/postgres.c, less the
 * savepoint forms, which cannot help a transaction whose backend is gone).
 */

/** How a statement ends a block: ROLLBACK discards it, COMMIT asks to keep it. */
export type TransactionExit = 'rollback' | 'commit'

export interface ExitStatement {
  kind: TransactionExit
  /** Index just past the statement and its semicolon: where the next one would start. */
  end: number
}

/**
 * `ROLLBACK|ABORT [WORK|TRANSACTION] [AND NO CHAIN]`, `COMMIT|END [WORK|TRANSACTION]
 * [AND [NO] CHAIN]` or `PREPARE TRANSACTION 'gid'` as the first statement of the SQL in
 * [start, end); null for anything else, ROLLBACK AND CHAIN included (it would open a new
 * transaction with the lost one's characteristics, which are gone with it).
 */
export function transactionExit(sql: Buffer, start = 0, end = sql.length): ExitStatement | null {
  const words: string[] = []
  let i = start
  let sawString = false
  for (;;) {
    i = skipBlank(sql, i, end)
    if (i < 0) return null
    if (i >= end) break
    const byte = sql[i]
    if (byte === 0x3b) {
      i++
      break
    } else if (isLetter(byte)) {
      let j = i + 1
      while (j < end && (isLetter(sql[j]) || sql[j] === 0x5f)) j++
      words.push(sql.toString('latin1', i, j).toLowerCase())
      i = j
    } else if (byte === 0x27 && words.length === 2 && !sawString) {
      // The gid of PREPARE TRANSACTION: a plain literal with no backslash, so that it
      // reads the same whatever standard_conforming_strings says.
      let j = i + 1
      for (;;) {
        if (j >= end || sql[j] === 0x5c) return null
        if (sql[j] === 0x27) {
          if (sql[j + 1] === 0x27) j += 2
          else break
        } else j++
      }
      sawString = true
      i = j + 1
    } else return null
  }
  const kind = classify(words, sawString)
  return kind === null ? null : { kind, end: i }
}

function classify(words: readonly string[], sawString: boolean): TransactionExit | null {
  if (words.length === 0) return null
  const [first, ...rest] = words
  if (first === 'prepare')
    return sawString && rest.length === 1 && rest[0] === 'transaction' ? 'commit' : null
  if (sawString) return null
  const isRollback = first === 'rollback' || first === 'abort'
  const isCommit = first === 'commit' || first === 'end'
  if (!isRollback && !isCommit) return null
  let k = 0
  if (rest[k] === 'work' || rest[k] === 'transaction') k++
  if (rest[k] === 'and') {
    if (rest[k + 1] === 'no' && rest[k + 2] === 'chain') k += 3
    else if (rest[k + 1] === 'chain' && isCommit) k += 2
    else return null
  }
  if (k !== rest.length) return null
  return isRollback ? 'rollback' : 'commit'
}

function isLetter(byte: number): boolean {
  return (byte >= 0x41 && byte <= 0x5a) || (byte >= 0x61 && byte <= 0x7a)
}
