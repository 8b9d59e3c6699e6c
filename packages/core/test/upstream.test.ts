import { test } from 'tap'
import Fastify from 'fastify'
import { portcullisCore, recordUpstream } from '../src/index.js'

test('request.upstream is null until the gateway records the upstream and its answer, then frozen', async (t) => {
  const app = Fastify()
  await app.register(portcullisCore)
  app.get('/local', async (request) => ({ upstream: request.upstream }))
  app.get('/proxied', async (request) => {
    recordUpstream(request, 'http://10.0.0.7:8080', 201)
    return { upstream: request.upstream, frozen: Object.isFrozen(request.upstream) }
  })
  app.get('/failed', async (request) => {
    recordUpstream(request, 'http://10.0.0.7:8080', null)
    return { upstream: request.upstream }
  })
  t.same((await app.inject('/local')).json(), { upstream: null })
  t.same((await app.inject('/proxied')).json(), { upstream: { address: 'http://10.0.0.7:8080', statusCode: 201 }, frozen: true })
  t.same((await app.inject('/failed')).json(), { upstream: { address: 'http://10.0.0.7:8080', statusCode: null } })
})
