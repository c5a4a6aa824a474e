import assert from 'node:assert/strict'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { ConfigError } from '../config/index.ts'
import { CLUSTER_OPTIONS, loadClusterConfig, readStoredSettings, writeStoredSettings } from './config.ts'

/** A directory holding the settings of a cluster made with non-default ports. */
async function clusterDir(t: { after(fn: () => void): void }): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'tidepool-config-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  await writeStoredSettings(
    loadClusterConfig({
      flags: { dir, port: '16432', replicaPort: '16433', instancePortBase: '16440', replicas: '1' },
      env: {},
    }),
  )
  return dir
}

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

test("a directory's stored settings stand in for options not given", async (t) => {
  const dir = await clusterDir(t)
  const config = loadClusterConfig({ flags: { dir }, env: {} })
  assert.equal(config.port, 16432)
  assert.equal(config.replicaPort, 16433)
  assert.equal(config.instancePortBase, 16440)
  assert.equal(config.replicas, 1)
  assert.equal(config.poolSize, 20)
  // Repeating a fixed setting is fine.
  assert.equal(loadClusterConfig({ flags: { dir, port: '16432' }, env: {} }).port, 16432)
})

test('a fixed setting given otherwise than stored is refused, naming both values', async (t) => {
  const dir = await clusterDir(t)
  assert.throws(
    () =>
      loadClusterConfig({
        flags: { dir, instancePortBase: '15440' },
        env: { TIDEPOOL_PORT: '7000' },
      }),
    (error: unknown) => {
      assert.ok(error instanceof ConfigError)
      const file = join(dir, 'settings.yaml')
      assert.deepEqual(error.problems, [
        `TIDEPOOL_PORT "7000" conflicts with the cluster in ${dir}, made with port 16432 (${file}), which cannot change: leave --port out or give 16432`,
        `--instance-port-base "15440" conflicts with the cluster in ${dir}, made with instance-port-base 16440 (${file}), which cannot change: leave --instance-port-base out or give 16440`,
      ])
      return true
    },
  )
})

test('a changeable setting given otherwise than stored is taken', async (t) => {
  const dir = await clusterDir(t)
  const config = loadClusterConfig({ flags: { dir, poolSize: '7' }, env: { TIDEPOOL_LOG_LEVEL: 'debug' } })
  assert.equal(config.poolSize, 7)
  assert.equal(config.logLevel, 'debug')
  assert.equal(config.port, 16432)
})

test('an invalid stored value is reported with the file it is in', async (t) => {
  const dir = await clusterDir(t)
  const file = join(dir, 'settings.yaml')
  writeFileSync(file, readFileSync(file, 'utf8').replace('port: 16432', 'port: lots'))
  assert.throws(
    () => loadClusterConfig({ flags: { dir }, env: {} }),
    new RegExp(`invalid port in ${file} "lots": expected a port number`),
  )
})

test('a cluster made before settings were stored: its topology records tell them', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tidepool-config-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  mkdirSync(join(dir, 'topology', 'instances'), { recursive: true })
  writeFileSync(
    join(dir, 'topology', 'cluster.json'),
    JSON.stringify({
      name: 'tidepool',
      user: 'app',
      database: 'app',
      gateway: { host: '127.0.0.1', port: 16432, replicaPort: 16433 },
      instances: ['pg0', 'pg1'],
      createdAt: new Date().toISOString(),
    }),
  )
  writeFileSync(join(dir, 'topology', 'instances', 'pg0.json'), JSON.stringify({ name: 'pg0', port: 16440 }))
  const stored = readStoredSettings(dir)
  assert.equal(stored?.fromFile, false)
  const config = loadClusterConfig({ flags: { dir }, env: {} })
  assert.deepEqual(
    [config.port, config.replicaPort, config.instancePortBase, config.replicas, config.user],
    [16432, 16433, 16440, 1, 'app'],
  )
  assert.throws(
    () => loadClusterConfig({ flags: { dir, replicas: '2' }, env: {} }),
    /--replicas "2" conflicts with the cluster in .*, made with replicas 1 \(the records in .*topology\)/,
  )
})

test('an empty directory holds no settings', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tidepool-config-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  assert.equal(readStoredSettings(dir), null)
  assert.equal(loadClusterConfig({ flags: { dir }, env: {} }).port, 15432)
})
