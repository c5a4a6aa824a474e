import assert from 'node:assert/strict'
import { after, afterEach, before, describe, test } from 'node:test'
import tls from 'node:tls'
import pg from 'pg'
import type { Gateway } from '../../src/gateway/index.ts'
import { Backend, StartupCode } from '../../src/protocol/index.ts'
import { makeTestCerts, type TestCerts } from '../support/certs.ts'
import { startTestGateway } from '../support/gateway.ts'
import type { TestPostgres } from '../support/postgres.ts'
import { startTestPostgres } from '../support/postgres.ts'
import { errorFields, RawClient, sslRequest, startupPacket, typeLetters } from '../support/raw-client.ts'
import { runPsql } from '../support/run-psql.ts'
import { describeErrors, trackUncaught } from '../support/uncaught.ts'

const STARTUP = startupPacket(StartupCode.ProtocolV3, Buffer.from('user\0postgres\0database\0postgres\0\0'))

function conninfo(port: number, extra: string, host = '127.0.0.1'): string {
  return `host=${host} port=${port} user=postgres dbname=postgres ${extra}`
}

async function selectOne(config: pg.ClientConfig): Promise<number> {
  const client = new pg.Client(config)
  client.on('error', () => {})
  await client.connect()
  try {
    const { rows } = await client.query<{ one: number }>('SELECT 1 AS one')
    return rows[0].one
  } finally {
    await client.end()
  }
}

