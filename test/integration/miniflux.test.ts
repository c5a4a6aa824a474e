/**
 * Miniflux, a feed reader that requires real Postgres, unchanged (miniflux.app/v2 v2.2.14,
 * built from the Go module proxy in a scratch module), with its database URL pointing at
 * the gateway of a `tidepool up` cluster: it runs its migrations, creates its admin user,
 * subscribes to a feed this test serves on loopback, fetches its entries and finds one by
 * full-text search, all through its own HTTP API.
 *
 * Skipped when `go` is not on PATH. The first build downloads and compiles Miniflux
 * (about a minute); the binary is kept in .tmp/miniflux/ for later runs.
 */
import assert from 'node:assert/strict'
import { type ChildProcess, spawn } from 'node:child_process'
import { constants, existsSync } from 'node:fs'
import { access, mkdir, mkdtemp, open, rm } from 'node:fs/promises'
import { createServer, type Server } from 'node:http'
import type net from 'node:net'
import { tmpdir } from 'node:os'
import { delimiter, join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { type ClusterConfig, down, loadClusterConfig, up } from '../../src/cluster/index.ts'
import { createLogger } from '../../src/log.ts'
import { prepareServiceDir } from '../../src/pgctl/index.ts'
import { freePort, freePortRun } from '../support/ports.ts'
import { runProgram } from '../support/programs.ts'

const VERSION = 'v2.2.14'
const CACHE = fileURLToPath(new URL(`../../.tmp/miniflux/${VERSION}/`, import.meta.url))
const BINARY = join(CACHE, 'bin', 'miniflux.app')
const BUILD_TIMEOUT_MS = 10 * 60_000
const WORD = 'zephyrquartz'

async function findGo(): Promise<string | null> {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir === '') continue
    try {
      await access(join(dir, 'go'), constants.X_OK)
      return join(dir, 'go')
    } catch {
      // Not here.
    }
  }
  return null
}

/** `go get -tool miniflux.app/v2@VERSION` in a scratch module, then `go install` it. */
async function buildMiniflux(go: string): Promise<void> {
  if (existsSync(BINARY)) return
  await mkdir(CACHE, { recursive: true })
  const env = { ...(process.env as Record<string, string>), GOBIN: join(CACHE, 'bin'), GOFLAGS: '-mod=mod' }
  if (!existsSync(join(CACHE, 'go.mod'))) {
    const init = await runProgram(go, ['mod', 'init', 'scratch'], { cwd: CACHE, env })
    assert.equal(init.code, 0, init.stderr)
  }
  for (const args of [
    ['get', '-tool', `miniflux.app/v2@${VERSION}`],
    ['install', 'miniflux.app/v2'],
  ]) {
    const result = await runProgram(go, args, { cwd: CACHE, env, timeoutMs: BUILD_TIMEOUT_MS })
    assert.equal(result.code, 0, `go ${args.join(' ')} failed:\n${result.stderr}`)
  }
}

const go = await findGo()

