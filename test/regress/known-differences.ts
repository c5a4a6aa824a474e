/**
 * Regression tests whose expected output depends on what one server process has done
 * since it started, which no pooler that shares backends can reproduce: a session gets
 * a backend that other sessions used before. Strict runs allow these to fail (they may
 * also pass, depending on which backend a statement lands on); every other test that
 * passes directly must pass through Tidepool. docs/compatibility.md explains each.
 */
export const BACKEND_LIFETIME_DIFFERENCES: ReadonlyMap<string, string> = new Map([
  [
    'guc',
    'expects plpgsql not yet loaded in the server process (SET plpgsql.x succeeds, LOAD warns); other sessions loaded it',
  ],
  [
    'temp',
    'expects the temporary schema to be created by its transaction (then PREPARE TRANSACTION fails); the backend made it earlier',
  ],
  [
    'triggers',
    "expects contrib/spi refint's per-process plan cache to hold the DELETE plan its earlier statement made on the same process",
  ],
  [
    'stats',
    'expects \\c to start a new server process (pg_stat_database.sessions grows) and its own process to hold all pending counters',
  ],
])
