/**
 * A small SQL lexer over raw query bytes, not a parser: it answers whether a
 * statement is certain to leave no session state behind and to end in an idle
 * transaction status, so that the gateway may queue another session's transaction
 * behind it on the same backend (pipelining). Every doubt answers "no".
 *
 * Bytes >= 0x80 count as identifier characters, as in PostgreSQL's scanner (scan.l
 * ident_start/ident_cont), so UTF-8 identifiers and text need no decoding.
 */

/** Statements that run in their own implicit transaction and leave nothing behind. */
const LEADING = new Set(['select', 'insert', 'update', 'delete', 'values', 'table', 'with'])

/** Words after which a temporary object, a cursor or a lock could be created. */
const REFUSED_WORDS = new Set(['temp', 'temporary', 'lock', 'listen', 'notify', 'prepare', 'declare'])

/**
 * Words that may stand before "(" without being a function call: SQL keywords with
 * parenthesised syntax, and built-in functions without session side effects. A call
 * of anything else (any user function could run SET or take an advisory lock) refuses.
 */
const PAREN_OK = new Set([
  // keywords
  'all',
  'and',
  'any',
  'array',
  'as',
  'between',
  'by',
  'case',
  'cast',
  'cube',
  'distinct',
  'else',
  'exists',
  'extract',
  'filter',
  'from',
  'group',
  'having',
  'in',
  'is',
  'join',
  'lateral',
  'like',
  'ilike',
  'limit',
  'not',
  'offset',
  'on',
  'or',
  'over',
  'overlay',
  'partition',
  'position',
  'returning',
  'rollup',
  'row',
  'select',
  'set',
  'sets',
  'similar',
  'some',
  'substring',
  'then',
  'trim',
  'union',
  'intersect',
  'except',
  'using',
  'values',
  'when',
  'where',
  'within',
  'window',
  'with',
  'grouping',
  'coalesce',
  'nullif',
  'greatest',
  'least',
  'collate',
  'conflict',
  'do',
  'into',
  // pure built-ins
  'abs',
  'age',
  'array_agg',
  'array_length',
  'avg',
  'bool_and',
  'bool_or',
  'btrim',
  'ceil',
  'ceiling',
  'char_length',
  'concat',
  'concat_ws',
  'count',
  'date_part',
  'date_trunc',
  'floor',
  'format',
  'generate_series',
  'json_agg',
  'json_build_array',
  'json_build_object',
  'jsonb_agg',
  'jsonb_build_array',
  'jsonb_build_object',
  'left',
  'length',
  'lower',
  'lpad',
  'ltrim',
  'max',
  'md5',
  'min',
  'mod',
  'now',
  'numeric',
  'position',
  'power',
  'regexp_replace',
  'repeat',
  'replace',
  'right',
  'round',
  'row_number',
  'row_to_json',
  'rpad',
  'rtrim',
  'split_part',
  'sqrt',
  'string_agg',
  'strpos',
  'substr',
  'sum',
  'to_char',
  'to_date',
  'to_json',
  'to_jsonb',
  'to_number',
  'to_timestamp',
  'trunc',
  'unnest',
  'upper',
  'rank',
  'dense_rank',
  'lag',
  'lead',
  'first_value',
  'last_value',
  'varchar',
  'char',
  'timestamp',
  'timestamptz',
  'interval',
  'decimal',
  'float',
  'time',
  'bit',
  'character',
  'precision',
])

function isIdentStart(byte: number): boolean {
  return (byte >= 0x61 && byte <= 0x7a) || (byte >= 0x41 && byte <= 0x5a) || byte === 0x5f || byte >= 0x80
}

function isIdentChar(byte: number): boolean {
  return isIdentStart(byte) || (byte >= 0x30 && byte <= 0x39) || byte === 0x24
}

function isSpace(byte: number): boolean {
  return byte === 0x20 || byte === 0x09 || byte === 0x0a || byte === 0x0d || byte === 0x0c
}

/**
 * True when `sql` (bytes [start, end) of a message) is one statement of a safe kind
 * with no call to a function outside the allow-list. Comments, quoted strings
 * (including E'' and dollar quoting) and quoted identifiers are skipped correctly;
 * anything the lexer does not understand refuses.
 */
