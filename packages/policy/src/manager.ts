import type { KeyObject } from 'node:crypto'
import { checkNumber, invalidOption, pointerToken } from '@portcullis/core'
import { parsePolicy, withPositions, type ParsedPolicy } from './document.js'
import { diffPolicies, type PolicyDiffEntry } from './diff.js'
import { isPolicyRejected, rejection, type PolicyProblem } from './errors.js'
import { lintPolicy, type LintFinding } from './lint.js'
import { checkSchema, policySchema } from './schema.js'
import { resolveSecrets, type SecretContext } from './secrets.js'
import { policyPublicKey, verifyPolicySignature, type PolicyPublicKey } from './signature.js'
import { policyVersion } from './version.js'

/** A document that passed every step before compiling. */
export interface CheckedPolicy {
  readonly name: string
  readonly text: string
  readonly version: string
  /** The document as written (secret references unresolved): what diffs and history show. */
  readonly data: Record<string, unknown>
  /** The document with its secrets resolved: what is compiled. Never log it. */
  readonly resolved: Record<string, unknown>
  readonly warnings: readonly LintFinding[]
}

/** The policy in force, compiled. */
export interface ActivePolicy<C> extends CheckedPolicy {
  readonly compiled: C
  /** Where it came from: `file`, `admin-api`, `redis`, `code`, … */
  readonly source: string
  readonly activatedAt: Date
}

/** How a version is put in force: alone, or beside the active one while it is observed. */
export type PolicyMode = 'enforce' | 'shadow' | 'canary'

/**
 * A version on trial beside the active one: in `shadow` mode it is evaluated on the same requests
 * and only its differing decisions are reported; in `canary` mode it serves a sticky share of
 * principals. `promote()` makes it the active version, `rollback()` drops it.
 */
export interface CandidatePolicy<C> extends ActivePolicy<C> {
  readonly mode: 'shadow' | 'canary'
  /** The share of principals a canary serves, from 0 to 1; `null` in shadow mode. */
  readonly share: number | null
}

/** How an update is rolled out. */
export interface Rollout {
  /** @default 'enforce' */
  mode?: PolicyMode
  /** For a canary: the share of principals it serves, above 0 and below 1. */
  share?: number
}

/** One version that was active, newest first in {@link PolicyManager.history}. */
export interface PolicyHistoryEntry {
  readonly version: string
  readonly source: string
  readonly activatedAt: Date
  readonly active: boolean
}

/** What happened to a policy, for the audit log and the logs. */
export interface PolicyEvent {
  readonly action: 'activate' | 'reject' | 'rollback'
  /** The version made active, or the one refused; `null` for a document that did not parse. */
  readonly version: string | null
  readonly previousVersion: string | null
  readonly source: string
  readonly actor?: string
  /** How the version is in force: `shadow` and `canary` are trials beside the active version. */
  readonly mode: PolicyMode
  /** A canary's share of principals. */
  readonly share?: number
  /** For a refusal: the stage and the problems. */
  readonly stage?: string
  readonly problems?: readonly PolicyProblem[]
  /** For an activation: what changed (worked out when first read), and the lint warnings it passed with. */
  readonly diff?: readonly PolicyDiffEntry[]
  readonly warnings?: readonly LintFinding[]
}

/**
 * Turns a checked document into what serves it (the gateway: a ready chain of plugins and
 * routes), for the mode it is to be put in force in.
 */
export type PolicyCompile<C> = (policy: CheckedPolicy, mode: PolicyMode) => Promise<C>

export interface PolicyManagerOptions<C> {
  compile: PolicyCompile<C>
  /** Called with a compiled policy once it is no longer active: release what it holds. */
  release?: (compiled: C) => Promise<void> | void
  /** With a key, only documents signed by it are taken (see `signPolicy`). */
  publicKey?: PolicyPublicKey
  /** Where secret references are read from. */
  secrets?: SecretContext
  /** How many versions are kept for rollback, the active one included. @default 10 */
  history?: number
  /** Every activation, refusal and rollback. */
  onEvent?: (event: PolicyEvent) => void
}

/** How an update came. */
export interface UpdateOrigin {
  /** What messages call the document: its file name. @default 'policy' */
  name?: string
  /** The detached signature (base64), required when the manager has a public key. */
  signature?: string
  /** @default 'code' */
  source?: string
  /** Who asked, when known. */
  actor?: string
}

interface Kept { checked: CheckedPolicy, source: string, activatedAt: Date }

