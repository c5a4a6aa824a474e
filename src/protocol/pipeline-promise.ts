import { Backend, TxStatus } from './constants.ts'

/**
 * Whether a reply is one a batch released early may send (see isPipelineSafe): the
 * lexer promised one harmless statement leaving the backend idle, so any command tag
 * but those of SELECT, INSERT, UPDATE and DELETE (a SET, a BEGIN, a CREATE …), any
 * ParameterStatus, a COPY, or a ReadyForQuery not idle means it judged wrong, and the
 * backend must not be handed on as it is. Cheap: one switch per reply.
 */
export function keepsPipelinePromise(type: number, frame: Buffer): boolean {
  switch (type) {
    case Backend.DataRow:
    case Backend.RowDescription:
      return true
    case Backend.CommandComplete:
      return isPlainDmlTag(frame)
    case Backend.ReadyForQuery:
      return frame[5] === TxStatus.Idle
    case Backend.ParameterStatus:
    case Backend.CopyInResponse:
    case Backend.CopyOutResponse:
    case Backend.CopyBothResponse:
      return false
    default:
      return true
  }
}

/** `SELECT n`, `INSERT 0 n`, `UPDATE n`, `DELETE n` (a CommandComplete frame). */
function isPlainDmlTag(frame: Buffer): boolean {
  const first = frame[5]
  const word =
    first === 0x53
      ? 'SELECT '
      : first === 0x49
        ? 'INSERT '
        : first === 0x55
          ? 'UPDATE '
          : first === 0x44
            ? 'DELETE '
            : null
  if (word === null || frame.length < 5 + word.length + 1) return false
  return frame.toString('latin1', 5, 5 + word.length) === word
}
