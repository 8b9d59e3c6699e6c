import fp from 'fastify-plugin'
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify'
import { routeConfigOf, withHeaders, type SnapshotListener } from '@portcullis/core'
import { AuditUnavailable } from './errors.js'
import { checkRouteOptions, validateOptions, type AuditLogOptions, type RouteAuditOptions } from './options.js'
import { diffSummary, policyRecord, type PolicyChange } from './policy.js'
import { compileRedaction } from './redact.js'
import { isSampleable, requestRecord, type Ending, type RecordSettings } from './record.js'
import { AuditWriter, type AuditStats } from './writer.js'

/** What `app.audit` offers. */
export interface AuditLog {
  /** Records a policy activation, refusal or rollback, with both versions and what changed. */
  policyChange: (change: PolicyChange) => void
  /** What was written, sampled out and dropped, per sink. */
  stats: () => AuditStats
  /** Resolves once every sink has delivered what it holds (or failed to, for now). */
  flush: () => Promise<void>
  /** Writes a signed checkpoint now (with `chain.signingKey`). */
  checkpoint: () => void
  /** Reopens file sinks, after another program rotated their files. */
  reopen: () => Promise<void>
}

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Audit settings of this route (`@portcullis/audit-log`); `false`: only its denials and errors are recorded. */
    audit?: RouteAuditOptions | false
  }
  interface FastifyInstance {
    audit: AuditLog
  }
}

interface RoutePolicy {
  sample: number
  body: boolean
}

const kRoute = Symbol('portcullis.audit.route')
const kState = Symbol('portcullis.audit.state')
const kReply = Symbol('portcullis.audit.reply')

// Per request: written once (a response, an abort or a timeout, whichever comes first), and the code of its error.
interface State {
  written: boolean
  error: string | null
}

interface Holder { [kState]: State | null, [kReply]: FastifyReply | null }

const plugin: FastifyPluginAsync<AuditLogOptions> = async (app, options) => {
  const valid = validateOptions(options)
  const settings: RecordSettings = {
    redaction: compileRedaction(valid.redact),
    requestHeaders: valid.requestHeaders,
    responseHeaders: valid.responseHeaders,
    bodyMaxBytes: valid.bodyMaxBytes,
    chained: valid.chain !== null
  }
  const writer = await AuditWriter.open(valid)
  const defaults: RoutePolicy = { sample: valid.sample, body: valid.body }

  app.addHook('onRoute', (route) => {
    const config = (route.config ?? {}) as { audit?: RouteAuditOptions | false }
    let policy = defaults
    if (config.audit !== undefined) {
      const checked = checkRouteOptions(config.audit, `route ${String(route.method)} ${route.url} config.audit`)
      policy = checked === false ? { sample: 0, body: false } : { sample: checked.sample ?? defaults.sample, body: checked.body ?? defaults.body }
    }
    route.config = Object.assign({ ...config }, { [kRoute]: policy })
  })

  app.decorateRequest(kState, null)
  const stateOf = (request: FastifyRequest): State => {
    const holder = request as unknown as Holder
    return (holder[kState] ??= { written: false, error: null })
  }
  const write = (request: FastifyRequest, reply: FastifyReply, ending: Ending): void => {
    const state = (request as unknown as Holder)[kState]
    if (state?.written === true) return
    const policy = (routeConfigOf(request) as { [kRoute]?: RoutePolicy })[kRoute] ?? defaults
    if (ending === 'response' && policy.sample < 1 && isSampleable(request, reply) && (policy.sample === 0 || Math.random() >= policy.sample)) {
      writer.sampledOut++
      return
    }
    if (state !== null) state.written = true
    else if (ending !== 'response') stateOf(request).written = true
    writer.write(requestRecord(request, reply, ending, policy.body, state?.error ?? null, settings))
  }

  // The reply is kept for an aborted request, whose hook only gets the request.
  app.decorateRequest(kReply, null)
  const refuse = valid.onSinkFailure === 'refuse'
  app.addHook('onRequest', (request, reply, done) => {
    (request as unknown as Holder)[kReply] = reply
    // Nothing is served that could not be recorded: while a sink cannot take records, requests are refused.
    done(refuse && !writer.healthy ? withHeaders(new AuditUnavailable(), { 'retry-after': '5' }) : undefined)
  })
  app.addHook('onError', (request, _reply, error, done) => {
    const code = (error as { code?: unknown }).code
    stateOf(request).error = typeof code === 'string' ? code : 'ERROR'
    done()
  })
  app.addHook('onResponse', (request, reply, done) => {
    write(request, reply, 'response')
    done()
  })
  app.addHook('onRequestAbort', (request, done) => {
    write(request, (request as unknown as Holder)[kReply] as FastifyReply, 'aborted')
    done()
  })
  app.addHook('onTimeout', (request, reply, done) => {
    write(request, reply, 'timed-out')
    done()
  })

  const policyChange = (change: PolicyChange): void => { writer.write(policyRecord(change, settings.chained)) }
  const snapshot = app.portcullisCore.snapshot as { onSwap?: (listener: SnapshotListener<unknown>) => () => void } | null
  const stopListening = valid.policySwaps && typeof snapshot?.onSwap === 'function'
    ? snapshot.onSwap((next, previous) => {
      policyChange({ action: 'activate', version: next.version, previousVersion: previous.version, diff: diffSummary(previous.value, next.value) })
    })
    : null

  app.decorate('audit', Object.freeze({
    policyChange,
    stats: () => writer.stats(),
    flush: async () => { await writer.flush() },
    checkpoint: () => { writer.checkpoint() },
    reopen: async () => {
      for (const sink of writer.sinks) if ('reopen' in sink) await (sink as { reopen: () => Promise<void> }).reopen()
    }
  }))
  // Last: every other plugin's onClose has run, so requests they ended are recorded too.
  app.addHook('onClose', async () => {
    stopListening?.()
    await writer.close()
  })
}

/**
 * Audit log of the Portcullis suite: one record per request (at `onResponse`, and for aborted
 * and timed-out requests) with every decision and the policy version, one per policy change;
 * secrets redacted; sinks that never block; an optional hash chain with signed checkpoints.
 */
export const portcullisAuditLog = fp(plugin, { fastify: '5.x', name: '@portcullis/audit-log', dependencies: ['@portcullis/core'] })