export function isPipelineSafe(sql: Buffer, start = 0, end = sql.length): boolean {
  let i = start
  let first = true
  let lastWord = ''
  /** The word before lastWord: "(" after `INTO t` or `AS t` opens a column list, not a call. */
  let prevWord = ''
  /** lastWord followed a "."; only pg_catalog's functions are judged by name then. */
  let qualifier = ''
  let afterDot = false
  let statementEnded = false
  while (i < end) {
    const byte = sql[i]
    if (byte === 0) break
    if (isSpace(byte)) {
      i++
      continue
    }
    if (byte === 0x2d && sql[i + 1] === 0x2d) {
      i = skipLineComment(sql, i, end)
      continue
    }
    if (byte === 0x2f && sql[i + 1] === 0x2a) {
      i = skipBlockComment(sql, i, end)
      if (i < 0) return false
      continue
    }
    if (statementEnded) {
      // Only whitespace, comments and more semicolons may follow the terminating semicolon.
      if (byte !== 0x3b) return false
      i++
      continue
    }
    if (isIdentStart(byte)) {
      let j = i + 1
      while (j < end && isIdentChar(sql[j])) j++
      // E'…' / e'…' escape strings, and U&'…' would follow an identifier start: refuse the rare forms.
      if (j < end && sql[j] === 0x27) {
        if (j !== i + 1 || (byte !== 0x45 && byte !== 0x65)) return false
        i = skipQuoted(sql, j, end, 0x27, true)
        if (i < 0) return false
        lastWord = ''
        continue
      }
      const word = sql.toString('latin1', i, j).toLowerCase()
      if (first) {
        if (!LEADING.has(word)) return false
        first = false
      } else if (REFUSED_WORDS.has(word)) return false
      qualifier = afterDot ? lastWord : ''
      afterDot = false
      prevWord = lastWord
      lastWord = word
      i = j
      continue
    }
    if (first) return false
    switch (byte) {
      case 0x27: // 'string'
        i = skipQuoted(sql, i, end, 0x27, false)
        if (i < 0) return false
        lastWord = ''
        continue
      case 0x22: // "identifier": a quoted name before "(" is a call we cannot judge
        i = skipQuoted(sql, i, end, 0x22, false)
        if (i < 0) return false
        lastWord = '"'
        continue
      case 0x24: {
        // $1 parameter, or $tag$ dollar quoting
        if (sql[i + 1] >= 0x30 && sql[i + 1] <= 0x39) {
          i += 2
          while (i < end && sql[i] >= 0x30 && sql[i] <= 0x39) i++
          lastWord = ''
          continue
        }
        i = skipDollarQuoted(sql, i, end)
        if (i < 0) return false
        lastWord = ''
        continue
      }
      case 0x28: // "(" after a word is a call unless the word is allowed
        if (lastWord !== '' && !parenAllowed(lastWord, prevWord, qualifier)) return false
        lastWord = ''
        i++
        continue
      case 0x2e: // "." in a qualified name: remember the qualifier
        afterDot = true
        i++
        continue
      case 0x3b:
        statementEnded = true
        i++
        continue
      default:
        lastWord = ''
        i++
    }
  }
  return !first
}

const DO_NEEDLES = ['do', 'DO', 'Do'].map((word) => Buffer.from(word))

/** Stands for a DO block among the names userCodeCalls returns (no function is named so). */
export const DO_BLOCK = ''

/**
 * The user code the text in [start, end) may run, which may change settings without a
 * SET tag: the names (lower case, unqualified) of functions called outside the built-ins
 * known to have no session side effects, of procedures CALLed, and DO_BLOCK for a DO
 * block. Empty when there is none. A cheap trigger for asking Postgres, not proof.
 */
