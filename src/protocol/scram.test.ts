import assert from 'node:assert/strict'
import { Buffer } from 'node:buffer'
import { createHash, createHmac } from 'node:crypto'
import { describe, test } from 'node:test'
import {
  buildScramVerifier,
  clientFinal,
  clientFirst,
  formatScramVerifier,
  mockScramVerifier,
  parseScramVerifier,
  SCRAM_DEFAULT_ITERATIONS,
  ScramError,
  type ScramServerState,
  type ScramVerifier,
  saslprep,
  scramKeysFromPassword,
  serverFinal,
  serverFirst,
  verifyServerFinal,
} from './scram.ts'

// RFC 7677 §3, SCRAM-SHA-256 with user "user", password "pencil".
const RFC = {
  password: 'pencil',
  clientNonce: 'rOprNGfwEbeRWgbNEkqO',
  serverNonce: '%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0',
  clientFirst: 'n,,n=user,r=rOprNGfwEbeRWgbNEkqO',
  serverFirst: 'r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096',
  clientFinal:
    'c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=',
  serverFinal: 'v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=',
  salt: Buffer.from('W22ZaJ0SNY7soEsUEjb6gQ==', 'base64'),
}
const rfcVerifier = buildScramVerifier(RFC.password, { salt: RFC.salt, iterations: 4096 })

/** Asserts `fn` throws a ScramError with `code`. */
function throwsCode(fn: () => unknown, code: string): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof ScramError, `expected ScramError, got ${String(error)}`)
    assert.equal(error.code, code)
    return true
  })
}

/** Runs the first round trip against `verifier` and returns the server state and client pieces. */
function firstRound(verifier: ScramVerifier) {
  const client = clientFirst()
  const server = serverFirst(client.message, verifier)
  return { client, server }
}

function rfcServerState(): ScramServerState {
  return serverFirst(RFC.clientFirst, rfcVerifier, { nonce: RFC.serverNonce }).state
}

describe('RFC 7677 test vector', () => {
  test('client side produces the exact client-final-message and accepts the server signature', () => {
    const first = clientFirst('user', { nonce: RFC.clientNonce })
    assert.equal(first.message, RFC.clientFirst)
    const final = clientFinal(first.state, RFC.serverFirst, { password: RFC.password })
    assert.equal(final.message, RFC.clientFinal)
    assert.equal(
      final.expectedServerSignature.toString('base64'),
      '6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=',
    )
    assert.equal(verifyServerFinal(RFC.serverFinal, final.expectedServerSignature), true)
  })

  test('server side produces the exact server-first and server-final messages', () => {
    const { serverFirstMessage, state } = serverFirst(RFC.clientFirst, rfcVerifier, {
      nonce: RFC.serverNonce,
    })
    assert.equal(serverFirstMessage, RFC.serverFirst)
    assert.equal(state.clientUsername, 'user')
    const result = serverFinal(state, RFC.clientFinal)
    assert.ok(result.ok)
    assert.equal(result.serverFinalMessage, RFC.serverFinal)
    // The recovered ClientKey is the one derived from the password.
    const keys = scramKeysFromPassword(RFC.password, RFC.salt, 4096)
    assert.deepEqual(result.clientKey, keys.clientKey)
    assert.deepEqual(result.serverKey, keys.serverKey)
  })

  test('keys derived from the password satisfy StoredKey = H(ClientKey)', () => {
    const keys = scramKeysFromPassword(RFC.password, RFC.salt, 4096)
    assert.equal(keys.saltedPassword.length, 32)
    assert.deepEqual(keys.storedKey, rfcVerifier.storedKey)
    assert.deepEqual(keys.serverKey, rfcVerifier.serverKey)
  })
})

