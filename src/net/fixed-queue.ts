/**
 * FIFO queue on a growable ring buffer: O(1) push and shift, no Array.prototype.shift
 * (which is O(n) once V8 leaves its fast path). Removal from the middle marks a hole
 * that shift() skips, so a cancelled waiter costs nothing extra.
 */
export class FixedQueue<T> {
  private items: (T | undefined)[] = new Array(16)
  private head = 0
  private tail = 0
  private count = 0

  /** Number of live items (holes excluded). */
  get length(): number {
    return this.count
  }

  push(item: T): void {
    if (this.tail - this.head === this.items.length) this.grow()
    this.items[this.tail & (this.items.length - 1)] = item
    this.tail++
    this.count++
  }

  /** Removes and returns the oldest live item. */
  shift(): T | undefined {
    while (this.head < this.tail) {
      const index = this.head & (this.items.length - 1)
      const item = this.items[index]
      this.items[index] = undefined
      this.head++
      if (item !== undefined) {
        this.count--
        return item
      }
    }
    return undefined
  }

  /** Drops every item. */
  clear(): void {
    this.items.fill(undefined)
    this.head = 0
    this.tail = 0
    this.count = 0
  }

  /** The oldest live item, left in place. */
  peek(): T | undefined {
    while (this.head < this.tail) {
      const item = this.items[this.head & (this.items.length - 1)]
      if (item !== undefined) return item
      this.head++
    }
    return undefined
  }

  /** Whether any item `matches`. */
  some(matches: (item: T) => boolean): boolean {
    for (let i = this.head; i < this.tail; i++) {
      const item = this.items[i & (this.items.length - 1)]
      if (item !== undefined && matches(item)) return true
    }
    return false
  }

  /** Removes the oldest item that `matches`, wherever it is; returns whether one was. */
  removeFirst(matches: (item: T) => boolean): boolean {
    for (let i = this.head; i < this.tail; i++) {
      const index = i & (this.items.length - 1)
      const item = this.items[index]
      if (item !== undefined && matches(item)) {
        this.items[index] = undefined
        this.count--
        return true
      }
    }
    return false
  }

  private grow(): void {
    const size = this.items.length
    const grown: (T | undefined)[] = new Array(size * 2)
    for (let i = 0; i < size; i++) grown[i] = this.items[(this.head + i) & (size - 1)]
    this.items = grown
    this.tail -= this.head
    this.head = 0
  }
}
