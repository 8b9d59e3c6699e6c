import { test } from 'tap'
import Fastify, { type FastifyInstance, type FastifyPluginAsync, type InjectOptions, type onRequestHookHandler } from 'fastify'
import { Registry } from 'prom-client'
import { Redis } from 'ioredis'
import { context, trace, SpanStatusCode, type Tracer } from '@opentelemetry/api'
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks'
import { AlwaysOffSampler, BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace-base'
import { deny, portcullisCore, recordDecision, SnapshotHolder } from '@portcullis/core'
import { createApiKey, portcullisAuthn } from '@portcullis/authn'
import { Forbidden, IpDenied, portcullisAuthz } from '@portcullis/authz'
import { MemoryStore, portcullisRateLimit, RateLimited, RedisStore } from '@portcullis/rate-limit'
import { createChainObserver, UNMATCHED_ROUTE, type ChainObserver, type StageHook } from '../src/observe.js'
import { metricsHandler, DEFAULT_METRICS_BUCKETS } from '../src/metrics.js'
import { RECOMMENDED_ORDER, type ChainStep } from '../src/order.js'

context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable())

const key = createApiKey({ id: 'k1', owner: { id: 'alice', type: 'user', roles: ['user'] } })
const headers = { 'x-api-key': key.key }

function addStage (app: FastifyInstance, stage: StageHook): void {
  app.addHook(stage.hook as 'onRequest', stage.handler as onRequestHookHandler)
}

type Part = [string, FastifyPluginAsync<never> | null, unknown?]

/** An app wired as the meta-plugin wires the observer: start, each part and its after() hook, finish. */
async function chainApp (observer: ChainObserver, parts: Part[], routes?: (app: FastifyInstance) => void): Promise<FastifyInstance> {
  const app = Fastify()
  app.addHook('onRequest', observer.start)
  for (const [stage, plugin, options] of parts) {
    if (plugin !== null) await app.register(plugin, (options ?? {}) as never)
    // As the meta-plugin does: the step of RECOMMENDED_ORDER with the part's key.
    addStage(app, observer.after(RECOMMENDED_ORDER.find((step) => step.key === stage) as ChainStep))
  }
  app.addHook('onResponse', observer.finish)
  if (routes === undefined) {
    app.get('/orders/:id', { config: { authz: { anyRole: ['user'] } } }, async () => ({ ok: true }))
  } else routes(app)
  await app.ready()
  return app
}

const fullChain = (limit = 2, mode: 'enforce' | 'report' = 'enforce'): Part[] => [
  ['core', portcullisCore as FastifyPluginAsync<never>, { snapshot: new SnapshotHolder({ version: 'v7', value: {} }) }],
  ['authn', portcullisAuthn as FastifyPluginAsync<never>, { methods: { key: { type: 'api-key', keys: [key.record] } } }],
  ['rateLimit', portcullisRateLimit as FastifyPluginAsync<never>, { mode, limits: [{ name: 'user', algorithm: 'fixed-window', limit, window: '1m' }] }],
  ['authz', portcullisAuthz as FastifyPluginAsync<never>, { roles: { user: {} } }]
]

/** The samples of the Prometheus text format: `name{labels}` → value. */
async function samples (registry: Registry): Promise<Map<string, number>> {
  const map = new Map<string, number>()
  for (const line of (await registry.metrics()).split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const at = line.lastIndexOf(' ')
    map.set(line.slice(0, at), Number(line.slice(at + 1)))
  }
  return map
}

function tracing (sampler?: AlwaysOffSampler): { tracer: Tracer, exporter: InMemorySpanExporter } {
  const exporter = new InMemorySpanExporter()
  const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)], ...(sampler === undefined ? {} : { sampler }) })
  return { tracer: provider.getTracer('test'), exporter }
}

const ms = (time: [number, number]): number => time[0] * 1000 + time[1] / 1e6

