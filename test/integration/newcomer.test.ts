/**
 * A newcomer's path, end to end: a fresh clone of this repository, the README's first
 * command (`./tidepool up`, which installs Node.js 24 and the npm dependencies itself
 * when the system's Node is older), then psql with the connection string it printed.
 * Only the ports differ from the README's defaults, so that the test never collides with
 * anything running. The README's second command is the test suite this test is part of.
 * Installing Node.js and the npm dependencies from the registry takes most of its time
 * (3 to 4 minutes on the development machine).
 */
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { prepareServiceDir } from '../../src/pgctl/index.ts'
import { clusterPortFlags } from '../support/ports.ts'
import { type ProgramResult, runProgram } from '../support/programs.ts'

const REPO = join(import.meta.dirname, '..', '..')
/** A machine's own PATH: its system node (older than 22.12 here), npm, git, psql. */
const SYSTEM_PATH = '/usr/local/bin:/usr/bin:/bin'

function show(result: ProgramResult): string {
  return `exit ${result.code}\nstdout:\n${result.stdout}\nstderr:\n${result.stderr}`
}

describe('a newcomer: fresh clone, ./tidepool up, psql', () => {
  let dir: string
  let clone: string
  let flags: string[]
  let up: ProgramResult

  before(
    async () => {
      dir = await mkdtemp(join(tmpdir(), 'tidepool-newcomer-'))
      await prepareServiceDir(dir, 0o711)
      clone = join(dir, 'tidepool')
      const cloned = await runProgram('/usr/bin/git', ['clone', '--quiet', REPO, clone], {
        env: { PATH: SYSTEM_PATH, HOME: process.env.HOME ?? '/root' },
      })
      assert.equal(cloned.code, 0, show(cloned))
      flags = await clusterPortFlags(3)
      up = await runProgram(join(clone, 'tidepool'), ['up', ...flags], {
        cwd: clone,
        env: { PATH: SYSTEM_PATH, HOME: process.env.HOME ?? '/root' },
        timeoutMs: 10 * 60_000,
      })
    },
    { timeout: 12 * 60_000 },
  )

  after(async () => {
    if (clone !== undefined) {
      await runProgram(join(clone, 'tidepool'), ['down', ...flags], {
        cwd: clone,
        env: { PATH: SYSTEM_PATH, HOME: process.env.HOME ?? '/root' },
        timeoutMs: 2 * 60_000,
      })
    }
    if (dir !== undefined) await rm(dir, { recursive: true, force: true })
  })

  test('up prints a connection string; psql connects with it and writes', async () => {
    assert.equal(up.code, 0, show(up))
    assert.match(up.stdout, /Created and started the Tidepool cluster in .*tidepool-data/)
    const command = /psql '([^']+)'/.exec(up.stdout)
    assert.ok(command, show(up))
    const psql = await runProgram(
      '/usr/bin/psql',
      [
        command[1],
        '-Atc',
        'CREATE TABLE hello (v text); INSERT INTO hello VALUES ($$world$$); SELECT v FROM hello',
      ],
      {
        env: { PATH: SYSTEM_PATH },
      },
    )
    assert.equal(psql.code, 0, show(psql))
    assert.equal(psql.stdout.trim().split('\n').at(-1), 'world')
  })
})
