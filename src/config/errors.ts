/**
 * Errors raised while reading gateway configuration. Both carry text meant for an
 * operator's terminal: the CLI prints `message` as is, without a stack trace.
 */

/**
 * One value failed to parse. `reason` reads well after a colon (`expected host:port`),
 * so the loader can prefix it with the option name and where the value came from.
 */
export class InvalidValueError extends Error {
  /** Why the value was rejected, without the value itself. */
  readonly reason: string

  /**
   * @param what - what was being parsed, e.g. `duration`
   * @param shown - the offending value as it may be displayed (secrets already redacted)
   * @param reason - why it was rejected
   */
  constructor(what: string, shown: string, reason: string) {
    super(`invalid ${what} ${JSON.stringify(shown)}: ${reason}`)
    this.name = 'InvalidValueError'
    this.reason = reason
  }
}

/**
 * The configuration as a whole is unusable. `message` has one line per problem, each
 * naming the option and the bad value, so every mistake is reported in one run.
 */
export class ConfigError extends Error {
  /** The individual problems, one line each; `message` is these joined by newlines. */
  readonly problems: readonly string[]

  constructor(problems: readonly string[]) {
    super(problems.join('\n'))
    this.name = 'ConfigError'
    this.problems = problems
  }
}
