import { test } from 'tap'
import Fastify from 'fastify'
import {
  createError, portcullisCore, toProblem, withHeaders, withViolations, PROBLEM_CONTENT_TYPE, type CoreOptions
} from '../src/index.js'

const Denied = createError('PORTCULLIS_TEST_DENIED', 'Access to %s is denied', 403, 'Forbidden')
const Unauthenticated = createError('PORTCULLIS_TEST_UNAUTHENTICATED', 'Authentication is required', 401, 'Unauthorized')

async function build (options: CoreOptions = {}) {
  const app = Fastify({ bodyLimit: 64 })
  await app.register(portcullisCore, options)
  app.get('/denied', async () => { throw new Denied('orders') })
  app.get('/challenge', async () => {
    throw withHeaders(new Unauthenticated(), {
      'WWW-Authenticate': 'Bearer realm="api"',
      'Content-Type': 'text/html',
      'Retry-After': 30
    })
  })
  app.post('/items', {
    schema: { body: { type: 'object', required: ['qty'], properties: { qty: { type: 'integer', maximum: 10 } } } }
  }, async () => ({ ok: true }))
  app.get('/crash', async () => { throw new Error('connect ECONNREFUSED 10.1.2.3:5432 password=hunter2') })
  app.get('/conflict', async () => { throw Object.assign(new Error('Order 7 was changed meanwhile'), { statusCode: 409 }) })
  app.get('/unavailable', async () => { throw Object.assign(new Error('pool exhausted at db-3'), { statusCode: 503 }) })
  app.get('/teapot', async (_req, reply) => reply.code(418).send(new Error('short and stout')))
  app.get('/string', async () => { throw 'a string' }) // eslint-disable-line no-throw-literal -- what careless handlers do
  return app
}

test('a Portcullis error becomes problem+json with its code, status and message', async (t) => {
  const app = await build()
  const res = await app.inject('/denied?api_key=secret')
  t.equal(res.statusCode, 403)
  t.equal(res.headers['content-type'], PROBLEM_CONTENT_TYPE)
  t.same(res.json(), {
    type: 'urn:portcullis:problem:PORTCULLIS_TEST_DENIED',
    title: 'Forbidden',
    status: 403,
    detail: 'Access to orders is denied',
    instance: '/denied',
    code: 'PORTCULLIS_TEST_DENIED'
  })
  t.notMatch(res.body, 'secret', 'the query string is never echoed')
})

test('protocol headers travel with the rejection; the representation headers do not', async (t) => {
  const app = await build()
  const res = await app.inject('/challenge')
  t.equal(res.statusCode, 401)
  t.equal(res.headers['www-authenticate'], 'Bearer realm="api"')
  t.equal(res.headers['retry-after'], '30')
  t.equal(res.headers['content-type'], PROBLEM_CONTENT_TYPE)
  t.equal(res.json().code, 'PORTCULLIS_TEST_UNAUTHENTICATED')
})

test('an unknown route is a 404 problem with a stable code', async (t) => {
  const app = await build()
  for (const method of ['GET', 'DELETE'] as const) {
    const res = await app.inject({ method, url: '/nowhere?token=abc' })
    t.equal(res.statusCode, 404)
    t.equal(res.headers['content-type'], PROBLEM_CONTENT_TYPE)
    t.match(res.json(), { code: 'PORTCULLIS_CORE_NOT_FOUND', status: 404, title: 'Not Found', detail: `No route matches ${method} /nowhere` })
    t.notMatch(res.body, 'abc')
  }
})

test('schema violations are listed with a JSON pointer and the rule', async (t) => {
  const app = await build()
  const res = await app.inject({ method: 'POST', url: '/items', payload: { qty: 11 } })
  t.equal(res.statusCode, 400)
  t.match(res.json(), {
    code: 'PORTCULLIS_CORE_VALIDATION_FAILED',
    errors: [{ in: 'body', pointer: '/qty', rule: 'maximum', message: 'must be <= 10' }]
  })
  const missing = await app.inject({ method: 'POST', url: '/items', payload: {} })
  t.match(missing.json().errors, [{ in: 'body', pointer: '', rule: 'required' }])
})

