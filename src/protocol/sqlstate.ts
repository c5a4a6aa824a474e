/**
 * The SQLSTATE codes Tidepool itself emits, named after PostgreSQL's condition names
 * (src/backend/utils/errcodes.txt). Tests and metrics match on these, never on text.
 */
export const SqlState = {
  ProtocolViolation: '08P01', // protocol_violation
  ConnectionFailure: '08006', // connection_failure
  ConnectionException: '08000', // connection_exception
  InvalidAuthorizationSpecification: '28000', // invalid_authorization_specification
  InvalidPassword: '28P01', // invalid_password
  InvalidCatalogName: '3D000', // invalid_catalog_name
  FeatureNotSupported: '0A000', // feature_not_supported
  TooManyConnections: '53300', // too_many_connections
  ProgramLimitExceeded: '54000', // program_limit_exceeded
  QueryCanceled: '57014', // query_canceled
  AdminShutdown: '57P01', // admin_shutdown
  CannotConnectNow: '57P03', // cannot_connect_now
  IdleSessionTimeout: '57P05', // idle_session_timeout
  DuplicatePreparedStatement: '42P05', // duplicate_prepared_statement
  InvalidSqlStatementName: '26000', // invalid_sql_statement_name
  InFailedSqlTransaction: '25P02', // in_failed_sql_transaction
  InternalError: 'XX000', // internal_error
} as const

export type SqlStateCode = (typeof SqlState)[keyof typeof SqlState]
