// The orders API every bench server answers: the order the POST scenarios send, and the OpenAPI
// contract that describes it as a typical API would (lengths, ranges, a format, nested objects, a
// list). Responses have no schema, so that what is measured is the request's validation.

/** The order posted (299 bytes of JSON): what ORDERS_DOCUMENT's `POST /orders` accepts. */
export const ORDER_BODY = JSON.stringify({
  item: 'standing desk lamp, brushed steel',
  qty: 2,
  customer: { name: 'Alice Martin', email: 'alice.martin@example.com' },
  shipping: { street: '12 rue de la Republique', city: 'Lyon', postalCode: '69002', country: 'FR' },
  notes: 'leave with the concierge if nobody answers',
  tags: ['gift', 'fragile']
})

/** The same order with `qty: 0`, which the contract refuses. */
export const INVALID_ORDER_BODY = JSON.stringify({ ...JSON.parse(ORDER_BODY), qty: 0 })

const text = (maxLength) => ({ type: 'string', minLength: 1, maxLength })

/** The schemas of the contract, also usable as plain JSON Schema (Fastify's own validation). */
export const ADDRESS_SCHEMA = {
  type: 'object',
  required: ['street', 'city', 'country'],
  properties: { street: text(100), city: text(60), postalCode: text(12), country: { type: 'string', pattern: '^[A-Z]{2}$' } }
}
export function newOrderSchema (address) {
  return {
    type: 'object',
    required: ['item', 'qty', 'customer', 'shipping'],
    properties: {
      item: text(64),
      qty: { type: 'integer', minimum: 1, maximum: 100 },
      customer: { type: 'object', required: ['name', 'email'], properties: { name: text(100), email: { type: 'string', format: 'email' } } },
      shipping: address,
      notes: { type: 'string', maxLength: 500 },
      tags: { type: 'array', maxItems: 10, items: text(20) }
    }
  }
}

export const ORDERS_DOCUMENT = {
  openapi: '3.1.0',
  info: { title: 'bench orders', version: '1' },
  paths: {
    '/orders': {
      post: {
        requestBody: { required: true, content: { 'application/json': { schema: { $ref: '#/components/schemas/NewOrder' } } } },
        responses: { 200: { description: 'created' } }
      }
    },
    '/orders/{id}': {
      get: { parameters: [{ name: 'id', in: 'path', required: true, schema: text(10) }], responses: { 200: { description: 'one order' } } }
    }
  },
  components: {
    schemas: {
      NewOrder: newOrderSchema({ $ref: '#/components/schemas/Address' }),
      Address: ADDRESS_SCHEMA
    }
  }
}