test('a Portcullis error can list the rules the request broke', async (t) => {
  const violations = [{ in: 'body', pointer: '/owner', rule: 'writable', message: 'the principal may not set this field' }]
  const problem = toProblem(withViolations(new Denied('orders'), violations), { url: '/orders?x=1' })
  t.same(problem.body.errors, violations)
  t.equal(problem.body.code, 'PORTCULLIS_TEST_DENIED')
  t.equal(toProblem(new Denied('orders'), { url: '/orders' }).body.errors, undefined, 'none unless attached')
})

test('Fastify body rejections keep their status and get core codes', async (t) => {
  const app = await build()
  const big = await app.inject({ method: 'POST', url: '/items', payload: { qty: 1, pad: 'x'.repeat(100) } })
  t.equal(big.statusCode, 413)
  t.equal(big.json().code, 'PORTCULLIS_CORE_PAYLOAD_TOO_LARGE')
  const xml = await app.inject({ method: 'POST', url: '/items', headers: { 'content-type': 'application/xml' }, payload: '<a/>' })
  t.equal(xml.statusCode, 415)
  t.equal(xml.json().code, 'PORTCULLIS_CORE_UNSUPPORTED_MEDIA_TYPE')
  const broken = await app.inject({ method: 'POST', url: '/items', headers: { 'content-type': 'application/json' }, payload: '{"qty":' })
  t.equal(broken.statusCode, 400)
  t.equal(broken.json().code, 'PORTCULLIS_CORE_BAD_REQUEST')
  t.equal(broken.headers['content-type'], PROBLEM_CONTENT_TYPE)
})

test('an unexpected error is a generic 500: no message, no stack, no internals', async (t) => {
  const app = await build()
  for (const url of ['/crash', '/string']) {
    const res = await app.inject(url)
    t.equal(res.statusCode, 500)
    t.same(res.json(), {
      type: 'urn:portcullis:problem:PORTCULLIS_CORE_INTERNAL',
      title: 'Internal Server Error',
      status: 500,
      detail: 'The server could not complete the request',
      instance: url,
      code: 'PORTCULLIS_CORE_INTERNAL'
    })
    t.notMatch(res.body, /ECONNREFUSED|hunter2|stack|at /)
  }
})

test('other HTTP errors keep their status, and their message only when it is a client error', async (t) => {
  const app = await build()
  const conflict = await app.inject('/conflict')
  t.equal(conflict.statusCode, 409)
  t.match(conflict.json(), { code: 'PORTCULLIS_CORE_CLIENT_ERROR', title: 'Conflict', detail: 'Order 7 was changed meanwhile' })
  const teapot = await app.inject('/teapot')
  t.match(teapot.json(), { status: 418, title: "I'm a Teapot", code: 'PORTCULLIS_CORE_CLIENT_ERROR' })
  const unavailable = await app.inject('/unavailable')
  t.equal(unavailable.statusCode, 503)
  t.match(unavailable.json(), { code: 'PORTCULLIS_CORE_SERVICE_UNAVAILABLE', detail: 'The service is unavailable' })
  t.notMatch(unavailable.body, 'db-3')
})

