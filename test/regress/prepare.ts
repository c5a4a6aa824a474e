/**
 * Prerequisites of the PostgreSQL regression run, ensured idempotently:
 *
 * - the source of the installed `postgresql-15` (Debian's source package at exactly the
 *   installed version), fetched with `apt-get source`. When apt knows no source for it,
 *   a `deb-src` twin of every enabled `deb` entry of this machine's own apt
 *   configuration (those whose suite belongs to this release) is written to
 *   `/etc/apt/sources.list.d/tidepool-src.{sources,list}` and the lists are updated;
 * - the server headers (`postgresql-server-dev-15` at the installed version);
 * - `regress.so`, `autoinc.so` and `refint.so` (the C functions the schedule's tests
 *   load from `PG_LIBDIR`), built with PGXS from the fetched source.
 *
 * Everything lands in the cache directory (`.tmp/regress/` by default); nothing of it
 * belongs in the repository.
 *
 * @module
 */
import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { copyFile, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'

/** The Debian package whose source and version the run follows. */
export const SERVER_PACKAGE = 'postgresql-15'
/** PGXS, server headers. */
const DEV_PACKAGE = 'postgresql-server-dev-15'
export const PG_BIN = '/usr/lib/postgresql/15/bin'
const PG_CONFIG = join(PG_BIN, 'pg_config')
const APT_DIR = '/etc/apt'
const SRC_LIST_BASE = join(APT_DIR, 'sources.list.d', 'tidepool-src')
/** dpkg-query's format for the version alone (a dpkg field reference, not a template). */
const DPKG_VERSION_FORMAT = ['-f=$', '{Version}'].join('')

/** What the regression run needs on disk. */
export interface Prerequisites {
  /** Installed server version (Debian version string). */
  version: string
  /** Root of the unpacked source package. */
  sourceDir: string
  /** `src/test/regress` of it: schedules, sql/, expected/, data/. */
  regressDir: string
  /** Directory holding regress.so, autoinc.so, refint.so (pg_regress `--dlpath`). */
  libDir: string
  /** pg_regress from postgresql-client-15. */
  pgRegress: string
  /** What had to be done this time (empty when everything was cached). */
  actions: string[]
}

interface Exec {
  code: number | null
  stdout: string
  stderr: string
}

/** Runs a command to completion (no shell), collecting output; never rejects on a non-zero exit. */
export function exec(
  file: string,
  args: string[],
  opts: { cwd?: string; env?: Record<string, string>; timeoutMs?: number } = {},
): Promise<Exec> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, {
      cwd: opts.cwd,
      env: opts.env ?? { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C', LC_ALL: 'C' },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk))
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk))
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 20 * 60_000)
    child.on('error', (err) => {
      clearTimeout(timer)
      reject(err)
    })
    child.on('close', (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr })
    })
  })
}

async function mustExec(
  file: string,
  args: string[],
  opts: { cwd?: string; env?: Record<string, string> } = {},
) {
  const result = await exec(file, args, opts)
  if (result.code !== 0) {
    const tail = `${result.stdout}\n${result.stderr}`.trim().split('\n').slice(-20).join('\n')
    throw new Error(`${file} ${args.join(' ')} failed (exit ${result.code}):\n${tail}`)
  }
  return result
}

const isRoot = (): boolean => process.getuid?.() === 0

function needRoot(what: string): void {
  if (!isRoot()) throw new Error(`${what} needs root (apt); run as root or provide it beforehand`)
}

/** `VERSION_CODENAME` of /etc/os-release (`bookworm`): suites of this release start with it. */
async function releaseCodename(): Promise<string> {
  const text = await readFile('/etc/os-release', 'utf8')
  const match = /^VERSION_CODENAME=(.*)$/m.exec(text)
  if (!match) throw new Error('/etc/os-release has no VERSION_CODENAME')
  return match[1].replace(/^"|"$/g, '').trim()
}

/** One deb822 stanza as ordered [field, value] pairs (values keep their continuation lines). */
type Stanza = [string, string][]

/** Parses deb822 text (`*.sources`) into stanzas; comment lines are dropped. */
export function parseDeb822(text: string): Stanza[] {
  const stanzas: Stanza[] = []
  let current: Stanza = []
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue
    if (line.trim() === '') {
      if (current.length > 0) stanzas.push(current)
      current = []
      continue
    }
    if (/^\s/.test(line) && current.length > 0) {
      current[current.length - 1][1] += `\n${line}`
      continue
    }
    const colon = line.indexOf(':')
    if (colon > 0) current.push([line.slice(0, colon).trim(), line.slice(colon + 1).trim()])
  }
  if (current.length > 0) stanzas.push(current)
  return stanzas
}

const field = (stanza: Stanza, name: string): string | undefined =>
  stanza.find(([key]) => key.toLowerCase() === name.toLowerCase())?.[1]

