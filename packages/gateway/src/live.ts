import { randomUUID } from 'node:crypto'
import { createServer as createHttpServer, Server, type IncomingMessage, type ServerResponse } from 'node:http'
import { createServer as createHttpsServer } from 'node:https'
import { basename, dirname, resolve } from 'node:path'
import { PassThrough } from 'node:stream'
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import { openAuditWriter, validateOptions as validateAuditOptions, type AuditWriter } from '@portcullis/audit-log'
import { MemoryStore, type RateLimitStore } from '@portcullis/rate-limit'
import { PolicyManager, readPolicyFile, syncPolicyFromRedis, watchPolicyFile, type CheckedPolicy, type InstanceStatus, type PolicyEvent, type PolicyFileWatch, type PolicyMode, type PolicyDiffEntry, type PolicyProblem, type PolicyPublicKey, type RedisSync } from '@portcullis/policy'
import { invalidOption, problemClientErrorHandler } from '@portcullis/core'
import { listenerOptions } from './limits.js'
import { observeGateway } from './metrics-listener.js'
import { Redis } from 'ioredis'
import { configOfDocument, type RateLimitStoreConfig, type ValidGatewayConfig } from './config.js'
import { buildAdminApi, type AdminOptions } from './admin.js'
import { LiveGeneration, type Generation, type RequestHandler } from './generation.js'
import { addChain, readChainFiles, redisStore, type UpstreamDispatch } from './standalone.js'
import { Agent } from 'undici'
import { checkAutoRollback, Trial, type AutoRollbackOptions, type TrialStats } from './trial.js'
import { readPem, serverHttpsOptions } from './tls.js'

export interface PolicyGatewayOptions {
  /** The policy document: a YAML or JSON file. Relative paths and `file:` references in it are read from its directory. */
  file: string
  /**
   * Watch the file and apply every change that passes the update pipeline; a refused change is
   * logged and the running version keeps serving.
   * @default true
   */
  watch?: boolean
  /** How long the file must be quiet before it is read, in ms. @default 200 */
  debounceMs?: number
  /** Only documents signed by this key are taken; the signature is read from `<file>.sig`. */
  publicKey?: PolicyPublicKey
  /** How many versions are kept for rollback. @default 10 */
  history?: number
  /** Where `env:` references are read from. @default process.env */
  env?: NodeJS.ProcessEnv
  /** In place of the document's `server.host` and `server.port`. */
  host?: string
  port?: number
  /** In place of the document's `rateLimitStore`. */
  rateLimitStore?: RateLimitStoreConfig
  /** Fastify options of the gateway: `logger`, timeouts and the like. */
  serverOptions?: FastifyServerOptions
  /** Roll a shadow or canary candidate back on its own when its rates pass these thresholds. */
  autoRollback?: AutoRollbackOptions
  /**
   * Follow the version published in Redis (`portcullis policy publish`), as every instance that
   * names the same Redis and prefix does, and report the version this one runs. The file is where
   * an instance starts while Redis has no version yet.
   */
  redis?: PolicyRedisOptions
  /** Serve the admin API on a listener of its own (never the gateway's), authenticated by a token or mutual TLS. */
  admin?: AdminOptions
}

/** Where a fleet of gateways shares its policy version. */
export interface PolicyRedisOptions {
  /** `redis://[user:password@]host[:port][/db]`, or `rediss://` for TLS. */
  url: string
  /** @default 'portcullis:policy:' */
  prefix?: string | undefined
  /** This instance's name in `portcullis policy status`. @default host name and a random suffix */
  instanceId?: string
  /** How often this instance reports its version, in ms. @default 5000 */
  heartbeatMs?: number
}