export const DEFAULT_HISTORY = 10

/**
 * Takes policy documents through parse → signature → schema → secrets → lint → compile →
 * activate. A refused document changes nothing: the active version keeps serving. Updates run
 * one at a time, in the order they were asked for. The versions that were active are kept for
 * rollback.
 */
export class PolicyManager<C> {
  readonly #compile: PolicyCompile<C>
  readonly #release: (compiled: C) => Promise<void> | void
  readonly #publicKey: KeyObject | null
  readonly #secrets: SecretContext
  readonly #keep: number
  readonly #onEvent: (event: PolicyEvent) => void
  #active: ActivePolicy<C> | null = null
  #candidate: CandidatePolicy<C> | null = null
  #history: Kept[] = []
  #queue: Promise<unknown> = Promise.resolve()
  #closed = false

  constructor (options: PolicyManagerOptions<C>) {
    if (typeof options?.compile !== 'function') throw invalidOption('policy.compile', 'a function that compiles a checked document')
    this.#compile = options.compile
    this.#release = options.release ?? (() => {})
    this.#publicKey = options.publicKey === undefined ? null : policyPublicKey(options.publicKey, 'policy.publicKey')
    this.#secrets = options.secrets ?? {}
    this.#keep = checkNumber(options.history, DEFAULT_HISTORY, 'policy.history', 'an integer from 1 to 1000', (n) => Number.isInteger(n) && n >= 1 && n <= 1000)
    this.#onEvent = options.onEvent ?? (() => {})
  }

  /** The active policy; `null` before the first one. */
  get active (): ActivePolicy<C> | null {
    return this.#active
  }

  /** The version on trial beside the active one, in shadow or canary mode; `null` without one. */
  get candidate (): CandidatePolicy<C> | null {
    return this.#candidate
  }

  /** Whether documents must be signed. */
  get requiresSignature (): boolean {
    return this.#publicKey !== null
  }

  /** Runs every step short of compiling; throws a `PolicyRejected` error naming the first fault. */
  async check (text: string, origin: UpdateOrigin = {}): Promise<CheckedPolicy> {
    const name = origin.name ?? 'policy'
    const parsed = parsePolicy(text, name)
    const version = policyVersion(parsed.data)
    try {
      return await this.#checkParsed(parsed, version, origin.signature)
    } catch (err) {
      // A refusal names the version it refused, once the document has one.
      throw Object.assign(err as Error, { version })
    }
  }

  async #checkParsed (parsed: ParsedPolicy, version: string, signature: string | undefined): Promise<CheckedPolicy> {
    const { name, text } = parsed
    if (this.#publicKey !== null && !verifyPolicySignature(text, signature, this.#publicKey)) {
      throw rejection(name, 'signature', [{ stage: 'signature', pointer: '', message: signature === undefined ? 'the document is not signed, and only signed documents are taken' : 'the signature does not verify' }])
    }
    refuse(parsed, 'schema', checkSchema(parsed))
    const { data: resolved, problems } = await resolveSecrets(parsed.data, this.#secrets)
    refuse(parsed, 'secrets', problems)
    const findings = withPositions(parsed, lintPolicy(parsed.data, resolved))
    refuse(parsed, 'lint', findings.filter((finding) => finding.severity === 'error'))
    const warnings = findings.filter((finding) => finding.severity === 'warning')
    return Object.freeze({ name, text, version, data: parsed.data, resolved, warnings })
  }

  /**
   * Checks, compiles and puts a document in force: as the active version (`enforce`, the
   * default), or as a candidate beside it (`shadow`, `canary`). Resolves to the policy it made;
   * a document whose version is already active changes nothing. Rejects with `PolicyRejected`
   * (the active version still serving) when any step refuses it.
   */
  async apply (text: string, origin: UpdateOrigin = {}, rollout: Rollout = {}): Promise<ActivePolicy<C>> {
    const mode = checkRollout(rollout)
    return await this.#serially(async () => {
      const source = origin.source ?? 'code'
      let checked: CheckedPolicy
      let compiled: C
      try {
        checked = await this.check(text, origin)
        if (checked.version === this.#active?.version) return this.#active
        if (mode !== 'enforce' && this.#active === null) throw invalidOption('mode', 'enforce for the first version: a trial needs an active version beside it', mode)
        compiled = await this.#compileChecked(checked, mode)
      } catch (err) {
        this.#rejected(err, source, origin.actor, mode)
        throw err
      }
      if (mode === 'enforce') return await this.#activate(checked, compiled, 'activate', source, origin.actor)
      return await this.#try(checked, compiled, mode, rollout.share ?? null, source, origin.actor)
    })
  }

