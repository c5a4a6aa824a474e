/**
 * pgctl: the only component that runs Postgres programs. Every program runs as the
 * unprivileged service user when Tidepool runs as root.
 *
 * @module
 */

export type { BasebackupOptions } from './basebackup.ts'
export { basebackup } from './basebackup.ts'
export type { PgProgram } from './bin.ts'
export { findPgBinDir, pgBinary } from './bin.ts'
export type { AuthMethod, ConfigValue, HbaEntry } from './config.ts'
export { appendSettings, formatSetting, hbaLine, renderHba, renderSettings, writeHba } from './config.ts'
export type {
  ExitInfo,
  LongRunningProcess,
  PgctlErrorCode,
  ProcessOptions,
  RunOptions,
  RunResult,
  ServiceUser,
  SpawnOptions,
} from './exec.ts'
export {
  defaultEnv,
  isRoot,
  lastLines,
  ownByServiceUser,
  PgctlError,
  prepareServiceDir,
  run,
  serviceUser,
  spawnDetached,
  spawnLongRunning,
} from './exec.ts'
export type { InitdbOptions } from './initdb.ts'
export { initdb } from './initdb.ts'
export type { ReadyOptions, RunningPostgres, StartOptions } from './start.ts'
export { isReady, start } from './start.ts'
export type { ShutdownMode, StopOptions } from './stop.ts'
export { stop } from './stop.ts'
