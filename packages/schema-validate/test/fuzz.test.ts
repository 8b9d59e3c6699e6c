import t from 'tap'
import fc from 'fast-check'
import { ORDERS_30, ORDERS_31, ordersApp } from './helpers.js'

// Keys that reach prototypes, next to the document's own and a few others.
const key = fc.oneof(fc.constantFrom('__proto__', 'constructor', 'prototype', 'item', 'qty', 'address', 'metadata', 'city'), fc.string({ maxLength: 8 }))
const { value } = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.constantFrom(null, true, false, 0, -1, 1, 100, 101, 1.5, 2 ** 53, '', 'lamp'),
    fc.double(),
    fc.string({ maxLength: 70 }),
    fc.array(tie('value'), { maxLength: 4 }),
    fc.dictionary(key, tie('value'), { maxKeys: 5 })
  )
}))
// Orders near the contract's edges, some with extra properties, most of them accepted or nearly.
const order = fc.tuple(
  fc.record({ item: fc.string({ minLength: 0, maxLength: 66 }), qty: fc.oneof(fc.integer({ min: -1, max: 102 }), fc.double()) }, { requiredKeys: [] }),
  fc.dictionary(key, value, { maxKeys: 2 })
).map(([known, extra]) => ({ ...extra, ...known }))
// Bodies as text: JSON of those values, some with numbers JSON cannot hold, and text that is not JSON at all.
const payload = fc.oneof(
  value.map((v) => JSON.stringify(v) ?? 'null'),
  order.map((o) => JSON.stringify(o)),
  fc.tuple(fc.string({ maxLength: 20 }), fc.constantFrom('1e400', '-1e999', '[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]')).map(([k, n]) => `{"item":"x","qty":1,${JSON.stringify(k)}:${n}}`),
  fc.string({ maxLength: 60 })
)
const type = fc.constantFrom('application/json', 'Application/JSON; charset=utf-8', 'application/merge-patch+json', 'text/plain', 'application/x-www-form-urlencoded')

for (const [version, openapi] of [['3.0', ORDERS_30], ['3.1', ORDERS_31]] as const) {
  t.test(`OpenAPI ${version}: fuzzed bodies and queries never get a 5xx and never pollute a prototype`, async (t) => {
    const app = await ordersApp({ openapi, maxDepth: 16 }, { onProtoPoisoning: 'ignore', onConstructorPoisoning: 'ignore' })
    let accepted = 0
    await fc.assert(fc.asyncProperty(
      fc.constantFrom(['POST', '/orders'], ['PATCH', '/orders/1'], ['GET', '/orders']),
      payload,
      type,
      fc.dictionary(fc.oneof(key, fc.constantFrom('limit', 'tag', 'status')), fc.oneof(fc.string({ maxLength: 10 }), fc.constantFrom('1e400', '5', 'open')), { maxKeys: 3 }),
      async ([method, url], body, contentType, query) => {
        const response = await app.inject({ method: method as 'POST', url, query, payload: body, headers: { 'content-type': contentType } })
        if (response.statusCode < 300) accepted++
        return response.statusCode < 500 &&
          ({} as Record<string, unknown>).item === undefined && ({} as Record<string, unknown>).qty === undefined &&
          Object.keys(Object.prototype).length === 0
      }
    ), { numRuns: 600 })
    t.comment(`${accepted} of 600 accepted`)
    t.equal(Object.getOwnPropertyNames(Object.prototype).includes('polluted'), false)
  })
}
