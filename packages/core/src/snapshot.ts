/**
 * An immutable, compiled policy: every request reads the one it pinned when it arrived.
 * `version` identifies its content (the policy package uses the hash of its canonical form).
 */
export interface PolicySnapshot<T = unknown> {
  readonly version: string
  readonly value: T
}

/** Where core reads the snapshot a new request pins: a {@link SnapshotHolder}, or anything with `current`. */
export interface SnapshotSource<T = unknown> {
  readonly current: PolicySnapshot<T>
}

export type SnapshotListener<T> = (next: PolicySnapshot<T>, previous: PolicySnapshot<T>) => void

/**
 * Holds the active policy snapshot. Swapping is one reference assignment, so a request that
 * pinned the old snapshot finishes on it while every request that arrives later gets the new one.
 */
export class SnapshotHolder<T = unknown> implements SnapshotSource<T> {
  #current: PolicySnapshot<T>
  readonly #listeners = new Set<SnapshotListener<T>>()

  constructor (initial: PolicySnapshot<T>) {
    this.#current = freezeSnapshot(initial)
  }

  /** The snapshot new requests pin. */
  get current (): PolicySnapshot<T> {
    return this.#current
  }

  /** Makes `next` the active snapshot and returns the one it replaced. Listeners run after the swap. */
  swap (next: PolicySnapshot<T>): PolicySnapshot<T> {
    const frozen = freezeSnapshot(next)
    const previous = this.#current
    this.#current = frozen
    for (const listener of this.#listeners) listener(frozen, previous)
    return previous
  }

  /** Calls `listener` after every swap; returns a function that stops it. */
  onSwap (listener: SnapshotListener<T>): () => void {
    this.#listeners.add(listener)
    return () => { this.#listeners.delete(listener) }
  }
}

function freezeSnapshot<T> (snapshot: PolicySnapshot<T>): PolicySnapshot<T> {
  if (typeof snapshot !== 'object' || snapshot === null || typeof snapshot.version !== 'string' || snapshot.version === '') {
    throw new TypeError('a policy snapshot needs a non-empty string version')
  }
  return Object.isFrozen(snapshot) ? snapshot : Object.freeze({ version: snapshot.version, value: snapshot.value })
}
