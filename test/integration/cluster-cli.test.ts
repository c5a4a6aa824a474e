/**
 * The newcomer's path through the command line: `tidepool up`, then psql with the
 * connection string it printed, `tidepool status`, `tidepool down`; and the clear errors
 * a bad configuration gets before anything is created.
 */
import assert from 'node:assert/strict'
import { access, mkdtemp, rm } from 'node:fs/promises'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { prepareServiceDir } from '../../src/pgctl/index.ts'
import { clusterPortFlags } from '../support/ports.ts'
import { runProgram } from '../support/programs.ts'

const TIDEPOOL = join(import.meta.dirname, '..', '..', 'bin', 'tidepool.js')

function tidepool(args: string[]) {
  return runProgram(process.execPath, [TIDEPOOL, ...args], {
    env: { PATH: process.env.PATH ?? '' },
    timeoutMs: 120_000,
  })
}

describe('tidepool up / status / down from the command line', () => {
  let dir: string
  let flags: string[]
  let up: Awaited<ReturnType<typeof tidepool>>

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'tidepool-cli-'))
    await prepareServiceDir(dir, 0o711)
    flags = ['--dir', join(dir, 'data'), ...(await clusterPortFlags(2)), '--replicas', '1']
    up = await tidepool(['up', ...flags])
  })

  after(async () => {
    await tidepool(['down', ...flags])
    await rm(dir, { recursive: true, force: true })
  })

  test('up prints a connection string that psql can use', async () => {
    assert.equal(up.code, 0, up.stderr)
    const command = /psql '([^']+)'/.exec(up.stdout)
    assert.ok(command, `no psql line in:\n${up.stdout}`)
    const psql = await runProgram('/usr/bin/psql', [
      command[1],
      '-Atc',
      'SELECT current_user, pg_is_in_recovery()',
    ])
    assert.equal(psql.code, 0, psql.stderr)
    assert.equal(psql.stdout.trim(), 'tidepool|f')
    const readOnly = /read-only: +(\S+)/.exec(up.stdout)![1]
    const replica = await runProgram('/usr/bin/psql', [readOnly, '-Atc', 'SELECT pg_is_in_recovery()'])
    assert.equal(replica.stdout.trim(), 't', replica.stderr)
  })

  test('a wrong password is refused over TCP', async () => {
    const url = new URL(/psql '([^']+)'/.exec(up.stdout)![1])
    url.password = 'wrong'
    const psql = await runProgram('/usr/bin/psql', [url.toString(), '-Atc', 'SELECT 1'])
    assert.notEqual(psql.code, 0)
    assert.match(psql.stderr, /password authentication failed/)
  })

  test('status lists every component', async () => {
    const result = await tidepool(['status', ...flags])
    assert.equal(result.code, 0, result.stderr)
    assert.match(result.stdout, /^gateway +- +healthy/m)
    assert.match(result.stdout, /^pg0 +primary +healthy/m)
    assert.match(result.stdout, /^pg1 +replica +healthy/m)
  })

  test('bad configuration is refused with a clear message and exit code 2', async () => {
    const badPort = await tidepool(['up', '--dir', join(dir, 'other'), '--port', '99999'])
    assert.equal(badPort.code, 2)
    assert.match(badPort.stderr, /invalid --port "99999": expected a port from 1 to 65535/)
    const env = await runProgram(process.execPath, [TIDEPOOL, 'up', '--dir', join(dir, 'other')], {
      env: { PATH: process.env.PATH ?? '', TIDEPOOL_REPLICAS: 'many' },
    })
    assert.equal(env.code, 2)
    assert.match(env.stderr, /invalid TIDEPOOL_REPLICAS "many"/)
    // A port someone else holds.
    const holder = net.createServer()
    const taken = await new Promise<number>((resolve) =>
      holder.listen({ host: '127.0.0.1', port: 0 }, () =>
        resolve((holder.address() as net.AddressInfo).port),
      ),
    )
    try {
      const busy = await tidepool(['up', '--dir', join(dir, 'other'), '--port', String(taken)])
      assert.equal(busy.code, 2)
      assert.match(busy.stderr, new RegExp(`--port: port ${taken} on 127.0.0.1 is already in use`))
    } finally {
      holder.close()
    }
    await assert.rejects(access(join(dir, 'other', 'pg0')), 'a refused up created an instance')
  })
})