describe('parseScramVerifier', () => {
  const secret = formatScramVerifier(rfcVerifier)

  test('round-trips the pg_authid form', () => {
    const parsed = parseScramVerifier(secret)
    assert.ok(parsed)
    assert.equal(parsed.iterations, 4096)
    assert.deepEqual(parsed.salt, RFC.salt)
    assert.deepEqual(parsed.storedKey, rfcVerifier.storedKey)
    assert.deepEqual(parsed.serverKey, rfcVerifier.serverKey)
    assert.equal(formatScramVerifier(parsed), secret)
  })

  // PostgreSQL is the oracle: rolpassword values written by PostgreSQL 15.18 for
  // `SET password_encryption = 'scram-sha-256'; CREATE ROLE r LOGIN PASSWORD E'...'`, i.e.
  // with the server's own pg_saslprep. Each must be reproduced from the password.
  const fromPostgres: [string, string, string][] = [
    [
      'ASCII',
      'secret',
      'SCRAM-SHA-256$4096:iMf6gv8osPGyuL/3Kv7OEA==$xWPYZ1LbxxAD1R19ZYxogOPWxz2W91FKMZ9O0i5Wudc=:i9Aet0Su5UfPGQaIByJTn/DOp8MJCOeVOzpExKHYEaQ=',
    ],
    [
      'decomposed e + acute (NFKC composes it)',
      'cafe\u0301',
      'SCRAM-SHA-256$4096:d4oX6OSGWyNXvQ4GLzMDZA==$1t0Pu1UuY38si3J/+GYWSrsfFo4rxhPZBEsKX/428t4=:tiHL6pb9PKxK6znOAdzXnh6HHpK+H80gcuvjItEH6Ps=',
    ],
    [
      'fi ligature (NFKC expands it)',
      '\ufb01x',
      'SCRAM-SHA-256$4096:5WVjgdV7qha9LlTAgLRR2A==$1LjqT+rYJxtRfE8kQ8Q+jE226j/KzjhuUhco0ptUZZU=:7BzXIifdZHzu20rPdecGAYAdEWzmEcAPlabdHZfkbK4=',
    ],
    [
      'no-break space (mapped to space)',
      'a\u00a0b',
      'SCRAM-SHA-256$4096:McQF3ZFeFWdj18+zi5erog==$qwTIcOmcHo3thT8g7GHHlyVIxhGGClFxlNokOvPxXQc=:ihrPrMn007874xevsO3WKynP2MK0qe4LxQ1jg+qZbIs=',
    ],
    [
      'emoji, unassigned in Unicode 3.2 (raw bytes, no NFKC)',
      '\u{1F600}cafe\u0301',
      'SCRAM-SHA-256$4096:ikY+/4FHuYJvQ82JcDBGyw==$rX/7aH6xSqoattiptgCNpPTg4xXtgwyYgDYQSEl3EuQ=:CUjo/69jqBOQnIa2W5s8nub7HPhqpDR8AEZ/+AYiJdg=',
    ],
    [
      'right-to-left only',
      '\u0627\u0628',
      'SCRAM-SHA-256$4096:gu0OtkN+sSdhzuCxbp18nA==$TCPT3WqioGW/gmjxiva+W8RvJG9Yg5QkVeXoNYWj2po=:NOFvMkT89KLwo9WrxvxMRagqQ6jSRtqDbNuWBDxA4fk=',
    ],
    [
      'mixed RTL + LTR (bidi failure, raw bytes)',
      '\u0627a\u0301\u0628',
      'SCRAM-SHA-256$4096:z7r9Ga8ZPWQwFgENrYLqqw==$pOrdLUA0CdRZXJ7OvFTGiKD0Z11U5fqu9ywQ7qhrhGY=:m4dL9phQhwNvJQJGDPOXQUc6OSXHrjqi2NoLZHl8j68=',
    ],
    [
      'non-ASCII with a control character (prohibited, raw bytes)',
      '\u00e9\u0007',
      'SCRAM-SHA-256$4096:i8rPDapwZ/WoHEIDgo4+hQ==$EV0dk77hK7XrCJCsS4M5aMqCQG/r6/9wVBJ1lYcPB84=:lfnRcYuS9PctDhgC3TQaDK6qP7Iog3lkQWtYOwqbnmE=',
    ],
  ]
  for (const [name, password, rolpassword] of fromPostgres) {
    test(`reproduces a PostgreSQL secret: ${name}`, () => {
      const parsed = parseScramVerifier(rolpassword)
      assert.ok(parsed)
      assert.equal(parsed.iterations, 4096)
      const keys = scramKeysFromPassword(password, parsed.salt, parsed.iterations)
      assert.deepEqual(keys.storedKey, parsed.storedKey)
      assert.deepEqual(keys.serverKey, parsed.serverKey)
      assert.equal(formatScramVerifier(parsed), rolpassword)
    })
  }

  for (const [name, value] of [
    ['md5 hash', 'md54a0a68b43b6cd5cf266fa02f196e2371'],
    ['plaintext', 'secret'],
    ['empty', ''],
    ['wrong scheme', secret.replace('SCRAM-SHA-256', 'SCRAM-SHA-1')],
    ['zero iterations', secret.replace('$4096:', '$0:')],
    ['negative iterations', secret.replace('$4096:', '$-1:')],
    ['huge iterations', secret.replace('$4096:', '$99999999999:')],
    ['bad salt base64', secret.replace('W22ZaJ0SNY7soEsUEjb6gQ==', 'W22Za*0SNY7soEsUEjb6gQ==')],
    ['unpadded salt', secret.replace('W22ZaJ0SNY7soEsUEjb6gQ==', 'W22ZaJ0SNY7soEsUEjb6gQ')],
    ['short stored key', secret.replace(/\$[^$:]+:/, '$AAAA:')],
    ['missing server key', secret.slice(0, secret.lastIndexOf(':'))],
    ['extra field', `${secret}:AAAA`],
  ] as const) {
    test(`rejects ${name}`, () => assert.equal(parseScramVerifier(value), null))
  }

  test('rejects non-strings without throwing', () => {
    assert.equal(parseScramVerifier(undefined as unknown as string), null)
  })
})

