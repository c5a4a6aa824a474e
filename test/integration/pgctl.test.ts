import assert from 'node:assert/strict'
import { access, mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import pg from 'pg'
import {
  findPgBinDir,
  initdb,
  isReady,
  PgctlError,
  prepareServiceDir,
  run,
  start,
} from '../../src/pgctl/index.ts'
import { freePort } from '../support/ports.ts'
import type { TestPostgres } from '../support/postgres.ts'
import { createRole, startTestPostgres } from '../support/postgres.ts'

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== 'ESRCH'
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path)
    return true
  } catch {
    return false
  }
}

async function selectOne(config: pg.ClientConfig): Promise<number> {
  const client = new pg.Client(config)
  await client.connect()
  try {
    const result = await client.query<{ one: number }>('SELECT 1 AS one')
    return result.rows[0].one
  } finally {
    await client.end()
  }
}

describe('pgctl against a real Postgres', () => {
  let server: TestPostgres

  before(async () => {
    server = await startTestPostgres({ settings: { max_connections: 50 } })
  })

  after(async () => {
    await server?.stop()
  })

  test('psql over the private Unix socket', async () => {
    assert.equal(await server.psql('SELECT 1'), '1')
    assert.equal(await server.psql('SHOW max_connections'), '50')
    assert.equal(await server.psql("SELECT setting FROM pg_settings WHERE name = 'fsync'"), 'off')
    assert.equal(await server.psql('SHOW unix_socket_directories'), server.socketDir)
  })

  test('node-postgres over the socket as the superuser (trust)', async () => {
    assert.equal(
      await selectOne({ host: server.socketDir, port: server.port, user: 'postgres', database: 'postgres' }),
      1,
    )
  })

  test('node-postgres over TCP with a SCRAM role', async () => {
    await createRole(server, { name: 'scram_user', password: "s3cret'pw", encryption: 'scram-sha-256' })
    const stored = await server.psql(
      "SELECT left(rolpassword, 14) FROM pg_authid WHERE rolname = 'scram_user'",
    )
    assert.equal(stored, 'SCRAM-SHA-256$')
    const config = { host: server.host, port: server.port, user: 'scram_user', database: 'postgres' }
    assert.equal(await selectOne({ ...config, password: "s3cret'pw" }), 1)
    await assert.rejects(selectOne({ ...config, password: 'wrong' }), /password authentication failed/)
  })

  test('md5 roles are stored as md5', async () => {
    await createRole(server, { name: 'md5_user', password: 'pw', encryption: 'md5' })
    assert.equal(
      await server.psql("SELECT left(rolpassword, 3) FROM pg_authid WHERE rolname = 'md5_user'"),
      'md5',
    )
  })

  test('isReady reflects the server', async () => {
    assert.equal(await isReady({ host: server.socketDir, port: server.port }), true)
    assert.equal(
      await isReady({ host: server.socketDir, port: await freePort(), connectTimeoutSec: 1 }),
      false,
    )
  })

  test('the postmaster runs as the unprivileged service user', {
    skip: process.getuid?.() !== 0 && 'not root',
  }, async () => {
    const status = await readFile(`/proc/${server.pid}/status`, 'utf8')
    const realUid = /^Uid:\s+(\d+)/m.exec(status)?.[1]
    assert.notEqual(realUid, undefined)
    assert.notEqual(realUid, '0')
  })
})

test('stop() stops the server and removes its directory', async () => {
  const server = await startTestPostgres()
  const started = Date.now()
  assert.ok(isAlive(server.pid))
  await server.stop()
  const stopMs = Date.now() - started
  assert.equal(isAlive(server.pid), false, 'postmaster still running')
  assert.deepEqual(await server.server.exited, { code: 0, signal: null })
  assert.equal(await exists(server.dataDir), false, 'data dir not removed')
  assert.ok(stopMs < 30_000)
  await server.stop() // idempotent
})

test('a failed or overdue start reports the server log and cleans up', async () => {
  const root = await mkdtemp(join(tmpdir(), 'tidepool-pg-'))
  try {
    await prepareServiceDir(root)
    const dataDir = join(root, 'data')
    await initdb({ dataDir, noSync: true })
    const port = await freePort()
    await assert.rejects(
      start({ dataDir, port, socketDir: join(root, 'sock'), settings: { shared_buffers: 'not-a-size' } }),
      (err: unknown) => {
        assert.ok(err instanceof PgctlError)
        assert.equal(err.code, 'PGCTL_START_FAILED')
        assert.match(err.message, /shared_buffers/)
        return true
      },
    )
    // A deadline too short to meet: the half-started postmaster must not be left behind.
    await assert.rejects(start({ dataDir, port, socketDir: join(root, 'sock'), timeoutMs: 1 }), {
      code: 'PGCTL_START_TIMEOUT',
    })
    assert.equal(await exists(join(dataDir, 'postmaster.pid')), false, 'postmaster left running')
  } finally {
    await rm(root, { recursive: true, force: true })
  }
})

describe('missing binaries', () => {
  test('PG_BIN=/nonexistent gives PGCTL_BINARY_NOT_FOUND with an install hint', async () => {
    await assert.rejects(findPgBinDir({ PG_BIN: '/nonexistent' }), (err: unknown) => {
      assert.ok(err instanceof PgctlError)
      assert.equal(err.code, 'PGCTL_BINARY_NOT_FOUND')
      assert.match(err.message, /\/nonexistent/)
      assert.match(err.message, /apt-get install postgresql-15/)
      return true
    })
  })

  test('verbs honour PG_BIN from the environment', async () => {
    const saved = process.env.PG_BIN
    process.env.PG_BIN = '/nonexistent'
    try {
      await assert.rejects(initdb({ dataDir: join(tmpdir(), 'tidepool-never-created') }), {
        code: 'PGCTL_BINARY_NOT_FOUND',
      })
    } finally {
      if (saved === undefined) delete process.env.PG_BIN
      else process.env.PG_BIN = saved
    }
  })

  test('run() of a missing program names it', async () => {
    await assert.rejects(run('/nonexistent/bin/pg_ctl', ['status']), (err: unknown) => {
      assert.ok(err instanceof PgctlError)
      assert.equal(err.code, 'PGCTL_BINARY_NOT_FOUND')
      assert.match(err.message, /\/nonexistent\/bin\/pg_ctl/)
      assert.match(err.message, /apt-get install postgresql-15/)
      return true
    })
  })
})

describe('run()', () => {
  test('kills a program that overruns its timeout', async () => {
    const started = Date.now()
    await assert.rejects(run('sleep', ['30'], { timeoutMs: 200, graceMs: 200 }), { code: 'PGCTL_TIMEOUT' })
    assert.ok(Date.now() - started < 5_000)
  })

  test('passes an explicit environment only', async () => {
    process.env.TIDEPOOL_LEAK_CHECK = 'leaked'
    try {
      const result = await run('env', [], { env: { PATH: '/usr/bin:/bin', ONLY: 'this' } })
      assert.equal(result.code, 0)
      assert.match(result.stdout, /^ONLY=this$/m)
      assert.doesNotMatch(result.stdout, /TIDEPOOL_LEAK_CHECK/)
    } finally {
      delete process.env.TIDEPOOL_LEAK_CHECK
    }
  })

  test('asServiceUser drops root', { skip: process.getuid?.() !== 0 && 'not running as root' }, async () => {
    const result = await run('id', ['-u'], { asServiceUser: true })
    assert.notEqual(result.stdout.trim(), '0')
  })
})