export function userCodeCalls(sql: Buffer, start = 0, end = sql.length): string[] {
  const names: string[] = []
  // Most queries call nothing: without "(" only a DO block could run code.
  const paren = sql.indexOf(0x28, start)
  if ((paren < 0 || paren >= end) && !mentionsAny(sql, DO_NEEDLES, start, end)) return names
  let i = start
  let lastWord = ''
  let prevWord = ''
  let qualifier = ''
  let afterDot = false
  let statementStart = true
  while (i < end) {
    i = skipBlank(sql, i, end)
    if (i < 0 || i >= end) break
    const byte = sql[i]
    if (byte === 0) break
    if (isIdentStart(byte)) {
      let j = i + 1
      while (j < end && isIdentChar(sql[j])) j++
      if (j < end && sql[j] === 0x27 && j === i + 1 && (byte === 0x45 || byte === 0x65)) {
        i = skipQuoted(sql, j, end, 0x27, true)
        if (i < 0) break
        lastWord = ''
        continue
      }
      const word = sql.toString('latin1', i, j).toLowerCase()
      if (statementStart && word === 'do') names.push(DO_BLOCK)
      statementStart = false
      qualifier = afterDot ? lastWord : ''
      afterDot = false
      prevWord = lastWord
      lastWord = word
      i = j
      continue
    }
    statementStart = false
    switch (byte) {
      case 0x27:
        i = skipQuoted(sql, i, end, 0x27, false)
        if (i < 0) return names
        lastWord = ''
        continue
      case 0x22: {
        const close = skipQuoted(sql, i, end, 0x22, false)
        if (close < 0) return names
        prevWord = lastWord
        lastWord = `"${sql.toString('utf8', i + 1, close - 1).replaceAll('""', '"')}`
        i = close
        continue
      }
      case 0x24:
        if (sql[i + 1] >= 0x30 && sql[i + 1] <= 0x39) {
          i += 2
          while (i < end && sql[i] >= 0x30 && sql[i] <= 0x39) i++
        } else {
          const close = skipDollarQuoted(sql, i, end)
          i = close < 0 ? i + 1 : close
        }
        lastWord = ''
        continue
      case 0x28:
        if (lastWord.startsWith('"')) {
          if (!PAREN_AFTER.has(prevWord)) names.push(lastWord.slice(1))
        } else if (lastWord !== '' && !parenAllowed(lastWord, prevWord, qualifier)) names.push(lastWord)
        break
      case 0x2e:
        afterDot = true
        i++
        continue
      case 0x3b:
        statementStart = true
        break
    }
    lastWord = ''
    i++
  }
  return names
}

function parenAllowed(word: string, before: string, qualifier: string): boolean {
  if (qualifier !== '') return qualifier === 'pg_catalog' && PAREN_OK.has(word)
  return PAREN_OK.has(word) || PAREN_AFTER.has(before)
}

/** Words after which `name (` is a column list or statement arguments, not a call. */
const PAREN_AFTER = new Set(['into', 'as', 'table', 'execute', 'prepare'])

function skipLineComment(sql: Buffer, i: number, end: number): number {
  while (i < end && sql[i] !== 0x0a) i++
  return i
}

/** Block comments nest in PostgreSQL. Returns -1 when unterminated. */
function skipBlockComment(sql: Buffer, i: number, end: number): number {
  let depth = 0
  while (i < end) {
    if (sql[i] === 0x2f && sql[i + 1] === 0x2a) {
      depth++
      i += 2
    } else if (sql[i] === 0x2a && sql[i + 1] === 0x2f) {
      depth--
      i += 2
      if (depth === 0) return i
    } else i++
  }
  return -1
}

/** Skips a quoted token starting at the quote; doubled quotes escape; -1 if unterminated. */
function skipQuoted(sql: Buffer, i: number, end: number, quote: number, backslashEscapes: boolean): number {
  i++
  while (i < end) {
    const byte = sql[i]
    if (backslashEscapes && byte === 0x5c) {
      i += 2
      continue
    }
    if (byte === quote) {
      if (sql[i + 1] === quote) {
        i += 2
        continue
      }
      return i + 1
    }
    i++
  }
  return -1
}

function skipDollarQuoted(sql: Buffer, i: number, end: number): number {
  let j = i + 1
  while (j < end && sql[j] !== 0x24) {
    if (!isIdentChar(sql[j])) return -1
    j++
  }
  if (j >= end) return -1
  const tag = sql.subarray(i, j + 1)
  const close = sql.indexOf(tag, j + 1)
  if (close < 0 || close >= end) return -1
  return close + tag.length
}

const SET_CONFIG_LOWER = Buffer.from('set_config')
const SET_CONFIG_UPPER = Buffer.from('SET_CONFIG')

/**
 * Whether the query text in [start, end) may call set_config(), which changes settings
 * without a SET command tag. A cheap trigger, not proof: a match in a string literal
 * only costs one extra look at the settings.
 */
export function mentionsSetConfig(sql: Buffer, start = 0, end = sql.length): boolean {
  const lower = sql.indexOf(SET_CONFIG_LOWER, start)
  if (lower >= 0 && lower < end) return true
  const upper = sql.indexOf(SET_CONFIG_UPPER, start)
  return upper >= 0 && upper < end
}

const PIN_NEEDLES = ['temp', 'TEMP', 'Temp', 'advisory', 'ADVISORY'].map((word) => Buffer.from(word))

/**
 * Whether the query text in [start, end) may create state that pins a session to its
 * backend without a telling command tag: a temporary table made by CREATE TEMP TABLE AS
 * or SELECT INTO TEMP (tag SELECT), or a session advisory lock taken in a SELECT. A
 * cheap trigger for asking Postgres, not proof.
 */
