import { InvalidValueError } from './errors.ts'

/**
 * Where the gateway's Postgres is and whom to log in as, from a libpq-style URL.
 * Exactly one of `host` (TCP) and `socketDir` (Unix socket `socketDir/.s.PGSQL.<port>`)
 * is set. `port` is always set: it names the socket file too.
 */
export interface UpstreamConfig {
  host?: string
  port: number
  socketDir?: string
  user?: string
  password?: string
  database?: string
}

/** libpq's default, applied only when the URL names no port. */
const DEFAULT_PORT = 5432
const SCHEMES = ['postgresql://', 'postgres://']
// The libpq connection parameters that map onto UpstreamConfig. Anything else (sslmode,
// application_name, …) is rejected rather than silently ignored: an operator who writes
// sslmode=require must not get a plaintext connection without being told.
const QUERY_KEYS = ['host', 'port', 'user', 'password', 'dbname'] as const
type QueryKey = (typeof QUERY_KEYS)[number]

/**
 * Parses `postgresql://[user[:password]@][host][:port][/dbname][?param=value&…]`
 * (or `postgres://`) following libpq's URI rules
 * (https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-CONNSTRING-URIS):
 * components are percent-decoded; a host starting with `/` is a Unix-socket directory,
 * given either percent-encoded in the host part (`postgresql://%2Ftmp/db`) or as
 * `?host=/tmp`; query parameters `host`, `port`, `user`, `password`, `dbname` override
 * the URI parts. IPv6 hosts go in brackets. The port defaults to 5432 only when omitted.
 *
 * Unlike libpq there is no fallback to a compiled-in socket directory or to environment
 * variables: a gateway must say where its Postgres is. Multiple hosts are not supported.
 *
 * @throws InvalidValueError with the password redacted from the displayed URL.
 */
export function parseUpstreamUrl(url: string): UpstreamConfig {
  const fail = (reason: string): never => {
    throw new InvalidValueError('upstream URL', redactUpstreamUrl(url), reason)
  }
  const scheme = SCHEMES.find((s) => url.toLowerCase().startsWith(s))
  if (scheme === undefined) return fail('expected a postgresql:// or postgres:// URL')
  const decode = (text: string, part: string): string => {
    try {
      return decodeURIComponent(text)
    } catch {
      return fail(`malformed percent-encoding in ${part}`)
    }
  }

  const { authority, path, query } = splitUrl(url.slice(scheme.length))
  const at = authority.lastIndexOf('@')
  const hostPort = authority.slice(at + 1)
  let user: string | undefined
  let password: string | undefined
  if (at >= 0) {
    const userInfo = authority.slice(0, at)
    const colon = userInfo.indexOf(':')
    user = decode(colon >= 0 ? userInfo.slice(0, colon) : userInfo, 'user')
    if (colon >= 0) password = decode(userInfo.slice(colon + 1), 'password')
  }
  let { host, port } = splitHostPort(hostPort, fail)
  if (host !== undefined) host = decode(host, 'host')
  let database = path === '' ? undefined : decode(path, 'database name')

  for (const [key, value] of parseQuery(query, decode, fail)) {
    if (value === '') continue // libpq treats an empty value as "not given"
    if (key === 'host') host = value
    else if (key === 'port') port = value
    else if (key === 'user') user = value
    else if (key === 'password') password = value
    else database = value
  }

  const result: UpstreamConfig = { port: parsePort(port, fail) }
  if (host === undefined || host === '') {
    return fail('no host: give host[:port] or a Unix-socket directory such as ?host=/var/run/postgresql')
  }
  if (host.includes(',')) return fail('multiple hosts are not supported')
  if (host.startsWith('/')) result.socketDir = host
  else result.host = host
  if (user !== undefined && user !== '') result.user = user
  if (password !== undefined) result.password = password
  if (database !== undefined) result.database = database
  return result
}

/**
 * Returns the URL with any password replaced by `***`, for error messages and logs.
 * Works on malformed input too, since that is when it is needed.
 */
export function redactUpstreamUrl(url: string): string {
  const schemeEnd = url.indexOf('://')
  if (schemeEnd < 0) return url
  const start = schemeEnd + 3
  const { authority } = splitUrl(url.slice(start))
  const at = authority.lastIndexOf('@')
  const colon = authority.indexOf(':')
  let out = url
  if (at >= 0 && colon >= 0 && colon < at) {
    out = `${url.slice(0, start + colon + 1)}***${url.slice(start + at)}`
  }
  return out.replace(/([?&]password=)[^&]*/gi, '$1***')
}

function splitUrl(rest: string): { authority: string; path: string; query: string } {
  const q = rest.indexOf('?')
  const query = q >= 0 ? rest.slice(q + 1) : ''
  const beforeQuery = q >= 0 ? rest.slice(0, q) : rest
  const slash = beforeQuery.indexOf('/')
  if (slash < 0) return { authority: beforeQuery, path: '', query }
  return { authority: beforeQuery.slice(0, slash), path: beforeQuery.slice(slash + 1), query }
}

function splitHostPort(
  hostPort: string,
  fail: (reason: string) => never,
): { host: string | undefined; port: string | undefined } {
  if (hostPort === '') return { host: undefined, port: undefined }
  if (hostPort.startsWith('[')) {
    const close = hostPort.indexOf(']')
    if (close < 0) return fail('unterminated [ in IPv6 host')
    const after = hostPort.slice(close + 1)
    if (after !== '' && !after.startsWith(':')) return fail('expected :port after ]')
    return { host: hostPort.slice(1, close), port: after === '' ? undefined : after.slice(1) }
  }
  const colon = hostPort.indexOf(':')
  if (colon < 0) return { host: hostPort, port: undefined }
  return { host: hostPort.slice(0, colon), port: hostPort.slice(colon + 1) }
}

function parsePort(port: string | undefined, fail: (reason: string) => never): number {
  if (port === undefined || port === '') return DEFAULT_PORT
  const n = /^\d{1,5}$/.test(port) ? Number(port) : Number.NaN
  if (!(n >= 1 && n <= 65535)) return fail(`port ${JSON.stringify(port)} is not a number from 1 to 65535`)
  return n
}

function parseQuery(
  query: string,
  decode: (text: string, part: string) => string,
  fail: (reason: string) => never,
): Array<[QueryKey, string]> {
  const pairs: Array<[QueryKey, string]> = []
  // Split by hand: URLSearchParams would turn '+' into a space, which libpq does not.
  for (const pair of query.split('&')) {
    if (pair === '') continue
    const eq = pair.indexOf('=')
    if (eq < 0) return fail(`query parameter ${JSON.stringify(pair)} has no value`)
    const key = decode(pair.slice(0, eq), 'query parameter name')
    if (!(QUERY_KEYS as readonly string[]).includes(key)) {
      return fail(`unsupported parameter ${JSON.stringify(key)} (supported: ${QUERY_KEYS.join(', ')})`)
    }
    pairs.push([key as QueryKey, decode(pair.slice(eq + 1), key)])
  }
  return pairs
}
