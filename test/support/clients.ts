/**
 * node-postgres clients of a test gateway, as the postgres superuser unless told
 * otherwise, all ended together after the test.
 *
 * @module
 */
import pg from 'pg'
import type { Gateway } from '../../src/gateway/index.ts'

export class GatewayClients {
  private readonly clients: pg.Client[] = []
  private readonly gateway: () => Gateway

  /** `gateway` is asked at each connect: tests start theirs in a before hook. */
  constructor(gateway: () => Gateway) {
    this.gateway = gateway
  }

  async connect(config: pg.ClientConfig = {}): Promise<pg.Client> {
    const client = new pg.Client({
      host: '127.0.0.1',
      port: this.gateway().port,
      user: 'postgres',
      database: 'postgres',
      ...config,
    })
    await client.connect()
    this.clients.push(client)
    return client
  }

  async endAll(): Promise<void> {
    await Promise.all(this.clients.splice(0).map((client) => client.end().catch(() => {})))
  }

  /** A pool counter summed over the gateway's pools (pinned, leased, size …). */
  total(counter: 'pinned' | 'leased' | 'size' | 'waiting'): number {
    return this.gateway()
      .pooler.stats()
      .reduce((sum, pool) => sum + pool[counter], 0)
  }
}
