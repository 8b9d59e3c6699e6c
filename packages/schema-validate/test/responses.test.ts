import t from 'tap'
import { Readable } from 'node:stream'
import Fastify, { type FastifyInstance } from 'fastify'
import { decisionsOf, portcullisCore } from '@portcullis/core'
import { portcullisSchemaValidate, MAX_CHECKED_RESPONSE, type SchemaValidateOptions } from '../src/index.js'
import { ORDERS_30 } from './helpers.js'

// The orders API answering with what a test sets: an object, JSON text or a stream of it.
async function api (options: SchemaValidateOptions, answer: { body: unknown, as?: 'object' | 'text' | 'stream', status?: number, type?: string }): Promise<FastifyInstance> {
  const app = Fastify()
  await app.register(portcullisCore)
  await app.register(portcullisSchemaValidate, { openapi: ORDERS_30, ...options })
  app.get('/orders/:id', async (_request, reply) => {
    reply.code(answer.status ?? 200)
    if (answer.type !== undefined) reply.type(answer.type)
    if (answer.as === 'text') return await reply.type(answer.type ?? 'application/json').send(JSON.stringify(answer.body))
    if (answer.as === 'stream') return await reply.type(answer.type ?? 'application/json').send(Readable.from([JSON.stringify(answer.body)]))
    return answer.body
  })
  app.addHook('onResponse', async (request) => {
    (app as unknown as { seen: string[] }).seen = decisionsOf(request).map((d) => `${d.outcome}:${d.reason}`)
  })
  return app
}
const seen = (app: FastifyInstance): string[] => (app as unknown as { seen: string[] }).seen

const good = { id: 7, item: 'lamp', qty: 1 }
const broken = { id: 'seven', item: 'lamp', qty: 1 }

for (const as of ['object', 'text', 'stream'] as const) {
  t.test(`responses sent as ${as}: report by default, enforce answers 502, off checks nothing`, async (t) => {
    const report = await api({}, { body: broken, as })
    const sent = await report.inject({ url: '/orders/7' })
    t.equal(sent.statusCode, 200)
    t.same(sent.json(), broken, 'report: sent as it was')
    t.same(seen(report), ['allow:PORTCULLIS_SCHEMA_OK', 'would-deny:PORTCULLIS_SCHEMA_RESPONSE_INVALID'])

    const enforce = await api({ responses: 'enforce' }, { body: broken, as })
    const refused = await enforce.inject({ url: '/orders/7' })
    t.equal(refused.statusCode, 502)
    t.equal(refused.json().code, 'PORTCULLIS_SCHEMA_RESPONSE_INVALID')
    t.notMatch(refused.body, /seven/, 'the broken response is not echoed')
    t.same(seen(enforce), ['allow:PORTCULLIS_SCHEMA_OK', 'deny:PORTCULLIS_SCHEMA_RESPONSE_INVALID'])
    t.same((await enforce.inject({ url: '/orders/7' })).statusCode, 502)

    const fine = await api({ responses: 'enforce' }, { body: good, as })
    t.same((await fine.inject({ url: '/orders/7' })).json(), good)

    const off = await api({ responses: 'off' }, { body: broken, as })
    t.equal((await off.inject({ url: '/orders/7' })).statusCode, 200)
    t.same(seen(off), ['allow:PORTCULLIS_SCHEMA_OK'])
  })

  t.test(`stripResponses, sent as ${as}: what the document does not declare never leaves`, async (t) => {
    const leaky = { ...good, passwordHash: 'x', address: { city: 'Lyon', geo: [1, 2] }, metadata: { internal: true } }
    const app = await api({ stripResponses: true, responses: 'enforce' }, { body: leaky, as })
    const response = await app.inject({ url: '/orders/7' })
    t.same(response.json(), { ...good, address: { city: 'Lyon' }, metadata: { internal: true } }, 'free-form objects keep their content')
    if (as !== 'object') t.equal(Number(response.headers['content-length']), response.body.length, 'the length is the new body\'s')
  })
}

t.test('the status picks the schema: exact, then 2XX, then default; a response the document does not describe goes out', async (t) => {
  const problem = await api({ responses: 'enforce' }, { body: { title: 'nope' }, status: 404, as: 'object', type: 'application/problem+json' })
  t.equal((await problem.inject({ url: '/orders/7' })).statusCode, 404, 'default: any object')
  const notJson = await api({ responses: 'enforce' }, { body: 'plain', status: 200, as: 'text', type: 'text/plain' })
  t.equal((await notJson.inject({ url: '/orders/7' })).statusCode, 200, 'a media type the operation does not list is not checked')
  const unparsable = await api({ responses: 'enforce' }, { body: null, as: 'text' })
  unparsable.get('/orders', async (_request, reply) => await reply.type('application/json').send('{"broken":'))
  t.equal((await unparsable.inject({ url: '/orders' })).statusCode, 502, 'JSON that does not parse breaks the contract')
  const reported = await api({}, { body: null })
  reported.get('/orders', async (_request, reply) => await reply.type('application/json').send('{"broken":'))
  t.equal((await reported.inject({ url: '/orders' })).body, '{"broken":', 'in report mode it goes out as it was')
  const encoded = await api({ responses: 'enforce' }, { body: null })
  encoded.get('/orders', async (_request, reply) => await reply.type('application/json').header('content-encoding', 'gzip').send('not really gzip'))
  t.equal((await encoded.inject({ url: '/orders' })).statusCode, 200, 'an encoded body is not read')
})

t.test('a response too large to read in full: sent whole in report mode, 502 when enforced', async (t) => {
  const items = Array.from({ length: Math.ceil(MAX_CHECKED_RESPONSE / 50) }, (_, i) => ({ id: i, item: 'x'.repeat(30), qty: 1 }))
  for (const responses of ['report', 'enforce'] as const) {
    const app = Fastify()
    await app.register(portcullisCore)
    await app.register(portcullisSchemaValidate, { openapi: ORDERS_30, responses })
    app.get('/orders', async (_request, reply) => await reply.type('application/json').send(Readable.from([JSON.stringify(items)])))
    const response = await app.inject({ url: '/orders' })
    if (responses === 'report') t.equal(response.json().length, items.length, 'report: nothing lost')
    else t.equal(response.statusCode, 502)
  }
})
