import Fastify, { type FastifyInstance } from 'fastify'

export interface Order {
  id: string
  item: string
  qty: number
  /** Who to ask about the order: personal data, masked by the gateway on the way out. */
  contact?: string
}

/**
 * The orders service behind the gateway. It has no security of its own: the gateway
 * authenticates, limits, authorizes and validates before a request gets here.
 */
export function buildOrdersService (): FastifyInstance {
  const app = Fastify()
  const orders = new Map<string, Order>([['1', { id: '1', item: 'lamp', qty: 1, contact: 'alice@example.com' }], ['2', { id: '2', item: 'chair', qty: 4, contact: 'bob@example.com' }]])
  let nextId = 3
  app.get('/orders', async () => ({ orders: [...orders.values()] }))
  app.get<{ Params: { id: string } }>('/orders/:id', async (request, reply) => orders.get(request.params.id) ?? await reply.code(404).send({ message: 'no such order' }))
  app.post<{ Body: { item: string, qty: number } }>('/orders', async (request, reply) => {
    const order: Order = { id: String(nextId++), item: request.body.item, qty: request.body.qty }
    orders.set(order.id, order)
    return await reply.code(201).send(order)
  })
  app.delete<{ Params: { id: string } }>('/orders/:id', async (request, reply) => {
    if (!orders.delete(request.params.id)) return await reply.code(404).send({ message: 'no such order' })
    return await reply.code(204).send()
  })
  return app
}
