import { access } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import type { Command } from 'commander'
import { loadGatewayConfig } from '../config/index.ts'
import { createLogger } from '../log.ts'
import { initdb, prepareServiceDir, start } from '../pgctl/index.ts'

/**
 * Port the sandbox Postgres uses. It listens on no TCP address (listen_addresses is
 * empty), so the number only names its Unix socket in the sandbox's private directory.
 */
const SANDBOX_PG_PORT = 15433

/**
 * Adds `tidepool sandbox`: a private Postgres, created on first use in one directory,
 * with a gateway in front of it. The fastest way to try Tidepool on a machine that has
 * the PostgreSQL server binaries and nothing else.
 */
export function addSandboxCommand(program: Command): Command {
  return program
    .command('sandbox')
    .description('run a private Postgres (created on first use) with a gateway in front of it')
    .option('--dir <dir>', 'where the sandbox keeps its Postgres', './tidepool-sandbox')
    .option('--listen <host:port>', 'TCP address of the gateway', '127.0.0.1:15432')
    .option('--pool-size <n>', 'most backend connections', '20')
    .option('--log-level <level>', 'fatal, error, warn, info, debug or trace', 'info')
    .action(async (options: { dir: string; listen: string; poolSize: string; logLevel: string }) => {
      const dir = resolve(options.dir)
      const dataDir = join(dir, 'data')
      const socketDir = join(dir, 'run')
      // Validate the gateway's options before touching the disk.
      const config = loadGatewayConfig({
        flags: {
          listen: options.listen,
          upstream: `postgresql://postgres@/postgres?host=${encodeURIComponent(socketDir)}&port=${SANDBOX_PG_PORT}`,
          poolSize: options.poolSize,
          auth: 'trust',
          logLevel: options.logLevel,
        },
        env: {},
      })
      const log = createLogger(config.logLevel)
      // The service user Postgres runs as must be able to reach its directories.
      await prepareServiceDir(dir, 0o711)
      if (!(await exists(join(dataDir, 'PG_VERSION')))) {
        log.info({ dataDir }, 'creating the sandbox Postgres (initdb)')
        await initdb({ dataDir, superuser: 'postgres', authLocal: 'trust', authHost: 'scram-sha-256' })
      }
      const postgres = await start({ dataDir, port: SANDBOX_PG_PORT, listenAddresses: '', socketDir })
      const { startGateway } = await import('../gateway/index.ts')
      let gateway: Awaited<ReturnType<typeof startGateway>>
      try {
        gateway = await startGateway(config, log)
      } catch (error) {
        await postgres.stop()
        throw error
      }
      process.stdout.write(
        `Tidepool gateway on ${config.listen.host}:${gateway.port}, in front of the sandbox Postgres in ${dir}\n` +
          `  psql -h ${config.listen.host} -p ${gateway.port} -U postgres postgres\n` +
          'Ctrl-C stops both.\n',
      )
      let stopping = false
      const shutdown = async (code: number) => {
        if (stopping) return
        stopping = true
        await gateway.close()
        await postgres.stop()
        process.exit(code)
      }
      postgres.exited.then(() => {
        if (!stopping) {
          log.error({ logFile: postgres.logFile }, 'the sandbox Postgres exited')
          void shutdown(1)
        }
      })
      process.on('SIGINT', () => void shutdown(0))
      process.on('SIGTERM', () => void shutdown(0))
    })
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path)
    return true
  } catch {
    return false
  }
}
