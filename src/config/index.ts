/**
 * Gateway configuration: parse, merge (flags > TIDEPOOL_* env > YAML file > defaults)
 * and validate into a {@link GatewayConfig}.
 */
export { DURATION_EXPECTED, parseDuration } from './duration.ts'
export { ConfigError, InvalidValueError } from './errors.ts'
export { type LoadGatewayConfigInput, loadGatewayConfig } from './load.ts'
export {
  AUTH_METHODS,
  type AuthMethod,
  GATEWAY_OPTIONS,
  type GatewayConfig,
  gatewayConfigSchema,
  type LinkAddress,
  LOG_LEVELS,
  type LogLevel,
  MAX_TIMER_MS,
  type OptionKey,
  type OptionSpec,
  optionEnvVar,
  optionFlag,
  parseLinkAddress,
  rawGatewayConfigSchema,
} from './schema.ts'
export { parseUpstreamUrl, redactUpstreamUrl, type UpstreamConfig } from './upstream.ts'
