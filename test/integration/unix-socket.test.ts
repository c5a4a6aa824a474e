/**
 * The gateway's optional Unix socket: psql and node-postgres reach it with a socket
 * directory as their host, as they would reach Postgres itself.
 */
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import pg from 'pg'
import type { Gateway } from '../../src/gateway/index.ts'
import { startTestGateway } from '../support/gateway.ts'
import { startTestPostgres, type TestPostgres } from '../support/postgres.ts'
import { runPgProgram } from '../support/programs.ts'

describe('gateway on a Unix socket', () => {
  let server: TestPostgres
  let gateway: Gateway
  let socketDir: string

  before(async () => {
    server = await startTestPostgres()
    socketDir = await mkdtemp(join(tmpdir(), 'tidepool-gw-sock-'))
    gateway = await startTestGateway(server, { unixSocketDir: socketDir })
  })

  after(async () => {
    await gateway?.close()
    await server?.stop()
    await rm(socketDir, { recursive: true, force: true })
  })

  test('psql and node-postgres connect through the socket file', async () => {
    const result = await runPgProgram('psql', [
      '-X',
      '-A',
      '-t',
      '-h',
      socketDir,
      '-p',
      String(gateway.port),
      '-U',
      'postgres',
      '-c',
      'SELECT 40 + 2',
      'postgres',
    ])
    assert.equal(result.code, 0, result.stderr)
    assert.equal(result.stdout.trim(), '42')
    const client = new pg.Client({
      host: socketDir,
      port: gateway.port,
      user: 'postgres',
      database: 'postgres',
    })
    await client.connect()
    try {
      assert.equal(
        (await client.query({ name: 'answer', text: 'SELECT $1::int AS v', values: [7] })).rows[0].v,
        7,
      )
    } finally {
      await client.end()
    }
  })
})
