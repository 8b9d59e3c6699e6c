import { createHash } from 'node:crypto'
import type { FastifyBaseLogger, FastifyReply, FastifyRequest, onRequestHookHandler, onResponseHookHandler } from 'fastify'
import { checkKnownKeys, checkNumber, decisionsOf, handOver, isHandedOver } from '@portcullis/core'
import type { LiveGeneration } from './generation.js'
import { outcomeOf, SHADOW_OUTCOME_HEADER } from './standalone.js'

/** When a candidate version is rolled back on its own: its rates against the active version's. */
export interface AutoRollbackOptions {
  /** Requests the candidate must have decided before its rates are judged. @default 100 */
  minRequests?: number
  /**
   * Roll back when the candidate denies this much more often than the active version: `0.05`
   * is five percentage points more of its requests.
   */
  denyRateIncrease?: number
  /** Roll back when the candidate's requests end in a server error (5xx) this much more often. */
  errorRateIncrease?: number
}

/** Counts of one side of a trial. */
export interface SideCounts {
  requests: number
  denied: number
  errors: number
}

/** How the candidate compared with the active version, while it was on trial. */
export interface TrialStats {
  /** The candidate's version and mode; `null` with no trial running (the counts are then the last trial's). */
  version: string | null
  mode: 'shadow' | 'canary' | null
  /** A canary's requests, and the active version's over the same time. */
  candidate: SideCounts
  active: SideCounts
  /** A shadow's evaluations: how many decisions were the same, and how the others differed. */
  shadow: {
    evaluated: number
    same: number
    /** The active version allowed, the candidate would deny. */
    wouldDeny: number
    /** The active version denied, the candidate would allow. */
    wouldAllow: number
    /** Both denied, for different reasons. */
    otherReason: number
    /** Not evaluated: a streamed body that cannot be replayed, or too many evaluations pending. */
    skipped: number
    failed: number
    pending: number
  }
  /** Whether the candidate was rolled back for its rates. */
  rolledBack: boolean
}

const MAX_PENDING = 256
const SHADOW_HEADER = 'x-portcullis-shadow'

/**
 * Whether a principal falls in a canary's share: the first 32 bits of SHA-256 of its id, read as
 * a fraction, below the share. The same id always gets the same answer, on every instance.
 */
export function inCanaryShare (id: string, share: number): boolean {
  return createHash('sha256').update(id).digest().readUInt32BE(0) / 2 ** 32 < share
}

/** What a request is bucketed by: its principal's id; an anonymous request's client address. */
export function canaryKey (request: FastifyRequest): string {
  const principal = request.principal
  return principal === null || principal.type === 'anonymous' ? `address:${request.clientIp}` : principal.id
}

/** Checks the auto-rollback options once, at startup. */
export function checkAutoRollback (input: unknown): Required<Pick<AutoRollbackOptions, 'minRequests'>> & AutoRollbackOptions {
  const options = checkKnownKeys(input, ['minRequests', 'denyRateIncrease', 'errorRateIncrease'], 'autoRollback') as AutoRollbackOptions
  const rate = (value: unknown, path: string): number | undefined => value === undefined ? undefined : checkNumber(value, 0, path, 'a share above 0 and at most 1, such as 0.05', (n) => n > 0 && n <= 1)
  const denyRateIncrease = rate(options.denyRateIncrease, 'autoRollback.denyRateIncrease')
  const errorRateIncrease = rate(options.errorRateIncrease, 'autoRollback.errorRateIncrease')
  return {
    minRequests: checkNumber(options.minRequests, 100, 'autoRollback.minRequests', 'a whole number from 1', (n) => Number.isInteger(n) && n >= 1),
    ...(denyRateIncrease === undefined ? {} : { denyRateIncrease }),
    ...(errorRateIncrease === undefined ? {} : { errorRateIncrease })
  }
}

/**
 * A candidate version beside the active one. As a canary it takes over the requests of its share
 * of principals once authentication has said who they are; as a shadow it decides again, after
 * the response, every request the active version served, and counts where the two differ.
 */
export class Trial {
  #candidate: LiveGeneration | null = null
  #mode: 'shadow' | 'canary' | null = null
  #share = 0
  #stats: TrialStats = emptyStats()
  readonly #log: FastifyBaseLogger
  readonly #autoRollback: ReturnType<typeof checkAutoRollback> | null
  readonly #rollback: (reason: string) => void
  readonly #maxPending: number

  /** `maxPending`: shadow evaluations under way at once, beyond which requests are skipped (bounded memory). */
  constructor (log: FastifyBaseLogger, autoRollback: ReturnType<typeof checkAutoRollback> | null, rollback: (reason: string) => void, maxPending = MAX_PENDING) {
    this.#log = log
    this.#autoRollback = autoRollback
    this.#rollback = rollback
    this.#maxPending = maxPending
  }

  /** Puts a candidate on trial, with fresh counts. */
  start (candidate: LiveGeneration, mode: 'shadow' | 'canary', share: number | null): void {
    this.#candidate = candidate
    this.#mode = mode
    this.#share = share ?? 0
    this.#stats = { ...emptyStats(), version: candidate.version, mode }
  }

  /** Whether `generation` is the candidate on trial. */
  candidateIs (generation: LiveGeneration): boolean {
    return this.#candidate === generation
  }

