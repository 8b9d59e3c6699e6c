import { createHash, createPrivateKey, sign, type KeyObject } from 'node:crypto'
import { invalidOption } from '@portcullis/core'
import { DATASET, ECS_VERSION, type AuditRecord } from './record.js'
import { DEFAULT_CHECKPOINT_EVERY, DEFAULT_CHECKPOINT_INTERVAL, type ChainOptions } from './options.js'

/** A record's hash: SHA-256 of its canonical JSON (RFC 8785), base64url without padding. */
export function hashOf (canonical: string): string {
  return createHash('sha256').update(canonical).digest('base64url')
}

/** What a checkpoint's signature covers: its own sequence number and the hash of the record before it. */
export function checkpointPayload (sequence: number, prev: string | null): Buffer {
  return Buffer.from(`portcullis-audit-checkpoint:${sequence}:${String(prev)}`)
}

/** The digest a key signs with: none of its own for Ed25519 and Ed448, SHA-256 for the others. */
export function digestFor (key: KeyObject): string | null {
  return key.asymmetricKeyType === 'ed25519' || key.asymmetricKeyType === 'ed448' ? null : 'sha256'
}

/** Where a chain stands: the last sequence number written and that record's hash. */
export interface ChainState {
  sequence: number
  prev: string | null
}

/**
 * Numbers records and, with the chain on, links each to the one before: `event.sequence`, then
 * `portcullis.chain.prev` (the previous record's hash), then the record's own hash as
 * `event.hash`, which is left out of what it hashes.
 */
export class Sequencer {
  #sequence: number
  #prev: string | null
  readonly #chained: boolean

  constructor (chained: boolean, state: ChainState = { sequence: 0, prev: null }) {
    this.#chained = chained
    this.#sequence = state.sequence
    this.#prev = state.prev
  }

  get state (): ChainState {
    return { sequence: this.#sequence, prev: this.#prev }
  }

  /** The next record's sequence number, taken. */
  next (): number {
    return ++this.#sequence
  }

  /** The hash the next record links to; `undefined` without a chain. */
  get prev (): string | null | undefined {
    return this.#chained ? this.#prev : undefined
  }

  /**
   * A record's canonical text (numbered with next(), linked to prev) as its line: with the
   * chain on, its hash goes in as `event.hash` and is what the next record links to.
   */
  link (text: string): string {
    if (!this.#chained) return text
    const hash = hashOf(text)
    this.#prev = hash
    // "event" is a key of ours that no earlier value can spell unescaped: the first one is the object.
    const at = text.indexOf('"event":{') + 9
    return `${text.slice(0, at)}"hash":"${hash}",${text.slice(at)}`
  }

  /** A record object (its keys in canonical order) as one JSON line, without the newline. */
  seal (record: AuditRecord): string {
    record.event.sequence = this.next()
    if (this.#chained) (record.portcullis.chain as { prev: string | null }).prev = this.#prev
    // Keys are built in canonical order, so the text is the canonical form.
    return this.link(JSON.stringify(record))
  }
}

/** Signs checkpoints: a record that commits to every record before it in the chain. */
export class Checkpointer {
  readonly every: number
  readonly interval: number
  readonly #key: KeyObject
  readonly #keyId: string | undefined
  readonly #digest: string | null

  constructor (options: ChainOptions) {
    this.#key = privateKeyOf(options.signingKey as string | KeyObject)
    this.#keyId = options.keyId
    this.#digest = digestFor(this.#key)
    this.every = options.checkpointEvery ?? DEFAULT_CHECKPOINT_EVERY
    this.interval = options.checkpointInterval ?? DEFAULT_CHECKPOINT_INTERVAL
  }

  /** The checkpoint that follows `state`, ready to be sealed. */
  record (state: ChainState): AuditRecord {
    const signature = sign(this.#digest, checkpointPayload(state.sequence + 1, state.prev), this.#key).toString('base64url')
    return {
      '@timestamp': new Date().toISOString(),
      ecs: { version: ECS_VERSION },
      event: { action: 'audit-checkpoint', category: ['configuration'], dataset: DATASET, kind: 'event', outcome: 'success', sequence: 0, type: ['info'] },
      portcullis: { chain: { prev: null }, checkpoint: this.#keyId === undefined ? { signature } : { key_id: this.#keyId, signature } }
    }
  }
}

function privateKeyOf (key: string | KeyObject): KeyObject {
  try {
    const parsed = typeof key === 'string' ? createPrivateKey(key) : key
    if (parsed.type === 'private') return parsed
  } catch {}
  // The key itself is never echoed.
  throw invalidOption('audit.chain.signingKey', 'a private key (PEM text or a KeyObject) of type Ed25519, Ed448, EC or RSA')
}

/** Where a chain stands after a file's last line, to go on from it; a fresh chain when it is not a chained record. */
export function stateAfter (line: string | null): ChainState {
  if (line === null) return { sequence: 0, prev: null }
  try {
    const record = JSON.parse(line) as { event?: { sequence?: unknown, hash?: unknown } }
    const { sequence, hash } = record.event ?? {}
    if (Number.isSafeInteger(sequence) && typeof hash === 'string') return { sequence: sequence as number, prev: hash }
  } catch {}
  return { sequence: 0, prev: null }
}
