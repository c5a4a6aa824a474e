import { PgError, type Severity, SqlState } from '../protocol/index.ts'
import type { LinkError } from './frames.ts'

/** An error as it crosses the link, keeping what the gateway decides on (SQLSTATE, errno code). */
export function toLinkError(error: Error): LinkError {
  if (error instanceof PgError) {
    return {
      message: error.message,
      code: error.code,
      pg: true,
      severity: error.severity,
      detail: error.detail,
      hint: error.hint,
    }
  }
  return { message: error.message, code: (error as NodeJS.ErrnoException).code }
}

/** The error a LinkError stands for: a PgError, or an Error with the errno code it had. */
export function fromLinkError(error: LinkError): Error {
  if (error.pg === true) {
    return new PgError(error.code ?? SqlState.InternalError, error.message, {
      severity: error.severity as Severity | undefined,
      detail: error.detail,
      hint: error.hint,
    })
  }
  return Object.assign(new Error(error.message), { code: error.code })
}
