/**
 * Collects errors thrown out of callbacks (socket handlers, promise chains) while an
 * in-process gateway runs. In a real gateway process any of these is a crash; under
 * node:test they may be attributed to a finished hook and go unnoticed, so tests
 * check the list explicitly.
 *
 * @module
 */

/** A running collection; call `stop()` in `after`. */
export interface UncaughtTracker {
  /** Errors collected since the last call, emptied. */
  take(): unknown[]
  stop(): void
}

export function trackUncaught(): UncaughtTracker {
  const errors: unknown[] = []
  const record = (error: unknown): void => {
    errors.push(error)
  }
  process.on('uncaughtException', record)
  process.on('unhandledRejection', record)
  return {
    take: () => errors.splice(0),
    stop() {
      process.off('uncaughtException', record)
      process.off('unhandledRejection', record)
    },
  }
}

/** Describes collected errors for an assertion message. */
export function describeErrors(errors: readonly unknown[]): string[] {
  return errors.map((error) => (error instanceof Error ? `${error.name}: ${error.message}` : String(error)))
}