/** True when one of `suites` belongs to the release `codename` (bookworm, bookworm-updates, …). */
const ofRelease = (suites: string[], codename: string): boolean =>
  suites.some(
    (suite) => suite === codename || suite.startsWith(`${codename}-`) || suite.startsWith(`${codename}/`),
  )

/**
 * deb-src twins of the enabled binary entries of this release: deb822 stanzas from
 * `*.sources` files and one-line entries from `*.list` files and sources.list.
 */
export async function derivedSourceEntries(): Promise<{ deb822: string; oneLine: string }> {
  const codename = await releaseCodename()
  const stanzas: string[] = []
  const lines: string[] = []
  const listDir = join(APT_DIR, 'sources.list.d')
  const files = existsSync(listDir) ? (await readdir(listDir)).sort().map((name) => join(listDir, name)) : []
  const mainList = join(APT_DIR, 'sources.list')
  if (existsSync(mainList)) files.unshift(mainList)
  for (const file of files) {
    if (file.startsWith(SRC_LIST_BASE)) continue
    const text = await readFile(file, 'utf8')
    if (file.endsWith('.sources')) {
      for (const stanza of parseDeb822(text)) {
        const types = (field(stanza, 'Types') ?? '').split(/\s+/)
        const suites = (field(stanza, 'Suites') ?? '').split(/\s+/)
        if (!types.includes('deb') || types.includes('deb-src')) continue
        if (/^(no|false|0)$/i.test(field(stanza, 'Enabled') ?? 'yes')) continue
        if (!ofRelease(suites, codename)) continue
        const out = [
          'Types: deb-src',
          ...stanza.filter(([key]) => key.toLowerCase() !== 'types').map(([k, v]) => `${k}: ${v}`),
        ]
        stanzas.push(out.join('\n'))
      }
    } else if (file.endsWith('.list')) {
      for (const raw of text.split('\n')) {
        const line = raw.replace(/#.*$/, '').trim()
        if (!line.startsWith('deb ')) continue
        // deb [options] uri suite components…
        const rest = line.slice(4).trim()
        const afterOptions = rest.startsWith('[') ? rest.slice(rest.indexOf(']') + 1).trim() : rest
        const suite = afterOptions.split(/\s+/)[1] ?? ''
        if (!ofRelease([suite], codename)) continue
        lines.push(`deb-src ${rest}`)
      }
    }
  }
  return {
    deb822: stanzas.length > 0 ? `${stanzas.join('\n\n')}\n` : '',
    oneLine: lines.length > 0 ? `${lines.join('\n')}\n` : '',
  }
}

/** True when apt can fetch the source of `SERVER_PACKAGE` at `version`. */
async function sourceKnown(version: string): Promise<boolean> {
  const result = await exec('apt-cache', ['showsrc', '--only-source', SERVER_PACKAGE])
  return (
    result.code === 0 && new RegExp(`^Version: ${version.replace(/[.+]/g, '\\$&')}$`, 'm').test(result.stdout)
  )
}

async function ensureSourceEntries(version: string, actions: string[]): Promise<void> {
  if (await sourceKnown(version)) return
  needRoot('adding deb-src entries')
  const { deb822, oneLine } = await derivedSourceEntries()
  if (deb822 === '' && oneLine === '') {
    throw new Error('no enabled deb entry of this release in the apt configuration to derive deb-src from')
  }
  const header = "# Written by test/regress (Tidepool): deb-src twins of this machine's own deb entries.\n"
  if (deb822 !== '' && !existsSync(`${SRC_LIST_BASE}.sources`)) {
    await writeFile(`${SRC_LIST_BASE}.sources`, header + deb822)
    actions.push(`wrote ${SRC_LIST_BASE}.sources`)
  }
  if (oneLine !== '' && !existsSync(`${SRC_LIST_BASE}.list`)) {
    await writeFile(`${SRC_LIST_BASE}.list`, header + oneLine)
    actions.push(`wrote ${SRC_LIST_BASE}.list`)
  }
  await mustExec('apt-get', ['update', '-q'])
  actions.push('apt-get update')
  if (!(await sourceKnown(version))) {
    throw new Error(`apt knows no source of ${SERVER_PACKAGE} ${version} even with deb-src entries`)
  }
}

/** Fetches and unpacks the source package into `cacheDir/src-<version>` unless already there. */
async function ensureSource(cacheDir: string, version: string, actions: string[]): Promise<string> {
  const sourceDir = join(cacheDir, `src-${version}`)
  if (existsSync(join(sourceDir, 'src/test/regress/parallel_schedule'))) return sourceDir
  await ensureSourceEntries(version, actions)
  const download = join(cacheDir, 'download')
  await rm(download, { recursive: true, force: true })
  await mkdir(download, { recursive: true })
  // Download only, then unpack into a directory of our choosing (apt-get source would
  // pick the name and, as root, warn that the download is unsandboxed; harmless).
  await mustExec('apt-get', ['source', '--download-only', '-q', `${SERVER_PACKAGE}=${version}`], {
    cwd: download,
  })
  const dsc = (await readdir(download)).find((name) => name.endsWith('.dsc'))
  if (!dsc) throw new Error(`apt-get source left no .dsc in ${download}`)
  await rm(sourceDir, { recursive: true, force: true })
  // --no-copy: leave the orig tarball where it was downloaded (it is removed with it).
  await mustExec('dpkg-source', ['--no-check', '--no-copy', '-x', dsc, sourceDir], { cwd: download })
  await rm(download, { recursive: true, force: true })
  actions.push(`apt-get source ${SERVER_PACKAGE}=${version}, unpacked to ${sourceDir}`)
  return sourceDir
}

/** Server headers and PGXS for the installed version. */
async function ensureServerDev(version: string, actions: string[]): Promise<void> {
  const pgxs = await exec(PG_CONFIG, ['--pgxs'])
  const include = await exec(PG_CONFIG, ['--includedir-server'])
  if (
    pgxs.code === 0 &&
    include.code === 0 &&
    existsSync(pgxs.stdout.trim()) &&
    existsSync(join(include.stdout.trim(), 'postgres.h'))
  ) {
    return
  }
  needRoot(`installing ${DEV_PACKAGE}`)
  const installed = await exec('dpkg-query', ['-W', DPKG_VERSION_FORMAT, DEV_PACKAGE])
  await mustExec(
    'apt-get',
    ['install', '-y', '-q', '--no-install-recommends', `${DEV_PACKAGE}=${version}`, 'make', 'gcc'],
    {
      env: {
        PATH: '/usr/sbin:/usr/bin:/sbin:/bin',
        LANG: 'C',
        LC_ALL: 'C',
        DEBIAN_FRONTEND: 'noninteractive',
      },
    },
  )
  actions.push(`apt-get install ${DEV_PACKAGE}=${version} (was ${installed.stdout || 'absent'})`)
}

const MODULES = ['regress', 'autoinc', 'refint']

/**
 * Builds regress.so (src/test/regress/regress.c) and autoinc.so/refint.so
 * (contrib/spi) with PGXS, in `cacheDir/lib-<version>`: the PGXS equivalent of what
 * src/test/regress/GNUmakefile builds. refint gets `-DREFINT_VERBOSE` as in
 * contrib/spi/Makefile (the triggers test expects its NOTICEs). Without LLVM bitcode:
 * these tests never need the JIT.
 */
async function ensureModules(cacheDir: string, version: string, sourceDir: string, actions: string[]) {
  const libDir = join(cacheDir, `lib-${version}`)
  const makefile = [
    `MODULES = ${MODULES.join(' ')}`,
    `PG_CONFIG = ${PG_CONFIG}`,
    'PG_CPPFLAGS = -DREFINT_VERBOSE',
    'PGXS := $(shell $(PG_CONFIG) --pgxs)',
    'include $(PGXS)',
    '',
  ].join('\n')
  const built = MODULES.every((name) => existsSync(join(libDir, `${name}.so`)))
  const same =
    existsSync(join(libDir, 'Makefile')) && (await readFile(join(libDir, 'Makefile'), 'utf8')) === makefile
  if (built && same) return libDir
  await rm(libDir, { recursive: true, force: true })
  await mkdir(libDir, { recursive: true })
  await copyFile(join(sourceDir, 'src/test/regress/regress.c'), join(libDir, 'regress.c'))
  for (const name of ['autoinc', 'refint']) {
    await copyFile(join(sourceDir, 'contrib/spi', `${name}.c`), join(libDir, `${name}.c`))
  }
  await writeFile(join(libDir, 'Makefile'), makefile)
  await mustExec('make', ['-C', libDir, 'with_llvm=no'])
  actions.push(`built ${MODULES.map((m) => `${m}.so`).join(', ')} in ${libDir}`)
  return libDir
}

/** Ensures everything the run needs, doing only what is missing. */
export async function ensurePrerequisites(cacheDir: string): Promise<Prerequisites> {
  const actions: string[] = []
  await mkdir(cacheDir, { recursive: true })
  const queried = await exec('dpkg-query', ['-W', DPKG_VERSION_FORMAT, SERVER_PACKAGE])
  const version = queried.stdout.trim()
  if (queried.code !== 0 || version === '') throw new Error(`${SERVER_PACKAGE} is not installed`)
  const pgRegress = '/usr/lib/postgresql/15/lib/pgxs/src/test/regress/pg_regress'
  const sourceDir = await ensureSource(cacheDir, version, actions)
  await ensureServerDev(version, actions)
  if (!existsSync(pgRegress)) throw new Error(`${pgRegress} is missing (postgresql-client-15)`)
  const libDir = await ensureModules(cacheDir, version, sourceDir, actions)
  return { version, sourceDir, regressDir: join(sourceDir, 'src/test/regress'), libDir, pgRegress, actions }
}
