export * from './backend.ts'
export * from './constants.ts'
export * from './errors.ts'
export * from './framer.ts'
export * as frontend from './frontend.ts'
export * from './md5.ts'
export { keepsPipelinePromise } from './pipeline-promise.ts'
export * from './scram.ts'
export {
  customSettingNames,
  DO_BLOCK,
  isPipelineSafe,
  type ListenStatement,
  mayPin,
  mentionsExecute,
  mentionsPreparedStatementsView,
  mentionsSequenceFunction,
  mentionsSetConfig,
  type PreparedCommand,
  parseListen,
  parsePreparedCommand,
  userCodeCalls,
} from './sql-lexer.ts'
export * from './sqlstate.ts'
export * from './startup.ts'
export { type ExitStatement, type TransactionExit, transactionExit } from './transaction-exit.ts'
export * from './writer.ts'
