/**
 * Reading what pg_regress reports: one status line per test on stdout and one
 * `diff` block per failed test in `regression.diffs`.
 *
 * @module
 */

/** Outcome of one test as pg_regress printed it. */
export type TestStatus = 'ok' | 'FAILED' | 'failed (ignored)'

/** One test's line. */
export interface TestResult {
  name: string
  status: TestStatus
  /** pg_regress's elapsed time, when printed. */
  ms: number | undefined
  /** Anything after the status and time, e.g. `(test process exited with exit code 2)`. */
  note: string
}

// `test name ... ok  12 ms`, `     name ... FAILED  12 ms`, both also with a note after
// the status. In a parallel group the names follow a `parallel group (n tests): ` header
// on its own line.
const LINE = /^(?:test\s+|\s+)(\S+)\s+\.\.\.\s+(ok|FAILED|failed \(ignored\))\s*(\(.*?\))?\s*(?:(\d+) ms)?/

/** Parses pg_regress stdout into per-test results, in schedule order. */
export function parseStatusLines(stdout: string): TestResult[] {
  const results: TestResult[] = []
  for (const line of stdout.split('\n')) {
    const match = LINE.exec(line)
    if (!match) continue
    results.push({
      name: match[1],
      status: match[2] as TestStatus,
      note: match[3] ?? '',
      ms: match[4] === undefined ? undefined : Number(match[4]),
    })
  }
  return results
}

/** Test names of a schedule file in order (`test:` and `ignore:` lines list them). */
export function scheduleTests(schedule: string): string[] {
  const names: string[] = []
  for (const line of schedule.split('\n')) {
    const match = /^test:\s*(.*)$/.exec(line)
    if (match) names.push(...match[1].trim().split(/\s+/).filter(Boolean))
  }
  return names
}

/**
 * Splits `regression.diffs` into one diff per test, keyed by the test name (the base
 * name of the results file the diff compares against).
 */
export function splitDiffs(diffs: string): Map<string, string> {
  const byTest = new Map<string, string>()
  const blocks = diffs.split(/^(?=diff )/m)
  for (const block of blocks) {
    const header = block.split('\n', 1)[0]
    const match = /\/results\/([^/\s]+)\.out\s*$/.exec(header)
    if (!match) continue
    byTest.set(match[1], (byTest.get(match[1]) ?? '') + block)
  }
  return byTest
}

/** The first `maxLines` changed lines of a diff (`+`/`-` lines after its headers). */
export function diffExcerpt(diff: string, maxLines = 12): string[] {
  const lines = diff.split('\n')
  const body = lines.filter(
    (line) => /^[-+]/.test(line) && !line.startsWith('---') && !line.startsWith('+++'),
  )
  return body.slice(0, maxLines)
}

/** What {@link probableCause} looks at for one failed test. */
export interface FailureEvidence {
  /** pg_regress's note, e.g. `(test process exited with exit code 2)`. */
  note: string
  /** The test's diff against the expected output ('' when none). */
  diff: string
  /** The test's results file ('' when missing). */
  output: string
  /** Killed by the runner's per-test watchdog. */
  hung: boolean
}

const firstMatch = (text: string, pattern: RegExp): string | undefined => pattern.exec(text)?.[0]?.trim()

/** Lines the diff adds (what came out through the gateway instead of the expected output). */
const addedLines = (diff: string): string[] =>
  diff.split('\n').filter((line) => line.startsWith('+') && !line.startsWith('+++'))

/** Dates, times, zones and intervals as DateStyle, TimeZone and IntervalStyle print them. */
const DATE_TOKEN =
  /\b\d{4}-\d{2}-\d{2}\b|\b\d{2}[-/]\d{2}[-/]\d{4}\b|\b(PST|PDT|UTC|GMT)\b|@ \d+ (hour|min|sec|day|mon|year)|\d{2}:\d{2}:\d{2}/

/**
 * True when the diff looks like the session's DateStyle/TimeZone/IntervalStyle was not
 * in force: Postgres's datestyle hint, or among the first changed lines a removed and
 * an added line that both carry date/time values.
 */
function dateStyleDiff(diff: string): boolean {
  if (/^\+.*Perhaps you need a different "datestyle" setting/m.test(diff)) return true
  const changed = diffExcerpt(diff, 10)
  const removed = changed.some((line) => line.startsWith('-') && DATE_TOKEN.test(line))
  const added = changed.some((line) => line.startsWith('+') && DATE_TOKEN.test(line))
  return removed && added
}

/**
 * A one-line guess at why a test failed through the gateway, from its output and diff.
 * Ordered from the most specific symptom (a gateway error message) to the vaguest
 * (the first differing line); a human should confirm it.
 */
export function probableCause(evidence: FailureEvidence): string {
  const { output, diff } = evidence
  const connectError = firstMatch(output, /psql: error: .*/)
  if (connectError) {
    const reason = connectError.replace(/^.*?(FATAL|ERROR):\s*/, '')
    const hint = /unrecognized configuration parameter/.test(reason)
      ? " (a query's result row was recorded as a setting)"
      : ''
    return `could not connect through the gateway: ${reason}${hint}`
  }
  const unexpected = firstMatch(
    output,
    /server connection lost: unexpected message 0x[0-9a-f]+ from idle backend/,
  )
  if (unexpected) {
    return `replies out of step with requests ("${unexpected.replace('server connection lost: ', '')}")${evidence.hung ? ', then the session hung' : ''}`
  }
  const lost = firstMatch(output, /server connection lost: .*/)
  if (lost) {
    return `gateway error "${lost}"${evidence.hung ? ', then the session hung' : ''}`
  }
  if (/Segmentation fault|signal 11/.test(evidence.note)) {
    return 'psql crashed (SIGSEGV): it was handed replies that do not belong to its queries'
  }
  if (evidence.hung) {
    const last = output.trimEnd().split('\n').slice(-1)[0] ?? ''
    return `hung (no end within the test timeout); last output line: ${last.trim()}`
  }
  const added = addedLines(diff).join('\n')
  if (/set_config|pg_regress\//.test(added)) {
    return "the gateway's own set_config/settings-probe rows reached the client"
  }
  const unknownSetting = firstMatch(added, /unrecognized configuration parameter "[^"]+"/)
  if (unknownSetting) {
    return `statements fail with ${unknownSetting}: a query's result row was recorded as a setting`
  }
  const denied = firstMatch(added, /permission denied to set parameter "[^"]+"/)
  if (denied)
    return `"${denied}" on statements that set nothing: a backend left with another session's settings`
  if (/is not yet defined in this session/.test(added)) {
    return 'currval/lastval: sequence state of another backend ("not yet defined in this session")'
  }
  const missing = firstMatch(
    added,
    /ERROR: {2}(relation|prepared statement|cursor|portal|function|type) "[^"]+" does not exist/,
  )
  if (missing) {
    return `${missing.replace(/^ERROR:\s+/, '')}: created by an earlier test that failed, or session state on another backend`
  }
  if (dateStyleDiff(diff)) {
    return 'date/time/interval output in other DateStyle/TimeZone/IntervalStyle than the session set'
  }
  const first = diffExcerpt(diff, 1)[0]
  return first ? `first difference: ${first}` : `${evidence.note || 'failed'} (no diff)`
}
