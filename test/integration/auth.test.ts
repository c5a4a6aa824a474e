import assert from 'node:assert/strict'
import { after, afterEach, before, describe, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import pg from 'pg'
import type { Gateway } from '../../src/gateway/index.ts'
import { AuthCode } from '../../src/protocol/index.ts'
import { startTestGateway } from '../support/gateway.ts'
import type { TestPostgres } from '../support/postgres.ts'
import { createRole, quoteLiteral, startTestPostgres } from '../support/postgres.ts'
import { RawClient, RawPgError } from '../support/raw-client.ts'
import { runPsql } from '../support/run-psql.ts'
import { describeErrors, trackUncaught } from '../support/uncaught.ts'

const SUPERUSER_PASSWORD = 'super-secret'
const ALICE = { name: 'alice', password: "alice's secret" }
const BOB_MD5 = { name: 'bob_md5', password: 'bob-secret' }

/** Connects with `pg`, runs `fn`, always ends the client. */
async function withClient<T>(config: pg.ClientConfig, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client(config)
  client.on('error', () => {})
  await client.connect()
  try {
    return await fn(client)
  } finally {
    await client.end()
  }
}

/** The error a failed `pg` login ends with. */
async function loginError(config: pg.ClientConfig): Promise<pg.DatabaseError> {
  const client = new pg.Client(config)
  client.on('error', () => {})
  try {
    await client.connect()
  } catch (error) {
    return error as pg.DatabaseError
  } finally {
    await client.end().catch(() => {})
  }
  assert.fail('login succeeded')
}

/** Every ParameterStatus a `pg` login reports, in a map. */
async function reportedParameters(config: pg.ClientConfig): Promise<Map<string, string>> {
  const client = new pg.Client(config)
  const reported = new Map<string, string>()
  client.connection.on('parameterStatus', (message: { parameterName: string; parameterValue: string }) => {
    reported.set(message.parameterName, message.parameterValue)
  })
  await client.connect()
  await client.end()
  return reported
}

describe('client authentication at the gateway', () => {
  let postgres: TestPostgres
  const gateways: Gateway[] = []
  let scram: Gateway
  let md5: Gateway
  let trust: Gateway
  const uncaught = trackUncaught()

  /** Direct TCP connection settings (scram-sha-256 hba, like the gateway's clients see it). */
  const direct = (config: pg.ClientConfig): pg.ClientConfig => ({
    host: '127.0.0.1',
    port: postgres.port,
    database: 'postgres',
    ...config,
  })
  const via = (gateway: Gateway, config: pg.ClientConfig): pg.ClientConfig => ({
    host: '127.0.0.1',
    port: gateway.port,
    database: 'postgres',
    ...config,
  })

  before(async () => {
    postgres = await startTestPostgres({
      hba: [
        { type: 'local', database: 'all', user: 'all', method: 'trust' },
        { type: 'host', database: 'all', user: 'md5_tcp', address: '127.0.0.1/32', method: 'md5' },
        { type: 'host', database: 'all', user: 'all', address: '127.0.0.1/32', method: 'scram-sha-256' },
      ],
    })
    await postgres.psql(`ALTER ROLE postgres PASSWORD ${quoteLiteral(SUPERUSER_PASSWORD)}`)
    await createRole(postgres, { ...ALICE, encryption: 'scram-sha-256' })
    await createRole(postgres, { ...BOB_MD5, encryption: 'md5' })
    await createRole(postgres, { name: 'md5_tcp', password: 'md5-tcp-secret', encryption: 'md5' })
    await createRole(postgres, { name: 'rotating', password: 'before', encryption: 'scram-sha-256' })
    await postgres.psql(
      "SET password_encryption = 'scram-sha-256';\n" +
        "CREATE ROLE carol NOLOGIN PASSWORD 'carol-secret';\n" +
        "CREATE ROLE dave LOGIN PASSWORD 'dave-secret' VALID UNTIL '2000-01-01';\n" +
        'CREATE SCHEMA foo;\n' +
        'GRANT USAGE ON SCHEMA foo TO PUBLIC;\n',
    )
    scram = await startTestGateway(postgres, { auth: 'scram-sha-256' })
    md5 = await startTestGateway(postgres, { auth: 'md5' })
    trust = await startTestGateway(postgres, { auth: 'trust' })
    gateways.push(scram, md5, trust)
  })

  after(async () => {
    uncaught.stop()
    for (const gateway of gateways) await gateway.close()
    await postgres?.stop()
  })

  afterEach(() => {
    assert.deepEqual(describeErrors(uncaught.take()), [], 'the gateway threw out of a callback')
  })

  describe('scram-sha-256', () => {
    test('a SCRAM role logs in with pg', async () => {
      const user = await withClient(
        via(scram, { user: ALICE.name, password: ALICE.password }),
        async (client) => {
          const { rows } = await client.query('SELECT current_user AS user')
          return rows[0].user
        },
      )
      assert.equal(user, 'alice')
    })

    test('a SCRAM role logs in with psql (PGPASSWORD)', async () => {
      const result = await runPsql(
        `host=127.0.0.1 port=${scram.port} user=alice dbname=postgres sslmode=disable`,
        ['SELECT current_user'],
        { PGPASSWORD: ALICE.password },
      )
      assert.equal(result.code, 0, result.stderr)
      assert.equal(result.stdout.trim(), 'alice')
    })

    test('wrong password is 28P01', async () => {
      const error = await loginError(via(scram, { user: ALICE.name, password: 'wrong' }))
      assert.equal(error.code, '28P01')
      assert.equal(error.message, 'password authentication failed for user "alice"')
    })

    test('wrong password with psql fails cleanly', async () => {
      const result = await runPsql(
        `host=127.0.0.1 port=${scram.port} user=alice dbname=postgres sslmode=disable`,
        ['SELECT 1'],
        { PGPASSWORD: 'wrong' },
      )
      assert.equal(result.code, 2)
      assert.match(result.stderr, /password authentication failed for user "alice"/)
    })

    test('unknown user is 28P01, exactly like a wrong password (Postgres hides unknown users)', async () => {
      const error = await loginError(via(scram, { user: 'nobody', password: 'whatever' }))
      assert.equal(error.code, '28P01')
      assert.equal(error.message, 'password authentication failed for user "nobody"')
      const directError = await loginError(direct({ user: 'nobody', password: 'whatever' }))
      assert.equal(directError.code, error.code)
      assert.equal(directError.message, error.message)
    })

    test('unknown user gets a SCRAM challenge like a real one', async () => {
      const client = await RawClient.connect(scram.port)
      try {
        await assert.rejects(
          client.startup({ user: 'nobody', database: 'postgres' }, 'x'),
          (error: unknown) => {
            assert.ok(error instanceof RawPgError)
            assert.equal(error.code, '28P01')
            return true
          },
        )
      } finally {
        client.destroy()
      }
    })

    test('unknown database with the right password is 3D000', async () => {
      const error = await loginError(
        via(scram, { user: ALICE.name, password: ALICE.password, database: 'nope' }),
      )
      assert.equal(error.code, '3D000')
      assert.equal(error.message, 'database "nope" does not exist')
      assert.equal(error.severity, 'FATAL')
    })

    test('unknown database with a wrong password is 28P01 (authentication comes first)', async () => {
      const error = await loginError(via(scram, { user: ALICE.name, password: 'wrong', database: 'nope' }))
      assert.equal(error.code, '28P01')
    })

    test('NOLOGIN role with the right password is 28000', async () => {
      const error = await loginError(via(scram, { user: 'carol', password: 'carol-secret' }))
      assert.equal(error.code, '28000')
      assert.equal(error.message, 'role "carol" is not permitted to log in')
      const directError = await loginError(direct({ user: 'carol', password: 'carol-secret' }))
      assert.equal(directError.code, error.code)
      assert.equal(directError.message, error.message)
    })

    test('an expired role is 28P01, as directly', async () => {
      const error = await loginError(via(scram, { user: 'dave', password: 'dave-secret' }))
      const directError = await loginError(direct({ user: 'dave', password: 'dave-secret' }))
      assert.equal(directError.code, '28P01')
      assert.equal(error.code, directError.code)
    })

    test('an md5-stored role cannot do SCRAM: 28P01, as directly', async () => {
      const error = await loginError(via(scram, { user: BOB_MD5.name, password: BOB_MD5.password }))
      assert.equal(error.code, '28P01')
      const directError = await loginError(direct({ user: BOB_MD5.name, password: BOB_MD5.password }))
      assert.equal(directError.code, '28P01')
    })

    test('a password change takes effect once the role cache expires', async () => {
      const config = via(scram, { user: 'rotating', password: 'before' })
      await withClient(config, async () => {})
      await postgres.psql("SET password_encryption = 'scram-sha-256'; ALTER ROLE rotating PASSWORD 'after'")
      await sleep(1200) // the test gateway caches roles for 1 s
      assert.equal((await loginError(config)).code, '28P01')
      await withClient({ ...config, password: 'after' }, async (client) => {
        assert.equal((await client.query('SELECT 1 AS one')).rows[0].one, 1)
      })
    })
  })

  describe('md5', () => {
    test('an md5-stored role logs in via md5', async () => {
      const { client, login } = await RawClient.login(
        md5.port,
        { user: BOB_MD5.name, database: 'postgres' },
        BOB_MD5.password,
      )
      try {
        assert.deepEqual(login.authCodes, [AuthCode.MD5Password, AuthCode.Ok])
        assert.deepEqual((await client.query('SELECT current_user')).rows, [['bob_md5']])
      } finally {
        client.destroy()
      }
      await withClient(via(md5, { user: BOB_MD5.name, password: BOB_MD5.password }), async () => {})
    })

    test('an md5 role with a wrong password is 28P01', async () => {
      const error = await loginError(via(md5, { user: BOB_MD5.name, password: 'wrong' }))
      assert.equal(error.code, '28P01')
    })

    test('a SCRAM-stored role on an md5 gateway still logs in, with SCRAM (as Postgres does)', async () => {
      const { client, login } = await RawClient.login(
        md5.port,
        { user: ALICE.name, database: 'postgres' },
        ALICE.password,
      )
      try {
        assert.deepEqual(login.authCodes, [
          AuthCode.SASL,
          AuthCode.SASLContinue,
          AuthCode.SASLFinal,
          AuthCode.Ok,
        ])
        assert.deepEqual((await client.query('SELECT current_user')).rows, [['alice']])
      } finally {
        client.destroy()
      }
      await withClient(via(md5, { user: ALICE.name, password: ALICE.password }), async () => {})
    })

    test('an unknown user on an md5 gateway is 28P01', async () => {
      const error = await loginError(via(md5, { user: 'nobody', password: 'whatever' }))
      assert.equal(error.code, '28P01')
    })
  })

  describe('trust', () => {
    test('no password needed', async () => {
      const { client, login } = await RawClient.login(trust.port, { user: ALICE.name, database: 'postgres' })
      try {
        assert.deepEqual(login.authCodes, [AuthCode.Ok])
        assert.deepEqual((await client.query('SELECT current_user')).rows, [['alice']])
      } finally {
        client.destroy()
      }
      await withClient(via(trust, { user: 'alice' }), async (client) => {
        assert.equal((await client.query('SELECT current_user AS u')).rows[0].u, 'alice')
      })
    })

    test('an unknown role is 28000 "role does not exist", as Postgres with trust says', async () => {
      const error = await loginError(via(trust, { user: 'ghost' }))
      assert.equal(error.code, '28000')
      assert.equal(error.message, 'role "ghost" does not exist')
    })
  })

  describe('backend logins over TCP reuse client credentials', () => {
    test('SCRAM keys recovered from the client proof log in to Postgres (no password configured)', async () => {
      const gateway = await startTestGateway(postgres, {
        auth: 'scram-sha-256',
        upstreamTcp: { user: 'postgres', password: SUPERUSER_PASSWORD },
      })
      gateways.push(gateway)
      await withClient(via(gateway, { user: ALICE.name, password: ALICE.password }), async (client) => {
        const { rows } = await client.query(
          'SELECT current_user AS user, client_addr IS NOT NULL AS tcp FROM pg_stat_activity WHERE pid = pg_backend_pid()',
        )
        assert.deepEqual(rows, [{ user: 'alice', tcp: true }])
      })
      // Two transactions at once need a second backend, logged in with the same keys.
      const config = via(gateway, { user: ALICE.name, password: ALICE.password })
      await withClient(config, async (first) =>
        withClient(config, async (second) => {
          await first.query('BEGIN')
          await second.query('BEGIN')
          const pids = [
            (await first.query('SELECT pg_backend_pid() AS pid')).rows[0].pid,
            (await second.query('SELECT pg_backend_pid() AS pid')).rows[0].pid,
          ]
          assert.notEqual(pids[0], pids[1])
          await first.query('COMMIT')
          await second.query('COMMIT')
        }),
      )
      const opened = gateway.pooler.stats().find((pool) => pool.user === 'alice')?.backendsOpened ?? 0
      assert.ok(opened >= 2, `backends opened for alice: ${opened}`)
    })

    test('md5 hash from pg_authid answers an md5 backend login', async () => {
      const gateway = await startTestGateway(postgres, {
        auth: 'md5',
        upstreamTcp: { user: 'postgres', password: SUPERUSER_PASSWORD },
      })
      gateways.push(gateway)
      await withClient(via(gateway, { user: 'md5_tcp', password: 'md5-tcp-secret' }), async (client) => {
        const { rows } = await client.query('SELECT current_user AS user')
        assert.equal(rows[0].user, 'md5_tcp')
      })
    })

    test('with trust at the gateway there is nothing to log in with: a clean 28000', async () => {
      const gateway = await startTestGateway(postgres, {
        auth: 'trust',
        upstreamTcp: { user: 'postgres', password: SUPERUSER_PASSWORD },
      })
      gateways.push(gateway)
      // A fresh role: no earlier SCRAM login left keys behind for it in this gateway.
      await createRole(postgres, { name: 'erin', password: 'erin-secret', encryption: 'scram-sha-256' })
      const error = await loginError(via(gateway, { user: 'erin' }))
      assert.equal(error.code, '28000')
    })
  })

  describe('startup parameters', () => {
    test('ParameterStatus values equal a direct connection’s', async () => {
      const credentials = { user: ALICE.name, password: ALICE.password }
      const throughGateway = await reportedParameters(via(scram, credentials))
      const directly = await reportedParameters(direct(credentials))
      for (const name of [
        'server_version',
        'client_encoding',
        'DateStyle',
        'TimeZone',
        'integer_datetimes',
      ]) {
        assert.ok(directly.has(name), `direct connection reports ${name}`)
      }
      assert.deepEqual(Object.fromEntries(throughGateway), Object.fromEntries(directly))
    })

    test('options -c search_path and application_name are applied, and reported', async () => {
      const config = {
        user: ALICE.name,
        password: ALICE.password,
        options: '-c search_path=foo,public',
        application_name: 'tidepool-auth-test',
      }
      const show = async (connection: pg.ClientConfig) =>
        withClient(connection, async (client) => {
          const path = (await client.query('SHOW search_path')).rows[0].search_path
          const name = (await client.query('SHOW application_name')).rows[0].application_name
          return { path, name }
        })
      const throughGateway = await show(via(scram, config))
      assert.equal(throughGateway.name, 'tidepool-auth-test')
      assert.deepEqual(throughGateway, await show(direct(config)))
      assert.equal(
        (await reportedParameters(via(scram, config))).get('application_name'),
        'tidepool-auth-test',
      )
    })

    test('settings survive across transactions that land on different backends', async () => {
      const config = via(scram, {
        user: ALICE.name,
        password: ALICE.password,
        options: '-c DateStyle=German',
      })
      const other = via(scram, { user: ALICE.name, password: ALICE.password })
      await withClient(config, async (client) => {
        await withClient(other, async (plain) => {
          for (let i = 0; i < 5; i++) {
            assert.match((await client.query('SHOW DateStyle')).rows[0].DateStyle, /^German/)
            assert.match((await plain.query('SHOW DateStyle')).rows[0].DateStyle, /^ISO/)
          }
        })
      })
    })

    test('an invalid startup setting fails with the SQLSTATE Postgres gives directly', async () => {
      const config = { user: ALICE.name, password: ALICE.password, options: '-c DateStyle=nonsense' }
      const directError = await loginError(direct(config))
      const gatewayError = await loginError(via(scram, config))
      assert.equal(directError.code, '22023')
      assert.equal(gatewayError.code, directError.code)
      assert.equal(gatewayError.message, directError.message)
    })

    test('an unknown startup setting fails with the SQLSTATE Postgres gives directly', async () => {
      const config = { user: ALICE.name, password: ALICE.password, options: '-c no_such_setting=1' }
      const directError = await loginError(direct(config))
      const gatewayError = await loginError(via(scram, config))
      assert.equal(directError.code, '42704')
      assert.equal(gatewayError.code, directError.code)
    })

    test('a malformed options parameter fails with the SQLSTATE Postgres gives directly', async () => {
      const config = { user: ALICE.name, password: ALICE.password, options: 'not-an-option' }
      const directError = await loginError(direct(config))
      const gatewayError = await loginError(via(scram, config))
      assert.equal(gatewayError.code, directError.code)
    })
  })
})