test('metrics count decisions, stages and requests by route pattern, for allowed and denied requests', async (t) => {
  const observer = createChainObserver({ metrics: true }) as ChainObserver
  const registry = observer.registry as Registry
  const app = await chainApp(observer, fullChain())
  t.teardown(async () => await app.close())

  t.equal((await app.inject({ url: '/orders/1', headers })).statusCode, 200)
  t.equal((await app.inject({ url: '/orders/2', headers })).statusCode, 200)
  t.equal((await app.inject({ url: '/orders/3' })).statusCode, 401, 'refused by authn')
  t.equal((await app.inject({ url: '/orders/4', headers })).statusCode, 429, 'refused by the limit')
  t.equal((await app.inject({ url: '/nowhere/at/all', headers })).statusCode, 404, 'no route')

  const s = await samples(registry)
  const decision = (plugin: string, outcome: string, reason: string, route = '/orders/:id'): number | undefined =>
    s.get(`portcullis_decisions_total{plugin="${plugin}",outcome="${outcome}",reason="${reason}",route="${route}"}`)
  t.equal(decision('@portcullis/authn', 'allow', 'PORTCULLIS_AUTHN_OK'), 3)
  t.equal(decision('@portcullis/authn', 'deny', 'PORTCULLIS_AUTHN_MISSING_CREDENTIALS'), 1)
  t.equal(decision('@portcullis/rate-limit', 'allow', 'PORTCULLIS_RATE_LIMIT_OK'), 2)
  t.equal(decision('@portcullis/rate-limit', 'deny', 'PORTCULLIS_RATE_LIMIT_EXCEEDED'), 1)
  t.equal(decision('@portcullis/authz', 'allow', 'PORTCULLIS_AUTHZ_OK'), 2)
  t.equal(decision('@portcullis/rate-limit', 'allow', 'PORTCULLIS_RATE_LIMIT_OK', UNMATCHED_ROUTE), 1, 'unmatched URLs share one label')
  t.equal(s.get('portcullis_rate_limit_denials_total{limit="user",outcome="deny"}'), 1)

  const stageCount = (stage: string): number | undefined => s.get(`portcullis_stage_duration_seconds_count{stage="${stage}"}`)
  t.equal(stageCount('core'), 5)
  t.equal(stageCount('authn'), 5, 'the request authn refused spent time in authn too')
  t.equal(stageCount('rateLimit'), 4)
  t.equal(stageCount('authz'), 3)
  t.equal(stageCount('upstream'), 3, 'only requests every check let through reach the handler (or the not-found one)')
  t.ok((s.get('portcullis_stage_duration_seconds_sum{stage="authn"}') as number) > 0)
  t.equal(s.get('portcullis_stage_duration_seconds_bucket{stage="core",le="+Inf"}'), 5)
  t.equal(s.get('portcullis_stage_duration_seconds_bucket{stage="core",le="10"}'), 5)

  const requests = (route: string, status: string): number | undefined => s.get(`portcullis_request_duration_seconds_count{route="${route}",method="GET",status_class="${status}"}`)
  t.equal(requests('/orders/:id', '2xx'), 2)
  t.equal(requests('/orders/:id', '4xx'), 2)
  t.equal(requests(UNMATCHED_ROUTE, '4xx'), 1)
  const text = await registry.metrics()
  t.notMatch(text, '/orders/1', 'never the raw URL')
  t.notMatch(text, 'nowhere', 'never the raw URL')
  t.match(text, '# TYPE portcullis_stage_duration_seconds histogram')

  // Counts are handed over once: a second scrape reports the same totals.
  t.equal((await samples(registry)).get('portcullis_rate_limit_denials_total{limit="user",outcome="deny"}'), 1)
  const json = await registry.getMetricsAsJSON()
  const stages = json.find((metric) => metric.name === 'portcullis_stage_duration_seconds')
  t.ok(stages?.values.some((value) => value.labels.stage === 'authz' && value.labels.le === '+Inf' && value.value === 3), 'the JSON form has the series too')
  registry.resetMetrics()
  t.equal((await samples(registry)).get('portcullis_stage_duration_seconds_count{stage="core"}'), undefined, 'reset empties the histograms')
})

