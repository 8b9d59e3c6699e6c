import { createReadStream } from 'node:fs'
import { createPublicKey, KeyObject, verify } from 'node:crypto'
import { createInterface } from 'node:readline'
import canonicalizeModule from 'canonicalize'
import { checkpointPayload, digestFor, hashOf } from './chain.js'

export interface VerifyOptions {
  /**
   * The public key that checks checkpoint signatures (PEM or a `KeyObject`), or several by
   * `key_id`. Without it, checkpoints are counted but not checked.
   */
  publicKey?: string | KeyObject | Record<string, string | KeyObject>
}

export interface VerifyProblem {
  /** The file, when files were verified. */
  file?: string
  /** 1-based line number within that file. */
  line: number
  message: string
}

export interface VerifyReport {
  /** Whether every record is intact and follows the one before it. */
  ok: boolean
  /** Records read up to the first problem (all of them when `ok`). */
  records: number
  firstSequence: number | null
  lastSequence: number | null
  checkpoints: number
  /** Checkpoints whose signature was checked with the public key. */
  verifiedCheckpoints: number
  /** Records after the last checkpoint: what a truncation could have removed unnoticed lies there. */
  afterLastCheckpoint: number
  /** The first record continues a chain begun in an earlier file (such as a rotated one). */
  continues: boolean
  /** Lines where a new chain begins after another (the writer restarted without the previous file). */
  restarts: Array<{ file?: string, line: number }>
  /** The first broken or missing record. */
  problem: VerifyProblem | null
}

// The package is CommonJS whose types declare a default export: the default import is the function itself.
const canonicalize = canonicalizeModule as unknown as (input: unknown) => string

interface Link {
  sequence: number
  hash: string
}

/**
 * Checks a hash-chained audit log: each record's hash against its canonical content, and each
 * record's link to the one before; with a public key, the signatures of checkpoints. Stops at
 * the first problem and names its line.
 */
export class ChainVerifier {
  readonly #keys: (keyId: string | undefined) => KeyObject | null | undefined
  #last: Link | null = null
  #file: string | undefined
  #line = 0
  readonly report: VerifyReport = {
    ok: true, records: 0, firstSequence: null, lastSequence: null, checkpoints: 0, verifiedCheckpoints: 0, afterLastCheckpoint: 0, continues: false, restarts: [], problem: null
  }

  constructor (options: VerifyOptions = {}) {
    this.#keys = keysOf(options.publicKey)
  }

  /** Starts the next file: line numbers count from 1 again; the chain goes on across files. */
  file (name: string): void {
    this.#file = name
    this.#line = 0
  }

  /** Checks one line; false when it has a problem (the report has it; stop there). */
  line (text: string): boolean {
    this.#line++
    if (text.trim() === '') return true
    let record: { event?: Record<string, unknown>, portcullis?: { chain?: { prev?: unknown }, checkpoint?: { key_id?: unknown, signature?: unknown } } }
    try {
      record = JSON.parse(text)
    } catch {
      return this.#fail('not a JSON record (edited or cut short)')
    }
    const event = record.event
    const hash = event?.hash
    const sequence = event?.sequence
    const prev = record.portcullis?.chain?.prev
    if (typeof hash !== 'string' || !Number.isSafeInteger(sequence) || (prev !== null && typeof prev !== 'string')) {
      return this.#fail('not a chained record (no event.hash, event.sequence or portcullis.chain.prev)')
    }
    delete (event as Record<string, unknown>).hash
    if (hashOf(canonicalize(record)) !== hash) return this.#fail('record altered: its hash does not match its content')
    const link = { sequence: sequence as number, hash }
    const last = this.#last
    if (last === null) {
      this.report.continues = prev !== null
      this.report.firstSequence = link.sequence
    } else if (prev === null) {
      this.report.restarts.push(this.#where())
    } else if (prev !== last.hash) {
      return this.#fail(link.sequence > last.sequence + 1
        ? `records missing before it: sequence ${link.sequence} follows ${last.sequence}`
        : `out of order: sequence ${link.sequence} follows ${last.sequence}, and it does not link to that record`)
    } else if (link.sequence !== last.sequence + 1) {
      return this.#fail(`sequence ${link.sequence} follows ${last.sequence}`)
    }
    if (event?.action === 'audit-checkpoint' && !this.#checkpoint(record.portcullis?.checkpoint, link.sequence, prev as string | null)) return false
    this.report.records++
    this.report.afterLastCheckpoint++
    if (event?.action === 'audit-checkpoint') this.report.afterLastCheckpoint = 0
    this.report.lastSequence = link.sequence
    this.#last = link
    return true
  }

  #checkpoint (checkpoint: { key_id?: unknown, signature?: unknown } | undefined, sequence: number, prev: string | null): boolean {
    this.report.checkpoints++
    const keyId = typeof checkpoint?.key_id === 'string' ? checkpoint.key_id : undefined
    const key = this.#keys(keyId)
    if (key === null) return true
    if (key === undefined) {
      return this.#fail(keyId === undefined
        ? 'checkpoint names no key_id: give its public key on its own, not keys by id'
        : `checkpoint signed with key "${keyId}", which is not among the public keys given`)
    }
    const signature = typeof checkpoint?.signature === 'string' ? Buffer.from(checkpoint.signature, 'base64url') : Buffer.alloc(0)
    if (!verify(digestFor(key), checkpointPayload(sequence, prev), key, signature)) return this.#fail('checkpoint signature does not verify')
    this.report.verifiedCheckpoints++
    return true
  }

  #where (): { file?: string, line: number } {
    return this.#file === undefined ? { line: this.#line } : { file: this.#file, line: this.#line }
  }

  #fail (message: string): false {
    this.report.ok = false
    this.report.problem = { ...this.#where(), message }
    return false
  }
}

/** Verifies audit log lines held in memory. */
export function verifyAuditLines (lines: Iterable<string>, options: VerifyOptions = {}): VerifyReport {
  const verifier = new ChainVerifier(options)
  for (const line of lines) if (!verifier.line(line)) break
  return verifier.report
}

/** Verifies audit log files, oldest first (`audit.log.2 audit.log.1 audit.log`): one chain across them. */
export async function verifyAuditFiles (files: readonly string[], options: VerifyOptions = {}): Promise<VerifyReport> {
  const verifier = new ChainVerifier(options)
  for (const file of files) {
    verifier.file(file)
    const lines = createInterface({ input: createReadStream(file, { encoding: 'utf8' }), crlfDelay: Infinity })
    for await (const line of lines) {
      if (!verifier.line(line)) {
        lines.close()
        return verifier.report
      }
    }
  }
  return verifier.report
}

// null: no key given (checkpoints not checked); undefined: a key id none of the given keys has.
function keysOf (publicKey: VerifyOptions['publicKey']): (keyId: string | undefined) => KeyObject | null | undefined {
  if (publicKey === undefined) return () => null
  if (typeof publicKey === 'string' || publicKey instanceof KeyObject) {
    const key = publicKeyOf(publicKey)
    return () => key
  }
  const keys = new Map(Object.entries(publicKey).map(([id, key]) => [id, publicKeyOf(key)]))
  return (keyId) => keyId === undefined ? undefined : keys.get(keyId)
}

function publicKeyOf (key: string | KeyObject): KeyObject {
  return typeof key === 'string' ? createPublicKey(key) : key.type === 'private' ? createPublicKey(key) : key
}
