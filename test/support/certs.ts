/**
 * Throwaway certificates for TLS tests, made with the `openssl` CLI: a CA and a server
 * certificate it signed for `localhost` and 127.0.0.1, in a temp dir.
 *
 * @module
 */
import { execFile } from 'node:child_process'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'

const run = promisify(execFile)

/** Paths (and contents) of a test PKI. */
export interface TestCerts {
  dir: string
  /** The CA certificate clients trust. */
  caFile: string
  ca: string
  /** Server certificate (CN and SAN `localhost`, SAN IP 127.0.0.1) and its key. */
  certFile: string
  keyFile: string
  /** Another CA, which did not sign the server certificate. */
  otherCaFile: string
  otherCa: string
  /** Removes the directory. */
  remove(): Promise<void>
}

async function openssl(args: string[], cwd: string): Promise<void> {
  await run('openssl', args, { cwd, timeout: 30_000 })
}

/** A self-signed CA certificate `<name>.pem` with key `<name>.key`. */
async function makeCa(dir: string, name: string, subject: string): Promise<void> {
  await openssl(
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-keyout',
      `${name}.key`,
      '-out',
      `${name}.pem`,
      '-days',
      '2',
      '-subj',
      subject,
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
    ],
    dir,
  )
}

/** Generates a CA, a server certificate it signs, and an unrelated second CA. */
export async function makeTestCerts(): Promise<TestCerts> {
  const dir = await mkdtemp(join(tmpdir(), 'tidepool-certs-'))
  try {
    await makeCa(dir, 'ca', '/CN=Tidepool Test CA')
    await makeCa(dir, 'other-ca', '/CN=Some Other CA')
    await openssl(
      [
        'req',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
        '-keyout',
        'server.key',
        '-out',
        'server.csr',
        '-subj',
        '/CN=localhost',
      ],
      dir,
    )
    await writeFile(
      join(dir, 'server.ext'),
      [
        'basicConstraints=CA:FALSE',
        'keyUsage=critical,digitalSignature,keyEncipherment',
        'extendedKeyUsage=serverAuth',
        'subjectAltName=DNS:localhost,IP:127.0.0.1',
        '',
      ].join('\n'),
    )
    await openssl(
      [
        'x509',
        '-req',
        '-in',
        'server.csr',
        '-CA',
        'ca.pem',
        '-CAkey',
        'ca.key',
        '-CAcreateserial',
        '-out',
        'server.pem',
        '-days',
        '2',
        '-extfile',
        'server.ext',
      ],
      dir,
    )
    return {
      dir,
      caFile: join(dir, 'ca.pem'),
      ca: await readFile(join(dir, 'ca.pem'), 'utf8'),
      certFile: join(dir, 'server.pem'),
      keyFile: join(dir, 'server.key'),
      otherCaFile: join(dir, 'other-ca.pem'),
      otherCa: await readFile(join(dir, 'other-ca.pem'), 'utf8'),
      remove: () => rm(dir, { recursive: true, force: true }),
    }
  } catch (error) {
    await rm(dir, { recursive: true, force: true })
    throw error
  }
}
