/**
 * Connections that cannot be pooled (replication=…) get a backend of their own for
 * their whole life: the replication protocol and a whole pg_basebackup pass through.
 */
import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import type { Gateway } from '../../src/gateway/index.ts'
import { startTestGateway } from '../support/gateway.ts'
import { startTestPostgres, type TestPostgres } from '../support/postgres.ts'
import { runPgProgram } from '../support/programs.ts'

describe('replication connections through the gateway', () => {
  let server: TestPostgres
  let gateway: Gateway
  let scratch: string | undefined

  before(async () => {
    server = await startTestPostgres()
    gateway = await startTestGateway(server, { poolSize: 2 })
  })

  after(async () => {
    await gateway?.close()
    await server?.stop()
    if (scratch !== undefined) await rm(scratch, { recursive: true, force: true })
  })

  test('IDENTIFY_SYSTEM over a logical replication connection', async () => {
    const conninfo = `host=127.0.0.1 port=${gateway.port} user=postgres dbname=postgres replication=database`
    const result = await runPgProgram('psql', ['-X', '-A', '-t', '-c', 'IDENTIFY_SYSTEM', conninfo])
    assert.equal(result.code, 0, result.stderr)
    const [systemId, timeline] = result.stdout.trim().split('|')
    const direct = await server.psql('SELECT system_identifier FROM pg_control_system()')
    assert.equal(systemId, direct.trim())
    assert.equal(timeline, '1')
  })

  test('pg_basebackup with WAL streaming, while pooled sessions keep working', async () => {
    scratch = await mkdtemp(join(tmpdir(), 'tidepool-basebackup-'))
    const target = join(scratch, 'copy')
    const result = await runPgProgram(
      'pg_basebackup',
      [
        '-h',
        '127.0.0.1',
        '-p',
        String(gateway.port),
        '-U',
        'postgres',
        '-D',
        target,
        '-X',
        'stream',
        '-c',
        'fast',
      ],
      { timeoutMs: 120_000 },
    )
    assert.equal(result.code, 0, result.stderr)
    assert.ok(existsSync(join(target, 'PG_VERSION')), 'the copy has a data directory')
    assert.ok(existsSync(join(target, 'backup_label')), 'the copy has its backup label')
    const check = await runPgProgram('psql', [
      '-X',
      '-A',
      '-t',
      '-h',
      '127.0.0.1',
      '-p',
      String(gateway.port),
      '-U',
      'postgres',
      '-c',
      'SELECT 1',
      'postgres',
    ])
    assert.equal(check.stdout.trim(), '1')
  })
})
