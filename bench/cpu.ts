/**
 * How much CPU went to work that is not the benchmark's. On a shared 2-core machine
 * another process's load moves tps more than most code changes do, and the load
 * average cannot tell (500 pgbench backends count in it too). Linux only (/proc).
 *
 * @module
 */
import { readdir, readFile } from 'node:fs/promises'

/** Clock ticks per second of /proc times (USER_HZ; 100 on every Linux architecture Node runs on). */
const TICKS_PER_SECOND = 100

/** One sample of machine and benchmark CPU time, in ticks. */
export interface CpuSample {
  at: number
  /** Busy ticks of all CPUs (user, nice, system, irq, softirq, steal) from /proc/stat. */
  machineBusy: number
  /** This process and every live descendant, including the time of children they reaped. */
  ours: number
  /** Own ticks (utime + stime) of the watched processes, if given and all alive. */
  watched: number | null
}

/** CPU use between two samples, in cores (2.0 = both cores of this machine busy). */
export interface CpuUsage {
  /** Cores busy with anything. */
  machine: number
  /** Cores busy with this process tree (pgbench, Postgres, the poolers, this script). */
  bench: number
  /** Cores busy with other work on the machine: noise in the numbers. */
  foreign: number
  /** Cores used by the watched processes (the pooler under test), or null. */
  watched: number | null
}

interface ProcStat {
  ppid: number
  /** utime + stime + cutime + cstime. */
  ticks: number
  /** utime + stime. */
  own: number
}

async function procStat(pid: string): Promise<ProcStat | null> {
  try {
    const text = await readFile(`/proc/${pid}/stat`, 'utf8')
    // The command name (field 2) may hold spaces and parentheses: parse after the last ')'.
    const fields = text.slice(text.lastIndexOf(')') + 2).split(' ')
    // After comm: state(3) ppid(4) … utime(14) stime(15) cutime(16) cstime(17); fields[0] is field 3.
    const own = Number(fields[11]) + Number(fields[12])
    return { ppid: Number(fields[1]), ticks: own + Number(fields[13]) + Number(fields[14]), own }
  } catch {
    return null // exited while we looked
  }
}

async function machineBusyTicks(): Promise<number> {
  const text = await readFile('/proc/stat', 'utf8')
  const cpu = text.slice(0, text.indexOf('\n')).split(/\s+/).slice(1).map(Number)
  const [user, nice, system, , , irq, softirq, steal] = cpu
  return user + nice + system + irq + softirq + (steal ?? 0)
}

/**
 * Samples machine CPU, the CPU of this process tree and of `watchPids`. Null where
 * /proc is missing.
 */
export async function sampleCpu(watchPids?: readonly number[]): Promise<CpuSample | null> {
  try {
    const pids = (await readdir('/proc')).filter((name) => /^\d+$/.test(name))
    const stats = new Map<number, ProcStat>()
    await Promise.all(
      pids.map(async (pid) => {
        const stat = await procStat(pid)
        if (stat !== null) stats.set(Number(pid), stat)
      }),
    )
    const children = new Map<number, number[]>()
    for (const [pid, stat] of stats) {
      const list = children.get(stat.ppid)
      if (list === undefined) children.set(stat.ppid, [pid])
      else list.push(pid)
    }
    let ours = 0
    const stack = [process.pid]
    for (let pid = stack.pop(); pid !== undefined; pid = stack.pop()) {
      ours += stats.get(pid)?.ticks ?? 0
      stack.push(...(children.get(pid) ?? []))
    }
    let watched: number | null = watchPids === undefined ? null : 0
    for (const pid of watchPids ?? []) {
      const own = stats.get(pid)?.own
      watched = own === undefined || watched === null ? null : watched + own
    }
    return { at: performance.now(), machineBusy: await machineBusyTicks(), ours, watched }
  } catch {
    return null
  }
}

/** CPU use between two samples, in cores. */
export function cpuBetween(before: CpuSample | null, after: CpuSample | null): CpuUsage | null {
  if (before === null || after === null) return null
  const seconds = (after.at - before.at) / 1000
  if (seconds <= 0) return null
  const machine = (after.machineBusy - before.machineBusy) / TICKS_PER_SECOND / seconds
  const bench = (after.ours - before.ours) / TICKS_PER_SECOND / seconds
  const watched =
    before.watched === null || after.watched === null
      ? null
      : (after.watched - before.watched) / TICKS_PER_SECOND / seconds
  return { machine, bench, foreign: Math.max(0, machine - bench), watched }
}