test('limits in report mode count as would-deny, per limit', async (t) => {
  const observer = createChainObserver({ metrics: { prefix: 'gw_' } }) as ChainObserver
  const app = await chainApp(observer, fullChain(1, 'report'))
  t.teardown(async () => await app.close())
  for (let i = 0; i < 3; i++) t.equal((await app.inject({ url: '/orders/1', headers })).statusCode, 200)
  const s = await samples(observer.registry as Registry)
  t.equal(s.get('gw_rate_limit_denials_total{limit="user",outcome="would-deny"}'), 2)
  t.equal(s.get('gw_stage_duration_seconds_count{stage="upstream"}'), 3, 'report mode lets them through')
})

test('spans: one per request, a child per stage in order, the rejecting stage in error', async (t) => {
  const { tracer, exporter } = tracing()
  const observer = createChainObserver({ tracing: { tracer } }) as ChainObserver
  t.equal(observer.registry, null, 'no metrics without asking')
  const app = await chainApp(observer, fullChain())
  t.teardown(async () => await app.close())

  const server = tracer.startSpan('GET /orders/:id')
  await context.with(trace.setSpan(context.active(), server), async () => await app.inject({ url: '/orders/1', headers }))
  server.end()
  const spans = exporter.getFinishedSpans()
  const root = spans.find((span) => span.name === 'portcullis') as ReadableSpan
  t.equal(root.parentSpanContext?.spanId, server.spanContext().spanId, 'a child of the span active when the request arrived')
  t.equal(root.spanContext().traceId, server.spanContext().traceId)
  t.same(root.attributes, { 'http.request.method': 'GET', 'http.response.status_code': 200, 'portcullis.outcome': 'passed', 'portcullis.answered_by': 'upstream', 'http.route': '/orders/:id', 'portcullis.policy.version': 'v7' })
  const stages = spans.filter((span) => span.parentSpanContext?.spanId === root.spanContext().spanId)
  t.same(stages.map((span) => span.name), ['portcullis.core', 'portcullis.authn', 'portcullis.rateLimit', 'portcullis.authz', 'portcullis.upstream'])
  for (let i = 0; i < stages.length; i++) {
    const span = stages[i] as ReadableSpan
    t.equal(span.status.code, SpanStatusCode.UNSET)
    t.ok(ms(span.startTime) >= ms(root.startTime) - 0.001 && ms(span.endTime) <= ms(root.endTime) + 0.001, `${span.name} within the request's span`)
    if (i > 0) t.ok(Math.abs(ms(span.startTime) - ms((stages[i - 1] as ReadableSpan).endTime)) < 0.001, `${span.name} starts where the stage before ended`)
  }
  t.same(stages[1]?.attributes, { 'portcullis.stage': 'authn', 'portcullis.step': 5 })

  exporter.reset()
  t.equal((await app.inject({ url: '/orders/1', headers: { 'x-api-key': 'wrong', authorization: 'Bearer secret-token' } })).statusCode, 401)
  const refused = exporter.getFinishedSpans()
  t.same(refused.map((span) => span.name), ['portcullis.core', 'portcullis.authn', 'portcullis'], 'nothing after the rejecting stage')
  const authn = refused[1] as ReadableSpan
  t.equal(authn.status.code, SpanStatusCode.ERROR)
  t.equal(authn.status.message, 'PORTCULLIS_AUTHN_INVALID_CREDENTIALS')
  t.same(authn.attributes, {
    'portcullis.stage': 'authn',
    'portcullis.step': 5,
    'portcullis.decision.plugin': '@portcullis/authn',
    'portcullis.decision.outcome': 'deny',
    'portcullis.decision.reason': 'PORTCULLIS_AUTHN_INVALID_CREDENTIALS',
    'http.response.status_code': 401
  })
  t.equal((refused[2] as ReadableSpan).attributes['portcullis.outcome'], 'rejected')
  t.equal((refused[2] as ReadableSpan).parentSpanContext, undefined, 'a root span when no span was active')
  t.notMatch(JSON.stringify(refused.map((span) => span.attributes)), /wrong|secret-token/, 'no credentials in attributes')

  exporter.reset()
  await app.inject({ url: '/orders/1', headers })
  t.equal((await app.inject({ url: '/orders/1', headers })).statusCode, 429)
  const limited = exporter.getFinishedSpans().slice(-4)
  t.same(limited.map((span) => span.name), ['portcullis.core', 'portcullis.authn', 'portcullis.rateLimit', 'portcullis'])
  t.equal(limited[2]?.attributes['portcullis.decision.rule'], 'user', 'the refusing limit')
  t.equal(limited[2]?.status.code, SpanStatusCode.ERROR)
})