/** The standalone gateway, driven by a policy document that may change while it serves. */
export interface PolicyGateway {
  /** The Fastify instance that owns the listener. */
  readonly app: FastifyInstance
  /** The policy's versions: `active`, `history()`, `rollback()`, `apply()`. */
  readonly policy: PolicyManager<Generation>
  /** Starts listening where the document (or the options) say; resolves to the address. */
  listen: () => Promise<string>
  /** Stops listening, lets requests in flight finish on the version they started on, and releases everything. */
  close: () => Promise<void>
  /** Reads the file now and applies it if it changed (also without `watch`). */
  reload: () => Promise<void>
  /** How the candidate in shadow or canary mode compares with the active version. */
  trialStats: () => TrialStats
  /** With `redis`: what this instance reports to the fleet. */
  fleetReport: () => InstanceStatus | null
  /** With `observe.metrics` in the document: the metrics listener's address, once `listen()` resolved. */
  metricsUrl: () => string | null
  /** With `admin`: the admin API's address, once `listen()` resolved. */
  adminUrl: () => string | null
}

// Parts of a document that are read once, when the gateway starts: they hold the listener and
// state every version shares. A change to them is logged and waits for the next start.
const START_ONLY = ['observe', 'server.host', 'server.port', 'server.tls', 'server.requestTimeout', 'server.keepAliveTimeout', 'server.maxHeaderSize', 'rateLimitStore', 'audit.sinks', 'audit.chain', 'audit.onSinkFailure'] as const

/**
 * Starts the standalone gateway from a policy document. Each version of the document is compiled
 * into a chain of its own (a Fastify instance with every plugin, route and upstream, ready before
 * it serves); the listener hands each new request to the active one. Swapping versions is one
 * reference change: a request is served from start to end by the version it arrived on, which
 * closes once its last request is answered. Rate-limit counts, the audit log and the listener are
 * shared by every version.
 */