describe('Miniflux on a tidepool up cluster', () => {
  let dir: string
  let config: ClusterConfig | undefined
  let feedServer: Server | undefined
  let miniflux: ChildProcess | undefined
  let api: string
  const admin = { user: 'admin', password: 'tidepool-admin-pass' }

  before(
    async () => {
      if (go === null) return
      await buildMiniflux(go)
      dir = await mkdtemp(join(tmpdir(), 'tidepool-miniflux-'))
      await prepareServiceDir(dir, 0o711)
      const base = await freePortRun(3)
      config = loadClusterConfig({
        flags: {
          dir: join(dir, 'data'),
          port: String(await freePort()),
          replicaPort: String(await freePort()),
          instancePortBase: String(base),
          logLevel: 'warn',
        },
        env: {},
      })
      const cluster = await up(config, createLogger('error'))

      feedServer = createServer((_request, response) => {
        response.setHeader('content-type', 'application/rss+xml')
        response.end(`<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0"><channel><title>Tidepool test feed</title><link>http://127.0.0.1/</link>
<description>served by the test</description>
<item><title>Sandcastles at low tide</title><link>http://127.0.0.1/a</link><guid>a</guid>
<description>A long walk on the ${WORD} beach.</description><pubDate>Wed, 25 Nov 2026 10:00:00 GMT</pubDate></item>
<item><title>Another entry</title><link>http://127.0.0.1/b</link><guid>b</guid>
<description>Nothing to find here.</description><pubDate>Wed, 25 Nov 2026 11:00:00 GMT</pubDate></item>
</channel></rss>`)
      })
      await new Promise<void>((resolve) => feedServer!.listen({ host: '127.0.0.1', port: 0 }, resolve))

      const listen = `127.0.0.1:${await freePort()}`
      api = `http://${listen}`
      const logFile = await open(join(dir, 'miniflux.log'), 'a')
      miniflux = spawn(BINARY, [], {
        env: {
          PATH: '/usr/bin:/bin',
          DATABASE_URL: `${cluster.url}?sslmode=disable`,
          RUN_MIGRATIONS: '1',
          CREATE_ADMIN: '1',
          ADMIN_USERNAME: admin.user,
          ADMIN_PASSWORD: admin.password,
          LISTEN_ADDR: listen,
          LOG_LEVEL: 'debug',
        },
        stdio: ['ignore', logFile.fd, logFile.fd],
      })
      await logFile.close()
      const deadline = Date.now() + 60_000
      for (;;) {
        const ok = await fetch(`${api}/healthcheck`)
          .then((response) => response.ok)
          .catch(() => false)
        if (ok) break
        if (miniflux.exitCode !== null || Date.now() > deadline) {
          assert.fail(
            `Miniflux did not come up (exit ${miniflux.exitCode}); see ${join(dir, 'miniflux.log')}`,
          )
        }
        await new Promise((resolve) => setTimeout(resolve, 200))
      }
    },
    { timeout: BUILD_TIMEOUT_MS + 2 * 60_000 },
  )

  after(async () => {
    miniflux?.kill('SIGTERM')
    feedServer?.close()
    if (config !== undefined) await down(config, createLogger('error'))
    if (dir !== undefined && process.env.TIDEPOOL_KEEP_TEST_DIRS !== '1')
      await rm(dir, { recursive: true, force: true })
  })

  async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const response = await fetch(`${api}${path}`, {
      method,
      headers: {
        authorization: `Basic ${Buffer.from(`${admin.user}:${admin.password}`).toString('base64')}`,
        'content-type': 'application/json',
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    })
    const text = await response.text()
    assert.ok(response.ok, `${method} ${path}: ${response.status} ${text}`)
    return JSON.parse(text) as T
  }

  test('migrations, admin user, a subscription, its entries and a full-text search', async (t) => {
    if (go === null || miniflux === undefined) {
      t.skip('go is not on PATH: Miniflux cannot be built')
      return
    }
    const me = await call<{ username: string; is_admin: boolean }>('GET', '/v1/me')
    assert.deepEqual([me.username, me.is_admin], ['admin', true])
    const categories = await call<{ id: number }[]>('GET', '/v1/categories')
    const { port } = feedServer!.address() as net.AddressInfo
    const { feed_id } = await call<{ feed_id: number }>('POST', '/v1/feeds', {
      feed_url: `http://127.0.0.1:${port}/feed.xml`,
      category_id: categories[0].id,
    })
    assert.ok(feed_id > 0)
    const all = await call<{ total: number }>('GET', `/v1/feeds/${feed_id}/entries`)
    assert.equal(all.total, 2)
    const found = await call<{ total: number; entries: { title: string }[] }>(
      'GET',
      `/v1/entries?search=${WORD}`,
    )
    assert.equal(found.total, 1)
    assert.equal(found.entries[0].title, 'Sandcastles at low tide')
  })
})
