import assert from 'node:assert/strict'
import { after, afterEach, before, describe, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import pg from 'pg'
import type { Gateway } from '../../src/gateway/index.ts'
import { Backend, Frontend, StartupCode } from '../../src/protocol/index.ts'
import { startTestGateway } from '../support/gateway.ts'
import type { TestPostgres } from '../support/postgres.ts'
import { createRole, startTestPostgres } from '../support/postgres.ts'
import {
  bind,
  collectResult,
  errorFields,
  execute,
  parse,
  query,
  RawClient,
  type RawMessage,
  rawHeader,
  startupPacket,
  sync,
  typed,
  typeLetters,
} from '../support/raw-client.ts'
import { describeErrors, trackUncaught, type UncaughtTracker } from '../support/uncaught.ts'

const LOGIN = { user: 'postgres', database: 'postgres' }

/** Polls `check` until it returns true or `timeoutMs` passes. */
async function eventually(check: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`)
    await sleep(25)
  }
}

/**
 * The connection must end cleanly: closed by the server, with nothing sent or with
 * exactly one FATAL ErrorResponse carrying `code`.
 */
function assertFatalOrSilentClose(result: { messages: RawMessage[]; closed: boolean }, code: string): void {
  assert.ok(result.closed, 'the server kept the connection open')
  if (result.messages.length === 0) return
  assert.equal(typeLetters(result.messages), 'E', 'only an ErrorResponse may precede the close')
  const fields = errorFields(result.messages[0])
  assert.equal(fields.severity, 'FATAL')
  assert.equal(fields.code, code, `SQLSTATE (message: ${fields.message})`)
}

/** The connection must get one FATAL ErrorResponse with `code` and then close. */
function assertFatal(result: { messages: RawMessage[]; closed: boolean }, code: string): void {
  assert.ok(result.closed, 'the server kept the connection open')
  const errors = result.messages.filter((message) => message.type === Backend.ErrorResponse)
  assert.equal(errors.length, 1, `expected one ErrorResponse, got ${typeLetters(result.messages)}`)
  const fields = errorFields(errors[0])
  assert.equal(fields.severity, 'FATAL')
  assert.equal(fields.code, code, `SQLSTATE (message: ${fields.message})`)
}

describe('malformed and out-of-phase client input', () => {
  let postgres: TestPostgres
  let gateway: Gateway
  let scramGateway: Gateway
  const clients: RawClient[] = []
  /** Errors thrown out of gateway callbacks: in production, any of these kills the process. */
  let uncaught: UncaughtTracker

  before(async () => {
    uncaught = trackUncaught()
    postgres = await startTestPostgres()
    await createRole(postgres, { name: 'alice', password: 'alice-pw', encryption: 'scram-sha-256' })
    gateway = await startTestGateway(postgres, { poolSize: 3, auth: 'trust' })
    scramGateway = await startTestGateway(postgres, { poolSize: 2, auth: 'scram-sha-256' })
  })

  after(async () => {
    uncaught?.stop()
    for (const client of clients) client.destroy()
    await gateway?.close()
    await scramGateway?.close()
    await postgres?.stop()
  })

  /** After every bad client: the gateway still serves a normal client and holds no lease. */
  afterEach(async () => {
    assert.deepEqual(
      describeErrors(uncaught.take()),
      [],
      'the gateway threw out of a socket or promise callback (this would crash a real gateway)',
    )
    const client = new pg.Client({ host: '127.0.0.1', port: gateway.port, ...LOGIN })
    await client.connect()
    try {
      const { rows } = await client.query('SELECT 1 AS one')
      assert.equal(rows[0].one, 1)
    } finally {
      await client.end()
    }
    await eventually(
      () => gateway.pooler.stats().every((pool) => pool.leased === 0),
      `no leased backend (stats ${JSON.stringify(gateway.pooler.stats())})`,
    )
  })

  async function connect(port = gateway.port): Promise<RawClient> {
    const client = await RawClient.connect(port)
    clients.push(client)
    return client
  }

  async function loggedIn(): Promise<RawClient> {
    const { client } = await RawClient.login(gateway.port, LOGIN)
    clients.push(client)
    return client
  }

  describe('before startup', () => {
    test('garbage bytes (an HTTP request)', async () => {
      const client = await connect()
      client.write('GET / HTTP/1.1\r\nHost: localhost\r\n\r\n')
      assertFatalOrSilentClose(await client.drain(), '08P01')
    })

    test('startup packet with length 4', async () => {
      const client = await connect()
      client.write(Buffer.from([0, 0, 0, 4, 0, 3, 0, 0]))
      assertFatalOrSilentClose(await client.drain(), '08P01')
    })

    test('startup packet with length 0', async () => {
      const client = await connect()
      client.write(Buffer.from([0, 0, 0, 0]))
      assertFatalOrSilentClose(await client.drain(), '08P01')
    })

    test('startup packet with length 0xFFFFFFF', async () => {
      const client = await connect()
      const head = Buffer.alloc(8)
      head.writeInt32BE(0xfffffff, 0)
      head.writeInt32BE(StartupCode.ProtocolV3, 4)
      client.write(head)
      assertFatalOrSilentClose(await client.drain(), '08P01')
    })

    test('startup packet with length 20000 (over 10000)', async () => {
      const client = await connect()
      const big = Buffer.alloc(20000)
      big.writeInt32BE(20000, 0)
      big.writeInt32BE(StartupCode.ProtocolV3, 4)
      client.write(big)
      assertFatalOrSilentClose(await client.drain(), '08P01')
    })

    test('a startup packet that never completes is cut off by the startup timeout or stays harmless', async () => {
      const client = await connect()
      client.write(Buffer.from([0, 0, 0, 100, 0, 3, 0, 0]))
      // Half a packet, then the client goes away: nothing to assert but the gateway's health.
      await sleep(50)
      client.destroy()
    })

    test('startup without user is 28000', async () => {
      const client = await connect()
      client.write(startupPacket(StartupCode.ProtocolV3, Buffer.from('database\0postgres\0\0')))
      assertFatal(await client.drain(), '28000')
    })

    test('protocol version 2.0 is 0A000', async () => {
      const client = await connect()
      client.write(startupPacket(2 << 16, Buffer.from('user\0postgres\0\0')))
      assertFatal(await client.drain(), '0A000')
    })

    test('a malformed parameter list is 08P01', async () => {
      const client = await connect()
      client.write(startupPacket(StartupCode.ProtocolV3, Buffer.from('user\0postgres\0database')))
      assertFatal(await client.drain(), '08P01')
    })

    test('a PasswordMessage before startup', async () => {
      const client = await connect()
      client.write(typed(Frontend.PasswordMessage, 'secret\0'))
      assertFatalOrSilentClose(await client.drain(), '08P01')
    })

    test('a Query before startup', async () => {
      const client = await connect()
      client.write(query('SELECT 1'))
      assertFatalOrSilentClose(await client.drain(), '08P01')
    })
  })

  describe('during authentication (scram-sha-256 gateway)', () => {
    test('a Query instead of the SASL response is 08P01', async () => {
      const client = await connect(scramGateway.port)
      client.write(startupPacket(StartupCode.ProtocolV3, Buffer.from('user\0alice\0database\0postgres\0\0')))
      const request = await client.next()
      assert.equal(request.type, Backend.Authentication)
      assert.equal(request.body.readInt32BE(0), 10, 'AuthenticationSASL')
      client.write(query('SELECT 1'))
      assertFatal(await client.drain(), '08P01')
    })

    test('a second StartupMessage instead of the SASL response is refused', async () => {
      const client = await connect(scramGateway.port)
      const startup = startupPacket(StartupCode.ProtocolV3, Buffer.from('user\0alice\0\0'))
      client.write(startup)
      await client.next()
      client.write(startup)
      assertFatalOrSilentClose(await client.drain(), '08P01')
    })

    test('an oversized SASL response is refused', async () => {
      const client = await connect(scramGateway.port)
      client.write(startupPacket(StartupCode.ProtocolV3, Buffer.from('user\0alice\0\0')))
      await client.next()
      client.write(rawHeader(Frontend.PasswordMessage, 0x7fffffff))
      assertFatal(await client.drain(), '08P01')
    })

    test('disconnecting mid-authentication', async () => {
      const client = await connect(scramGateway.port)
      client.write(startupPacket(StartupCode.ProtocolV3, Buffer.from('user\0alice\0\0')))
      await client.next()
      client.write(typed(Frontend.PasswordMessage).subarray(0, 3))
      client.destroy()
      // The SCRAM gateway must still log people in afterwards.
      const { client: ok } = await RawClient.login(
        scramGateway.port,
        { user: 'alice', database: 'postgres' },
        'alice-pw',
      )
      clients.push(ok)
      assert.deepEqual((await ok.query('SELECT current_user')).rows, [['alice']])
      ok.end()
    })
  })

  describe('after login', () => {
    test("a message of type 'Z' (a backend type) is FATAL 08P01", async () => {
      const client = await loggedIn()
      client.write(typed(0x5a, 'I'))
      assertFatal(await client.drain(), '08P01')
    })

    test('a message of an unknown type is FATAL 08P01', async () => {
      const client = await loggedIn()
      client.write(typed(0x01, 'junk'))
      assertFatal(await client.drain(), '08P01')
    })

    test('a valid query and an unknown type in one write: FATAL 08P01 (after the answer, if any)', async () => {
      const client = await loggedIn()
      client.write(Buffer.concat([query('SELECT 7'), typed(0x01)]))
      const result = await client.drain()
      assert.ok(result.closed)
      // Postgres answers the query first; the gateway may drop the answer when it
      // closes before the backend replied. Either way the FATAL comes last.
      const ready = result.messages.findIndex((message) => message.type === Backend.ReadyForQuery)
      if (ready >= 0) assert.deepEqual(collectResult(result.messages.slice(0, ready + 1)).rows, [['7']])
      assertFatal({ messages: result.messages.slice(ready + 1), closed: true }, '08P01')
    })

    test('a valid query and an unknown type in one write inside a transaction: FATAL, no crash, no leak', async () => {
      // A gateway of its own: a leaked backend would fail every later test's check.
      const own = await startTestGateway(postgres, { poolSize: 2, auth: 'trust' })
      try {
        const { client } = await RawClient.login(own.port, LOGIN)
        clients.push(client)
        assert.equal((await client.query('BEGIN')).status, 'T')
        client.write(Buffer.concat([query('SELECT 7'), typed(0x01)]))
        const result = await client.drain()
        assert.ok(result.closed)
        const fatal = result.messages.at(-1)
        assert.ok(fatal !== undefined && fatal.type === Backend.ErrorResponse, typeLetters(result.messages))
        assert.equal(errorFields(fatal).code, '08P01')
        await eventually(
          () => own.pooler.stats().every((pool) => pool.leased === 0),
          `the backend to come back (stats ${JSON.stringify(own.pooler.stats())})`,
        )
      } finally {
        await own.close()
      }
    })

    test('an unknown type is refused at its header, without waiting for the declared body', async () => {
      // Postgres checks the type byte before it reads the body (SocketBackend in
      // src/backend/tcop/postgres.c); waiting for 1000 bytes that never come hangs the client.
      const client = await loggedIn()
      client.write(rawHeader(0x01, 1000))
      assertFatal(await client.drain(2000), '08P01')
    })

    test('a message with length 0x7FFFFFFF is FATAL 08P01', async () => {
      const client = await loggedIn()
      client.write(rawHeader(Frontend.Query, 0x7fffffff))
      assertFatal(await client.drain(), '08P01')
    })

    test('a message with length 3 is refused and the connection closed', async () => {
      const client = await loggedIn()
      client.write(rawHeader(Frontend.Query, 3))
      assertFatalOrSilentClose(await client.drain(), '08P01')
    })

    test('a negative length is refused and the connection closed', async () => {
      const client = await loggedIn()
      client.write(rawHeader(Frontend.Sync, -5))
      assertFatalOrSilentClose(await client.drain(), '08P01')
    })

    test('a too-long length while a transaction holds a backend: the backend is not leaked', async () => {
      const client = await loggedIn()
      assert.equal((await client.query('BEGIN')).status, 'T')
      client.write(rawHeader(Frontend.Query, 0x7fffffff))
      assertFatal(await client.drain(), '08P01')
    })

    test('Bind of an unknown statement is ERROR 26000; Sync gives ReadyForQuery; the session works', async () => {
      const client = await loggedIn()
      client.write(Buffer.concat([bind('', 'nope'), execute(), sync]))
      const replies = await client.readUntilReady()
      assert.equal(typeLetters(replies), 'EZ')
      const fields = errorFields(replies[0])
      assert.equal(fields.severity, 'ERROR')
      assert.equal(fields.code, '26000')
      assert.equal(fields.message, 'prepared statement "nope" does not exist')
      assert.deepEqual((await client.query('SELECT 8')).rows, [['8']])
    })

    test('Bind of an unknown statement after a good Parse in the same batch', async () => {
      const client = await loggedIn()
      client.write(Buffer.concat([parse('', 'SELECT 1', []), bind('', 'nope'), execute(), sync]))
      const replies = await client.readUntilReady()
      assert.equal(typeLetters(replies), '1EZ')
      assert.equal(errorFields(replies[1]).code, '26000')
      assert.deepEqual((await client.query('SELECT 9')).rows, [['9']])
    })

    test('Parse with a duplicate name is 42P05 and the session works', async () => {
      const client = await loggedIn()
      client.write(Buffer.concat([parse('dup', 'SELECT 1', []), sync]))
      assert.equal(typeLetters(await client.readUntilReady()), '1Z')
      client.write(Buffer.concat([parse('dup', 'SELECT 2', []), bind('', 'dup'), execute(), sync]))
      const replies = await client.readUntilReady()
      assert.equal(typeLetters(replies), 'EZ')
      assert.equal(errorFields(replies[0]).code, '42P05')
      assert.equal(errorFields(replies[0]).message, 'prepared statement "dup" already exists')
      // The first definition is still the one in effect.
      client.write(Buffer.concat([bind('', 'dup'), execute(), sync]))
      const rows = collectResult(await client.readUntilReady())
      assert.equal(rows.error, null)
      assert.deepEqual(rows.rows, [['1']])
    })

    test('a Parse that fails on the server does not leave the name behind', async () => {
      const client = await loggedIn()
      client.write(Buffer.concat([parse('broken', 'SELEC 1', []), sync]))
      const replies = await client.readUntilReady()
      assert.equal(typeLetters(replies), 'EZ')
      assert.equal(errorFields(replies[0]).code, '42601')
      client.write(Buffer.concat([parse('broken', 'SELECT 10', []), bind('', 'broken'), execute(), sync]))
      const result = collectResult(await client.readUntilReady())
      assert.equal(result.error, null, JSON.stringify(result.error))
      assert.deepEqual(result.rows, [['10']])
    })

    test('a half-sent message, then disconnect', async () => {
      const client = await loggedIn()
      const message = query('SELECT pg_sleep(0)')
      client.write(message.subarray(0, message.length - 4))
      await sleep(50)
      client.destroy()
    })

    test('a half-sent message inside a transaction, then disconnect', async () => {
      const client = await loggedIn()
      assert.equal((await client.query('BEGIN')).status, 'T')
      const message = query('SELECT 1')
      client.write(message.subarray(0, 7))
      await sleep(50)
      client.destroy()
    })

    test('disconnect in the middle of an extended-protocol batch with no Sync', async () => {
      const client = await loggedIn()
      client.write(Buffer.concat([parse('', 'SELECT 1', []), bind('', ''), execute()]))
      await sleep(100)
      client.destroy()
    })

    test('disconnect while a query runs', async () => {
      const client = await loggedIn()
      client.write(query('SELECT pg_sleep(0.3)'))
      await sleep(50)
      client.destroy()
      // The backend finishes the statement and must come back to the pool (afterEach checks).
      await sleep(400)
    })

    test('a CopyData outside COPY is ignored, as Postgres does', async () => {
      const client = await loggedIn()
      client.write(typed(Frontend.CopyData, 'stray'))
      assert.deepEqual((await client.query('SELECT 11')).rows, [['11']])
    })

    test('a second StartupMessage after login is refused', async () => {
      const client = await loggedIn()
      client.write(startupPacket(StartupCode.ProtocolV3, Buffer.from('user\0postgres\0\0')))
      const result = await client.drain(2000)
      assert.ok(result.closed, 'the gateway is still waiting for the body of a message of type 0')
      // The length's high byte is 0: Postgres sees message type 0 and says protocol violation.
      const error = result.messages.find((message) => message.type === Backend.ErrorResponse)
      if (error !== undefined) assert.equal(errorFields(error).code, '08P01')
    })
  })
})

describe('clients that never leave', () => {
  let postgres: TestPostgres

  before(async () => {
    postgres = await startTestPostgres()
  })

  after(async () => {
    await postgres?.stop()
  })

  test('an idle client that stays connected does not block gateway shutdown', async () => {
    const gateway = await startTestGateway(postgres, { auth: 'trust' })
    const client = new pg.Client({ host: '127.0.0.1', port: gateway.port, ...LOGIN })
    client.on('error', () => {})
    await client.connect()
    await client.query('SELECT 1')
    try {
      // Gateway.close(): "Stops accepting, ends every session and closes every backend."
      const outcome = await Promise.race([
        gateway.close().then(() => 'closed'),
        sleep(3000).then(() => 'still waiting'),
      ])
      assert.equal(outcome, 'closed', 'Gateway.close() waits for clients to leave on their own')
      assert.equal(gateway.sessionCount(), 0)
    } finally {
      await client.end().catch(() => {})
      await gateway.close()
    }
  })

  test('a client stuck half-way through startup does not block gateway shutdown', async () => {
    const gateway = await startTestGateway(postgres, { auth: 'trust' })
    const client = await RawClient.connect(gateway.port)
    client.write(Buffer.from([0, 0, 0, 100]))
    try {
      const outcome = await Promise.race([
        gateway.close().then(() => 'closed'),
        sleep(3000).then(() => 'still waiting'),
      ])
      assert.equal(outcome, 'closed', 'Gateway.close() waits for a client in startup')
    } finally {
      client.destroy()
      await gateway.close()
    }
  })
})
