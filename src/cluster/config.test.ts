import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import { ConfigError } from '../config/index.ts'
import { CLUSTER_OPTIONS, loadClusterConfig } from './config.ts'

test('defaults, then the file, then the environment, then flags', () => {
  const config = loadClusterConfig({ flags: { port: '7000' }, env: { TIDEPOOL_REPLICAS: '1' } })
  assert.equal(config.port, 7000)
  assert.equal(config.replicas, 1)
  assert.equal(config.replicaPort, 15433)
  assert.equal(config.user, 'tidepool')
  assert.ok(config.dir.endsWith('/tidepool-data'))
})

test('every problem is reported, with where the value came from', () => {
  assert.throws(
    () =>
      loadClusterConfig({ flags: { port: '99999', user: 'Bad Name' }, env: { TIDEPOOL_REPLICAS: 'many' } }),
    (error: unknown) => {
      assert.ok(error instanceof ConfigError)
      assert.deepEqual(error.problems, [
        'invalid --port "99999": expected a port from 1 to 65535',
        'invalid TIDEPOOL_REPLICAS "many": expected a whole number',
        'invalid --user "Bad Name": expected a lower-case role name',
      ])
      return true
    },
  )
})

test('overlapping ports are refused', () => {
  assert.throws(
    () => loadClusterConfig({ flags: { port: '15440' }, env: {} }),
    /the gateway ports \(15440, 15433\) and the instance ports \(15440…\) overlap/,
  )
})

test('every option is documented in docs/configuration.md', () => {
  const doc = readFileSync(join(import.meta.dirname, '..', '..', 'docs', 'configuration.md'), 'utf8')
  for (const option of Object.values(CLUSTER_OPTIONS)) {
    assert.ok(doc.includes(`\`${option.flag}\``), `${option.flag} is not documented`)
    assert.ok(doc.includes(option.env), `${option.env} is not documented`)
  }
})
