import { type DestinationStream, type Level, type Logger as PinoLogger, pino } from 'pino'

/** The process-wide structured logger (pino). Components take it as a parameter and make `child()` loggers. */
export type Logger = PinoLogger

/**
 * Creates the logger: one JSON object per line on stderr, leaving stdout free for
 * command output. The destination is synchronous so that the last lines before
 * `process.exit()` (a fatal startup error, a shutdown) are never lost; gateway code
 * logs per connection event, not per message, so the blocking write stays off the hot path.
 *
 * @param level - minimum level written
 * @param destination - where lines go instead of stderr (tests)
 */
export function createLogger(level: Level, destination?: DestinationStream): Logger {
  return pino(
    { name: 'tidepool', level, timestamp: pino.stdTimeFunctions.isoTime },
    destination ?? pino.destination({ dest: 2, sync: true }),
  )
}