describe('round trips', () => {
  const verifier = buildScramVerifier('correct horse')

  test('password on both sides', () => {
    const { client, server } = firstRound(verifier)
    assert.match(
      server.serverFirstMessage,
      /^r=[A-Za-z0-9+/]{24}[A-Za-z0-9+/]{24},s=[A-Za-z0-9+/]{22}==,i=4096$/,
    )
    assert.equal(client.message.startsWith('n,,n=,r='), true, 'empty SCRAM username like libpq')
    const final = clientFinal(client.state, server.serverFirstMessage, { password: 'correct horse' })
    const result = serverFinal(server.state, final.message)
    assert.ok(result.ok, result.ok ? '' : result.error.message)
    assert.equal(verifyServerFinal(result.serverFinalMessage, final.expectedServerSignature), true)
  })

  test('keys recovered from a client log in against the same verifier (keys mode)', () => {
    // Gateway authenticates the client...
    const a = firstRound(verifier)
    const fromClient = serverFinal(
      a.server.state,
      clientFinal(a.client.state, a.server.serverFirstMessage, { password: 'correct horse' }).message,
    )
    assert.ok(fromClient.ok)
    // ...then logs in to a backend holding the same rolpassword, without the password.
    const b = firstRound(verifier)
    const final = clientFinal(b.client.state, b.server.serverFirstMessage, {
      clientKey: fromClient.clientKey,
      serverKey: fromClient.serverKey,
      salt: verifier.salt,
      iterations: verifier.iterations,
    })
    const backend = serverFinal(b.server.state, final.message)
    assert.ok(backend.ok)
    assert.equal(verifyServerFinal(backend.serverFinalMessage, final.expectedServerSignature), true)
  })

  test('keys mode refuses a server whose salt or iteration count differs', () => {
    const keys = scramKeysFromPassword('correct horse', verifier.salt, verifier.iterations)
    const other = buildScramVerifier('correct horse') // same password, new salt
    const { client, server } = firstRound(other)
    const credentials = { clientKey: keys.clientKey, serverKey: keys.serverKey }
    throwsCode(
      () => clientFinal(client.state, server.serverFirstMessage, { ...credentials, salt: verifier.salt }),
      'SCRAM_KEYS_MISMATCH',
    )
    throwsCode(
      () => clientFinal(client.state, server.serverFirstMessage, { ...credentials, iterations: 8192 }),
      'SCRAM_KEYS_MISMATCH',
    )
    // Without salt/iterations the mismatch is only discovered by the server.
    const final = clientFinal(client.state, server.serverFirstMessage, credentials)
    const result = serverFinal(server.state, final.message)
    assert.equal(result.ok, false)
    assert.equal(result.ok ? '' : result.reason, 'SCRAM_INVALID_PROOF')
  })

  test('wrong password fails with SCRAM_INVALID_PROOF / 28P01', () => {
    const { client, server } = firstRound(verifier)
    const final = clientFinal(client.state, server.serverFirstMessage, { password: 'battery staple' })
    const result = serverFinal(server.state, final.message)
    assert.equal(result.ok, false)
    if (result.ok) return
    assert.equal(result.reason, 'SCRAM_INVALID_PROOF')
    assert.equal(result.error.sqlstate, '28P01')
  })

  test('client rejects a server signature from a server that does not know the verifier', () => {
    const { client, server } = firstRound(verifier)
    const final = clientFinal(client.state, server.serverFirstMessage, { password: 'correct horse' })
    const forged = `v=${Buffer.alloc(32, 7).toString('base64')}`
    assert.equal(verifyServerFinal(forged, final.expectedServerSignature), false)
  })

  test('y,, gs2 header (client could bind, thinks we cannot) is accepted and bound as eSws', () => {
    const keys = scramKeysFromPassword('correct horse', verifier.salt, verifier.iterations)
    const bare = 'n=,r=abc'
    const { serverFirstMessage, state } = serverFirst(`y,,${bare}`, verifier)
    assert.equal(state.gs2Header, 'y,,')
    const nonce = serverFirstMessage.slice(2, serverFirstMessage.indexOf(','))
    const withoutProof = `c=eSws,r=${nonce}`
    // Build the proof by hand, since clientFirst only emits n,,.
    const authMessage = `${bare},${serverFirstMessage},${withoutProof}`
    const signature = createHmac('sha256', createHash('sha256').update(keys.clientKey).digest())
      .update(authMessage)
      .digest()
    const proof = Buffer.from(keys.clientKey.map((byte, i) => byte ^ signature[i]))
    const result = serverFinal(state, `${withoutProof},p=${proof.toString('base64')}`)
    assert.ok(result.ok)
    // Swapping the binding to biws must fail: c= has to repeat the header actually sent.
    const swapped = serverFinal(state, `c=biws,r=${nonce},p=${proof.toString('base64')}`)
    assert.equal(swapped.ok ? '' : swapped.reason, 'SCRAM_CHANNEL_BINDING')
  })

  test('password given as a Buffer hashes the same bytes as the string', () => {
    const a = scramKeysFromPassword('pencil', RFC.salt, 4096)
    const b = scramKeysFromPassword(Buffer.from('pencil'), RFC.salt, 4096)
    assert.deepEqual(a, b)
  })
})

