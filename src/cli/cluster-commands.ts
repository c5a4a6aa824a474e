import type { Command } from 'commander'
import {
  CLUSTER_OPTIONS,
  type ClusterConfig,
  down,
  formatStatus,
  loadClusterConfig,
  runClusterGateway,
  runInstancePooler,
  status,
  up,
} from '../cluster/index.ts'
import { createLogger } from '../log.ts'

/** Adds the cluster's options (flags > TIDEPOOL_* > --config YAML > defaults) to a command. */
function withClusterOptions(command: Command): Command {
  command.option('--config <file>', 'YAML file of options (kebab-case keys)')
  for (const option of Object.values(CLUSTER_OPTIONS)) {
    command.option(`${option.flag} <value>`, `default ${option.default} (env ${option.env})`)
  }
  return command
}

function configFrom(options: Record<string, string | undefined>): ClusterConfig {
  const { config: file, ...flags } = options
  return loadClusterConfig({ flags, env: process.env, file: file ?? process.env.TIDEPOOL_CONFIG })
}

/**
 * Adds `tidepool up`, `down` and `status`, and the component processes `up` starts
 * (`instance-pooler`, `cluster-gateway`), which are not for typing.
 */
export function addClusterCommands(program: Command): void {
  withClusterOptions(
    program
      .command('up')
      .description('create (first time) and start a primary, 2 replicas, their poolers and a gateway'),
  ).action(async (options: Record<string, string | undefined>) => {
    const config = configFrom(options)
    const log = createLogger(config.logLevel)
    const result = await up(config, log)
    process.stdout.write(
      `${result.created ? 'Created and started' : 'Started'} the Tidepool cluster in ${config.dir}\n` +
        `  read-write: ${result.url}\n` +
        `  read-only:  ${result.replicaUrl}\n` +
        `  psql '${result.url}'\n` +
        `The password of ${config.user} is ${result.password} (also in ${config.dir}/password).\n` +
        'tidepool status shows the components; tidepool down stops them.\n',
    )
  })
  withClusterOptions(
    program.command('down').description('stop every component of the cluster; the data stays'),
  ).action(async (options: Record<string, string | undefined>) => {
    const config = configFrom(options)
    const stopped = await down(config, createLogger(config.logLevel))
    process.stdout.write(stopped.length === 0 ? 'nothing was running\n' : `stopped: ${stopped.join(', ')}\n`)
  })
  withClusterOptions(
    program.command('status').description('show every component with role, health, lag and pool use'),
  )
    .option('--json', 'print the topology records as JSON')
    .action(async (options: Record<string, string | undefined> & { json?: boolean }) => {
      const { json, ...rest } = options
      const snapshot = await status(configFrom(rest))
      process.stdout.write(json ? `${JSON.stringify(snapshot, null, 2)}\n` : formatStatus(snapshot))
    })
  withClusterOptions(program.command('instance-pooler', { hidden: true }))
    .requiredOption('--instance <name>', 'the instance this pooler runs')
    .action(async (options: Record<string, string | undefined>) => {
      const { instance, ...rest } = options
      const config = configFrom(rest)
      await runInstancePooler(config, instance!, createLogger(config.logLevel).child({ instance }))
      process.exit(0)
    })
  withClusterOptions(program.command('cluster-gateway', { hidden: true })).action(
    async (options: Record<string, string | undefined>) => {
      const config = configFrom(options)
      await runClusterGateway(config, createLogger(config.logLevel))
      process.exit(0)
    },
  )
}
