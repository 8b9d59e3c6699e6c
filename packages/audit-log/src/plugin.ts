import fp from 'fastify-plugin'
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify'
import { claimChainStep, invalidOption, isHandedOver, routeConfigOf, withHeaders, type SnapshotListener } from '@portcullis/core'
import { AuditUnavailable } from './errors.js'
import { FileSink } from './file-sink.js'
import { checkRouteOptions, validateOptions, type AuditLogOptions, type RouteAuditOptions } from './options.js'
import { diffSummary, policyRecord, type PolicyChange } from './policy.js'
import { compileRedaction } from './redact.js'
import { isSampleable, routeRecord, type Ending, type RecordSettings, type RouteRecord } from './record.js'
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
// Per request: whether its record is written (a response, an abort or a timeout, whichever comes
// first), the code of the error it ended with, and its reply, for an abort's hook, which only
// gets the request.
const kWritten = Symbol('portcullis.audit.written')
const kError = Symbol('portcullis.audit.error')
const kReply = Symbol('portcullis.audit.reply')

interface Holder { [kWritten]: boolean, [kError]: string | null, [kReply]: FastifyReply | null }

const plugin: FastifyPluginAsync<AuditLogOptions> = async (app, options) => {
  const valid = validateOptions(options)
  claimChainStep(app, { step: 12, name: '@portcullis/audit-log', hooks: ['onResponse'] })
  if (valid.writer !== null && !(valid.writer instanceof AuditWriter)) throw invalidOption('audit.writer', 'a writer made by openAuditWriter()', valid.writer)
  const settings: RecordSettings = {
    redaction: compileRedaction(valid.redact),
    requestHeaders: valid.requestHeaders,
    responseHeaders: valid.responseHeaders,
    bodyMaxBytes: valid.bodyMaxBytes,
    chained: valid.writer?.chained ?? valid.chain !== null
  }
  const owned = valid.writer === null
  const writer = valid.writer ?? await AuditWriter.open(valid)
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

  // What each route's records share, made on its first record and kept by its config: Fastify
  // makes one config per route, with the route's pattern as its url (none for requests no route
  // matched), routes added before this plugin included.
  const routeRecords = new WeakMap<object, RouteRecord>()
  const routeRecordOf = (config: { url?: string }): RouteRecord => {
    let record = routeRecords.get(config)
    if (record === undefined) {
      record = routeRecord(config.url ?? null)
      routeRecords.set(config, record)
    }
    return record
  }

  // Decorated up front, so that requests keep one shape.
  app.decorateRequest(kWritten, false)
  app.decorateRequest(kError, null)
  app.decorateRequest(kReply, null)
  const write = (request: FastifyRequest, reply: FastifyReply | null, ending: Ending): void => {
    const holder = request as unknown as Holder
    // A request handed over to another instance (a canary version) is recorded there.
    if (holder[kWritten] || isHandedOver(request)) return
    const config = routeConfigOf(request) as { [kRoute]?: RoutePolicy, url?: string }
    const policy = config[kRoute] ?? defaults
    if (ending === 'response' && policy.sample < 1 && isSampleable(request, reply as FastifyReply) && (policy.sample === 0 || Math.random() >= policy.sample)) {
      writer.sampledOut++
      return
    }
    holder[kWritten] = true
    writer.writeRequest(request, reply, ending, policy.body, holder[kError], routeRecordOf(config), settings)
  }

  const refuse = writer.refuseWhileUnhealthy
  app.addHook('onRequest', (request, reply, done) => {
    (request as unknown as Holder)[kReply] = reply
    // Nothing is served that could not be recorded: while a sink cannot take records, requests are refused.
    done(refuse && !writer.healthy ? withHeaders(new AuditUnavailable(), { 'retry-after': '5' }) : undefined)
  })
  app.addHook('onError', (request, _reply, error, done) => {
    const code = (error as { code?: unknown }).code
    ;(request as unknown as Holder)[kError] = typeof code === 'string' ? code : 'ERROR'
    done()
  })
  app.addHook('onResponse', (request, reply, done) => {
    write(request, reply, 'response')
    done()
  })
  app.addHook('onRequestAbort', (request, done) => {
    write(request, (request as unknown as Holder)[kReply], 'aborted')
    done()
  })
  // Sockets time out only with Fastify's connectionTimeout (0, none, by default); without one the
  // hook, which costs every request an object on its socket, is left out. Fastify always fills the
  // option in (its type says optional only because it is the user's input too).
  if ((app.initialConfig.connectionTimeout as number) > 0) {
    app.addHook('onTimeout', (request, reply, done) => {
      write(request, reply, 'timed-out')
      done()
    })
  }

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
      for (const sink of writer.sinks) if (sink instanceof FileSink) await sink.reopen()
    }
  }))
  // Last: every other plugin's onClose has run, so requests they ended are recorded too.
  app.addHook('onClose', async () => {
    stopListening?.()
    if (owned) await writer.close()
  })
}

/**
 * Audit log of the Portcullis suite: one record per request (at `onResponse`, and for aborted
 * and timed-out requests) with every decision and the policy version, one per policy change;
 * secrets redacted; sinks that never block; an optional hash chain with signed checkpoints.
 */
export const portcullisAuditLog = fp(plugin, { fastify: '5.x', name: '@portcullis/audit-log', dependencies: ['@portcullis/core'] })