  /** Makes the candidate the active version, enforced for every request. */
  async promote (origin: Omit<UpdateOrigin, 'name' | 'signature'> = {}): Promise<ActivePolicy<C>> {
    return await this.#serially(async () => {
      const candidate = this.#candidate
      if (candidate === null) throw invalidOption('candidate', 'a version in shadow or canary mode to promote (there is none)')
      const source = origin.source ?? 'code'
      let compiled: C
      try {
        compiled = await this.#compileChecked(candidate, 'enforce')
      } catch (err) {
        this.#rejected(err, source, origin.actor, 'enforce')
        throw err
      }
      return await this.#activate(candidate, compiled, 'activate', source, origin.actor)
    })
  }

  /**
   * Makes an earlier version active again: the one before the active one, or `version`. It is
   * compiled afresh from the text that was active, so it gets the very same version id.
   */
  async rollback (version?: string, origin: Omit<UpdateOrigin, 'name' | 'signature'> = {}): Promise<ActivePolicy<C>> {
    return await this.#serially(async () => {
      const source = origin.source ?? 'code'
      const candidate = this.#candidate
      const active = this.#active
      if (candidate !== null && active !== null && (version === undefined || version === active.version)) {
        // A trial is undone first: the active version, never changed by it, simply goes on alone.
        this.#candidate = null
        this.#emit({ action: 'rollback', version: active.version, previousVersion: candidate.version, source, actor: origin.actor, mode: candidate.mode })
        await this.#release(candidate.compiled)
        return active
      }
      const target = version === undefined
        ? this.#history[1]
        : this.#history.find((kept) => kept.checked.version === version)
      if (target === undefined) {
        throw invalidOption('version', version === undefined ? 'an earlier version to roll back to (there is none)' : `one of the kept versions: ${this.#history.map((kept) => kept.checked.version).join(', ')}`, version)
      }
      if (target.checked.version === this.#active?.version) return this.#active
      let compiled: C
      try {
        compiled = await this.#compileChecked(target.checked, 'enforce')
      } catch (err) {
        this.#rejected(err, source, origin.actor, 'enforce')
        throw err
      }
      return await this.#activate(target.checked, compiled, 'rollback', source, origin.actor)
    })
  }

  /** The versions kept, newest first. */
  history (): PolicyHistoryEntry[] {
    return this.#history.map((kept) => ({ version: kept.checked.version, source: kept.source, activatedAt: kept.activatedAt, active: kept.checked.version === this.#active?.version }))
  }

  /** A kept version's document (or the candidate's), or `undefined`. */
  document (version: string): CheckedPolicy | undefined {
    if (this.#candidate?.version === version) return this.#candidate
    return this.#history.find((kept) => kept.checked.version === version)?.checked
  }

  /** Releases the active policy; the manager takes no update after. */
  async close (): Promise<void> {
    await this.#serially(async () => {
      const active = this.#active
      const candidate = this.#candidate
      this.#active = null
      this.#candidate = null
      this.#closed = true
      if (candidate !== null) await this.#release(candidate.compiled)
      if (active !== null) await this.#release(active.compiled)
    })
  }

  async #compileChecked (checked: CheckedPolicy, mode: PolicyMode): Promise<C> {
    if (this.#closed) throw new Error('the policy manager is closed')
    try {
      return await this.#compile(checked, mode)
    } catch (err) {
      if (isPolicyRejected(err)) throw Object.assign(err, { version: checked.version })
      // The compiler's own message names the option at fault (and never a secret's value): its
      // path leads back to the place in the document.
      const message = (err as Error).message
      const parsed = parsePolicy(checked.text, checked.name)
      throw Object.assign(rejection(checked.name, 'compile', withPositions(parsed, [{ stage: 'compile', pointer: pointerOfOptionPath(message), message }])), { version: checked.version })
    }
  }

  async #activate (checked: CheckedPolicy, compiled: C, action: 'activate' | 'rollback', source: string, actor: string | undefined): Promise<ActivePolicy<C>> {
    const previous = this.#active
    const candidate = this.#candidate
    const active: ActivePolicy<C> = Object.freeze({ ...pick(checked), compiled, source, activatedAt: new Date() })
    this.#active = active
    // An enforced version ends any trial.
    this.#candidate = null
    this.#history = [{ checked: pick(checked), source, activatedAt: active.activatedAt }, ...this.#history.filter((kept) => kept.checked.version !== checked.version)].slice(0, this.#keep)
    this.#emit({ action, version: checked.version, previousVersion: previous?.version ?? null, source, actor, mode: 'enforce', warnings: checked.warnings }, () => diffPolicies(previous?.data ?? {}, checked.data))
    if (candidate !== null) await this.#release(candidate.compiled)
    if (previous !== null) await this.#release(previous.compiled)
    return active
  }

  async #try (checked: CheckedPolicy, compiled: C, mode: 'shadow' | 'canary', share: number | null, source: string, actor: string | undefined): Promise<CandidatePolicy<C>> {
    const replaced = this.#candidate
    const active = this.#active as ActivePolicy<C>
    const candidate: CandidatePolicy<C> = Object.freeze({ ...pick(checked), compiled, source, activatedAt: new Date(), mode, share: mode === 'canary' ? share : null })
    this.#candidate = candidate
    this.#emit({ action: 'activate', version: checked.version, previousVersion: active.version, source, actor, mode, ...(candidate.share === null ? {} : { share: candidate.share }), warnings: checked.warnings }, () => diffPolicies(active.data, checked.data))
    if (replaced !== null) await this.#release(replaced.compiled)
    return candidate
  }

  #rejected (err: unknown, source: string, actor: string | undefined, mode: PolicyMode): void {
    const refused = isPolicyRejected(err) ? err : null
    this.#emit({
      action: 'reject',
      version: refused?.version ?? null,
      previousVersion: this.#active?.version ?? null,
      source,
      actor,
      mode,
      stage: refused?.stage ?? 'compile',
      problems: refused?.problems ?? [{ stage: 'compile', pointer: '', message: (err as Error).message }]
    })
  }

  // The diff is worked out when first read, not while the version is being put in force.
  #emit (event: Omit<PolicyEvent, 'actor'> & { actor: string | undefined }, diff?: () => readonly PolicyDiffEntry[]): void {
    const { actor, ...rest } = event
    const record: Record<string, unknown> = actor === undefined ? rest : { ...rest, actor }
    if (diff !== undefined) {
      let computed: readonly PolicyDiffEntry[] | undefined
      Object.defineProperty(record, 'diff', { enumerable: true, get: () => (computed ??= diff()) })
    }
    this.#onEvent(Object.freeze(record) as unknown as PolicyEvent)
  }

  async #serially<T> (task: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(task, task)
    this.#queue = run.catch(() => {})
    return await run
  }
}