export function mayPin(sql: Buffer, start = 0, end = sql.length): boolean {
  for (const needle of PIN_NEEDLES) {
    const at = sql.indexOf(needle, start)
    if (at >= 0 && at < end) return true
  }
  return false
}

const SEQUENCE_FUNCTIONS = ['nextval', 'currval', 'lastval', 'setval']

/**
 * Whether the query text in [start, end) may call nextval, currval, lastval or setval by
 * name: sequence state a session keeps in its backend (currval, lastval) and Postgres
 * cannot report. Case-insensitive; a match inside a string literal counts too.
 */
export function mentionsSequenceFunction(sql: Buffer, start = 0, end = sql.length): boolean {
  let at = start
  while (at < end) {
    // Every name ends in "val"; look for that, then at the letters before it.
    let found = -1
    for (const needle of VAL_NEEDLES) {
      const i = sql.indexOf(needle, at)
      if (i >= 0 && i < end && (found < 0 || i < found)) found = i
    }
    if (found < 0) return false
    for (const name of SEQUENCE_FUNCTIONS) {
      const from = found + 3 - name.length
      if (from >= start && sql.toString('latin1', from, found + 3).toLowerCase() === name) return true
    }
    at = found + 1
  }
  return false
}

const VAL_NEEDLES = ['val', 'VAL', 'Val'].map((word) => Buffer.from(word))

/**
 * The custom (dotted) setting names that the query text in [start, end) SETs or RESETs
 * or passes to set_config as a literal, lower-cased. Postgres lists placeholder settings
 * such as `myapp.tenant` nowhere (not in pg_settings, not in SHOW ALL), so the session
 * remembers the names it used and asks for them by name.
 */
export function customSettingNames(sql: Buffer, start = 0, end = sql.length): string[] {
  const names: string[] = []
  const dot = sql.indexOf(0x2e, start)
  if (dot < 0 || dot >= end) return names
  /** The previous token was SET or RESET, or SESSION/LOCAL right after one. */
  let afterSet = false
  /** 1: the previous token was set_config; 2: its "(" followed. */
  let setConfig = 0
  let i = start
  while (i < end) {
    i = skipBlank(sql, i, end)
    if (i < 0 || i >= end) break
    const byte = sql[i]
    if (byte === 0) break
    if ((byte === 0x45 || byte === 0x65) && sql[i + 1] === 0x27) {
      i = skipQuoted(sql, i + 1, end, 0x27, true)
      if (i < 0) break
      afterSet = false
      setConfig = 0
      continue
    }
    if (isIdentStart(byte) || byte === 0x22) {
      const name = readQualifiedName(sql, i, end)
      if (name === null) break
      i = name.end
      if (afterSet) {
        if (name.text.includes('.')) names.push(name.text)
        afterSet = name.text === 'session' || name.text === 'local'
      } else afterSet = name.text === 'set' || name.text === 'reset'
      setConfig = name.text === 'set_config' || name.text === 'pg_catalog.set_config' ? 1 : 0
      continue
    }
    afterSet = false
    if (byte === 0x28 && setConfig === 1) {
      setConfig = 2
      i++
      continue
    }
    if (byte === 0x27) {
      const close = skipQuoted(sql, i, end, 0x27, false)
      if (close < 0) break
      if (setConfig === 2) {
        const literal = sql
          .toString('utf8', i + 1, close - 1)
          .replaceAll("''", "'")
          .toLowerCase()
        if (literal.includes('.')) names.push(literal)
      }
      setConfig = 0
      i = close
      continue
    }
    setConfig = 0
    if (byte === 0x24 && !(sql[i + 1] >= 0x30 && sql[i + 1] <= 0x39)) {
      i = skipDollarQuoted(sql, i, end)
      if (i < 0) break
      continue
    }
    i++
  }
  return names
}

/** A name such as `a`, `"A b".c` or `a.b.c` starting at `i`, lower-cased; null if a quote is unterminated. */
function readQualifiedName(sql: Buffer, i: number, end: number): { text: string; end: number } | null {
  const parts: string[] = []
  for (;;) {
    if (sql[i] === 0x22) {
      const close = skipQuoted(sql, i, end, 0x22, false)
      if (close < 0) return null
      parts.push(
        sql
          .toString('utf8', i + 1, close - 1)
          .replaceAll('""', '"')
          .toLowerCase(),
      )
      i = close
    } else {
      let j = i + 1
      while (j < end && isIdentChar(sql[j])) j++
      parts.push(sql.toString('utf8', i, j).toLowerCase())
      i = j
    }
    if (sql[i] !== 0x2e || i + 1 >= end || !(isIdentStart(sql[i + 1]) || sql[i + 1] === 0x22)) break
    i++
  }
  return { text: parts.join('.'), end: i }
}

