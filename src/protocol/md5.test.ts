import assert from 'node:assert/strict'
import { Buffer } from 'node:buffer'
import { createHash } from 'node:crypto'
import { describe, test } from 'node:test'
import {
  isMd5Hash,
  Md5Error,
  md5Hash,
  md5Response,
  md5ResponseFromPassword,
  verifyMd5Response,
} from './md5.ts'

// Independently computed vectors (not via node:crypto):
// `echo -n secretalice | md5sum`                               -> 4a0a68b43b6cd5cf266fa02f196e2371
// `(printf 4a0a68b43b6cd5cf266fa02f196e2371; printf '\x01\x02\x03\x04') | md5sum`
//                                                               -> 98a0412b9c31436fc53776e863350083
// PostgreSQL 15.18: SET password_encryption = 'md5'; CREATE ROLE r_md5 PASSWORD 'secret';
// SELECT rolpassword FROM pg_authid WHERE rolname = 'r_md5'     -> md5a940442cfc018cbb4c37d2492eb1c1c0
const ALICE = 'md54a0a68b43b6cd5cf266fa02f196e2371'
const SALT = Buffer.from([1, 2, 3, 4])
const ALICE_RESPONSE = 'md598a0412b9c31436fc53776e863350083'

function throwsCode(fn: () => unknown, code: string): void {
  assert.throws(fn, (error: unknown) => error instanceof Md5Error && error.code === code)
}

describe('md5Hash', () => {
  test("matches SELECT 'md5' || md5('secretalice')", () => {
    assert.equal(md5Hash('secret', 'alice'), ALICE)
    assert.equal(md5Hash('secret', 'alice'), `md5${createHash('md5').update('secretalice').digest('hex')}`)
  })
  test('matches a hash written by PostgreSQL', () => {
    assert.equal(md5Hash('secret', 'r_md5'), 'md5a940442cfc018cbb4c37d2492eb1c1c0')
  })
  test('hashes non-ASCII as UTF-8', () => {
    const expected = createHash('md5').update(Buffer.from('p\u00e9nbob', 'utf8')).digest('hex')
    assert.equal(md5Hash('p\u00e9n', 'bob'), `md5${expected}`)
  })
})

describe('md5Response', () => {
  test('from the stored hash (how the gateway logs in with only pg_authid)', () => {
    assert.equal(md5Response(ALICE, SALT), ALICE_RESPONSE)
  })
  test('from the bare 32-hex password hash', () => {
    assert.equal(md5Response(ALICE.slice(3), SALT), ALICE_RESPONSE)
  })
  test('from the password, as libpq computes it', () => {
    assert.equal(md5ResponseFromPassword('secret', 'alice', SALT), ALICE_RESPONSE)
  })
  test('depends on the salt', () => {
    assert.notEqual(md5Response(ALICE, Buffer.from([1, 2, 3, 5])), ALICE_RESPONSE)
  })
  test('rejects malformed hashes and salts with typed errors', () => {
    throwsCode(() => md5Response('md5XYZ', SALT), 'MD5_INVALID_HASH')
    throwsCode(() => md5Response(ALICE.toUpperCase(), SALT), 'MD5_INVALID_HASH') // PG's charset is lowercase
    throwsCode(() => md5Response('SCRAM-SHA-256$4096:abc$def:ghi', SALT), 'MD5_INVALID_HASH')
    throwsCode(() => md5Response(undefined as unknown as string, SALT), 'MD5_INVALID_HASH')
    throwsCode(() => md5Response(ALICE, Buffer.from([1, 2, 3])), 'MD5_INVALID_SALT')
    throwsCode(() => md5Response(ALICE, 'abcd' as unknown as Buffer), 'MD5_INVALID_SALT')
  })
})

describe('verifyMd5Response', () => {
  test('accepts the right response', () => {
    assert.equal(verifyMd5Response(ALICE, SALT, ALICE_RESPONSE), true)
    assert.equal(verifyMd5Response(ALICE, SALT, md5ResponseFromPassword('secret', 'alice', SALT)), true)
  })
  test('rejects wrong password, wrong salt, wrong user', () => {
    assert.equal(verifyMd5Response(ALICE, SALT, md5ResponseFromPassword('Secret', 'alice', SALT)), false)
    assert.equal(verifyMd5Response(ALICE, Buffer.from([4, 3, 2, 1]), ALICE_RESPONSE), false)
    assert.equal(verifyMd5Response(ALICE, SALT, md5ResponseFromPassword('secret', 'bob', SALT)), false)
  })
  test('client garbage is false, never a throw', () => {
    for (const response of [
      '',
      'md5',
      ALICE_RESPONSE.slice(0, -1),
      `${ALICE_RESPONSE}0`,
      `md5${'\u00e9'.repeat(32)}`,
    ]) {
      assert.equal(verifyMd5Response(ALICE, SALT, response), false, JSON.stringify(response))
    }
    assert.equal(verifyMd5Response(ALICE, SALT, 42 as unknown as string), false)
  })
  test('a stored value that is not an MD5 hash is a caller error', () => {
    throwsCode(() => verifyMd5Response('secret', SALT, ALICE_RESPONSE), 'MD5_INVALID_HASH')
  })
  test('isMd5Hash', () => {
    assert.equal(isMd5Hash(ALICE), true)
    assert.equal(isMd5Hash('md5'), false)
    assert.equal(isMd5Hash(`${ALICE}0`), false)
  })
})
