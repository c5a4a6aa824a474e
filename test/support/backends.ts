/**
 * Counting the backend connections a gateway holds, from the server's side: a direct
 * connection over the test server's Unix socket samples pg_stat_activity while a test
 * runs load through the gateway.
 *
 * @module
 */
import pg from 'pg'
import type { TestPostgres } from './postgres.ts'

/** application_name of the pooler's own connection (role lookups), not a pooled backend. */
export const ADMIN_APPLICATION_NAME = 'tidepool-admin'

/**
 * Client backends of database `postgres`, user `postgres`, other than the sampling
 * connection itself and the pooler's admin connection.
 */
const COUNT_SQL = `SELECT count(*)::int AS n FROM pg_stat_activity
  WHERE backend_type = 'client backend' AND datname = 'postgres' AND usename = 'postgres'
    AND pid <> pg_backend_pid() AND application_name IS DISTINCT FROM '${ADMIN_APPLICATION_NAME}'`

/** A running sampler. */
export interface BackendWatch {
  /** Highest count seen so far. */
  readonly max: number
  /** Number of samples taken so far. */
  readonly samples: number
  /** Stops sampling; resolves to the final {max, samples}. */
  stop(): Promise<{ max: number; samples: number }>
}

/** A direct superuser connection to the test server over its Unix socket. */
export async function directClient(server: TestPostgres): Promise<pg.Client> {
  const client = new pg.Client({
    host: server.socketDir,
    port: server.port,
    user: 'postgres',
    database: 'postgres',
    application_name: 'tidepool-test-direct',
  })
  await client.connect()
  return client
}

/** Samples the pooled backend count every `intervalMs` until stopped. */
export async function watchBackends(server: TestPostgres, intervalMs = 100): Promise<BackendWatch> {
  const client = await directClient(server)
  let max = 0
  let samples = 0
  let stopped = false
  let failure: Error | null = null
  const loop = (async () => {
    while (!stopped) {
      try {
        const { rows } = await client.query<{ n: number }>(COUNT_SQL)
        max = Math.max(max, rows[0].n)
        samples++
      } catch (error) {
        failure = error as Error
        return
      }
      await new Promise((resolve) => setTimeout(resolve, intervalMs))
    }
  })()
  return {
    get max() {
      return max
    },
    get samples() {
      return samples
    },
    async stop() {
      stopped = true
      await loop
      await client.end()
      if (failure !== null) throw failure
      return { max, samples }
    },
  }
}