/** A LISTEN or UNLISTEN statement; `channel` null is UNLISTEN *. */
export interface ListenStatement {
  listen: boolean
  channel: string | null
}

/**
 * Recognises a simple-query text made only of LISTEN and UNLISTEN statements separated
 * by semicolons (comments and whitespace allowed), e.g. `LISTEN "a"; LISTEN b;`. Channel
 * names fold to lower case unless quoted, as identifiers do. Returns undefined when the
 * text does not start with LISTEN or UNLISTEN, and null when it does but has another form.
 */
export function parseListen(sql: Buffer, start = 0, end = sql.length): ListenStatement[] | null | undefined {
  const statements: ListenStatement[] = []
  let i = skipBlank(sql, start, end)
  while (i >= 0 && i < end && sql[i] !== 0) {
    let j = i
    while (j < end && isIdentChar(sql[j])) j++
    const word = sql.toString('latin1', i, j).toLowerCase()
    if (word !== 'listen' && word !== 'unlisten') return statements.length === 0 ? undefined : null
    const listen = word === 'listen'
    i = skipBlank(sql, j, end)
    if (i < 0 || i >= end) return null
    let channel: string | null
    if (sql[i] === 0x22) {
      const close = skipQuoted(sql, i, end, 0x22, false)
      if (close < 0) return null
      channel = sql.toString('utf8', i + 1, close - 1).replaceAll('""', '"')
      i = close
    } else if (sql[i] === 0x2a && !listen) {
      channel = null
      i++
    } else if (isIdentStart(sql[i])) {
      j = i + 1
      while (j < end && isIdentChar(sql[j])) j++
      channel = sql.toString('utf8', i, j).toLowerCase()
      i = j
    } else return null
    statements.push({ listen, channel })
    i = skipBlank(sql, i, end)
    if (i < 0) return null
    if (i < end && sql[i] === 0x3b) i = skipBlank(sql, i + 1, end)
    else if (i < end && sql[i] !== 0) return null
  }
  if (i < 0) return null
  return statements.length === 0 ? undefined : statements
}

/** An SQL PREPARE, EXECUTE or DEALLOCATE the gateway serves itself (see parsePreparedCommand). */
export type PreparedCommand =
  /** `PREPARE name body`: body is everything after the name (parameter types, AS, statement). */
  | { kind: 'prepare'; name: string; nameStart: number; nameEnd: number; body: string }
  /** `EXECUTE name [(arguments)]`: the name's byte range, so it can be replaced. */
  | { kind: 'execute'; name: string; nameStart: number; nameEnd: number }
  /** `DEALLOCATE [PREPARE] name`, or ALL (`name` null). */
  | { kind: 'deallocate'; name: string | null }

/**
 * Recognises a query text that is exactly one PREPARE, EXECUTE or DEALLOCATE statement
 * (an optional trailing semicolon, whitespace and comments allowed). Names fold to lower
 * case unless quoted. Anything else, such as `EXPLAIN EXECUTE q` or two statements,
 * answers undefined.
 */
export function parsePreparedCommand(sql: Buffer, start = 0, end = sql.length): PreparedCommand | undefined {
  let i = skipBlank(sql, start, end)
  if (i < 0) return undefined
  const first = readWord(sql, i, end)
  if (first === null) return undefined
  i = skipBlank(sql, first.end, end)
  if (i < 0 || i >= end) return undefined
  let name = readName(sql, i, end)
  if (name === null) return undefined
  switch (first.word) {
    case 'prepare': {
      if (!name.quoted && name.text === 'transaction') return undefined // PREPARE TRANSACTION 'gid'
      const bodyEnd = statementEnd(sql, name.end, end)
      if (bodyEnd < 0) return undefined
      const body = sql.toString('utf8', name.end, bodyEnd).trim()
      return body === ''
        ? undefined
        : { kind: 'prepare', name: name.text, nameStart: i, nameEnd: name.end, body }
    }
    case 'execute':
      if (statementEnd(sql, name.end, end) < 0) return undefined
      return { kind: 'execute', name: name.text, nameStart: i, nameEnd: name.end }
    case 'deallocate': {
      if (!name.quoted && name.text === 'prepare') {
        i = skipBlank(sql, name.end, end)
        if (i < 0 || i >= end) return undefined
        name = readName(sql, i, end)
        if (name === null) return undefined
      }
      const after = skipBlank(sql, name.end, end)
      if (after < 0 || statementEnd(sql, after, end) !== after) return undefined
      return { kind: 'deallocate', name: !name.quoted && name.text === 'all' ? null : name.text }
    }
    default:
      return undefined
  }
}

