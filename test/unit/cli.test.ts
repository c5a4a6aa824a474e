import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'

const BIN = fileURLToPath(new URL('../../bin/tidepool.js', import.meta.url))

/** Runs the real entry point with a clean TIDEPOOL_* environment. */
function tidepool(...args: string[]) {
  const env = Object.fromEntries(
    Object.entries(process.env).filter(([name]) => !name.startsWith('TIDEPOOL_')),
  )
  return spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', env, timeout: 30_000 })
}

describe('tidepool CLI', () => {
  it('rejects a bad --listen with exit code 2 and a one-line message', () => {
    const run = tidepool('gateway', '--listen', 'nope', '--upstream', 'postgresql://x@127.0.0.1:1/db')
    assert.equal(run.status, 2, run.stderr)
    assert.equal(
      run.stderr,
      'tidepool: invalid --listen "nope": expected host:port with a port from 1 to 65535\n',
    )
    assert.equal(run.stdout, '')
  })

  it('reports every config problem, one per line, without a stack trace', () => {
    const run = tidepool('gateway', '--pool-size', '0', '--auth', 'none')
    assert.equal(run.status, 2)
    const lines = run.stderr.trimEnd().split('\n')
    assert.deepEqual(lines, [
      'tidepool: missing --upstream: set it with --upstream, TIDEPOOL_UPSTREAM or "upstream:" in the config file',
      'tidepool: invalid --pool-size "0": expected an integer >= 1',
      'tidepool: invalid --auth "none": expected one of scram-sha-256, md5, trust',
    ])
  })

  it('exits 2 on an unknown flag', () => {
    const run = tidepool('gateway', '--no-such-flag')
    assert.equal(run.status, 2)
    assert.match(run.stderr, /^tidepool: unknown option '--no-such-flag'/)
  })

  it('prints the package version', () => {
    const run = tidepool('--version')
    assert.equal(run.status, 0)
    assert.match(run.stdout, /^\d+\.\d+\.\d+/)
  })

  it('lists every gateway option in --help', () => {
    const run = tidepool('gateway', '--help')
    assert.equal(run.status, 0)
    for (const flag of [
      '--config',
      '--listen',
      '--unix-socket',
      '--upstream',
      '--pool-size',
      '--min-pool-size',
      '--idle-timeout',
      '--max-lifetime',
      '--wait-timeout',
      '--auth',
      '--auth-cache-ttl',
      '--tls-cert',
      '--tls-key',
      '--startup-timeout',
      '--max-client-connections',
      '--log-level',
    ]) {
      assert.ok(run.stdout.includes(flag), `${flag} missing from help`)
    }
  })
})