test('the default tracer is the global provider\'s; unsampled requests make no spans', async (t) => {
  const exporter = new InMemorySpanExporter()
  const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] })
  trace.setGlobalTracerProvider(provider)
  t.teardown(() => trace.disable())
  const observer = createChainObserver({ tracing: true }) as ChainObserver
  observer.setPolicyVersion('v9')
  observer.policyUpdate('applied')
  observer.watchStore('memory', new MemoryStore())
  const app = await chainApp(observer, [['core', portcullisCore as FastifyPluginAsync<never>]], (app) => {
    app.get('/', async () => 'ok')
  })
  t.teardown(async () => await app.close())
  await app.inject('/')
  const root = exporter.getFinishedSpans().find((span) => span.name === 'portcullis')
  t.equal(root?.attributes['portcullis.policy.version'], 'v9', 'the version set on the observer when the request pinned none')
  t.equal(root?.instrumentationScope.name, '@portcullis/gateway')

  const off = tracing(new AlwaysOffSampler())
  const unsampled = await chainApp(createChainObserver({ tracing: { tracer: off.tracer } }) as ChainObserver, [['core', portcullisCore as FastifyPluginAsync<never>]], (app) => {
    app.get('/', async () => 'ok')
  })
  t.teardown(async () => await unsampled.close())
  t.equal((await unsampled.inject('/')).statusCode, 200)
  t.same(off.exporter.getFinishedSpans(), [])
})

test('two Fastify instances share one observer and one registry, each with its own chain', async (t) => {
  const { tracer, exporter } = tracing()
  const registry = new Registry()
  const observer = createChainObserver({ metrics: { registry }, tracing: { tracer } }) as ChainObserver
  const first = await chainApp(observer, fullChain())
  const second = await chainApp(observer, [['core', portcullisCore as FastifyPluginAsync<never>]], (app) => {
    app.get('/orders/:id', async () => { throw new Error('boom') })
  })
  t.teardown(async () => { await first.close(); await second.close() })
  t.equal(observer.registry, registry)
  t.equal((await first.inject({ url: '/orders/1', headers })).statusCode, 200)
  exporter.reset()
  t.equal((await second.inject({ url: '/orders/1' })).statusCode, 500)
  const spans = exporter.getFinishedSpans()
  t.same(spans.map((span) => span.name), ['portcullis.core', 'portcullis.upstream', 'portcullis'], 'the second chain has no authn: its handler failed')
  t.equal(spans[1]?.status.code, SpanStatusCode.ERROR)
  t.equal(spans[1]?.status.message, 'answered with status 500')
  t.equal(spans[2]?.attributes['portcullis.answered_by'], 'upstream')
  const s = await samples(registry)
  t.equal(s.get('portcullis_request_duration_seconds_count{route="/orders/:id",method="GET",status_class="2xx"}'), 1)
  t.equal(s.get('portcullis_request_duration_seconds_count{route="/orders/:id",method="GET",status_class="5xx"}'), 1)
  t.equal(s.get('portcullis_stage_duration_seconds_count{stage="core"}'), 2)
})

