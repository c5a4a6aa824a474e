import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { parseDuration } from './duration.ts'
import { InvalidValueError } from './errors.ts'

describe('parseDuration', () => {
  it('reads each unit', () => {
    assert.equal(parseDuration('500ms'), 500)
    assert.equal(parseDuration('30s'), 30_000)
    assert.equal(parseDuration('5m'), 300_000)
    assert.equal(parseDuration('1h'), 3_600_000)
  })

  it('treats a plain number, or a numeric string, as milliseconds', () => {
    assert.equal(parseDuration(250), 250)
    assert.equal(parseDuration('250'), 250)
    assert.equal(parseDuration(0), 0)
  })

  it('accepts fractions and surrounding space, rounding to whole milliseconds', () => {
    assert.equal(parseDuration('1.5s'), 1500)
    assert.equal(parseDuration(' 2 m '), 120_000)
    assert.equal(parseDuration('.5s'), 500)
    assert.equal(parseDuration('0.4'), 0)
  })

  for (const bad of ['', 'abc', '-1s', '5 minutes', '1d', '1h30m', '10S', 'ms', '1e3']) {
    it(`rejects ${JSON.stringify(bad)} with a message naming the value and the expected form`, () => {
      assert.throws(
        () => parseDuration(bad),
        (err: unknown) =>
          err instanceof InvalidValueError &&
          err.message.startsWith(
            `invalid duration ${JSON.stringify(bad)}: expected a duration such as 500ms`,
          ),
      )
    })
  }

  for (const bad of [-1, Number.NaN, Number.POSITIVE_INFINITY]) {
    it(`rejects the number ${bad}`, () => {
      assert.throws(() => parseDuration(bad), InvalidValueError)
    })
  }
})