  /** Ends the trial; its counts stay readable until the next one starts. */
  stop (): void {
    this.#candidate = null
    this.#mode = null
    this.#stats = { ...this.#stats, version: null, mode: null }
  }

  stats (): TrialStats {
    const { candidate, active, shadow } = this.#stats
    return { ...this.#stats, candidate: { ...candidate }, active: { ...active }, shadow: { ...shadow } }
  }

  /** The active version's hook after authentication: a canary's principals go over to it here. */
  readonly onPrincipal: onRequestHookHandler = (request, reply, done) => {
    const canary = this.#mode === 'canary' ? this.#candidate : null
    if (canary === null || !inCanaryShare(canaryKey(request), this.#share)) {
      done()
      return
    }
    // The body has not been read: the canary reads it, and answers, as if it had the request
    // from the start. It runs every step after the per-address limit, which counted it here.
    handOver(request)
    reply.hijack()
    canary.serve(request.raw, reply.raw)
    done()
  }

  /** The active version's last hook: counts its requests and gives each to the shadow. */
  readonly onActiveResponse: onResponseHookHandler = (request, reply, done) => {
    if (this.#mode !== null && !isHandedOver(request)) {
      this.#count(this.#stats.active, request, reply)
      if (this.#mode === 'shadow') this.#evaluate(request, this.#candidate as LiveGeneration, this.#stats)
    }
    done()
  }

  /** A canary's last hook: counts its requests. */
  readonly onCandidateResponse: onResponseHookHandler = (request, reply, done) => {
    if (this.#mode === 'canary') {
      this.#count(this.#stats.candidate, request, reply)
      this.#judge()
    }
    done()
  }

  #count (side: SideCounts, request: FastifyRequest, reply: FastifyReply): void {
    side.requests++
    if (outcomeOf(decisionsOf(request)) !== 'allow') side.denied++
    if (reply.statusCode >= 500) side.errors++
  }

  #evaluate (request: FastifyRequest, shadow: LiveGeneration, stats: TrialStats): void {
    const counts = stats.shadow
    const body = request.body as unknown
    const hasBody = request.headers['content-length'] !== undefined ? request.headers['content-length'] !== '0' : request.headers['transfer-encoding'] !== undefined
    // A body streamed to the upstream is gone; one parsed as JSON can be sent again.
    const replayable = !hasBody || (body !== undefined && body !== null && typeof (body as { pipe?: unknown }).pipe !== 'function')
    if (!replayable || counts.pending >= this.#maxPending) {
      counts.skipped++
      return
    }
    const active = outcomeOf(decisionsOf(request))
    const { 'content-length': _length, 'transfer-encoding': _encoding, ...headers } = request.headers
    counts.pending++
    // Counts belong to the trial they began in (`stats`): a newer trial has fresh ones.
    shadow.inject({
      method: request.method as 'GET',
      url: request.raw.url as string,
      headers: { ...headers, [SHADOW_HEADER]: '1' },
      remoteAddress: request.raw.socket.remoteAddress as string,
      ...(hasBody ? { payload: typeof body === 'string' ? body : JSON.stringify(body) } : {})
    }).then((response) => {
      counts.pending--
      const candidate = String(response.headers[SHADOW_OUTCOME_HEADER])
      counts.evaluated++
      stats.candidate.requests++
      if (candidate !== 'allow') stats.candidate.denied++
      if (candidate === active) {
        counts.same++
      } else {
        if (active === 'allow') counts.wouldDeny++
        else if (candidate === 'allow') counts.wouldAllow++
        else counts.otherReason++
        // An unknown route or an anonymous request leaves its field out.
        this.#log.info({ shadow: { version: stats.version, requestId: request.id, method: request.method, route: request.routeOptions.url, principal: request.principal?.id, active, candidate } }, 'shadow decision differs')
      }
      this.#judge()
    }, (err: unknown) => {
      counts.pending--
      counts.failed++
      this.#log.warn({ err }, 'shadow evaluation failed')
    })
  }

  // Rolls the candidate back, once, when its rates pass the thresholds.
  #judge (): void {
    const limits = this.#autoRollback
    const stats = this.#stats
    if (limits === null || stats.rolledBack || stats.candidate.requests < limits.minRequests) return
    const rate = (side: SideCounts, field: 'denied' | 'errors'): number => side.requests === 0 ? 0 : side[field] / side.requests
    const denyIncrease = rate(stats.candidate, 'denied') - rate(stats.active, 'denied')
    const errorIncrease = rate(stats.candidate, 'errors') - rate(stats.active, 'errors')
    let reason: string | null = null
    if (limits.denyRateIncrease !== undefined && denyIncrease > limits.denyRateIncrease) reason = `its deny rate is ${(denyIncrease * 100).toFixed(1)} points above the active version's`
    else if (limits.errorRateIncrease !== undefined && errorIncrease > limits.errorRateIncrease) reason = `its error rate is ${(errorIncrease * 100).toFixed(1)} points above the active version's`
    if (reason === null) return
    stats.rolledBack = true
    this.#rollback(reason)
  }
}

function emptyStats (): TrialStats {
  return {
    version: null,
    mode: null,
    candidate: { requests: 0, denied: 0, errors: 0 },
    active: { requests: 0, denied: 0, errors: 0 },
    shadow: { evaluated: 0, same: 0, wouldDeny: 0, wouldAllow: 0, otherReason: 0, skipped: 0, failed: 0, pending: 0 },
    rolledBack: false
  }
}
