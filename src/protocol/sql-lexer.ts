/**
 * A small SQL lexer over raw query bytes, not a parser: it answers whether a
 * statement is certain to leave no session state behind and to end in an idle
 * transaction status, so that the gateway may queue another session's transaction
 * behind it on the same backend (pipelining). Every doubt answers "no".
 *
 * Bytes >= 0x80 count as identifier characters, as in PostgreSQL's scanner (scan.l
 * ident_start/ident_cont), so UTF-8 identifiers and text need no decoding.
 *
 * Strings follow Postgres's rules exactly or the answer is the conservative one. A
 * plain '…' string is lexed by the session's standard_conforming_strings: on, a
 * backslash is an ordinary character; off, it escapes the next character as in E'…'
 * (scan.l, {quote}). The gateway does not follow that setting, and one text's answers
 * are cached for every session (statements.ts), so a plain string holding a backslash
 * lexes both ways: see Backslash.
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
 * anything the lexer does not understand refuses, and so does a plain string holding
 * a backslash (Postgres may read it either way, see Backslash).
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
      // E'…' / e'…' escape strings; refuse the rare N'…', B'…' and X'…' (U&'…' is a
      // word, "&" and a plain string, lexed as such: with a backslash it refuses).
      if (j < end && sql[j] === 0x27) {
        if (j !== i + 1 || (byte !== 0x45 && byte !== 0x65)) return false
        i = skipQuoted(sql, j, end, 0x27, ESCAPES)
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
      case 0x27: // 'string'; one holding a backslash is AMBIGUOUS and refuses
        i = skipQuoted(sql, i, end, 0x27, REFUSE)
        if (i < 0) return false
        lastWord = ''
        continue
      case 0x22: // "identifier": a quoted name before "(" is a call we cannot judge
        i = skipQuoted(sql, i, end, 0x22, ORDINARY)
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
  // Most queries call nothing: without "(" only a DO block could run code.
  const paren = sql.indexOf(0x28, start)
  if ((paren < 0 || paren >= end) && !mentionsAny(sql, DO_NEEDLES, start, end)) return []
  const calls = callsIn(sql, start, end, REFUSE)
  if (calls !== null) return calls
  // A plain string holds a backslash: Postgres reads the text one of two ways, so the
  // calls of both (a DO hidden in a string one way is a DO_BLOCK the other way). Not
  // DO_BLOCK always: the session would take every dotted word of the text (t.id …) for
  // a custom setting, and its bounded list of those would fill up and drop real ones.
  return union(callsIn(sql, start, end, ORDINARY), callsIn(sql, start, end, ESCAPES))
}

/** userCodeCalls with plain strings lexed by `plain`; null when REFUSE meets a backslash. */
function callsIn(sql: Buffer, start: number, end: number, plain: Backslash): string[] | null {
  const names: string[] = []
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
        i = skipQuoted(sql, j, end, 0x27, ESCAPES)
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
        i = skipQuoted(sql, i, end, 0x27, plain)
        if (i === AMBIGUOUS) return null
        if (i < 0) return names
        lastWord = ''
        continue
      case 0x22: {
        const close = skipQuoted(sql, i, end, 0x22, ORDINARY)
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

/**
 * What a backslash means inside a quoted token (skipQuoted). ESCAPES for E'…' strings
 * (and plain ones under standard_conforming_strings = off), ORDINARY for quoted
 * identifiers (and plain strings under on), REFUSE for a plain string whose setting is
 * unknown: skipQuoted answers AMBIGUOUS at its first backslash. Before a plain string
 * with a backslash both settings lex a text alike, so REFUSE is exact: a text it lexes
 * through reads the same to Postgres whatever the setting says.
 */
type Backslash = typeof ORDINARY | typeof ESCAPES | typeof REFUSE
const ORDINARY = 0
const ESCAPES = 1
const REFUSE = 2

/** skipQuoted's answer for a backslash under REFUSE (below -1, the unterminated answer). */
const AMBIGUOUS = -2

/**
 * Skips a quoted token starting at the quote; doubled quotes escape, and so does a
 * backslash under ESCAPES. -1 if unterminated; AMBIGUOUS at a backslash under REFUSE.
 */
function skipQuoted(sql: Buffer, i: number, end: number, quote: number, backslash: Backslash): number {
  i++
  while (i < end) {
    const byte = sql[i]
    if (byte === 0x5c && backslash !== ORDINARY) {
      if (backslash === REFUSE) return AMBIGUOUS
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
 * only costs one extra look at the settings. True also for a U&"…" name (see
 * spellsNames) and for a text that lexes two ways (see lexesTwoWays).
 */
export function mentionsSetConfig(sql: Buffer, start = 0, end = sql.length): boolean {
  const lower = sql.indexOf(SET_CONFIG_LOWER, start)
  if (lower >= 0 && lower < end) return true
  const upper = sql.indexOf(SET_CONFIG_UPPER, start)
  if (upper >= 0 && upper < end) return true
  return spellsNames(sql, start, end) || lexesTwoWays(sql, start, end)
}

const PIN_NEEDLES = ['temp', 'TEMP', 'Temp', 'advisory', 'ADVISORY'].map((word) => Buffer.from(word))

/**
 * Whether the query text in [start, end) may create state that pins a session to its
 * backend without a telling command tag: a temporary table made by CREATE TEMP TABLE AS
 * or SELECT INTO TEMP (tag SELECT), or a session advisory lock taken in a SELECT. A
 * cheap trigger for asking Postgres, not proof. True also for a U&"…" name (see
 * spellsNames) and for a text that lexes two ways (see lexesTwoWays).
 */
export function mayPin(sql: Buffer, start = 0, end = sql.length): boolean {
  return (
    mentionsAny(sql, PIN_NEEDLES, start, end) || spellsNames(sql, start, end) || lexesTwoWays(sql, start, end)
  )
}

const SEQUENCE_FUNCTIONS = ['nextval', 'currval', 'lastval', 'setval']

/**
 * Whether the query text in [start, end) may call nextval, currval, lastval or setval by
 * name: sequence state a session keeps in its backend (currval, lastval) and Postgres
 * cannot report. Case-insensitive; a match inside a string literal counts too, and so
 * does a U&"…" name (see spellsNames). A text that lexes two ways does not answer true
 * for that alone: the search reads raw bytes, which lexing does not change, and a true
 * pins the session until DISCARD.
 */
export function mentionsSequenceFunction(sql: Buffer, start = 0, end = sql.length): boolean {
  if (spellsNames(sql, start, end)) return true
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
 * remembers the names it used and asks for them by name. A text that lexes two ways
 * (a plain string holds a backslash) answers the names of both readings.
 */
export function customSettingNames(sql: Buffer, start = 0, end = sql.length): string[] {
  // Without a dot no name is dotted, unless an escape spells the dot (E'a\x2eb').
  const dot = sql.indexOf(0x2e, start)
  if ((dot < 0 || dot >= end) && !hasBackslash(sql, start, end)) return []
  const names = settingNamesIn(sql, start, end, REFUSE)
  if (names !== null) return names
  return union(settingNamesIn(sql, start, end, ORDINARY), settingNamesIn(sql, start, end, ESCAPES))
}

/** customSettingNames with plain strings lexed by `plain`; null when REFUSE meets a backslash. */
function settingNamesIn(sql: Buffer, start: number, end: number, plain: Backslash): string[] | null {
  const names: string[] = []
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
      const close = skipQuoted(sql, i + 1, end, 0x27, ESCAPES)
      if (close < 0) break
      if (setConfig === 2) noteDotted(names, literalValue(sql, i + 2, close - 1, true))
      i = close
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
      const close = skipQuoted(sql, i, end, 0x27, plain)
      if (close === AMBIGUOUS) return null
      if (close < 0) break
      if (setConfig === 2) noteDotted(names, literalValue(sql, i + 1, close - 1, plain === ESCAPES))
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

function noteDotted(names: string[], literal: string): void {
  const name = literal.toLowerCase()
  if (name.includes('.')) names.push(name)
}

/**
 * The value of the string literal whose text (between its quotes) is [from, to): ''
 * is a quote; with `escapes`, backslash escapes as Postgres reads them in E'…' (\n,
 * \x41, \101, \u0041, \U00000041, any other character stands for itself).
 */
function literalValue(sql: Buffer, from: number, to: number, escapes: boolean): string {
  if (!escapes) return sql.toString('utf8', from, to).replaceAll("''", "'")
  const bytes: number[] = []
  let i = from
  while (i < to) {
    const byte = sql[i++]
    if (byte === 0x27) i++ // the second quote of ''
    if (byte !== 0x5c || i >= to) {
      bytes.push(byte)
      continue
    }
    const next = sql[i++]
    const simple = SIMPLE_ESCAPES[next]
    if (simple !== undefined) bytes.push(simple)
    else if (next === 0x78 || next === 0x75 || next === 0x55) {
      // \xh[h] is a byte; \uXXXX and \UXXXXXXXX are code points.
      const max = next === 0x78 ? 2 : next === 0x75 ? 4 : 8
      let j = i
      while (j < to && j < i + max && isHexDigit(sql[j])) j++
      if (j === i || (next !== 0x78 && j !== i + max)) bytes.push(next)
      else {
        const value = Number.parseInt(sql.toString('latin1', i, j), 16)
        if (next === 0x78) bytes.push(value)
        else if (value <= 0x10ffff) bytes.push(...Buffer.from(String.fromCodePoint(value)))
        i = j
      }
    } else if (next >= 0x30 && next <= 0x37) {
      let value = next - 0x30
      for (let k = 0; k < 2 && i < to && sql[i] >= 0x30 && sql[i] <= 0x37; k++)
        value = value * 8 + sql[i++] - 0x30
      bytes.push(value & 0xff)
    } else bytes.push(next)
  }
  return Buffer.from(bytes).toString('utf8')
}

/** \b \f \n \r \t in E'…', by the letter's byte. */
const SIMPLE_ESCAPES: Partial<Record<number, number>> = {
  98: 0x08,
  102: 0x0c,
  110: 0x0a,
  114: 0x0d,
  116: 0x09,
}

function isHexDigit(byte: number): boolean {
  return (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x46) || (byte >= 0x61 && byte <= 0x66)
}

/** A name such as `a`, `"A b".c` or `a.b.c` starting at `i`, lower-cased; null if a quote is unterminated. */
function readQualifiedName(sql: Buffer, i: number, end: number): { text: string; end: number } | null {
  const parts: string[] = []
  for (;;) {
    if (sql[i] === 0x22) {
      const close = skipQuoted(sql, i, end, 0x22, ORDINARY)
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
      const close = skipQuoted(sql, i, end, 0x22, ORDINARY)
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

const UNICODE_NAME_NEEDLES = ['U&"', 'u&"'].map((word) => Buffer.from(word))

/**
 * Whether the text in [start, end) holds a U&"…" name, whose escapes can spell any
 * function (U&"nextv\0061l") that a search of the raw bytes would miss.
 */
function spellsNames(sql: Buffer, start: number, end: number): boolean {
  return mentionsAny(sql, UNICODE_NAME_NEEDLES, start, end)
}

function hasBackslash(sql: Buffer, start: number, end: number): boolean {
  const at = sql.indexOf(0x5c, start)
  return at >= 0 && at < end
}

/**
 * Whether a plain string in [start, end) holds a backslash, so that Postgres reads the
 * text one way under standard_conforming_strings = on and another under off: what is
 * quoted one way may be a statement the other way. Only texts with a backslash pay
 * for the lexing.
 */
function lexesTwoWays(sql: Buffer, start: number, end: number): boolean {
  return hasBackslash(sql, start, end) && callsIn(sql, start, end, REFUSE) === null
}

/** The names of both lists, each once, in first-seen order. */
function union(a: readonly string[] | null, b: readonly string[] | null): string[] {
  return [...new Set([...(a ?? []), ...(b ?? [])])]
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
    const close = skipQuoted(sql, i, end, 0x22, ORDINARY)
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
      const escapes = byte === 0x27 && i > 0 && (sql[i - 1] === 0x45 || sql[i - 1] === 0x65)
      // A plain string with a backslash reads two ways: not recognised (AMBIGUOUS < 0).
      i = skipQuoted(sql, i, end, byte, byte === 0x22 ? ORDINARY : escapes ? ESCAPES : REFUSE)
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
export function skipBlank(sql: Buffer, i: number, end: number): number {
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
