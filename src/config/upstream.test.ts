import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { InvalidValueError } from './errors.ts'
import { parseUpstreamUrl, redactUpstreamUrl } from './upstream.ts'

describe('parseUpstreamUrl', () => {
  it('reads every part of a TCP URL', () => {
    assert.deepEqual(parseUpstreamUrl('postgresql://alice:s3cret@db.example:6432/app'), {
      host: 'db.example',
      port: 6432,
      user: 'alice',
      password: 's3cret',
      database: 'app',
    })
  })

  it('accepts the postgres:// scheme too', () => {
    assert.deepEqual(parseUpstreamUrl('postgres://bob@10.0.0.5:5433/x'), {
      host: '10.0.0.5',
      port: 5433,
      user: 'bob',
      database: 'x',
    })
  })

  it('defaults the port to 5432 only when the URL omits it', () => {
    assert.equal(parseUpstreamUrl('postgresql://h/db').port, 5432)
    assert.equal(parseUpstreamUrl('postgresql://h:/db').port, 5432)
    assert.equal(parseUpstreamUrl('postgresql://h:7000/db').port, 7000)
  })

  it('percent-decodes user, password, host and database', () => {
    const config = parseUpstreamUrl('postgresql://us%40er:p%3Aw%2Fd%40%25@h:1/my%20db')
    assert.equal(config.user, 'us@er')
    assert.equal(config.password, 'p:w/d@%')
    assert.equal(config.database, 'my db')
  })

  it('keeps "+" literal, as libpq does', () => {
    assert.equal(parseUpstreamUrl('postgresql://h/db?password=a+b').password, 'a+b')
  })

  it('takes an empty password as given', () => {
    assert.equal(parseUpstreamUrl('postgresql://u:@h/db').password, '')
  })

  it('reads a percent-encoded socket directory in the host part', () => {
    assert.deepEqual(parseUpstreamUrl('postgresql://u@%2Fvar%2Frun%2Fpostgresql:5433/db'), {
      socketDir: '/var/run/postgresql',
      port: 5433,
      user: 'u',
      database: 'db',
    })
  })

  it('reads a socket directory from ?host=, with an empty host part', () => {
    assert.deepEqual(parseUpstreamUrl('postgresql:///db?host=/tmp/pg%20sock&port=6000&user=me'), {
      socketDir: '/tmp/pg sock',
      port: 6000,
      user: 'me',
      database: 'db',
    })
  })

  it('lets query parameters override the URI parts', () => {
    assert.deepEqual(
      parseUpstreamUrl('postgresql://u:p@h:1/a?host=other&port=2&user=v&password=q&dbname=b'),
      {
        host: 'other',
        port: 2,
        user: 'v',
        password: 'q',
        database: 'b',
      },
    )
  })

  it('reads a bracketed IPv6 host', () => {
    assert.deepEqual(parseUpstreamUrl('postgresql://[::1]:5544/db'), {
      host: '::1',
      port: 5544,
      database: 'db',
    })
    assert.deepEqual(parseUpstreamUrl('postgresql://[fe80::1]/db'), {
      host: 'fe80::1',
      port: 5432,
      database: 'db',
    })
  })

  it('leaves out parts the URL does not give', () => {
    assert.deepEqual(parseUpstreamUrl('postgresql://h'), { host: 'h', port: 5432 })
  })

  const bad: Array<[string, RegExp]> = [
    ['mysql://h/db', /expected a postgresql:\/\/ or postgres:\/\/ URL/],
    ['h:5432/db', /expected a postgresql:\/\//],
    ['postgresql://h:0/db', /port "0" is not a number from 1 to 65535/],
    ['postgresql://h:65536/db', /port "65536"/],
    ['postgresql://h:abc/db', /port "abc"/],
    ['postgresql:///db', /no host/],
    ['postgresql://a,b/db', /multiple hosts are not supported/],
    ['postgresql://h/db?sslmode=require', /unsupported parameter "sslmode"/],
    ['postgresql://h/db?host', /query parameter "host" has no value/],
    ['postgresql://u:%zz@h/db', /malformed percent-encoding in password/],
    ['postgresql://[::1/db', /unterminated \[/],
  ]
  for (const [url, reason] of bad) {
    it(`rejects ${url}`, () => {
      assert.throws(
        () => parseUpstreamUrl(url),
        (err: unknown) => err instanceof InvalidValueError && reason.test(err.reason),
      )
    })
  }

  it('never puts the password in its error message', () => {
    assert.throws(
      () => parseUpstreamUrl('postgresql://u:hunter2@h:99999/db?password=hunter3'),
      (err: unknown) =>
        err instanceof Error && !/hunter/.test(err.message) && err.message.includes('u:***@h'),
    )
  })
})

describe('redactUpstreamUrl', () => {
  it('hides passwords in the user info and in the query', () => {
    assert.equal(
      redactUpstreamUrl('postgresql://u:p@ss@h/db?password=x&user=y'),
      'postgresql://u:***@h/db?password=***&user=y',
    )
  })

  it('leaves URLs without passwords alone', () => {
    assert.equal(redactUpstreamUrl('postgresql://u@h:5432/db'), 'postgresql://u@h:5432/db')
    assert.equal(redactUpstreamUrl('not a url'), 'not a url')
  })
})