describe('mock verifier for unknown roles', () => {
  const secret = Buffer.alloc(32, 0x5a)

  test('is deterministic per username and looks like a real challenge', () => {
    const a = mockScramVerifier('mallory', secret)
    const b = mockScramVerifier('mallory', secret)
    const c = mockScramVerifier('trudy', secret)
    assert.deepEqual(a.salt, b.salt)
    assert.notDeepEqual(a.salt, c.salt)
    assert.equal(a.salt.length, 16, 'same length as PostgreSQL-generated salts')
    assert.equal(a.iterations, SCRAM_DEFAULT_ITERATIONS)
    assert.notDeepEqual(
      mockScramVerifier('mallory', Buffer.alloc(32, 1)).salt,
      a.salt,
      'depends on the secret',
    )
    // salt = SHA-256(username || secret)[0..16], as scram_mock_salt.
    const expected = createHash('sha256').update('mallory').update(secret).digest().subarray(0, 16)
    assert.deepEqual(a.salt, expected)
    const { serverFirstMessage } = serverFirst('n,,n=,r=abc', a)
    assert.match(serverFirstMessage, /^r=abc[A-Za-z0-9+/]{24},s=[A-Za-z0-9+/]{22}==,i=4096$/)
  })

  test('fails exactly like a wrong password, even with a proof that would verify', () => {
    // Unknown role: the mock's StoredKey is all zeros, so no password can match.
    const doomed = mockScramVerifier('mallory', secret)
    const { client, server } = firstRound(doomed)
    const final = clientFinal(client.state, server.serverFirstMessage, { password: 'anything' })
    const result = serverFinal(server.state, final.message)
    assert.equal(result.ok ? '' : result.reason, 'SCRAM_INVALID_PROOF')
    // `doomed` wins even over a proof that verifies (auth-scram.c checks it after the proof,
    // so the work, and the timing, are the same as for a real role).
    const real = buildScramVerifier('pw')
    const doomedReal: ScramVerifier = { ...real, doomed: true }
    const r2 = firstRound(doomedReal)
    const f2 = clientFinal(r2.client.state, r2.server.serverFirstMessage, { password: 'pw' })
    const result2 = serverFinal(r2.server.state, f2.message)
    assert.equal(result2.ok ? '' : result2.reason, 'SCRAM_INVALID_PROOF')
  })

  test('rejects a short secret', () => {
    throwsCode(() => mockScramVerifier('x', Buffer.alloc(4)), 'SCRAM_INVALID_ARGUMENT')
  })
})

