import Fastify, { type FastifyInstance } from 'fastify'

const ITEMS = [
  { sku: 'lamp', name: 'Desk lamp', price: 39 },
  { sku: 'chair', name: 'Office chair', price: 149 }
]

/** The catalog service behind the gateway: public, read only. */
export function buildCatalogService (): FastifyInstance {
  const app = Fastify()
  app.get('/items', async () => ({ items: ITEMS }))
  app.get<{ Params: { sku: string } }>('/items/:sku', async (request, reply) => ITEMS.find((item) => item.sku === request.params.sku) ?? await reply.code(404).send({ message: 'no such item' }))
  return app
}
