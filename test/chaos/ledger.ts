/**
 * The writer processes of the chaos suite and the ledger of what they were told.
 *
 * Every writer (writer-node.ts, writer.py, writer-go) prints one tab-separated line per
 * event on stdout: `ack writer seq kind` once a write was acknowledged (its COMMIT, or
 * its autocommit INSERT, succeeded), `err writer seq step code message` when a step
 * failed (the write is then given up; its seq is never reused), `done name` when it
 * stopped after stdin closed. The ledger files each line under the phase the suite is
 * in (the fault just injected), so a lost or duplicated row can be traced to a fault.
 *
 * @module
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { createInterface } from 'node:readline'

/** One acknowledged write. */
export interface Ack {
  writer: string
  seq: number
  /** `tx`, `tx-long` (paused 200–800 ms inside), `auto` (autocommit INSERT) or `call` (chaos_write). */
  kind: string
  phase: string
}

/** One failed step of a write (or of a connection attempt, seq then the last one tried). */
export interface WriteError {
  writer: string
  seq: number
  step: string
  /** SQLSTATE, `conn` (no SQLSTATE: refused, reset, closed, timed out) or `not-committed`. */
  code: string
  message: string
  phase: string
}

export function key(writer: string, seq: number): string {
  return `${writer}\u0000${seq}`
}

/** Everything the writers reported, by phase. */
export class Ledger {
  phase = 'warm-up'
  readonly acks = new Map<string, Ack>()
  /** The last error reported for a (writer, seq): what its writer saw instead of an ack. */
  readonly failed = new Map<string, WriteError>()
  readonly errorsByCode = new Map<string, number>()
  /** The first message seen for each code, for the report. */
  readonly sampleByCode = new Map<string, string>()
  readonly errorsByPhase = new Map<string, Map<string, number>>()
  /** Lines that break the protocol: a writer acknowledging one seq twice, garbage. */
  readonly protocolProblems: string[] = []
  private readonly programAcks = new Map<string, number>()

  line(program: string, text: string): void {
    const fields = text.split('\t')
    if (fields[0] === 'ack' && fields.length === 4) {
      const ack: Ack = { writer: fields[1], seq: Number(fields[2]), kind: fields[3], phase: this.phase }
      const k = key(ack.writer, ack.seq)
      if (this.acks.has(k))
        this.protocolProblems.push(`${program}: acknowledged ${ack.writer}/${ack.seq} twice`)
      this.acks.set(k, ack)
      this.programAcks.set(program, (this.programAcks.get(program) ?? 0) + 1)
    } else if (fields[0] === 'err' && fields.length >= 6) {
      const error: WriteError = {
        writer: fields[1],
        seq: Number(fields[2]),
        step: fields[3],
        code: fields[4],
        message: fields.slice(5).join(' '),
        phase: this.phase,
      }
      if (error.step !== 'connect') this.failed.set(key(error.writer, error.seq), error)
      const code = error.step === 'connect' ? `connect:${error.code}` : error.code
      this.errorsByCode.set(code, (this.errorsByCode.get(code) ?? 0) + 1)
      if (!this.sampleByCode.has(code)) this.sampleByCode.set(code, `${error.step}: ${error.message}`)
      const byPhase = this.errorsByPhase.get(this.phase) ?? new Map<string, number>()
      byPhase.set(code, (byPhase.get(code) ?? 0) + 1)
      this.errorsByPhase.set(this.phase, byPhase)
    } else if (fields[0] !== 'done') {
      this.protocolProblems.push(`${program}: unexpected line ${JSON.stringify(text.slice(0, 200))}`)
    }
  }

  /** Acknowledged writes per writer program. */
  acksByProgram(): Record<string, number> {
    return Object.fromEntries(this.programAcks)
  }

  /** How many acks a program has had so far (to see it make progress after a fault). */
  ackCount(program: string): number {
    return this.programAcks.get(program) ?? 0
  }
}

/** A running writer program. */
export class WriterProcess {
  readonly name: string
  readonly child: ChildProcess
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  private stderrTail = ''
  /** Set when it had to be killed because it did not stop within the grace period. */
  killed = false

  constructor(name: string, file: string, args: string[], env: Record<string, string>, ledger: Ledger) {
    this.name = name
    this.child = spawn(file, args, {
      env: { PATH: '/usr/bin:/bin', LANG: 'C.UTF-8', ...env },
      stdio: ['pipe', 'pipe', 'pipe'],
    })
    this.exited = new Promise((resolve) => {
      this.child.on('close', (code, signal) => resolve({ code, signal }))
      this.child.on('error', () => resolve({ code: null, signal: null }))
    })
    createInterface({ input: this.child.stdout! }).on('line', (text) => ledger.line(name, text))
    this.child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
      this.stderrTail = (this.stderrTail + chunk).slice(-4000)
    })
    this.child.stdin!.on('error', () => {})
  }

  get stderr(): string {
    return this.stderrTail
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null
  }

  /** Closes its stdin, which tells it to finish the write in hand and stop; kills it after `graceMs`. */
  async stop(graceMs: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    this.child.stdin!.end()
    const timer = setTimeout(() => {
      if (this.running) {
        this.killed = true
        this.child.kill('SIGKILL')
      }
    }, graceMs)
    const result = await this.exited
    clearTimeout(timer)
    return result
  }
}
