import type { Logger } from '../log.ts'
import { Backend, frontend } from '../protocol/index.ts'
import { type BackendConn, type BackendReceiver, errorFromFrame } from './backend.ts'

/** A session that wants the NotificationResponse frames of some channels. */
export interface NotificationListener {
  /** A complete NotificationResponse frame (a copy: it may be kept). */
  onNotification(frame: Buffer): void
}

/** Quotes a channel name as an SQL identifier. */
function quoteIdentifier(name: string): string {
  return `"${name.replaceAll('"', '""')}"`
}

/**
 * One listening connection per database: channels are reference-counted across the
 * sessions that LISTEN to them, so pooled backends never listen themselves (a pooled
 * backend would receive notifications meant for whichever session held it last).
 */
export class NotificationHub implements BackendReceiver {
  private readonly connect: () => Promise<BackendConn>
  private readonly log: Logger
  private readonly channels = new Map<string, Set<NotificationListener>>()
  private conn: Promise<BackendConn> | null = null
  /** LISTEN/UNLISTEN commands run one at a time; each waits for its ReadyForQuery. */
  private queue: Promise<unknown> = Promise.resolve()
  private inFlight: { resolve: () => void; reject: (error: Error) => void } | null = null

  constructor(connect: () => Promise<BackendConn>, log: Logger) {
    this.connect = connect
    this.log = log
  }

  /** Subscribes `listener`; resolves once the hub is listening on `channel`. */
  listen(channel: string, listener: NotificationListener): Promise<void> {
    let listeners = this.channels.get(channel)
    if (listeners === undefined) {
      listeners = new Set()
      this.channels.set(channel, listeners)
    }
    const first = listeners.size === 0
    listeners.add(listener)
    return first ? this.command(`LISTEN ${quoteIdentifier(channel)}`) : this.queue.then(() => {})
  }

  /** Unsubscribes `listener` from `channel`; the hub stops listening when no one is left. */
  unlisten(channel: string, listener: NotificationListener): Promise<void> {
    const listeners = this.channels.get(channel)
    if (listeners === undefined || !listeners.delete(listener)) return Promise.resolve()
    if (listeners.size > 0) return Promise.resolve()
    this.channels.delete(channel)
    return this.command(`UNLISTEN ${quoteIdentifier(channel)}`)
  }

  /** Unsubscribes `listener` from every channel (UNLISTEN *, or the session ended). */
  unlistenAll(listener: NotificationListener, channels: Iterable<string>): Promise<void> {
    return Promise.all([...channels].map((channel) => this.unlisten(channel, listener))).then(() => {})
  }

  close(): void {
    const conn = this.conn
    this.conn = null
    conn?.then((c) => c.destroy()).catch(() => {})
  }

  onBackendMessage(type: number, frame: Buffer): void {
    switch (type) {
      case Backend.NotificationResponse: {
        const channelEnd = frame.indexOf(0, 9)
        const channel = frame.toString('utf8', 9, channelEnd)
        const listeners = this.channels.get(channel)
        if (listeners === undefined) return
        // The frame is a view of a shared read buffer: every session gets a copy it may keep.
        const copy = Buffer.from(frame)
        for (const listener of listeners) listener.onNotification(copy)
        return
      }
      case Backend.ErrorResponse: {
        const inFlight = this.inFlight
        this.inFlight = null
        inFlight?.reject(errorFromFrame(frame))
        return
      }
      case Backend.ReadyForQuery: {
        const inFlight = this.inFlight
        this.inFlight = null
        inFlight?.resolve()
        return
      }
    }
  }

  onBackendMessagePart(): void {}

  onBackendFlush(): void {}

  onBackendClosed(error: Error): void {
    this.log.warn({ err: error.message }, 'notification listener connection lost; listening again')
    this.conn = null
    this.inFlight?.reject(error)
    this.inFlight = null
    // Notifications sent while no connection listened are lost, as after a server restart.
    for (const channel of this.channels.keys())
      void this.command(`LISTEN ${quoteIdentifier(channel)}`).catch(() => {})
  }

  private command(sql: string): Promise<void> {
    const run = this.queue.then(async () => {
      const conn = await this.connection()
      await new Promise<void>((resolve, reject) => {
        this.inFlight = { resolve, reject }
        conn.write(frontend.query(sql))
      })
    })
    this.queue = run.catch(() => {})
    return run
  }

  private connection(): Promise<BackendConn> {
    if (this.conn === null) {
      const login = this.connect().then((conn) => {
        conn.state = 'leased'
        conn.receiver = this
        return conn
      })
      login.catch(() => {
        if (this.conn === login) this.conn = null
      })
      this.conn = login
    }
    return this.conn
  }
}
