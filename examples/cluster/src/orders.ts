import Fastify, { type FastifyInstance } from 'fastify'

/** The one upstream of the cluster: a small orders service with no security of its own. */
export function buildOrdersService (): FastifyInstance {
  const app = Fastify()
  app.get('/orders', async () => ({ orders: [{ id: '1', item: 'lamp', qty: 1 }, { id: '2', item: 'chair', qty: 4 }] }))
  return app
}
