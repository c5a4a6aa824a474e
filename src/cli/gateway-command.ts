import { type Command, Option } from 'commander'
import {
  GATEWAY_OPTIONS,
  type GatewayConfig,
  loadGatewayConfig,
  type OptionKey,
  type OptionSpec,
  optionEnvVar,
} from '../config/index.ts'
import { createLogger, type Logger } from '../log.ts'

/** What `src/gateway/index.ts` exports; spelled out here so a signature drift fails type checking. */
type StartGateway = (config: GatewayConfig, logger: Logger) => Promise<{ close(): Promise<void> }>

/**
 * Adds `tidepool gateway` to `program`. Option values are handed to the config loader
 * unparsed and without commander defaults: a commander default would count as a flag
 * and hide the env and file layers beneath it.
 *
 * @throws ConfigError from the action when the configuration is unusable.
 */
export function addGatewayCommand(program: Command): Command {
  const command = program
    .command('gateway')
    .description('accept Postgres clients and pool their sessions onto the upstream Postgres')
    .option('-c, --config <file>', `YAML file of options (kebab-case keys) [env: TIDEPOOL_CONFIG]`)
  addGatewayOptions(command, Object.keys(GATEWAY_OPTIONS) as OptionKey[])
  return command.action(async (options: Record<string, unknown>) => {
    const { config: file, ...flags } = options
    const config = loadGatewayConfig({ file: file as string | undefined, flags, env: process.env })
    await runGateway(config, createLogger(config.logLevel))
  })
}

/** Adds the flags of `keys` to `command`, described as in the docs, without commander defaults. */
export function addGatewayOptions(command: Command, keys: readonly OptionKey[]): void {
  for (const key of keys) {
    const spec: OptionSpec = GATEWAY_OPTIONS[key]
    const byDefault = spec.defaultValue === null ? '' : ` (default: ${spec.defaultValue})`
    command.addOption(
      new Option(
        `--${spec.name} <${spec.valueName}>`,
        `${spec.description}${byDefault} [env: ${optionEnvVar(key)}]`,
      ),
    )
  }
}

async function runGateway(config: GatewayConfig, logger: Logger): Promise<void> {
  // Loaded lazily so that `--help` and config errors never pay for (or trip over) the gateway's imports.
  const { startGateway }: { startGateway: StartGateway } = await import('../gateway/index.ts')
  let gateway: { close(): Promise<void> }
  try {
    gateway = await startGateway(config, logger)
  } catch (err) {
    logger.fatal({ err }, 'gateway failed to start')
    process.exit(1)
  }
  let closing = false
  const onSignal = (signal: NodeJS.Signals): void => {
    // A second signal means the operator will not wait for connections to drain.
    if (closing) {
      logger.warn({ signal }, 'second signal during shutdown; exiting now')
      process.exit(1)
    }
    closing = true
    logger.info({ signal }, 'shutting down')
    gateway.close().then(
      () => process.exit(0),
      (err: unknown) => {
        logger.error({ err }, 'shutdown failed')
        process.exit(1)
      },
    )
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
}
