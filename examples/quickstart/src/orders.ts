import Fastify, { type FastifyInstance } from 'fastify'

export interface Order {
  id: string
  owner: string
  item: string
  qty: number
}

/**
 * The demo upstream: a small "orders" API that knows nothing about security. Everything that
 * protects it lives in the gateway in front of it.
 */
export function buildOrdersApi (): FastifyInstance {
  const app = Fastify()
  const orders = new Map<string, Order>([
    ['1', { id: '1', owner: 'alice', item: 'lamp', qty: 1 }],
    ['2', { id: '2', owner: 'bob', item: 'chair', qty: 4 }]
  ])
  let nextId = 3

  app.get('/orders', async () => ({ orders: [...orders.values()] }))
  app.get<{ Params: { id: string } }>('/orders/:id', async (request, reply) => {
    const order = orders.get(request.params.id)
    return order ?? reply.code(404).send({ message: 'no such order' })
  })
  app.delete<{ Params: { id: string } }>('/orders/:id', async (request, reply) => {
    if (!orders.delete(request.params.id)) return reply.code(404).send({ message: 'no such order' })
    return reply.code(204).send()
  })
  app.post<{ Body: { item: string, qty: number } }>('/orders', {
    schema: {
      body: {
        type: 'object',
        required: ['item', 'qty'],
        additionalProperties: false,
        properties: { item: { type: 'string', minLength: 1, maxLength: 64 }, qty: { type: 'integer', minimum: 1, maximum: 100 } }
      }
    }
  }, async (request, reply) => {
    // This demo API does not know who calls it: new orders belong to alice.
    const order: Order = { id: String(nextId++), owner: 'alice', ...request.body }
    orders.set(order.id, order)
    return reply.code(201).send(order)
  })
  return app
}