export async function startPolicyGateway (options: PolicyGatewayOptions): Promise<PolicyGateway> {
  const file = resolve(options.file)
  const dir = dirname(file)
  const name = basename(file)
  const env = options.env ?? process.env
  let edge: FastifyInstance | null = null
  const retiring = new Set<LiveGeneration>()
  const log = (): FastifyInstance['log'] => (edge as FastifyInstance).log
  const autoRollback = options.autoRollback === undefined ? null : checkAutoRollback(options.autoRollback)

  const policy: PolicyManager<LiveGeneration> = new PolicyManager<LiveGeneration>({
    ...(options.publicKey === undefined ? {} : { publicKey: options.publicKey }),
    ...(options.history === undefined ? {} : { history: options.history }),
    secrets: { baseDir: dir, env },
    compile: async (checked, mode) => await compile(checked, mode),
    release: (generation) => {
      if (trial.candidateIs(generation)) trial.stop()
      retiring.add(generation)
      // Not awaited: a slow request on the old version must not hold up the next update.
      generation.retire().then(() => { retiring.delete(generation) }, () => {})
    },
    onEvent: (event) => { report(event) }
  })

  // The first document decides what every version shares; it must pass every check.
  const { text, signature } = await readPolicyFile(file, policy.requiresSignature)
  const first = await policy.check(text, { name, signature })
  const startup = configOf(first)
  const server = { ...startup.server, ...(options.host === undefined ? {} : { host: options.host }), ...(options.port === undefined ? {} : { port: options.port }) }
  const https = startup.server.tls === undefined ? undefined : await serverHttpsOptions(startup.server.tls)
  const { logger: _logger, ...chainOptions } = options.serverOptions ?? {}
  const dispatch = (req: IncomingMessage, res: ServerResponse): void => {
    const generation = policy.active?.compiled
    if (generation === undefined) {
      // Only once the gateway has closed its last version.
      res.writeHead(503, { connection: 'close' }).end()
      return
    }
    generation.serve(req, res)
  }
  edge = Fastify({
    clientErrorHandler: problemClientErrorHandler(startup.core.problemTypeBase),
    ...options.serverOptions,
    // The document's limits, over any in serverOptions: what a policy says is what holds.
    requestTimeout: server.requestTimeout,
    keepAliveTimeout: server.keepAliveTimeout,
    // Read by Fastify only to say https:// in the address it listens on.
    ...(https === undefined ? {} : { https }),
    serverFactory: (_handler, opts) => {
      const listener = https === undefined ? createHttpServer(listenerOptions(server), dispatch) : createHttpsServer({ ...https, ...listenerOptions(server) }, dispatch)
      // What Fastify sets on a server it makes itself.
      listener.keepAliveTimeout = opts.keepAliveTimeout as number
      listener.requestTimeout = opts.requestTimeout as number
      // Headers have no longer than the whole request.
      if (listener.requestTimeout > 0) listener.headersTimeout = Math.min(listener.headersTimeout, listener.requestTimeout)
      listener.setTimeout(opts.connectionTimeout as number)
      if ((opts.maxRequestsPerSocket as number) > 0) listener.maxRequestsPerSocket = opts.maxRequestsPerSocket as number
      return listener
    }
  }) as unknown as FastifyInstance
  const state = { closing: false }
  const trial = new Trial(edge.log, autoRollback, (reason) => {
    edge?.log.warn({ policy: { action: 'auto-rollback', reason } }, `policy candidate rolled back: ${reason}`)
    policy.rollback(undefined, { source: 'auto-rollback' }).catch(() => {})
  })
  const storeConfig = options.rateLimitStore ?? startup.rateLimitStore
  // Counts live as long as the gateway: a new version goes on counting where the last one was.
  const store: RateLimitStore = storeConfig === undefined ? new MemoryStore() : redisStore(edge, storeConfig)
  // One observer for the gateway's life: every version counts into the same metrics.
  const { observer, metrics } = observeGateway(startup.observe, store)
  let auditWriter: AuditWriter | undefined
  if (startup.audit !== undefined) {
    const chain = startup.audit.chain
    const signingKey = typeof chain === 'object' && chain.signingKey !== undefined ? (await readPem(chain.signingKey, 'audit.chain.signingKey')).toString('latin1') : undefined
    auditWriter = await openAuditWriter({
      sinks: startup.audit.sinks,
      chain: typeof chain === 'object' ? { ...chain, signingKey } : chain,
      onSinkFailure: startup.audit.onSinkFailure
    })
  }

  // One pool per upstream and connection settings, shared by every version that keeps them.
  const dispatchers = new Map<string, Agent>()
  const dispatcherFor = (settings: UpstreamDispatch): Agent => {
    const key = JSON.stringify(settings)
    let agent = dispatchers.get(key)
    if (agent === undefined) {
      const { url: _url, ...options } = settings
      agent = new Agent(options)
      dispatchers.set(key, agent)
    }
    return agent
  }

  async function compile (checked: CheckedPolicy, mode: PolicyMode): Promise<LiveGeneration> {
    // Building a chain is mostly synchronous work: requests waiting on sockets go first.
    await new Promise((resolve) => setImmediate(resolve))
    const valid = configOf(checked)
    if (valid.audit !== undefined && auditWriter === undefined) {
      throw new Error('audit is set, but the gateway started without an audit log: its sinks open at start, so restart the gateway to add one')
    }
    const files = await readChainFiles(valid)
    let handler: RequestHandler | null = null
    const app = Fastify({
      ...chainOptions,
      genReqId: () => randomUUID(),
      bodyLimit: valid.server.bodyLimit,
      loggerInstance: log().child({ policyVersion: checked.version }),
      return503OnClosing: false,
      // Never listens: the gateway's listener hands it requests through this handler.
      serverFactory: (routing) => {
        handler = routing
        return new Server()
      }
    }) as unknown as FastifyInstance
    try {
      await addChain(app, valid, files, {
        state,
        version: checked.version,
        dispatcherFor,
        observer,
        // A shadow counts in a store of its own: its limits are simulated, never charged to clients.
        store: mode === 'shadow' ? new MemoryStore() : store,
        ...(auditWriter === undefined || mode === 'shadow' ? {} : { auditWriter }),
        ...(mode === 'enforce'
          ? { purpose: 'serve', onPrincipal: trial.onPrincipal, onResponse: trial.onActiveResponse }
          : mode === 'canary' ? { purpose: 'canary', onResponse: trial.onCandidateResponse } : { purpose: 'shadow' })
      })
      await app.ready()
    } catch (err) {
      await app.close().catch(() => {})
      throw err
    }
    return new LiveGeneration(checked.version, mode, app, handler as unknown as RequestHandler)
  }

  function configOf (checked: CheckedPolicy): ValidGatewayConfig {
    return configOfDocument(checked.resolved, dir)
  }

  function report (event: PolicyEvent): void {
    const target = policy.active?.compiled.app
    const candidate = policy.candidate
    if (event.action === 'activate' && event.mode !== 'enforce' && candidate !== null) trial.start(candidate.compiled, candidate.mode, candidate.share)
    if (observer !== null) {
      observer.policyUpdate(event.action === 'reject' ? 'refused' : event.action === 'rollback' ? 'rolled-back' : 'applied')
      const active = policy.active
      if (active !== null) observer.setPolicyVersion(active.version)
    }
    // Logged and audited once the version is in force: the diff is no part of the switch.
    setImmediate(() => { record(event, target) })
  }

  function record (event: PolicyEvent, target: FastifyInstance | undefined): void {
    if (event.action === 'reject') {
      const problems = (event.problems as PolicyProblem[]).map((problem) => ({ pointer: problem.pointer, line: problem.line, message: problem.message }))
      log().error({ policy: { action: 'reject', stage: event.stage, version: event.version, running: event.previousVersion, source: event.source, problems } }, `policy update refused at ${String(event.stage)}; version ${String(event.previousVersion)} keeps serving`)
    } else {
      const restart = event.previousVersion === null ? [] : startOnlyChanges(event)
      log().info({ policy: { action: event.action, mode: event.mode, version: event.version, previous: event.previousVersion, source: event.source, ...(event.actor === undefined ? {} : { actor: event.actor }), changes: event.diff?.length ?? 0, warnings: event.warnings?.map((w) => `${w.pointer} ${w.message}`), ...(restart.length === 0 ? {} : { restartNeeded: restart }) } }, `policy ${event.action === 'rollback' ? 'rolled back' : event.mode === 'enforce' ? 'activated' : `on trial (${event.mode})`}: ${String(event.previousVersion)} → ${String(event.version)}`)
    }
    // The audit log is shared: whichever version is active writes the record.
    target?.audit?.policyChange({
      action: event.action,
      version: event.version,
      previousVersion: event.previousVersion,
      source: event.source,
      mode: event.mode,
      ...(event.actor === undefined ? {} : { actor: event.actor }),
      ...(event.stage === undefined ? {} : { reason: `${event.stage}: ${String(event.problems?.[0]?.message)}` }),
      ...(event.diff === undefined ? {} : { diff: summary(event.diff) })
    })
  }

  let watcher: PolicyFileWatch | null = null
  const reload = async (): Promise<void> => {
    if (watcher !== null) {
      await watcher.reload()
      return
    }
    const next = await readPolicyFile(file, policy.requiresSignature)
    await policy.apply(next.text, { name, signature: next.signature, source: 'file' })
  }
  let sync: RedisSync | null = null
  const redisClients: Redis[] = []
  try {
    if (options.watch === false) await reload()
    else watcher = await watchPolicyFile(policy, file, { ...(options.debounceMs === undefined ? {} : { debounceMs: options.debounceMs }) })
    if (options.redis !== undefined) sync = await followRedis(options.redis)
  } catch (err) {
    await abandon()
    throw err
  }

  // A start that fails after the first version was compiled releases all it opened.
  async function abandon (): Promise<void> {
    watcher?.close()
    await sync?.close()
    for (const client of redisClients) client.disconnect()
    await policy.close()
    await auditWriter?.close()
    await (edge as FastifyInstance).close()
  }

  async function followRedis (redis: PolicyRedisOptions): Promise<RedisSync> {
    if (typeof redis?.url !== 'string' || !/^rediss?:\/\/./.test(redis.url)) throw invalidOption('redis.url', 'a redis:// or rediss:// URL such as "redis://127.0.0.1:6379"')
    // A failed command fails at once rather than queueing: the running version serves meanwhile.
    const connect = (): Redis => new Redis(redis.url, { enableOfflineQueue: true, maxRetriesPerRequest: 1 })
    const client = connect()
    const subscriber = connect()
    redisClients.push(client, subscriber)
    for (const connection of redisClients) connection.on('error', () => {})
    return await syncPolicyFromRedis(policy, {
      client,
      subscriber,
      prefix: redis.prefix,
      instanceId: redis.instanceId,
      heartbeatMs: redis.heartbeatMs
    })
  }

  let admin: { app: FastifyInstance, host: string, port: number } | null = null
  try {
    if (options.admin !== undefined) {
      const adminOptions = options.admin
      admin = { app: await buildAdminApi(policy as unknown as PolicyManager<Generation>, () => trial.stats(), adminOptions, edge.log), host: adminOptions.host ?? '127.0.0.1', port: adminOptions.port }
    }
  } catch (err) {
    await abandon()
    throw err
  }
  let adminUrl: string | null = null
  let metricsUrl: string | null = null
  edge.addHook('preClose', async () => {
    state.closing = true
    await admin?.app.close()
    await metrics?.close()
  })
  edge.addHook('onClose', async () => {
    watcher?.close()
    await sync?.close()
    for (const client of redisClients) client.disconnect()
    await policy.close()
    await Promise.all([...retiring].map(async (generation) => { await generation.close() }))
    await Promise.all([...dispatchers.values()].map(async (agent) => { await agent.close() }))
    await auditWriter?.close()
  })
  const app = edge
  return {
    app,
    policy: policy as unknown as PolicyManager<Generation>,
    reload,
    trialStats: () => trial.stats(),
    fleetReport: () => sync?.status() ?? null,
    listen: async () => {
      const url = await app.listen({ host: server.host, port: server.port })
      if (admin !== null) adminUrl = await admin.app.listen({ host: admin.host, port: admin.port })
      if (metrics !== null) metricsUrl = await metrics.listen()
      return url
    },
    adminUrl: () => adminUrl,
    metricsUrl: () => metricsUrl,
    close: async () => { await app.close() }
  }
}