const OPTION_PATH = /^([A-Za-z_$][\w$-]*(?:\.[\w$-]+|\[\d+\])*) /

/** The pointer of the option path a message starts with (`upstreams[0].routes[1].authz` → `/upstreams/0/routes/1/authz`), or `''`. */
export function pointerOfOptionPath (message: string): string {
  const path = OPTION_PATH.exec(message)?.[1]
  if (path === undefined) return ''
  const tokens = path.replace(/\[(\d+)\]/g, '.$1').split('.')
  // An option path starts with a section of the document: "the compiler gave up" names none.
  if (!Object.hasOwn(policySchema.properties, tokens[0] as string)) return ''
  return tokens.map((token) => `/${pointerToken(token)}`).join('')
}

// The checked fields only: a candidate promoted or rolled back carries no trial fields along.
function pick ({ name, text, version, data, resolved, warnings }: CheckedPolicy): CheckedPolicy {
  return { name, text, version, data, resolved, warnings }
}

function checkRollout (rollout: Rollout): PolicyMode {
  const mode = rollout.mode ?? 'enforce'
  if (mode !== 'enforce' && mode !== 'shadow' && mode !== 'canary') throw invalidOption('mode', 'one of enforce, shadow, canary', mode)
  if (mode === 'canary') {
    const share = rollout.share
    if (typeof share !== 'number' || !(share > 0 && share < 1)) throw invalidOption('share', 'the share of principals the canary serves, a number above 0 and below 1', share)
  } else if (rollout.share !== undefined) {
    throw invalidOption('share', 'left out unless mode is canary', rollout.share)
  }
  return mode
}

function refuse (parsed: ParsedPolicy, stage: PolicyProblem['stage'], problems: PolicyProblem[]): void {
  if (problems.length > 0) throw rejection(parsed.name, stage, withPositions(parsed, problems))
}
