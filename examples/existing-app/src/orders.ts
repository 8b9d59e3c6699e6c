import type { FastifyReply, FastifyRequest } from 'fastify'

export interface Order {
  id: string
  item: string
  qty: number
  status: 'open' | 'shipped'
}

/** The body of `POST /orders`: the app's own JSON Schema, which it had before Portcullis. */
export const orderBody = {
  type: 'object',
  required: ['item', 'qty'],
  additionalProperties: false,
  properties: {
    item: { type: 'string', minLength: 1, maxLength: 64 },
    qty: { type: 'integer', minimum: 1, maximum: 100 }
  }
} as const

type ById = FastifyRequest<{ Params: { id: string } }>
type Create = FastifyRequest<{ Body: { item: string, qty: number } }>

/**
 * The orders service's own handlers, over an in-memory store. They know nothing about security:
 * who may call them is decided before they run.
 */
export function orderHandlers () {
  const orders = new Map<string, Order>([
    ['1', { id: '1', item: 'lamp', qty: 1, status: 'open' }],
    ['2', { id: '2', item: 'chair', qty: 4, status: 'shipped' }]
  ])
  let nextId = 3
  return {
    list: async () => ({ orders: [...orders.values()] }),
    get: async (request: ById, reply: FastifyReply) => orders.get(request.params.id) ?? await reply.code(404).send({ message: 'no such order' }),
    create: async (request: Create, reply: FastifyReply) => {
      const order: Order = { id: String(nextId++), ...request.body, status: 'open' }
      orders.set(order.id, order)
      return await reply.code(201).send(order)
    },
    remove: async (request: ById, reply: FastifyReply) => {
      if (!orders.delete(request.params.id)) return await reply.code(404).send({ message: 'no such order' })
      return await reply.code(204).send()
    }
  }
}