function startOnlyChanges (event: PolicyEvent): string[] {
  return (event.diff ?? []).map((entry) => entry.path).filter((path) => START_ONLY.some((part) => path === part || path.startsWith(`${part}.`) || path.startsWith(`${part}[`)))
}

function summary (entries: readonly PolicyDiffEntry[]): { added: string[], changed: string[], removed: string[], truncated: boolean } {
  const pick = (kind: string): string[] => entries.filter((entry) => entry.kind === kind).slice(0, 50).map((entry) => entry.path)
  return { added: pick('added'), changed: pick('changed'), removed: pick('removed'), truncated: entries.length > 50 }
}

/**
 * Takes a policy file through every step a live update takes, compiling included, without
 * serving it or opening its audit sinks: what `portcullis policy validate` runs. Resolves to the
 * checked document (its version and warnings); rejects with `PolicyRejected` naming the first fault.
 */
export async function checkPolicyFile (file: string, options: Pick<PolicyGatewayOptions, 'publicKey' | 'env'> = {}): Promise<CheckedPolicy> {
  const path = resolve(file)
  const dir = dirname(path)
  const manager = new PolicyManager<null>({
    ...(options.publicKey === undefined ? {} : { publicKey: options.publicKey }),
    secrets: { baseDir: dir, env: options.env },
    compile: async (checked) => {
      const valid = configOfDocument(checked.resolved, dir)
      const files = await readChainFiles(valid)
      if (files.audit !== undefined) validateAuditOptions(files.audit)
      const app = Fastify() as unknown as FastifyInstance
      try {
        // Records go nowhere: the sinks were checked above, and are not opened to check a file.
        const auditWriter = files.audit === undefined ? undefined : await openAuditWriter({ sinks: [{ type: 'stream', stream: new PassThrough() }] })
        await addChain(app, valid, files, { state: { closing: false }, store: new MemoryStore(), version: checked.version, ...(auditWriter === undefined ? {} : { auditWriter }) })
        await app.ready()
        await auditWriter?.close()
      } finally {
        await app.close()
      }
      return null
    }
  })
  const { text, signature } = await readPolicyFile(path, manager.requiresSignature)
  const checked = await manager.apply(text, { name: basename(path), signature, source: 'validate' })
  await manager.close()
  return checked
}