describe('server rejects malformed client-first-message', () => {
  const cases: [string, unknown, string][] = [
    ['empty', '', 'SCRAM_MALFORMED'],
    ['not a string', 42, 'SCRAM_MALFORMED'],
    ['too long', `n,,n=,r=${'a'.repeat(2000)}`, 'SCRAM_MALFORMED'],
    ['NUL byte', 'n,,n=,r=a\0b', 'SCRAM_MALFORMED'],
    ['unknown cbind flag', 'x,,n=,r=abc', 'SCRAM_MALFORMED'],
    ['missing comma after flag', 'n', 'SCRAM_MALFORMED'],
    [
      'channel binding requested (we never offer PLUS)',
      'p=tls-server-end-point,,n=,r=abc',
      'SCRAM_CHANNEL_BINDING',
    ],
    ['authzid', 'n,a=admin,n=,r=abc', 'SCRAM_UNSUPPORTED'],
    ['garbage instead of authzid', 'n,x,n=,r=abc', 'SCRAM_MALFORMED'],
    ['mandatory extension', 'n,,m=ext,n=,r=abc', 'SCRAM_UNSUPPORTED'],
    ['missing username', 'n,,r=abc', 'SCRAM_MALFORMED'],
    ['missing nonce', 'n,,n=', 'SCRAM_MALFORMED'],
    ['nonce without =', 'n,,n=,r', 'SCRAM_MALFORMED'],
    ['non-printable nonce', 'n,,n=,r=ab\u00e9', 'SCRAM_MALFORMED'],
    ['bad extension', 'n,,n=,r=abc,1=x', 'SCRAM_MALFORMED'],
  ]
  for (const [name, message, code] of cases) {
    test(name, () => throwsCode(() => serverFirst(message as string, rfcVerifier), code))
  }

  test('extensions after the nonce are ignored', () => {
    const { state } = serverFirst('n,,n=,r=abc,x=1,y=2', rfcVerifier)
    assert.equal(state.clientNonce, 'abc')
  })
})

describe('server rejects malformed client-final-message', () => {
  const nonce = RFC.clientNonce + RFC.serverNonce
  const proof = 'dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ='
  const cases: [string, unknown, string][] = [
    ['empty', '', 'SCRAM_MALFORMED'],
    ['not a string', null, 'SCRAM_MALFORMED'],
    ['missing c=', `r=${nonce},p=${proof}`, 'SCRAM_MALFORMED'],
    ['wrong channel binding (y,, instead of n,,)', `c=eSws,r=${nonce},p=${proof}`, 'SCRAM_CHANNEL_BINDING'],
    [
      'channel binding data',
      `c=cD10bHMtc2VydmVyLWVuZC1wb2ludCws,r=${nonce},p=${proof}`,
      'SCRAM_CHANNEL_BINDING',
    ],
    ['missing nonce', `c=biws,p=${proof}`, 'SCRAM_MALFORMED'],
    ['missing proof', `c=biws,r=${nonce}`, 'SCRAM_MALFORMED'],
    [
      'proof bad base64',
      `c=biws,r=${nonce},p=dHzbZapWIk4jUhN+Ute9yt*g9zjfMHgsqmmiz7AndVQ=`,
      'SCRAM_MALFORMED',
    ],
    ['proof wrong length', `c=biws,r=${nonce},p=AAAA`, 'SCRAM_MALFORMED'],
    ['garbage after proof', `c=biws,r=${nonce},p=${proof},x=1`, 'SCRAM_MALFORMED'],
    [
      'nonce of another exchange',
      `c=biws,r=${RFC.clientNonce}XXXXXXXXXXXXXXXXXXXXXXXXXXXXXX,p=${proof}`,
      'SCRAM_NONCE_MISMATCH',
    ],
    ['client nonce only', `c=biws,r=${RFC.clientNonce},p=${proof}`, 'SCRAM_NONCE_MISMATCH'],
    ['nonce with extra suffix', `c=biws,r=${nonce}x,p=${proof}`, 'SCRAM_NONCE_MISMATCH'],
    ['tampered proof', `c=biws,r=${nonce},p=${proof.replace('dHzb', 'dHzc')}`, 'SCRAM_INVALID_PROOF'],
  ]
  for (const [name, message, code] of cases) {
    test(name, () => {
      const result = serverFinal(rfcServerState(), message as string)
      assert.equal(result.ok, false)
      if (result.ok) return
      assert.equal(result.reason, code)
      assert.ok(result.error instanceof ScramError)
      assert.equal(result.error.code, code)
    })
  }

  test('extensions between nonce and proof are covered by the AuthMessage', () => {
    // Not in the RFC vector: inserting an extension changes the AuthMessage, so the RFC proof fails...
    const withExt = RFC.clientFinal.replace(',p=', ',x=1,p=')
    const result = serverFinal(rfcServerState(), withExt)
    assert.equal(result.ok ? '' : result.reason, 'SCRAM_INVALID_PROOF')
  })
})