test('where a request is answered when no decision says so', async (t) => {
  const { tracer, exporter } = tracing()
  const observer = createChainObserver({ metrics: true, tracing: { tracer } }) as ChainObserver
  const app = Fastify()
  app.addHook('onRequest', observer.start)
  // Fails inside the core stage, before any mark: the first stage answered.
  app.addHook('onRequest', async (request, reply) => { if (request.headers['x-fail'] === 'core') await reply.code(403).send('no') })
  await app.register(portcullisCore)
  addStage(app, observer.after('core'))
  // A hook answering early, without a decision and without an error.
  app.addHook('onRequest', async (request, reply) => { if (request.method === 'OPTIONS') await reply.code(204).send() })
  addStage(app, observer.after('authn'))
  addStage(app, observer.after('schemaValidate'))
  addStage(app, observer.after('masking'))
  addStage(app, observer.after('audit'))
  app.addHook('onResponse', observer.finish)
  app.post('/items', async (request) => request.body)
  await app.ready()
  t.teardown(async () => await app.close())

  const run = async (request: InjectOptions): Promise<ReadableSpan[]> => {
    exporter.reset()
    await app.inject(request)
    return exporter.getFinishedSpans()
  }
  let spans = await run({ method: 'POST', url: '/items', headers: { 'x-fail': 'core' }, payload: {} })
  t.same(spans.map((span) => span.name), ['portcullis.core', 'portcullis.audit', 'portcullis'], 'the answering stage ends at the response hooks\' mark')
  t.equal(spans[0]?.status.code, SpanStatusCode.ERROR, 'a 403 from within core')

  spans = await run({ method: 'OPTIONS', url: '/items' })
  t.same(spans.map((span) => span.name), ['portcullis.core', 'portcullis.authn', 'portcullis.audit', 'portcullis'])
  t.equal(spans[1]?.status.code, SpanStatusCode.UNSET, 'an early answer is no rejection')
  t.equal(spans[3]?.attributes['portcullis.answered_by'], 'authn')

  spans = await run({ method: 'POST', url: '/items', headers: { 'content-type': 'application/json' }, payload: '{"broken' })
  t.same(spans.map((span) => span.name), ['portcullis.core', 'portcullis.authn', 'portcullis.schemaValidate', 'portcullis.audit', 'portcullis'], 'a body that cannot be parsed is refused at the validation stage')
  t.equal(spans[2]?.status.code, SpanStatusCode.ERROR)
  t.equal(spans[2]?.attributes['http.response.status_code'], 400)

  spans = await run({ method: 'POST', url: '/items', payload: { a: 1 } })
  t.same(spans.map((span) => span.name), ['portcullis.core', 'portcullis.authn', 'portcullis.schemaValidate', 'portcullis.upstream', 'portcullis.audit', 'portcullis'], 'the handler and the response hooks make one stage when the handler is not marked')
  const [audit, root] = [spans[4] as ReadableSpan, spans[5] as ReadableSpan]
  t.ok(ms(audit.startTime) >= ms((spans[3] as ReadableSpan).endTime) - 0.001, 'audit runs once the reply is sent')
  t.ok(ms(audit.endTime) <= ms(root.endTime) + 0.001)
  t.equal(root.attributes['http.route'], '/items')
})

