import { test } from 'tap'
import Fastify from 'fastify'
import { handOver, isHandedOver, portcullisCore } from '../src/index.js'

test('a request handed over to another instance is marked, and only that one', async (t) => {
  const app = Fastify()
  await app.register(portcullisCore)
  const seen: boolean[] = []
  app.addHook('onRequest', async (request) => {
    if (request.url === '/over') handOver(request)
  })
  app.addHook('onResponse', async (request) => { seen.push(isHandedOver(request)) })
  app.get('/*', async () => 'ok')
  await app.inject('/over')
  await app.inject('/kept')
  t.same(seen, [true, false])
})
