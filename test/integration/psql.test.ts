/**
 * psql scripts through the gateway, differentially: the same script runs directly
 * against Postgres and through the gateway, and psql must print exactly the same
 * thing both times (COPY in both directions, multi-statement queries, errors inside
 * a transaction, notices).
 */
import assert from 'node:assert/strict'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import type { Gateway } from '../../src/gateway/index.ts'
import { startTestGateway } from '../support/gateway.ts'
import { startTestPostgres, type TestPostgres } from '../support/postgres.ts'
import { connectArgs, type ProgramResult, runPgProgram } from '../support/programs.ts'

/** Tab-separated rows for COPY FROM STDIN: enough to span many CopyData messages and socket reads. */
function copyRows(from: number, count: number): string {
  let out = ''
  for (let id = from; id < from + count; id++) out += `${id}\tname ${id}\t${'x'.repeat(id % 200)}\n`
  return out
}

const SCRIPT = `-- Reset without notices, so every run prints the same.
SET client_min_messages = warning;
DROP TABLE IF EXISTS items;
RESET client_min_messages;
CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, pad text);

COPY items FROM STDIN;
${copyRows(1, 3000)}\\.
\\copy items from stdin
${copyRows(3001, 2000)}\\.
\\copy items (id, name) from stdin with (format csv)
5001,"quoted, name"
5002,"line
break"
\\.
SELECT count(*), sum(id), sum(length(pad)) FROM items;

COPY (SELECT id, name FROM items WHERE id % 500 = 0 ORDER BY id) TO STDOUT;
COPY (SELECT id, name FROM items WHERE id > 5000 ORDER BY id) TO STDOUT WITH (FORMAT csv, HEADER);
\\copy (SELECT id, length(pad) FROM items WHERE id BETWEEN 195 AND 205 ORDER BY id) to stdout

-- One Query message holding several statements.
SELECT 1 AS one \\; SELECT 'two' AS two \\; UPDATE items SET name = upper(name) WHERE id <= 3 \\; SELECT name FROM items WHERE id <= 3 ORDER BY id;

-- An error inside a transaction, then statements that fail because of it, then ROLLBACK.
BEGIN;
INSERT INTO items VALUES (9001, 'doomed', NULL);
SELECT id FROM items WHERE id = 9001;
SELECT 1 / 0;
SELECT 'ignored';
ROLLBACK;
SELECT count(*) AS doomed_rows FROM items WHERE id >= 9001;

-- A failing COPY outside a transaction, then the session goes on.
COPY items FROM STDIN;
9003	fine	\\N
not-a-number	bad	\\N
\\.
SELECT count(*) AS after_bad_copy FROM items WHERE id = 9003;

-- A committed transaction with a savepoint rolled back.
BEGIN;
INSERT INTO items VALUES (9100, 'kept', NULL);
SAVEPOINT s1;
INSERT INTO items VALUES (9101, 'undone', NULL);
ROLLBACK TO SAVEPOINT s1;
COMMIT;
SELECT id, name FROM items WHERE id >= 9100 ORDER BY id;

DO $$
BEGIN
  RAISE NOTICE 'notice from a DO block: %', 42;
  RAISE WARNING 'warning from a DO block';
END
$$;
SELECT 'done' AS status;
`

describe('psql through the gateway, compared with psql direct', () => {
  let server: TestPostgres
  let gateway: Gateway
  let dir: string

  before(async () => {
    server = await startTestPostgres()
    gateway = await startTestGateway(server, { poolSize: 2 })
    dir = await mkdtemp(join(tmpdir(), 'tidepool-psql-'))
    await writeFile(join(dir, 'script.sql'), SCRIPT)
  })

  after(async () => {
    await gateway?.close()
    await server?.stop()
    if (dir) await rm(dir, { recursive: true, force: true })
  })

  /** Runs the script (relative path, so error locations print the same) with psql. */
  function psqlScript(host: string, port: number): Promise<ProgramResult> {
    return runPgProgram('psql', ['-X', ...connectArgs(host, port), '-d', 'postgres', '-f', 'script.sql'], {
      cwd: dir,
    })
  }

  test('the same script prints the same through the gateway as direct', async () => {
    const direct = await psqlScript(server.socketDir, server.port)
    assert.equal(direct.code, 0, direct.stderr)
    const viaGateway = await psqlScript('127.0.0.1', gateway.port)
    assert.equal(viaGateway.code, 0, viaGateway.stderr)

    // The direct run is the reference: make sure it did what the script says.
    assert.match(direct.stdout, /COPY 3000\n/)
    assert.match(direct.stdout, /COPY 2000\n/)
    assert.match(direct.stdout, /^ {2}5002 \| 12512503 \| 497500$/m)
    assert.match(direct.stdout, /^5001,"quoted, name"$/m)
    assert.match(direct.stderr, /division by zero/)
    assert.match(direct.stderr, /current transaction is aborted/)
    assert.match(direct.stderr, /invalid input syntax for type integer/)
    assert.match(direct.stdout, /^ doomed_rows \n-+\n +0\n/m)
    assert.match(direct.stdout, /^ 9100 \| kept\n\(1 row\)/m)
    assert.match(direct.stdout, /^ done\n\(1 row\)\n\n$/m)
    assert.match(
      direct.stderr,
      /NOTICE: {2}notice from a DO block: 42\n.*WARNING: {2}warning from a DO block\n$/,
    )

    assert.equal(viaGateway.stdout, direct.stdout)
    assert.equal(viaGateway.stderr, direct.stderr)
  })

  test('notices from a DO block reach psql on stderr', async () => {
    const result = await runPgProgram('psql', [
      '-X',
      ...connectArgs('127.0.0.1', gateway.port),
      '-d',
      'postgres',
      '-c',
      "DO $$ BEGIN RAISE NOTICE 'hello from %', 'plpgsql'; END $$",
    ])
    assert.equal(result.code, 0, result.stderr)
    assert.equal(result.stdout, 'DO\n')
    assert.equal(result.stderr, 'NOTICE:  hello from plpgsql\n')
  })

  test('psql -c with several statements sends one Query and shows every result', async () => {
    const sql = 'SELECT 1 AS a; SELECT 2 AS b; SELECT 3 AS c'
    const args = ['-X', '-A', '-t', '-d', 'postgres', '-c', sql]
    const direct = await runPgProgram('psql', [...connectArgs(server.socketDir, server.port), ...args])
    const viaGateway = await runPgProgram('psql', [...connectArgs('127.0.0.1', gateway.port), ...args])
    assert.equal(direct.stdout, '1\n2\n3\n')
    assert.deepEqual(
      { code: viaGateway.code, stdout: viaGateway.stdout, stderr: viaGateway.stderr },
      { code: 0, stdout: direct.stdout, stderr: direct.stderr },
    )
  })
})