test('denials are placed at the stage of the plugin that denied', async (t) => {
  const { tracer, exporter } = tracing()
  const observer = createChainObserver({ tracing: { tracer } }) as ChainObserver
  const app = Fastify()
  app.addHook('onRequest', observer.start)
  // An IP rule refusing before core's mark: the chain is not known yet.
  app.addHook('onRequest', async (request) => { if (request.headers['x-deny'] === 'ip') deny(request, 'enforce', '@portcullis/authz/ip-rules', new IpDenied()) })
  await app.register(portcullisCore)
  addStage(app, observer.after('core'))
  addStage(app, observer.after('rateLimit'))
  addStage(app, observer.after('authz'))
  addStage(app, observer.after('upstream'))
  addStage(app, observer.after('masking'))
  app.addHook('preHandler', async (request) => {
    // A rate limit refusing after core: the chain has the principal stage, not the address one.
    if (request.headers['x-deny'] === 'limit') recordDecision(request, { plugin: '@portcullis/rate-limit', outcome: 'deny', reason: 'PORTCULLIS_RATE_LIMIT_EXCEEDED' })
    // A condition refusing after authz: a stage this chain does not mark.
    if (request.headers['x-deny'] === 'condition') deny(request, 'enforce', '@portcullis/authz', new Forbidden(), 'owner')
  })
  app.addHook('onResponse', observer.finish)
  app.get('/r', async (request) => {
    if (request.headers['x-deny'] === 'handler') deny(request, 'enforce', 'my-app', new Forbidden())
    return 'ok'
  })
  await app.ready()
  t.teardown(async () => await app.close())
  const run = async (kind: string): Promise<ReadableSpan[]> => {
    exporter.reset()
    await app.inject({ url: '/r', headers: { 'x-deny': kind } })
    return exporter.getFinishedSpans()
  }
  let spans = await run('ip')
  t.same(spans.map((span) => span.name), ['portcullis.ipRules', 'portcullis.masking', 'portcullis'], 'a stage the chain does not mark; the response hooks run on the refusal too')
  t.equal(spans[0]?.attributes['portcullis.decision.reason'], 'PORTCULLIS_AUTHZ_IP_DENIED')

  spans = await run('condition')
  t.same(spans.map((span) => span.name), ['portcullis.core', 'portcullis.rateLimit', 'portcullis.authz', 'portcullis.conditions', 'portcullis.masking', 'portcullis'])
  t.equal(spans[3]?.attributes['portcullis.decision.rule'], 'owner')
  t.equal(spans[3]?.status.code, SpanStatusCode.ERROR)

  spans = await run('handler')
  t.same(spans.map((span) => span.name), ['portcullis.core', 'portcullis.rateLimit', 'portcullis.authz', 'portcullis.upstream', 'portcullis.masking', 'portcullis'], 'a plugin of no stage: the handler')
  t.equal(spans[3]?.status.message, 'PORTCULLIS_AUTHZ_FORBIDDEN')

  spans = await run('none')
  t.same(spans.map((span) => span.name), ['portcullis.core', 'portcullis.rateLimit', 'portcullis.authz', 'portcullis.upstream', 'portcullis.masking', 'portcullis'])
  t.ok(spans.every((span) => span.status.code === SpanStatusCode.UNSET))

  // A rate-limit decision recorded without the limits that refused (none is counted per limit).
  const metered = createChainObserver({ metrics: true }) as ChainObserver
  const other = Fastify()
  other.addHook('onRequest', metered.start)
  await other.register(portcullisCore)
  addStage(other, metered.after('core'))
  other.addHook('onRequest', async (request) => { deny(request, 'enforce', '@portcullis/rate-limit', new RateLimited()) })
  addStage(other, metered.after('ipRateLimit'))
  addStage(other, metered.after('rateLimit'))
  other.addHook('onResponse', metered.finish)
  other.get('/', async () => 'ok')
  t.teardown(async () => await other.close())
  await other.inject('/')
  const s = await samples(metered.registry as Registry)
  t.equal(s.get('portcullis_decisions_total{plugin="@portcullis/rate-limit",outcome="deny",reason="PORTCULLIS_RATE_LIMIT_EXCEEDED",route="/"}'), 1)
  t.notOk([...s.keys()].some((name) => name.startsWith('portcullis_rate_limit_denials_total')))
  t.equal(s.get('portcullis_stage_duration_seconds_count{stage="ipRateLimit"}'), 1, 'the first stage of the plugin in the chain')
  t.equal(s.get('portcullis_stage_duration_seconds_count{stage="rateLimit"}'), undefined)
})

