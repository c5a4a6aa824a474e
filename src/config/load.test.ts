import assert from 'node:assert/strict'
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { stringify } from 'yaml'
import { ConfigError } from './errors.ts'
import { loadGatewayConfig } from './load.ts'
import type { GatewayConfig } from './schema.ts'

const UPSTREAM = 'postgresql://app@127.0.0.1:6543/appdb'

let dir: string
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'tidepool-config-'))
})
after(() => rmSync(dir, { recursive: true, force: true }))

function writeYaml(name: string, text: string): string {
  const file = join(dir, name)
  writeFileSync(file, text)
  return file
}

/** The problems a load reports; fails the test if it succeeds or throws something else. */
function problemsOf(input: Parameters<typeof loadGatewayConfig>[0]): readonly string[] {
  try {
    loadGatewayConfig(input)
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`)
    assert.equal(err.message, err.problems.join('\n'))
    return err.problems
  }
  assert.fail('expected the configuration to be rejected')
}

describe('loadGatewayConfig', () => {
  it('fills in every default', () => {
    const expected: GatewayConfig = {
      listen: { host: '127.0.0.1', port: 15432 },
      unixSocketDir: null,
      upstream: { host: '127.0.0.1', port: 6543, user: 'app', database: 'appdb' },
      pooler: null,
      pool: {
        maxSize: 20,
        minSize: 0,
        idleTimeoutMs: 600_000,
        maxLifetimeMs: 3_600_000,
        waitTimeoutMs: 30_000,
        pipelineDepth: 4,
      },
      auth: { method: 'scram-sha-256', cacheTtlMs: 60_000 },
      tls: null,
      startupTimeoutMs: 10_000,
      pinnedIdleTimeoutMs: 10_000,
      maxClientConnections: 10_000,
      logLevel: 'info',
    }
    assert.deepEqual(loadGatewayConfig({ flags: { upstream: UPSTREAM }, env: {} }), expected)
  })

  it('takes each option from flags, then TIDEPOOL_* env, then the file, then the default', () => {
    const file = writeYaml(
      'precedence.yaml',
      ['pool-size: 30', 'min-pool-size: 3', 'wait-timeout: 3s', `upstream: ${UPSTREAM}`].join('\n'),
    )
    const config = loadGatewayConfig({
      file,
      flags: { poolSize: '10' },
      env: { TIDEPOOL_POOL_SIZE: '11', TIDEPOOL_MIN_POOL_SIZE: '2' },
    })
    assert.equal(config.pool.maxSize, 10, 'flag beats env and file')
    assert.equal(config.pool.minSize, 2, 'env beats file')
    assert.equal(config.pool.waitTimeoutMs, 3000, 'file beats default')
    assert.equal(config.pool.idleTimeoutMs, 600_000, 'default when nothing sets it')
    assert.equal(config.upstream?.port, 6543)
  })

  it('treats empty env variables and YAML nulls as unset', () => {
    const file = writeYaml('nulls.yaml', 'log-level: ~\nlisten: 127.0.0.1:7000\n')
    const config = loadGatewayConfig({
      file,
      flags: { upstream: UPSTREAM },
      env: { TIDEPOOL_LISTEN: '', TIDEPOOL_LOG_LEVEL: '' },
    })
    assert.equal(config.logLevel, 'info')
    assert.deepEqual(config.listen, { host: '127.0.0.1', port: 7000 })
  })

  it('reads the file named by TIDEPOOL_CONFIG when none is passed', () => {
    const file = writeYaml('from-env.yaml', 'pool-size: 7\n')
    const config = loadGatewayConfig({ flags: { upstream: UPSTREAM }, env: { TIDEPOOL_CONFIG: file } })
    assert.equal(config.pool.maxSize, 7)
  })

  it('reads a YAML file with every option', () => {
    const cert = writeYaml('server.crt', 'cert')
    writeYaml('server.key', 'key')
    const file = writeYaml(
      'full.yaml',
      stringify({
        listen: '0.0.0.0:6432',
        'unix-socket': 'sockets',
        upstream: 'postgres://admin:pw@%2Frun%2Fpostgresql:5433/main',
        'pool-size': 50,
        'min-pool-size': 5,
        'idle-timeout': '5m',
        'max-lifetime': 0,
        'wait-timeout': 1500,
        'pipeline-depth': 2,
        auth: 'md5',
        'auth-cache-ttl': '2m',
        'tls-cert': 'server.crt', // relative to the YAML file
        'tls-key': join(dir, 'server.key'),
        'startup-timeout': '2.5s',
        'max-client-connections': 500,
        'log-level': 'debug',
      }),
    )
    const expected: GatewayConfig = {
      listen: { host: '0.0.0.0', port: 6432 },
      unixSocketDir: join(dir, 'sockets'),
      upstream: { socketDir: '/run/postgresql', port: 5433, user: 'admin', password: 'pw', database: 'main' },
      pooler: null,
      pool: {
        maxSize: 50,
        minSize: 5,
        idleTimeoutMs: 300_000,
        maxLifetimeMs: 0,
        waitTimeoutMs: 1500,
        pipelineDepth: 2,
      },
      auth: { method: 'md5', cacheTtlMs: 120_000 },
      tls: { certFile: cert, keyFile: join(dir, 'server.key') },
      startupTimeoutMs: 2500,
      pinnedIdleTimeoutMs: 10_000,
      maxClientConnections: 500,
      logLevel: 'debug',
    }
    assert.deepEqual(loadGatewayConfig({ file, flags: {}, env: {} }), expected)
  })

  it('accepts an IPv6 listen address', () => {
    const config = loadGatewayConfig({ flags: { upstream: UPSTREAM, listen: '[::1]:15433' }, env: {} })
    assert.deepEqual(config.listen, { host: '::1', port: 15433 })
  })

  it('resolves relative paths from flags against the working directory', () => {
    const config = loadGatewayConfig({ flags: { upstream: UPSTREAM, unixSocket: 'run' }, env: {} })
    assert.equal(config.unixSocketDir, join(process.cwd(), 'run'))
  })
})

describe('loadGatewayConfig errors', () => {
  const invalid: Array<[Record<string, unknown>, string]> = [
    [{ listen: 'abc' }, 'invalid --listen "abc": expected host:port'],
    [{ listen: 'localhost:0' }, 'invalid --listen "localhost:0": expected host:port'],
    [{ listen: 'localhost:65536' }, 'invalid --listen "localhost:65536"'],
    [{ unixSocket: '' }, 'invalid --unix-socket "": expected a path'],
    [{ unixSocket: `/${'d'.repeat(100)}` }, 'invalid --unix-socket "/ddd'],
    [
      { upstream: 'http://h/db' },
      'invalid --upstream "http://h/db": expected a postgresql:// or postgres:// URL',
    ],
    [{ poolSize: '0' }, 'invalid --pool-size "0": expected an integer >= 1'],
    [{ poolSize: '2.5' }, 'invalid --pool-size "2.5": expected an integer'],
    [{ minPoolSize: '-1' }, 'invalid --min-pool-size "-1": expected an integer >= 0'],
    [{ poolSize: '5', minPoolSize: '6' }, 'invalid --min-pool-size "6": must not exceed --pool-size (5)'],
    [{ idleTimeout: 'soon' }, 'invalid --idle-timeout "soon": expected a duration such as 500ms'],
    [{ maxLifetime: '-1h' }, 'invalid --max-lifetime "-1h": expected a duration'],
    [{ waitTimeout: '0' }, 'invalid --wait-timeout "0": must be from 1ms'],
    [{ waitTimeout: '1000h' }, 'invalid --wait-timeout "1000h": must be from 1ms to 2147483647ms'],
    [{ auth: 'password' }, 'invalid --auth "password": expected one of scram-sha-256, md5, trust'],
    [{ authCacheTtl: '1x' }, 'invalid --auth-cache-ttl "1x": expected a duration'],
    [{ tlsCert: '/nonexistent/cert.pem' }, 'invalid --tls-cert "/nonexistent/cert.pem": cannot read'],
    [{ tlsKey: '/nonexistent/key.pem' }, 'invalid --tls-key "/nonexistent/key.pem": cannot read'],
    [{ startupTimeout: '0s' }, 'invalid --startup-timeout "0s": must be from 1ms'],
    [{ maxClientConnections: 'many' }, 'invalid --max-client-connections "many": expected an integer >= 1'],
    [
      { logLevel: 'loud' },
      'invalid --log-level "loud": expected one of fatal, error, warn, info, debug, trace',
    ],
    [{ bogus: '1' }, 'unknown option "bogus"'],
  ]
  for (const [flags, message] of invalid) {
    it(`reports ${message}`, () => {
      const problems = problemsOf({ flags: { upstream: UPSTREAM, ...flags }, env: {} })
      assert.ok(
        problems.some((line) => line.startsWith(message)),
        `expected a line starting with ${JSON.stringify(message)} in:\n${problems.join('\n')}`,
      )
    })
  }

  it('requires --upstream, saying where it can be set', () => {
    assert.deepEqual(problemsOf({ flags: {}, env: {} }), [
      'missing --upstream: set it with --upstream, TIDEPOOL_UPSTREAM or "upstream:" in the config file',
    ])
  })

  it('requires --tls-key and --tls-cert together', () => {
    const cert = writeYaml('only.crt', 'cert')
    assert.deepEqual(problemsOf({ flags: { upstream: UPSTREAM, tlsCert: cert }, env: {} }), [
      `invalid --tls-cert ${JSON.stringify(cert)}: --tls-key must be given too`,
    ])
  })

  it('rejects a TLS path that is a directory', () => {
    const problems = problemsOf({ flags: { upstream: UPSTREAM, tlsCert: dir, tlsKey: dir }, env: {} })
    assert.ok(problems[0].endsWith('is not a regular file'), problems[0])
  })

  it('rejects an unreadable TLS file', { skip: process.getuid?.() === 0 && 'root can read any file' }, () => {
    const key = writeYaml('secret.key', 'key')
    chmodSync(key, 0o000)
    const problems = problemsOf({ flags: { upstream: UPSTREAM, tlsCert: key, tlsKey: key }, env: {} })
    assert.match(problems[0], /permission denied/)
  })

  it('names the env variable or file a bad value came from', () => {
    const file = writeYaml('bad.yaml', 'pool-size: lots\n')
    const problems = problemsOf({
      file,
      flags: {},
      env: { TIDEPOOL_UPSTREAM: 'postgresql://h:bad/db', TIDEPOOL_LISTEN: 'x' },
    })
    assert.deepEqual(problems, [
      'invalid --listen "x" (from TIDEPOOL_LISTEN): expected host:port with a port from 1 to 65535',
      'invalid --upstream "postgresql://h:bad/db" (from TIDEPOOL_UPSTREAM): port "bad" is not a number from 1 to 65535',
      `invalid --pool-size "lots" (from pool-size in ${file}): expected an integer >= 1`,
    ])
  })

  it('shows numbers from YAML as numbers', () => {
    const file = writeYaml('number.yaml', 'pool-size: 0\n')
    assert.deepEqual(problemsOf({ file, flags: { upstream: UPSTREAM }, env: {} }), [
      `invalid --pool-size 0 (from pool-size in ${file}): expected an integer >= 1`,
    ])
  })

  it('never echoes the upstream password', () => {
    const problems = problemsOf({ flags: { upstream: 'postgresql://u:hunter2@h:0/db' }, env: {} })
    assert.equal(problems.length, 1)
    assert.doesNotMatch(problems[0], /hunter2/)
    assert.match(problems[0], /^invalid --upstream "postgresql:\/\/u:\*\*\*@h:0\/db": port "0"/)
  })

  it('reports unknown YAML keys, structured values, and all other problems in one error', () => {
    const file = writeYaml('many.yaml', 'pool_size: 3\nlisten:\n  host: a\n  port: 1\n')
    const problems = problemsOf({ file, flags: { upstream: UPSTREAM, logLevel: 'loud' }, env: {} })
    assert.equal(problems.length, 3)
    assert.match(problems[0], /^unknown key "pool_size" in .*many\.yaml/)
    assert.match(
      problems[1],
      /^invalid --listen \{"host":"a","port":1\} \(from listen in .*\): expected host:port/,
    )
    assert.match(problems[2], /^invalid --log-level "loud"/)
  })

  it('reports a missing file, YAML syntax errors and a non-mapping document', () => {
    assert.match(
      problemsOf({ file: join(dir, 'absent.yaml'), flags: {}, env: {} })[0],
      /^cannot read config file .*absent\.yaml: no such file/,
    )
    const broken = writeYaml('broken.yaml', 'listen: [unclosed\n')
    assert.match(
      problemsOf({ file: broken, flags: {}, env: {} })[0],
      /^cannot parse config file .*broken\.yaml: /,
    )
    const list = writeYaml('list.yaml', '- a\n- b\n')
    assert.match(
      problemsOf({ file: list, flags: {}, env: {} })[0],
      /must be a mapping of option names to values/,
    )
  })
})