describe('client rejects malformed server messages', () => {
  const state = clientFirst('', { nonce: 'abc' }).state
  const creds = { password: 'pencil' }
  const cases: [string, unknown, string][] = [
    ['empty', '', 'SCRAM_MALFORMED'],
    ['not a string', undefined, 'SCRAM_MALFORMED'],
    ['missing nonce', 's=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096', 'SCRAM_MALFORMED'],
    ['wrong nonce prefix', 'r=abXdef,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096', 'SCRAM_NONCE_MISMATCH'],
    ['nonce not extended', 'r=abc,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096', 'SCRAM_NONCE_MISMATCH'],
    ['missing salt', 'r=abcdef,i=4096', 'SCRAM_MALFORMED'],
    ['bad salt base64', 'r=abcdef,s=W22Z!J0SNY7soEsUEjb6gQ==,i=4096', 'SCRAM_MALFORMED'],
    ['empty salt', 'r=abcdef,s=,i=4096', 'SCRAM_MALFORMED'],
    ['missing iterations', 'r=abcdef,s=W22ZaJ0SNY7soEsUEjb6gQ==', 'SCRAM_MALFORMED'],
    ['zero iterations', 'r=abcdef,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=0', 'SCRAM_MALFORMED'],
    ['non-numeric iterations', 'r=abcdef,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4k', 'SCRAM_MALFORMED'],
    ['iterations beyond int32', 'r=abcdef,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4294967296', 'SCRAM_MALFORMED'],
    ['mandatory extension', 'm=x,r=abcdef,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096', 'SCRAM_UNSUPPORTED'],
  ]
  for (const [name, message, code] of cases) {
    test(`server-first: ${name}`, () => throwsCode(() => clientFinal(state, message as string, creds), code))
  }

  test('invalid credentials are a typed error', () => {
    const good = 'r=abcdef,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=1'
    throwsCode(() => clientFinal(state, good, {} as never), 'SCRAM_INVALID_ARGUMENT')
    throwsCode(
      () => clientFinal(state, good, { clientKey: Buffer.alloc(3), serverKey: Buffer.alloc(32) }),
      'SCRAM_INVALID_ARGUMENT',
    )
  })

  const signature = Buffer.from('6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=', 'base64')
  test('server-final: e= server error', () =>
    throwsCode(() => verifyServerFinal('e=invalid-proof', signature), 'SCRAM_SERVER_ERROR'))
  test('server-final: e= message carries the sanitized value', () => {
    assert.throws(() => verifyServerFinal('e=other-error\u0007x', signature), /other-error\?x/)
  })
  for (const [name, message] of [
    ['empty', ''],
    ['missing v=', 'x=abc'],
    ['bad base64', 'v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4'],
    ['wrong length', 'v=AAAA'],
    ['garbage extension', `${RFC.serverFinal},,`],
  ]) {
    test(`server-final: ${name}`, () =>
      throwsCode(() => verifyServerFinal(message, signature), 'SCRAM_MALFORMED'))
  }
  test('server-final: extensions after v= are ignored', () => {
    assert.equal(verifyServerFinal(`${RFC.serverFinal},x=1`, signature), true)
  })
})