test('upstream failures map to gateway codes', async (t) => {
  const request = { url: '/api/orders?x=1' }
  t.match(toProblem({ statusCode: 502, message: 'socket hang up' }, request).body, { code: 'PORTCULLIS_CORE_BAD_GATEWAY', detail: 'The upstream service did not answer correctly', instance: '/api/orders' })
  t.match(toProblem({ statusCode: 504 }, request).body, { code: 'PORTCULLIS_CORE_GATEWAY_TIMEOUT', title: 'Gateway Timeout' })
  t.match(toProblem({ status: 404 }, request).body, { code: 'PORTCULLIS_CORE_NOT_FOUND', detail: 'No route matches %s %s' }, 'no message: the template stands in')
  t.match(toProblem(null, request), { status: 500, headers: undefined })
  t.match(toProblem({ statusCode: 200 }, request).body, { status: 500 }, 'a success status on an error is not trusted')
  t.match(toProblem(new Denied('x'), request, 'https://docs.example.com/errors#').body, { type: 'https://docs.example.com/errors#PORTCULLIS_TEST_DENIED' })
  const odd = toProblem({ statusCode: 400, validation: [{}], headers: { 'x-ok': ['a', 'b'], 'x-bad': { nested: true } } }, request)
  t.same(odd.body.errors, [{ in: 'body', pointer: '', rule: 'invalid', message: 'is invalid' }])
  t.same(odd.headers, { 'x-ok': ['a', 'b'] })
})

test('a Portcullis code thrown with another status is treated as that status', async (t) => {
  const forged = Object.assign(new Error('Access to x is denied'), { code: 'PORTCULLIS_TEST_DENIED', statusCode: 500 })
  t.match(toProblem(forged, { url: '/' }).body, { code: 'PORTCULLIS_CORE_INTERNAL', detail: 'The server could not complete the request' })
})

test('HEAD requests get the status and headers without a body', async (t) => {
  const app = await build()
  const res = await app.inject({ method: 'HEAD', url: '/denied' })
  t.equal(res.statusCode, 403)
  t.equal(res.body, '')
})

test('problemDetails: false leaves error handling to the application', async (t) => {
  const app = await build({ problemDetails: false })
  const res = await app.inject('/denied')
  t.equal(res.statusCode, 403)
  t.match(res.headers['content-type'], 'application/json')
  t.match(res.json(), { code: 'PORTCULLIS_TEST_DENIED', message: 'Access to orders is denied' })
})

test('problemTypeBase sets the type URI prefix', async (t) => {
  const app = await build({ problemTypeBase: 'https://docs.example.com/errors#' })
  const res = await app.inject('/denied')
  t.equal(res.json().type, 'https://docs.example.com/errors#PORTCULLIS_TEST_DENIED')
  for (const problemTypeBase of ['errors#', 42]) {
    const bad = Fastify()
    bad.register(portcullisCore, { problemTypeBase } as CoreOptions)
    await t.rejects(async () => bad.ready(), { message: /^core\.problemTypeBase must be an absolute URI prefix/ })
  }
  const bad = Fastify()
  bad.register(portcullisCore, { problemDetails: 'yes' } as never)
  await t.rejects(async () => bad.ready(), { message: 'core.problemDetails must be a boolean (got "yes")' })
})

test('unusual shapes still give a well-formed problem', async (t) => {
  t.match(toProblem({ statusCode: 499 }, { url: '/' }).body, { status: 499, title: 'Client Error', code: 'PORTCULLIS_CORE_CLIENT_ERROR' }, 'a status without a name keeps the generic title')
  t.match(toProblem({ code: 'PORTCULLIS_TEST_DENIED', statusCode: 403 }, { url: '/' }).body, { code: 'PORTCULLIS_TEST_DENIED', detail: 'Access to %s is denied' }, 'no message: the template stands in')
})

test('requestIdHeader echoes the request id, on rejections too', async (t) => {
  const app = Fastify({ genReqId: () => 'req-42' })
  await app.register(portcullisCore, { requestIdHeader: 'x-request-id' })
  app.get('/', async () => 'ok')
  t.equal((await app.inject('/')).headers['x-request-id'], 'req-42')
  t.equal((await app.inject('/missing')).headers['x-request-id'], 'req-42')
  const off = await build()
  t.equal((await off.inject('/denied')).headers['x-request-id'], undefined, 'off by default')
  for (const requestIdHeader of ['x request id', 42, true]) {
    const bad = Fastify()
    bad.register(portcullisCore, { requestIdHeader } as CoreOptions)
    await t.rejects(async () => bad.ready(), { message: /^core\.requestIdHeader must be false or a response header name/ })
  }
})
