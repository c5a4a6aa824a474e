import { type Command, Option } from 'commander'
import { ConfigError, loadGatewayConfig, type OptionKey, parseLinkAddress } from '../config/index.ts'
import { createLogger } from '../log.ts'
import { addGatewayOptions } from './gateway-command.ts'

/** The gateway options that concern the pools, which a pooler process takes as they are. */
const POOL_OPTIONS: readonly OptionKey[] = [
  'upstream',
  'poolSize',
  'minPoolSize',
  'idleTimeout',
  'maxLifetime',
  'waitTimeout',
  'pipelineDepth',
  'authCacheTtl',
  'logLevel',
]

/**
 * Adds `tidepool pooler`: a process that owns the backend connections to one Postgres and
 * serves them over the lease link to gateways started with `--pooler`, so that several
 * gateway processes share one set of backends.
 */
export function addPoolerCommand(program: Command): Command {
  const command = program
    .command('pooler')
    .description('own the backend connections to one Postgres and lease them to gateways (gateway --pooler)')
    .addOption(
      new Option(
        '--link <path|host:port>',
        'where gateways reach this pooler: an absolute Unix socket path, or host:port',
      )
        .env('TIDEPOOL_LINK')
        .makeOptionMandatory(),
    )
    .option('-c, --config <file>', 'YAML file of options (kebab-case keys) [env: TIDEPOOL_CONFIG]')
  addGatewayOptions(command, POOL_OPTIONS)
  return command.action(async (options: Record<string, unknown>) => {
    const { config: file, link, ...flags } = options
    const address = parseLinkAddress(String(link))
    const problems =
      address === null
        ? [`invalid --link ${JSON.stringify(link)}: expected an absolute Unix socket path or host:port`]
        : []
    const config = loadGatewayConfig({ file: file as string | undefined, flags, env: process.env })
    if (config.upstream === null) problems.push('missing --upstream: the Postgres this pooler serves')
    if (problems.length > 0) throw new ConfigError(problems)
    const log = createLogger(config.logLevel)
    // Loaded lazily, as the gateway is: --help and config errors need none of it.
    const { Pooler } = await import('../pooler/index.ts')
    const { serveLeaseLink } = await import('../link/index.ts')
    const pooler = new Pooler(
      { upstream: config.upstream!, pool: config.pool, authCacheTtlMs: config.auth.cacheTtlMs },
      log,
    )
    let server: Awaited<ReturnType<typeof serveLeaseLink>>
    try {
      server = await serveLeaseLink(pooler, address!, log)
    } catch (err) {
      log.fatal({ err }, 'pooler failed to start')
      process.exit(1)
    }
    await new Promise<void>((resolve) => {
      process.once('SIGTERM', resolve)
      process.once('SIGINT', resolve)
    })
    log.info('shutting down')
    await server.close()
    await pooler.close()
    process.exit(0)
  })
}