describe('TLS between client and gateway', () => {
  let postgres: TestPostgres
  let certs: TestCerts
  let secure: Gateway
  let plain: Gateway
  const uncaught = trackUncaught()

  afterEach(() => {
    assert.deepEqual(describeErrors(uncaught.take()), [], 'the gateway threw out of a callback')
  })

  before(async () => {
    ;[postgres, certs] = await Promise.all([startTestPostgres(), makeTestCerts()])
    secure = await startTestGateway(postgres, {
      auth: 'trust',
      tls: { certFile: certs.certFile, keyFile: certs.keyFile },
    })
    plain = await startTestGateway(postgres, { auth: 'trust' })
  })

  after(async () => {
    uncaught.stop()
    await secure?.close()
    await plain?.close()
    await postgres?.stop()
    await certs?.remove()
  })

  describe('gateway with TLS', () => {
    test('psql sslmode=require connects over SSL (\\conninfo)', async () => {
      const result = await runPsql(conninfo(secure.port, 'sslmode=require'), ['\\conninfo', 'SELECT 40 + 2'])
      assert.equal(result.code, 0, result.stderr)
      assert.match(result.stdout, /SSL connection \(protocol: TLSv1\.[23]/)
      assert.match(result.stdout, /^42$/m)
    })

    test('psql sslmode=verify-full with the right CA, host=localhost', async () => {
      const result = await runPsql(
        conninfo(secure.port, `sslmode=verify-full sslrootcert=${certs.caFile}`, 'localhost'),
        ['\\conninfo', 'SELECT 1'],
      )
      assert.equal(result.code, 0, result.stderr)
      assert.match(result.stdout, /SSL connection/)
    })

    test('psql sslmode=verify-full with the right CA, host=127.0.0.1 (IP SAN)', async () => {
      const result = await runPsql(conninfo(secure.port, `sslmode=verify-full sslrootcert=${certs.caFile}`), [
        'SELECT 1',
      ])
      assert.equal(result.code, 0, result.stderr)
    })

    test('psql sslmode=verify-full against a wrong CA fails', async () => {
      const result = await runPsql(
        conninfo(secure.port, `sslmode=verify-full sslrootcert=${certs.otherCaFile}`, 'localhost'),
        ['SELECT 1'],
      )
      assert.equal(result.code, 2, `psql should fail to connect: ${result.stdout}`)
      assert.match(result.stderr, /certificate verify failed/)
    })

    test('psql sslmode=disable still works (TLS is offered, not forced)', async () => {
      const result = await runPsql(conninfo(secure.port, 'sslmode=disable'), ['\\conninfo'])
      assert.equal(result.code, 0, result.stderr)
      assert.doesNotMatch(result.stdout, /SSL connection/)
    })

    test('pg with verify-full semantics (ca, servername localhost, rejectUnauthorized)', async () => {
      const one = await selectOne({
        host: 'localhost',
        port: secure.port,
        user: 'postgres',
        database: 'postgres',
        ssl: { ca: certs.ca, servername: 'localhost', rejectUnauthorized: true },
      })
      assert.equal(one, 1)
    })

    test('pg rejects the gateway with a wrong CA', async () => {
      await assert.rejects(
        selectOne({
          host: 'localhost',
          port: secure.port,
          user: 'postgres',
          database: 'postgres',
          ssl: { ca: certs.otherCa, servername: 'localhost', rejectUnauthorized: true },
        }),
        (error: NodeJS.ErrnoException) => {
          assert.match(String(error.code), /CERT|SIGNATURE|SELF_SIGNED/)
          return true
        },
      )
    })

    test('pg rejects a certificate for another host name', async () => {
      await assert.rejects(
        selectOne({
          host: '127.0.0.1',
          port: secure.port,
          user: 'postgres',
          database: 'postgres',
          ssl: { ca: certs.ca, servername: 'db.example.com', rejectUnauthorized: true },
        }),
        { code: 'ERR_TLS_CERT_ALTNAME_INVALID' },
      )
    })

    test('a session over TLS runs queries with results larger than one TLS record', async () => {
      const client = new pg.Client({
        host: 'localhost',
        port: secure.port,
        user: 'postgres',
        database: 'postgres',
        ssl: { ca: certs.ca, servername: 'localhost' },
      })
      await client.connect()
      try {
        const { rows } = await client.query<{ s: string }>("SELECT repeat('x', 100000) AS s")
        assert.equal(rows[0].s.length, 100000)
        const many = await client.query('SELECT g FROM generate_series(1, 5000) g')
        assert.equal(many.rowCount, 5000)
      } finally {
        await client.end()
      }
    })

    test('SSLRequest and StartupMessage in one write: refused, never answered in plaintext', async () => {
      const client = await RawClient.connect(secure.port)
      try {
        client.write(Buffer.concat([sslRequest, STARTUP]))
        const closed = await client.waitClosed(5000)
        assert.ok(closed, 'the gateway kept the connection open')
        const rest = client.pending > 0 ? await client.readBytes(client.pending) : Buffer.alloc(0)
        // No 'S' (TLS would then start over bytes the attacker injected) and no 'R'.
        if (rest.length > 0) {
          assert.equal(
            String.fromCharCode(rest[0]),
            'E',
            `unexpected reply ${rest.subarray(0, 16).toString('hex')}`,
          )
          const error = { type: rest[0], frame: rest, body: rest.subarray(5) }
          assert.equal(errorFields(error).code, '08P01')
          assert.equal(errorFields(error).severity, 'FATAL')
        }
      } finally {
        client.destroy()
      }
    })

    test("after 'S', plaintext instead of a TLS handshake gets no plaintext session", async () => {
      const client = await RawClient.connect(secure.port)
      try {
        client.write(sslRequest)
        assert.equal((await client.readBytes(1)).toString(), 'S')
        client.write(STARTUP)
        assert.ok(await client.waitClosed(5000), 'the gateway kept the connection open')
        const rest = client.pending > 0 ? await client.readBytes(client.pending) : Buffer.alloc(0)
        // Whatever comes back is a TLS alert, never a PostgreSQL message.
        assert.ok(
          rest.length === 0 || rest[0] === 0x15 || rest[0] === 0x16,
          `not a TLS record: ${rest.subarray(0, 16).toString('hex')}`,
        )
      } finally {
        client.destroy()
      }
    })

    test('a raw TLS client: SSLRequest, handshake, then the normal startup', async () => {
      const raw = await RawClient.connect(secure.port)
      raw.write(sslRequest)
      assert.equal((await raw.readBytes(1)).toString(), 'S')
      const socket = tls.connect({ socket: raw.socket, ca: certs.ca, servername: 'localhost' })
      await new Promise<void>((resolve, reject) => {
        socket.once('secureConnect', resolve)
        socket.once('error', reject)
      })
      try {
        const messages: Buffer[] = []
        socket.on('data', (chunk: Buffer) => messages.push(chunk))
        socket.write(STARTUP)
        const deadline = Date.now() + 5000
        while (!Buffer.concat(messages).includes(Buffer.from([Backend.ReadyForQuery, 0, 0, 0, 5]))) {
          assert.ok(Date.now() < deadline, 'no ReadyForQuery over TLS')
          await new Promise((resolve) => setTimeout(resolve, 20))
        }
        assert.equal(Buffer.concat(messages)[0], Backend.Authentication)
      } finally {
        socket.destroy()
      }
    })
  })

  describe('gateway without TLS', () => {
    test("answers SSLRequest with 'N', then serves the plaintext startup", async () => {
      const client = await RawClient.connect(plain.port)
      try {
        client.write(sslRequest)
        assert.equal((await client.readBytes(1)).toString(), 'N')
        const login = await client.startup({ user: 'postgres', database: 'postgres' })
        assert.ok(login.processId > 0)
        assert.deepEqual((await client.query('SELECT 1')).rows, [['1']])
      } finally {
        client.destroy()
      }
    })

    test("answers GSSENCRequest with 'N'", async () => {
      const client = await RawClient.connect(plain.port)
      try {
        client.write(startupPacket(StartupCode.GSSENCRequest))
        assert.equal((await client.readBytes(1)).toString(), 'N')
        await client.startup({ user: 'postgres', database: 'postgres' })
      } finally {
        client.destroy()
      }
    })

    test('psql sslmode=prefer works without SSL', async () => {
      const result = await runPsql(conninfo(plain.port, 'sslmode=prefer'), ['\\conninfo', 'SELECT 1'])
      assert.equal(result.code, 0, result.stderr)
      assert.doesNotMatch(result.stdout, /SSL connection/)
      assert.match(result.stdout, /^1$/m)
    })

    test('psql sslmode=require fails cleanly', async () => {
      const result = await runPsql(conninfo(plain.port, 'sslmode=require'), ['SELECT 1'])
      assert.equal(result.code, 2)
      assert.match(result.stderr, /server does not support SSL, but SSL was required/)
    })

    test('pg with ssl fails cleanly', async () => {
      await assert.rejects(
        selectOne({ host: '127.0.0.1', port: plain.port, user: 'postgres', database: 'postgres', ssl: true }),
        /does not support SSL/,
      )
    })

    test('the gateway still serves after all that', async () => {
      assert.equal(
        await selectOne({ host: '127.0.0.1', port: plain.port, user: 'postgres', database: 'postgres' }),
        1,
      )
      const messages = await RawClient.login(secure.port, { user: 'postgres', database: 'postgres' })
      try {
        assert.equal(typeLetters((await messages.client.query('SELECT 1')).messages), 'TDCZ')
      } finally {
        messages.client.destroy()
      }
    })
  })
})