test('requests the chain never started are counted, without stages or spans', async (t) => {
  const { tracer, exporter } = tracing()
  const observer = createChainObserver({ metrics: { buckets: [1e-9] }, tracing: { tracer } }) as ChainObserver
  const app = Fastify()
  await app.register(portcullisCore)
  // Answers before the observer's start; its after() hooks run on nothing.
  app.addHook('onRequest', async (request, reply) => { if (request.url === '/early') await reply.code(204).send() })
  addStage(app, observer.after('core'))
  app.addHook('onRequest', observer.start)
  // Answered and refused before any mark of the chain.
  app.addHook('onRequest', async (request, reply) => {
    if (request.url === '/quiet') await reply.code(204).send()
    if (request.url === '/denied') deny(request, 'enforce', '@portcullis/authn', new Forbidden())
  })
  addStage(app, observer.after('authn'))
  app.addHook('onResponse', observer.finish)
  app.get('/early', async () => 'never')
  app.get('/late', async () => 'ok')
  app.get('/quiet', async () => 'never')
  app.get('/denied', async () => 'never')
  await app.ready()
  t.teardown(async () => await app.close())
  await app.inject('/early')
  t.same(exporter.getFinishedSpans(), [])
  await app.inject('/late')
  t.same(exporter.getFinishedSpans().map((span) => span.name), ['portcullis.authn', 'portcullis.upstream', 'portcullis'])
  exporter.reset()
  await app.inject('/quiet')
  t.same(exporter.getFinishedSpans().map((span) => span.name), ['portcullis.core', 'portcullis'], 'no mark: answered in the first stage')
  exporter.reset()
  await app.inject('/denied')
  const denied = exporter.getFinishedSpans()
  t.same(denied.map((span) => span.name), ['portcullis.authn', 'portcullis'], 'no mark: the stage of the plugin that denied')
  t.equal(denied[0]?.status.code, SpanStatusCode.ERROR)
  const s = await samples(observer.registry as Registry)
  t.equal(s.get('portcullis_request_duration_seconds_count{route="/early",method="GET",status_class="2xx"}'), 1)
  t.equal(s.get('portcullis_stage_duration_seconds_count{stage="core"}'), 1, 'only the request answered in it')
  t.equal(s.get('portcullis_stage_duration_seconds_bucket{stage="authn",le="1e-9"}'), 0, 'slower than the only bucket')
  t.equal(s.get('portcullis_stage_duration_seconds_bucket{stage="authn",le="+Inf"}'), 2)
})

test('policy version, policy updates and the rate-limit store', async (t) => {
  const observer = createChainObserver({ metrics: true }) as ChainObserver
  const registry = observer.registry as Registry
  observer.setPolicyVersion('v1')
  observer.setPolicyVersion('v2')
  observer.policyUpdate('applied')
  observer.policyUpdate('applied')
  observer.policyUpdate('refused')
  const redis = new Redis({ lazyConnect: true })
  observer.watchStore('redis', new RedisStore({ client: redis }))
  observer.watchStore('memory', new MemoryStore())
  const s = await samples(registry)
  t.equal(s.get('portcullis_policy_info{version="v2"}'), 1)
  t.equal(s.get('portcullis_policy_info{version="v1"}'), undefined, 'only the version in force')
  t.equal(s.get('portcullis_policy_updates_total{outcome="applied"}'), 2)
  t.equal(s.get('portcullis_policy_updates_total{outcome="refused"}'), 1)
  t.equal(s.get('portcullis_policy_updates_total{outcome="rolled-back"}'), 0)
  t.equal(s.get('portcullis_rate_limit_store_up{store="redis"}'), 0, 'Redis not connected: counting without it')
  t.equal(s.get('portcullis_rate_limit_store_up{store="memory"}'), 1)

  const app = Fastify()
  app.get('/metrics', metricsHandler(registry))
  t.teardown(async () => await app.close())
  const res = await app.inject('/metrics')
  t.equal(res.statusCode, 200)
  t.equal(res.headers['content-type'], 'text/plain; version=0.0.4; charset=utf-8')
  t.match(res.body, 'portcullis_policy_info{version="v2"} 1')
  t.same(DEFAULT_METRICS_BUCKETS.at(0), 0.0001)
})

