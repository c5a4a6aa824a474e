/**
 * The `tidepool` command. Thin by design: parse arguments, hand off to a subcommand,
 * and turn failures into exit codes (2 for usage and configuration errors).
 */
import { Command, CommanderError } from 'commander'
import pkg from '../../package.json' with { type: 'json' }
import { ConfigError } from '../config/index.ts'
import { addClusterCommands } from './cluster-commands.ts'
import { addGatewayCommand } from './gateway-command.ts'
import { addPoolerCommand } from './pooler-command.ts'
import { addSandboxCommand } from './sandbox-command.ts'

/** Exit status for a bad command line or configuration (the usual "usage error"). */
const EXIT_USAGE = 2

const program = new Command('tidepool')
  .description(pkg.description)
  .version(pkg.version)
  // Throw instead of exiting so that every failure leaves through the catch below.
  .exitOverride()
  .configureOutput({ outputError: (text, write) => write(`tidepool: ${text.replace(/^error: /, '')}`) })
  .showHelpAfterError('(add --help for usage)')
addClusterCommands(program)
addGatewayCommand(program)
addPoolerCommand(program)
addSandboxCommand(program)

try {
  await program.parseAsync(process.argv)
} catch (err) {
  process.exitCode = report(err)
}

function report(err: unknown): number {
  if (err instanceof CommanderError) {
    // commander has already printed the message (or the help/version text).
    return err.exitCode === 0 ? 0 : EXIT_USAGE
  }
  if (err instanceof ConfigError) {
    for (const line of err.problems) process.stderr.write(`tidepool: ${line}\n`)
    return EXIT_USAGE
  }
  // Anything else is a bug: keep the stack.
  process.stderr.write(`tidepool: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`)
  return 1
}
