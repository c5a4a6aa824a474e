/**
 * `tidepool sandbox`, the README's first command: the real CLI in a child process
 * creates a private Postgres, serves it through a gateway, stops cleanly on SIGINT,
 * and reuses its data when started again.
 */
import assert from 'node:assert/strict'
import { type ChildProcess, spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { chmod, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, test } from 'node:test'
import { fileURLToPath } from 'node:url'
import pg from 'pg'
import { freePort } from '../support/ports.ts'

const CLI = fileURLToPath(new URL('../../bin/tidepool.js', import.meta.url))

/** Starts the sandbox and resolves with the gateway port once it prints where it listens. */
function startSandbox(dir: string, port: number): Promise<{ child: ChildProcess; output: () => string }> {
  const child = spawn(
    process.execPath,
    [CLI, 'sandbox', '--dir', dir, '--listen', `127.0.0.1:${port}`, '--log-level', 'warn'],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  )
  let output = ''
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (output += chunk))
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (output += chunk))
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`sandbox did not start within 60 s:\n${output}`)), 60_000)
    const poll = setInterval(() => {
      if (output.includes('Ctrl-C stops both')) {
        clearInterval(poll)
        clearTimeout(timer)
        resolve({ child, output: () => output })
      }
    }, 50)
    child.on('exit', (code) => {
      clearInterval(poll)
      clearTimeout(timer)
      reject(new Error(`sandbox exited with ${code} before it was ready:\n${output}`))
    })
  })
}

function stopped(child: ChildProcess): Promise<number | null> {
  return new Promise((resolve) => {
    child.once('exit', (code) => resolve(code))
    child.kill('SIGINT')
  })
}

async function query(port: number, sql: string): Promise<unknown[]> {
  const client = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: 'postgres' })
  await client.connect()
  try {
    return (await client.query(sql)).rows
  } finally {
    await client.end()
  }
}

describe('tidepool sandbox', () => {
  let root: string | undefined

  after(async () => {
    if (root !== undefined) await rm(root, { recursive: true, force: true })
  })

  test('serves a private Postgres, stops cleanly and keeps its data', async () => {
    root = await mkdtemp(join(tmpdir(), 'tidepool-sandbox-'))
    // The Postgres service user must be able to reach the sandbox inside it.
    await chmod(root, 0o711)
    const dir = join(root, 'sandbox')
    const port = await freePort()

    const first = await startSandbox(dir, port)
    await query(port, 'CREATE TABLE kept (v text)')
    await query(port, "INSERT INTO kept VALUES ('survives a restart')")
    assert.equal(await stopped(first.child), 0, first.output())
    assert.equal(existsSync(join(dir, 'data', 'postmaster.pid')), false, 'Postgres is still running')

    const second = await startSandbox(dir, port)
    try {
      assert.deepEqual(await query(port, 'SELECT v FROM kept'), [{ v: 'survives a restart' }])
    } finally {
      assert.equal(await stopped(second.child), 0, second.output())
    }
  })
})
