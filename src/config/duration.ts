import { InvalidValueError } from './errors.ts'

/** What a duration looks like; used as the reason in every duration error. */
export const DURATION_EXPECTED =
  'expected a duration such as 500ms, 30s, 5m or 1h (a plain number means milliseconds)'

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }

// One number, optional fraction, optional unit. No sign: a negative timeout is always a mistake.
const DURATION = /^(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m|h)?$/

/**
 * Parses a duration into whole milliseconds: `'500ms'`, `'30s'`, `'5m'`, `'1h'`, `'1.5s'`.
 * A plain number (or numeric string) means milliseconds, so YAML `wait-timeout: 30000`
 * and `--wait-timeout 30000` agree. Fractions are rounded to the nearest millisecond.
 *
 * @throws InvalidValueError for anything else, including negative and non-finite numbers.
 */
export function parseDuration(input: string | number): number {
  if (typeof input === 'number') {
    if (Number.isFinite(input) && input >= 0) return Math.round(input)
    throw new InvalidValueError('duration', String(input), DURATION_EXPECTED)
  }
  const match = DURATION.exec(input.trim())
  if (match === null) throw new InvalidValueError('duration', input, DURATION_EXPECTED)
  const ms = Number(match[1]) * UNIT_MS[match[2] ?? 'ms']
  if (!Number.isSafeInteger(Math.round(ms))) throw new InvalidValueError('duration', input, 'too large')
  return Math.round(ms)
}
