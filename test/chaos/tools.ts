/**
 * What the chaos suite's writers need besides Node: psycopg 3 (pinned in
 * requirements.txt, installed with `pip install --target .tools/python`, which .ci/run
 * does first and the suite does itself when it is missing) and a pgx program built with
 * `go build`. Either may be missing on a developer's machine, which skips that writer
 * with the reason; under CI=true both must be there.
 *
 * @module
 */
import { constants } from 'node:fs'
import { access, readFile } from 'node:fs/promises'
import { delimiter, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { runProgram } from '../support/programs.ts'

export const ROOT = fileURLToPath(new URL('../../', import.meta.url))
export const CHAOS_DIR = fileURLToPath(new URL('./', import.meta.url))
/** Where `pip install --target` puts psycopg: project-local, ignored by git. */
export const PYTHON_TARGET = join(ROOT, '.tools', 'python')
const REQUIREMENTS = join(CHAOS_DIR, 'requirements.txt')
const GO_PROGRAM_DIR = join(CHAOS_DIR, 'writer-go')
/** The first build may download the modules go.sum pins. */
const GO_BUILD_TIMEOUT_MS = 5 * 60_000

/** A program that is ready, or why it is not. */
export type Tool = { ok: true; path: string } | { ok: false; reason: string }

/** The absolute path of `name` on our PATH, or null. */
async function onPath(name: string): Promise<string | null> {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir === '') continue
    const candidate = join(dir, name)
    try {
      await access(candidate, constants.X_OK)
      return candidate
    } catch {
      // Not here.
    }
  }
  return null
}

/** The psycopg version requirements.txt pins. */
async function pinnedPsycopg(): Promise<string> {
  const text = await readFile(REQUIREMENTS, 'utf8')
  const match = /^psycopg\[binary\]==(\S+)$/m.exec(text)
  if (match === null) throw new Error(`${REQUIREMENTS} pins no psycopg[binary]`)
  return match[1]
}

/**
 * The Python interpreter (its real path: a pyenv shim needs an environment we do not
 * pass on) with the pinned psycopg importable from {@link PYTHON_TARGET}, installing it
 * there when it is missing.
 */
export async function preparePython(): Promise<Tool> {
  const python3 = await onPath('python3')
  if (python3 === null) return { ok: false, reason: 'python3 is not on PATH' }
  const env = process.env as Record<string, string>
  const probe = await runProgram(python3, ['-c', 'import sys; print(sys.executable)'], { env })
  if (probe.code !== 0) return { ok: false, reason: `python3 does not run: ${probe.stderr.trim()}` }
  const python = probe.stdout.trim()
  const pinned = await pinnedPsycopg()
  const version = async (): Promise<string | null> => {
    const result = await runProgram(python, ['-c', 'import psycopg; print(psycopg.__version__)'], {
      env: { PYTHONPATH: PYTHON_TARGET },
    })
    return result.code === 0 ? result.stdout.trim() : null
  }
  if ((await version()) === pinned) return { ok: true, path: python }
  const install = await runProgram(
    python,
    [
      '-m',
      'pip',
      'install',
      '--quiet',
      '--disable-pip-version-check',
      '--no-input',
      '--upgrade',
      '--target',
      PYTHON_TARGET,
      '-r',
      REQUIREMENTS,
    ],
    { env: { ...env, PIP_ROOT_USER_ACTION: 'ignore' }, timeoutMs: 5 * 60_000 },
  )
  const installed = await version()
  if (installed === pinned) return { ok: true, path: python }
  return {
    ok: false,
    reason: `psycopg ${pinned} could not be installed into ${PYTHON_TARGET} (pip exit ${install.code}): ${install.stderr.trim().slice(-2000)}`,
  }
}

/** Builds the pgx writer into `outDir`. */
export async function buildGoWriter(outDir: string): Promise<Tool> {
  const go = await onPath('go')
  if (go === null) return { ok: false, reason: 'go is not on PATH' }
  const binary = join(outDir, 'writer-go')
  const build = await runProgram(go, ['build', '-mod=mod', '-buildvcs=false', '-o', binary, '.'], {
    cwd: GO_PROGRAM_DIR,
    env: { ...(process.env as Record<string, string>), GOFLAGS: '-mod=mod' },
    timeoutMs: GO_BUILD_TIMEOUT_MS,
  })
  if (build.code !== 0)
    return { ok: false, reason: `go build failed (exit ${build.code}): ${build.stderr.trim().slice(-2000)}` }
  return { ok: true, path: binary }
}
