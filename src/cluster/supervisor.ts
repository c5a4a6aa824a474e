import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Logger } from '../log.ts'
import { type RunningPostgres, start, stop } from '../pgctl/index.ts'
import { queryServer } from '../pooler/index.ts'
import { FileTopology, type InstanceRecord, primaryOf } from '../topology/index.ts'
import type { ClusterConfig } from './config.ts'
import { exists } from './files.ts'
import { instanceLayout } from './layout.ts'

/** Restarts allowed within RESTART_WINDOW_MS before the supervisor gives up. */
const MAX_RESTARTS = 5
const RESTART_WINDOW_MS = 60_000
const BACKOFF_MIN_MS = 250
const BACKOFF_MAX_MS = 8_000
/** How often the instance's WAL position is read and its record refreshed. */
const CHECK_INTERVAL_MS = 1_000

/** What the supervisor reports of the pooler it runs beside. */
export interface SupervisedPooler {
  /** Where it serves its lease link. */
  link: string
  /** Its backend connections now. */
  use(): InstanceRecord['pool']
}

/**
 * The supervising half of an instance's pooler process: runs its Postgres, restarts it
 * when it dies (crash recovery does the rest), with a bounded, backed-off loop, and
 * keeps the instance's topology record (role, health, pids, WAL position, lag, pool use)
 * current. SIGTERM stops Postgres cleanly; then this returns.
 */
export async function superviseInstance(
  config: ClusterConfig,
  name: string,
  pooler: SupervisedPooler,
  log: Logger,
): Promise<void> {
  const layout = instanceLayout(config, name)
  const topology = new FileTopology(join(config.dir, 'topology'))
  const replica = await exists(join(layout.dataDir, 'standby.signal'))
  const record: InstanceRecord = {
    name,
    role: replica ? 'replica' : 'primary',
    health: 'starting',
    host: '127.0.0.1',
    port: layout.port,
    socketDir: layout.socketDir,
    dataDir: layout.dataDir,
    poolerPid: process.pid,
    poolerLink: pooler.link,
    pool: pooler.use(),
    postgresPid: null,
    restarts: 0,
    walLsn: null,
    lagBytes: null,
    problem: null,
    updatedAt: new Date().toISOString(),
  }
  const publish = (patch: Partial<InstanceRecord>) => {
    Object.assign(record, patch, { pool: pooler.use(), updatedAt: new Date().toISOString() })
    return topology.putInstance({ ...record }).catch((error: Error) => {
      log.error({ err: error.message }, 'cannot write the topology record')
    })
  }

  let stopping = false
  let postgres: RunningPostgres | null = null
  const stopped = new Promise<void>((resolve) => {
    const onSignal = () => {
      if (stopping) return
      stopping = true
      log.info('stopping')
      resolve()
    }
    process.once('SIGTERM', onSignal)
    process.once('SIGINT', onSignal)
  })

  const restarts: number[] = []
  let backoffMs = BACKOFF_MIN_MS
  await publish({})
  // A postmaster whose pooler was killed still runs: stop it, to run it under our watch.
  await stop({ dataDir: layout.dataDir }).catch((error: Error) => {
    log.warn({ err: error.message }, 'could not stop a Postgres left running')
  })
  while (!stopping) {
    try {
      postgres = await start({
        dataDir: layout.dataDir,
        port: layout.port,
        listenAddresses: '127.0.0.1',
        socketDir: layout.socketDir,
        logFile: layout.logFile,
      })
    } catch (error) {
      postgres = null
      log.warn({ err: (error as Error).message }, 'Postgres did not start')
      await publish({ health: 'restarting', postgresPid: null, problem: firstLine((error as Error).message) })
    }
    if (postgres !== null) {
      log.info({ pid: postgres.pid }, 'Postgres running')
      backoffMs = BACKOFF_MIN_MS
      await publish({ health: 'healthy', postgresPid: postgres.pid, problem: null })
      const checks = checkLoop(config, record, publish, () => stopping || postgres === null)
      const exit = await Promise.race([postgres.exited, stopped.then(() => null)])
      if (exit === null) {
        await postgres.stop()
        postgres = null
        await checks
        break
      }
      postgres = null
      await checks
      log.warn({ exit }, 'Postgres exited; restarting it')
      await publish({
        health: 'restarting',
        postgresPid: null,
        problem: `Postgres exited (${exit.signal ?? `code ${exit.code}`})`,
      })
    }
    const now = Date.now()
    restarts.push(now)
    while (restarts.length > 0 && restarts[0] < now - RESTART_WINDOW_MS) restarts.shift()
    if (restarts.length > MAX_RESTARTS) {
      log.error({ restarts: restarts.length }, 'Postgres keeps dying: giving up')
      await publish({
        health: 'failed',
        problem: `${restarts.length} restarts within ${RESTART_WINDOW_MS / 1000} s; see ${layout.logFile}`,
      })
      // Stay, to be seen failed in the topology, until told to stop (a signal handler
      // alone keeps no process alive).
      const keepAlive = setInterval(() => {}, 60_000)
      await stopped
      clearInterval(keepAlive)
      break
    }
    await publish({ restarts: record.restarts + 1 })
    await Promise.race([sleep(backoffMs), stopped])
    backoffMs = Math.min(backoffMs * 2, BACKOFF_MAX_MS)
  }
  await publish({ health: 'stopped', postgresPid: null, poolerPid: null, poolerLink: null })
}

/** Reads the WAL position (and a replica's lag behind the primary's record) every second. */
async function checkLoop(
  config: ClusterConfig,
  record: InstanceRecord,
  publish: (patch: Partial<InstanceRecord>) => Promise<void>,
  done: () => boolean,
): Promise<void> {
  const topology = new FileTopology(join(config.dir, 'topology'))
  while (!done()) {
    await sleep(CHECK_INTERVAL_MS)
    if (done()) return
    try {
      const { rows, error } = await queryServer(
        { socketDir: record.socketDir, port: record.port },
        'postgres',
        'SELECT pg_is_in_recovery()::text, CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END::text',
      )
      if (error !== null || rows.length === 0) continue
      const [inRecovery, lsn] = rows[0] as [string, string | null]
      let lagBytes: number | null = null
      if (inRecovery === 'true' && lsn !== null) {
        const primary = primaryOf(await topology.snapshot())
        if (primary?.walLsn) lagBytes = Math.max(0, lsnToNumber(primary.walLsn) - lsnToNumber(lsn))
      }
      if (done()) return
      await publish({
        role: inRecovery === 'true' ? 'replica' : 'primary',
        walLsn: lsn,
        lagBytes,
        health: 'healthy',
      })
    } catch {
      // Postgres is going away; its exit is handled by the supervisor.
    }
  }
}

/** A WAL position `X/Y` (two hex halves) as a byte offset. */
export function lsnToNumber(lsn: string): number {
  const [high, low] = lsn.split('/')
  return Number.parseInt(high, 16) * 2 ** 32 + Number.parseInt(low, 16)
}

function firstLine(text: string): string {
  return text.split('\n')[0]
}
