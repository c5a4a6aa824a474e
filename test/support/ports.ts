/**
 * Free loopback TCP ports for test servers.
 *
 * @module
 */
import { createServer } from 'node:net'

/** The port a system Postgres may own; tests must never touch it. */
const RESERVED_PORTS = new Set([5432])

function probe(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.unref()
    server.once('error', reject)
    server.listen({ host: '127.0.0.1', port: 0, exclusive: true }, () => {
      const address = server.address()
      const port = typeof address === 'object' && address ? address.port : 0
      server.close(() => resolve(port))
    })
  })
}

/**
 * A loopback port that was free a moment ago (the kernel picked it for a listen on
 * port 0). Another process can take it before the caller binds, so callers retry a
 * start that fails with "address already in use".
 */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const port = await probe()
    if (port > 0 && !RESERVED_PORTS.has(port)) return port
  }
  throw new Error('could not find a free loopback port')
}

function isFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer()
    server.unref()
    server.once('error', () => resolve(false))
    server.listen({ host: '127.0.0.1', port, exclusive: true }, () => server.close(() => resolve(true)))
  })
}

/** The first of `count` consecutive loopback ports that were free a moment ago (a cluster's instances). */
export async function freePortRun(count: number): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = 20000 + Math.floor(Math.random() * 30000)
    const ports = Array.from({ length: count }, (_, i) => base + i)
    if (ports.some((port) => RESERVED_PORTS.has(port))) continue
    if ((await Promise.all(ports.map(isFree))).every(Boolean)) return base
  }
  throw new Error(`no run of ${count} free loopback ports`)
}

/** `tidepool up` flags for a gateway and `instances` Postgres instances, all on free ports. */
export async function clusterPortFlags(instances: number): Promise<string[]> {
  const base = await freePortRun(instances)
  return [
    '--port',
    String(await freePort()),
    '--replica-port',
    String(await freePort()),
    '--instance-port-base',
    String(base),
  ]
}
