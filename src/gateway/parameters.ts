import type { PoolerClient } from '../pooler/index.ts'
import type { PgError } from '../protocol/index.ts'

/**
 * Settings PostgreSQL reports in ParameterStatus (GUC_REPORT). Asked for with
 * current_setting(name, true), so a name this server version lacks reads as null and
 * is left out, exactly as the server would leave it out.
 */
const REPORTED = [
  'application_name',
  'client_encoding',
  'DateStyle',
  'default_transaction_read_only',
  'in_hot_standby',
  'integer_datetimes',
  'IntervalStyle',
  'is_superuser',
  'scram_iterations',
  'server_encoding',
  'server_version',
  'session_authorization',
  'standard_conforming_strings',
  'TimeZone',
]

const PROBE_SQL = `SELECT name, pg_catalog.current_setting(name, true) FROM pg_catalog.unnest(ARRAY[${REPORTED.map((name) => `'${name}'`).join(', ')}]) AS name`

/**
 * What a backend of (database, user) reports to a client that sent `settings` at
 * startup. Postgres is asked, once per distinct combination: it normalises values
 * (`datestyle=iso` reports `ISO, MDY`) and refuses bad ones with the error a direct
 * connection would get.
 */
export class ReportedParameters {
  private readonly pooler: PoolerClient
  private readonly cache = new Map<string, Promise<[string, string][]>>()

  constructor(pooler: PoolerClient) {
    this.pooler = pooler
  }

  get(
    database: string,
    user: string,
    settings: ReadonlyMap<string, string>,
    settingsKey: string,
  ): Promise<[string, string][]> {
    const key = `${database}\0${user}\0${settingsKey}`
    let result = this.cache.get(key)
    if (result === undefined) {
      result = this.probe(database, user, settings, settingsKey)
      this.cache.set(key, result)
      // Failures are not remembered: the database may be created a moment later.
      result.catch(() => this.cache.delete(key))
    }
    return result
  }

  private probe(
    database: string,
    user: string,
    settings: ReadonlyMap<string, string>,
    settingsKey: string,
  ): Promise<[string, string][]> {
    return new Promise((resolve, reject) => {
      this.pooler.acquire(database, user, {
        settings,
        settingsKey,
        customSettingNames: new Set([...settings.keys()].filter((name) => name.includes('.'))),
        onLease(lease) {
          lease.query(PROBE_SQL).then(
            ({ rows, error }) => {
              lease.release()
              if (error !== null) reject(error)
              else resolve(rows.filter((row) => row[1] !== null) as [string, string][])
            },
            (error: Error) => reject(error),
          )
        },
        onLeaseError(error: PgError) {
          reject(error)
        },
      })
    })
  }
}