describe('saslprep (PostgreSQL pg_saslprep semantics)', () => {
  test('ASCII passes through untouched, control characters included', () => {
    assert.equal(saslprep('pencil'), 'pencil')
    assert.equal(saslprep('a\tb'), 'a\tb')
  })
  test('maps non-ASCII spaces to U+0020 and drops "mapped to nothing"', () => {
    assert.equal(saslprep('I\u00a0X'), 'I X')
    assert.equal(saslprep('I\u00adX'), 'IX')
  })
  test('NFKC-normalises', () => {
    assert.equal(saslprep('\u00aa'), 'a') // RFC 4013 §3 example
    assert.equal(saslprep('\u2168'), 'IX') // RFC 4013 §3 example
    assert.equal(saslprep('cafe\u0301'), 'caf\u00e9')
    assert.equal(saslprep('\ufb01'), 'fi')
  })
  test('rejects prohibited characters (PostgreSQL then uses the raw password)', () => {
    assert.equal(saslprep('\u0007\u00e9'), null) // RFC 4013 §3: prohibited U+0007
    assert.equal(saslprep('\u00ad'), null) // empty after mapping
    assert.equal(saslprep('\ue000x\u00e9'), null) // private use
    assert.equal(saslprep('\u{1F600}e\u0301'), null) // unassigned in Unicode 3.2
  })
  test('bidi rule: RandALCat first and last, no LCat', () => {
    assert.equal(saslprep('\u0627\u0628'), '\u0627\u0628')
    assert.equal(saslprep('\u0627\u00e91'), null) // RFC 4013 §3 style: RandALCat not last
    assert.equal(saslprep('\u0627a\u0628'), null) // contains LCat
    assert.equal(saslprep('\u06271\u0628'), '\u06271\u0628')
  })
  test('invalid UTF-8 Buffer is rejected, and the raw bytes are hashed', () => {
    const raw = Buffer.from([0x70, 0xe9, 0x6e]) // "pén" in Latin-1
    assert.equal(saslprep(raw), null)
    const a = scramKeysFromPassword(raw, RFC.salt, 1)
    const b = scramKeysFromPassword(Buffer.from('p\u00e9n', 'utf8'), RFC.salt, 1)
    assert.notDeepEqual(a.clientKey, b.clientKey)
  })
  test('prohibited password hashes raw bytes, normalisable one hashes the normalised form', () => {
    assert.deepEqual(
      scramKeysFromPassword('cafe\u0301', RFC.salt, 1).clientKey,
      scramKeysFromPassword('caf\u00e9', RFC.salt, 1).clientKey,
    )
    assert.notDeepEqual(
      scramKeysFromPassword('\u{1F600}cafe\u0301', RFC.salt, 1).clientKey,
      scramKeysFromPassword('\u{1F600}caf\u00e9', RFC.salt, 1).clientKey,
    )
  })
})

describe('argument checks are typed errors, not TypeErrors', () => {
  test('scramKeysFromPassword', () => {
    throwsCode(() => scramKeysFromPassword('x', RFC.salt, 0), 'SCRAM_INVALID_ARGUMENT')
    throwsCode(() => scramKeysFromPassword('x', 'salt' as unknown as Buffer, 1), 'SCRAM_INVALID_ARGUMENT')
    throwsCode(() => scramKeysFromPassword(5 as unknown as string, RFC.salt, 1), 'SCRAM_INVALID_ARGUMENT')
  })
  test('nonce options', () => {
    throwsCode(() => clientFirst('', { nonce: 'a,b' }), 'SCRAM_INVALID_ARGUMENT')
    throwsCode(() => serverFirst('n,,n=,r=abc', rfcVerifier, { nonce: '' }), 'SCRAM_INVALID_ARGUMENT')
  })
  test('saslname escaping of "," and "="', () => {
    assert.equal(clientFirst('a,b=c', { nonce: 'x' }).message, 'n,,n=a=2Cb=3Dc,r=x')
  })
})