test('bad options fail naming the option', async (t) => {
  t.equal(createChainObserver(), null, 'nothing asked, nothing made')
  t.equal(createChainObserver({ metrics: false, tracing: false }), null)
  const refusals: Array<[() => unknown, RegExp]> = [
    [() => createChainObserver('on' as never), /^observe must be an object/],
    [() => createChainObserver({ logs: true } as never), /observe\.logs is not a known option; allowed: metrics, tracing/],
    [() => createChainObserver({ metrics: 'yes' as never }), /observe\.metrics must be true, false or an object/],
    [() => createChainObserver({ metrics: { bucket: [1] } as never }), /observe\.metrics\.bucket is not a known option/],
    [() => createChainObserver({ metrics: { buckets: [] } }), /observe\.metrics\.buckets must be a list of increasing positive numbers/],
    [() => createChainObserver({ metrics: { buckets: [0.1, 0.05] } }), /observe\.metrics\.buckets must be/],
    [() => createChainObserver({ metrics: { buckets: 'fast' as never } }), /observe\.metrics\.buckets must be/],
    [() => createChainObserver({ metrics: { prefix: '9lives_' } }), /observe\.metrics\.prefix must be a metric name prefix/],
    [() => createChainObserver({ metrics: { prefix: 5 as never } }), /observe\.metrics\.prefix must be/],
    [() => createChainObserver({ metrics: { registry: {} as never } }), /observe\.metrics\.registry must be a prom-client Registry/],
    [() => createChainObserver({ tracing: 1 as never }), /observe\.tracing must be true, false or an object/],
    [() => createChainObserver({ tracing: { tracer: {} as never } }), /observe\.tracing\.tracer must be an OpenTelemetry Tracer/],
    [() => createChainObserver({ tracing: { provider: {} } as never }), /observe\.tracing\.provider is not a known option/],
    [() => metricsHandler({} as never), /metricsHandler\.registry must be a prom-client Registry/],
    [() => metricsHandler(null as never), /metricsHandler\.registry must be/]
  ]
  for (const [make, message] of refusals) t.throws(make, { code: 'PORTCULLIS_CORE_INVALID_OPTION', message })

  const registry = new Registry()
  const observer = createChainObserver({ metrics: { registry, prefix: '' } }) as ChainObserver
  t.throws(() => createChainObserver({ metrics: { registry, prefix: '' } }), { message: /observe\.metrics\.prefix must be a prefix of no metric the registry holds already \(it has decisions_total/ })
  t.ok(createChainObserver({ metrics: { registry, prefix: 'other_' } }), 'another prefix in the same registry')
  t.throws(() => observer.after('gateway'), { message: /observe\.after\(stage\) must be a stage of RECOMMENDED_ORDER: core, .*authn, .*audit \(got "gateway"\)/ })
  t.throws(() => observer.after(null as never), { message: /observe\.after\(stage\) must be/ })
  t.throws(() => observer.setPolicyVersion('' as never), { message: /observe\.setPolicyVersion\(version\) must be a policy version id/ })
  t.throws(() => observer.policyUpdate('done' as never), { message: /observe\.policyUpdate\(outcome\) must be applied, refused, rolled-back/ })
  t.throws(() => observer.watchStore('', new MemoryStore()), { message: /observe\.watchStore\(name\) must be/ })
  t.throws(() => observer.watchStore('redis', null as never), { message: /observe\.watchStore\(store\) must be a rate-limit store/ })
})
