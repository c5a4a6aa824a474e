import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { FileTopology } from './file-topology.ts'
import { type InstanceRecord, primaryOf, readableReplicas } from './topology.ts'

function instance(name: string, patch: Partial<InstanceRecord>): InstanceRecord {
  return {
    name,
    role: 'replica',
    health: 'healthy',
    host: '127.0.0.1',
    port: 1,
    socketDir: '/run',
    dataDir: '/data',
    poolerPid: null,
    poolerLink: null,
    pool: { backends: 0, leased: 0, waiting: 0 },
    postgresPid: null,
    restarts: 0,
    walLsn: null,
    lagBytes: 0,
    problem: null,
    updatedAt: '',
    ...patch,
  }
}

test('reads go to healthy replicas within the lag limit, least lagging first', () => {
  const snapshot = {
    cluster: null,
    gateways: [],
    instances: [
      instance('pg0', { role: 'primary' }),
      instance('pg1', { lagBytes: 500 }),
      instance('pg2', { lagBytes: 100 }),
      instance('pg3', { health: 'restarting' }),
      instance('pg4', { lagBytes: 10_000 }),
    ],
  }
  assert.equal(primaryOf(snapshot)?.name, 'pg0')
  assert.deepEqual(
    readableReplicas(snapshot, 1000).map((record) => record.name),
    ['pg2', 'pg1'],
  )
})

test('FileTopology keeps one record per key and tells watchers of changes', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'tidepool-topology-'))
  try {
    const topology = new FileTopology(dir)
    const seen: string[] = []
    const unwatch = topology.watch((snapshot) => seen.push(snapshot.instances.map((i) => i.health).join(',')))
    await topology.putInstance(instance('pg0', { role: 'primary', health: 'starting' }))
    await new Promise((resolve) => setTimeout(resolve, 400))
    await topology.putInstance(instance('pg0', { role: 'primary', health: 'healthy' }))
    await topology.putInstance(instance('pg1', {}))
    await new Promise((resolve) => setTimeout(resolve, 400))
    unwatch()
    assert.equal(seen.at(-1), 'healthy,healthy')
    assert.ok(seen.includes('starting'), `watchers saw ${seen.join(' | ')}`)
    const snapshot = await topology.snapshot()
    assert.deepEqual(
      snapshot.instances.map((record) => [record.name, record.role]),
      [
        ['pg0', 'primary'],
        ['pg1', 'replica'],
      ],
    )
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
})