const VIEW_NEEDLES = ['prepared_statements', 'PREPARED_STATEMENTS'].map((word) => Buffer.from(word))
const EXECUTE_NEEDLES = ['execute', 'EXECUTE', 'Execute'].map((word) => Buffer.from(word))

/** Whether the text in [start, end) may read pg_prepared_statements (a cheap trigger). */
export function mentionsPreparedStatementsView(sql: Buffer, start = 0, end = sql.length): boolean {
  return mentionsAny(sql, VIEW_NEEDLES, start, end)
}

/** Whether the text in [start, end) may contain an EXECUTE in some form (a cheap trigger). */
export function mentionsExecute(sql: Buffer, start = 0, end = sql.length): boolean {
  return mentionsAny(sql, EXECUTE_NEEDLES, start, end)
}

function mentionsAny(sql: Buffer, needles: readonly Buffer[], start: number, end: number): boolean {
  for (const needle of needles) {
    const at = sql.indexOf(needle, start)
    if (at >= 0 && at < end) return true
  }
  return false
}

function readWord(sql: Buffer, i: number, end: number): { word: string; end: number } | null {
  if (!isIdentStart(sql[i])) return null
  let j = i + 1
  while (j < end && isIdentChar(sql[j])) j++
  return { word: sql.toString('latin1', i, j).toLowerCase(), end: j }
}

/** An identifier (folded to lower case) or a quoted name at `i`. */
function readName(
  sql: Buffer,
  i: number,
  end: number,
): { text: string; end: number; quoted: boolean } | null {
  if (sql[i] === 0x22) {
    const close = skipQuoted(sql, i, end, 0x22, false)
    if (close < 0 || close === i + 2) return null
    return { text: sql.toString('utf8', i + 1, close - 1).replaceAll('""', '"'), end: close, quoted: true }
  }
  if (!isIdentStart(sql[i])) return null
  let j = i + 1
  while (j < end && isIdentChar(sql[j])) j++
  return { text: sql.toString('utf8', i, j).toLowerCase(), end: j, quoted: false }
}

/**
 * Where the statement starting at `i` ends: the offset of its terminating semicolon, or
 * of the end of the text (without trailing blanks); -1 if another statement follows or
 * the text does not lex (an unterminated string or comment).
 */
function statementEnd(sql: Buffer, i: number, end: number): number {
  let last = i
  while (i < end) {
    i = skipBlank(sql, i, end)
    if (i < 0) return -1
    if (i >= end) break
    const byte = sql[i]
    if (byte === 0) break
    if (byte === 0x3b) {
      let rest = skipBlank(sql, i + 1, end)
      while (rest >= 0 && rest < end && sql[rest] === 0x3b) rest = skipBlank(sql, rest + 1, end)
      return rest < 0 || (rest < end && sql[rest] !== 0) ? -1 : i
    }
    if (byte === 0x27 || byte === 0x22) {
      const backslashes = byte === 0x27 && i > 0 && (sql[i - 1] === 0x45 || sql[i - 1] === 0x65)
      i = skipQuoted(sql, i, end, byte, backslashes)
      if (i < 0) return -1
    } else if (byte === 0x24 && !(sql[i + 1] >= 0x30 && sql[i + 1] <= 0x39) && !isIdentChar(sql[i - 1])) {
      const close = skipDollarQuoted(sql, i, end)
      i = close < 0 ? i + 1 : close
    } else i++
    last = i
  }
  return last
}

/** Skips whitespace and comments; the offset of the next token, or -1 inside an unterminated comment. */
function skipBlank(sql: Buffer, i: number, end: number): number {
  while (i < end) {
    const byte = sql[i]
    if (isSpace(byte)) i++
    else if (byte === 0x2d && sql[i + 1] === 0x2d) i = skipLineComment(sql, i, end)
    else if (byte === 0x2f && sql[i + 1] === 0x2a) {
      i = skipBlockComment(sql, i, end)
      if (i < 0) return -1
    } else break
  }
  return i
}
