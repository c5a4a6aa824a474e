import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { ClusterRecord, GatewayRecord, InstanceRecord, Topology, TopologySnapshot } from './topology.ts'

/** How often watchers look for changes (the records change on state changes, rarely). */
const WATCH_INTERVAL_MS = 250

/**
 * The topology of a cluster on one machine: one JSON file per record under a directory
 * (`cluster.json`, `instances/<name>.json`, `gateways/<name>.json`), the same keys an etcd
 * store would use. Each record has one writer; a write goes to a temporary file that is
 * renamed over the record, so readers never see half of one.
 */
export class FileTopology implements Topology {
  readonly dir: string

  constructor(dir: string) {
    this.dir = dir
  }

  async snapshot(): Promise<TopologySnapshot> {
    const [cluster, instances, gateways] = await Promise.all([
      readJson<ClusterRecord>(join(this.dir, 'cluster.json')),
      readAll<InstanceRecord>(join(this.dir, 'instances')),
      readAll<GatewayRecord>(join(this.dir, 'gateways')),
    ])
    const order = cluster?.instances ?? []
    instances.sort((a, b) => order.indexOf(a.name) - order.indexOf(b.name))
    return { cluster, instances, gateways }
  }

  putCluster(record: ClusterRecord): Promise<void> {
    return writeJson(join(this.dir, 'cluster.json'), record)
  }

  putInstance(record: InstanceRecord): Promise<void> {
    return writeJson(join(this.dir, 'instances', `${record.name}.json`), record)
  }

  putGateway(record: GatewayRecord): Promise<void> {
    return writeJson(join(this.dir, 'gateways', `${record.name}.json`), record)
  }

  async removeGateway(name: string): Promise<void> {
    await rm(join(this.dir, 'gateways', `${name}.json`), { force: true })
  }

  watch(listener: (snapshot: TopologySnapshot) => void): () => void {
    let last = ''
    let stopped = false
    const poll = async () => {
      if (stopped) return
      const snapshot = await this.snapshot().catch(() => null)
      if (snapshot !== null && !stopped) {
        const serialized = JSON.stringify(snapshot)
        if (serialized !== last) {
          last = serialized
          listener(snapshot)
        }
      }
      if (!stopped) timer = setTimeout(poll, WATCH_INTERVAL_MS)
    }
    let timer: NodeJS.Timeout = setTimeout(poll, 0)
    return () => {
      stopped = true
      clearTimeout(timer)
    }
  }
}

async function readJson<T>(path: string): Promise<T | null> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as T
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null
    throw error
  }
}

async function readAll<T>(dir: string): Promise<T[]> {
  let names: string[]
  try {
    names = (await readdir(dir)).filter((name) => name.endsWith('.json'))
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return []
    throw error
  }
  const records = await Promise.all(names.map((name) => readJson<T>(join(dir, name))))
  return records.filter((record): record is Awaited<T> & {} => record !== null) as T[]
}

async function writeJson(path: string, record: unknown): Promise<void> {
  await mkdir(join(path, '..'), { recursive: true })
  const temporary = `${path}.${process.pid}.tmp`
  await writeFile(temporary, `${JSON.stringify(record, null, 2)}\n`)
  await rename(temporary, path)
}
