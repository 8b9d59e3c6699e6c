import { test } from 'tap'
import Fastify, { type FastifyServerOptions } from 'fastify'
import { canonicalPath, MALFORMED_PATH_KEY, pathOptionsOf, portcullisCore, routeKey } from '../src/index.js'

// Each group: request targets that Fastify's router (with the given options) sends to the same
// route with the same parameters; canonicalPath must give them one form.
const cases: Array<{ options: FastifyServerOptions, same: string[][] }> = [
  {
    options: {},
    same: [
      ['/orders/42', '/orders/42?x=1', '/orders/42#frag', '/%6Frders/42', '/orders/%34%32'],
      ['/files/a%2Fb', '/files/a%2fb'],
      ['/files/100%25', '/files/100%25?q=%25']
    ]
  },
  {
    options: { routerOptions: { ignoreTrailingSlash: true, ignoreDuplicateSlashes: true, caseSensitive: false } },
    same: [['/orders/42', '/orders/42/', '//orders//42', '/ORDERS/42', '/Orders/42/?a=b', '/%4Frders/42']]
  },
  {
    options: { routerOptions: { useSemicolonDelimiter: true } } as FastifyServerOptions,
    same: [['/orders/42', '/orders/42;jsessionid=1', '/orders/42?a=1;b']]
  }
]

test('canonicalPath folds exactly what the router folds', async (t) => {
  for (const { options, same } of cases) {
    const app = Fastify(options)
    await app.register(portcullisCore)
    app.get('/orders/:id', async (request) => ({ route: request.routeOptions.url, params: request.params }))
    app.get('/files/:name', async (request) => ({ route: request.routeOptions.url, params: request.params }))
    const pathOptions = pathOptionsOf(app)
    for (const group of same) {
      const routed = await Promise.all(group.map(async (url) => (await app.inject(url)).json()))
      t.same(new Set(routed.map((r) => JSON.stringify(r))).size, 1, `router agrees: ${group.join(' ')}`)
      const forms = new Set(group.map((url) => canonicalPath(url, pathOptions)))
      t.equal(forms.size, 1, `one canonical form: ${[...forms].join(' | ')}`)
    }
  }
})

test('canonicalPath keeps apart what the router keeps apart', async (t) => {
  t.not(canonicalPath('/files/a%2Fb'), canonicalPath('/files/a/b'), 'an encoded slash is not a separator')
  t.not(canonicalPath('/orders/42/'), canonicalPath('/orders/42'), 'trailing slash counts by default')
  t.not(canonicalPath('/Orders'), canonicalPath('/orders'), 'case counts by default')
  t.equal(canonicalPath('/a%25%32%46'), '/a%252F', 'a decoded %25 never forms a new escape')
  t.equal(canonicalPath('/a/%2E%2E/b'), '/a/../b', 'dot segments are not resolved: the router does not resolve them either')
  t.not(canonicalPath('/a/%2E%2E/b'), canonicalPath('/b'))
  t.equal(canonicalPath('/a%5Cb'), '/a\\b', 'a backslash is not a slash')
  t.not(canonicalPath('/%EF%BD%81dmin'), canonicalPath('/admin'), 'fullwidth letters are other characters')
  t.equal(canonicalPath('http://evil.example/admin'), 'http://evil.example/admin', 'an absolute-form target is not taken apart as a path')
  t.equal(canonicalPath('/'), '/')
  t.equal(canonicalPath('/x/', { caseSensitive: true, ignoreTrailingSlash: true, ignoreDuplicateSlashes: false, useSemicolonDelimiter: false }), '/x')
  t.equal(canonicalPath('/%E0%A4%A'), null, 'malformed percent-encoding')
  t.equal(canonicalPath('/%C0%AF'), null, 'overlong UTF-8')
})

test('pathOptionsOf reads top-level router settings too', async (t) => {
  const app = Fastify({ ignoreTrailingSlash: true, caseSensitive: false } as FastifyServerOptions)
  t.match(pathOptionsOf(app), { ignoreTrailingSlash: true, caseSensitive: false, ignoreDuplicateSlashes: false })
  t.same(pathOptionsOf({ initialConfig: {} } as never), { caseSensitive: true, ignoreTrailingSlash: false, ignoreDuplicateSlashes: false, useSemicolonDelimiter: false })
})

test('routeKey is the matched pattern, or the canonical path when nothing matched', async (t) => {
  const app = Fastify()
  await app.register(portcullisCore)
  const keys: string[] = []
  app.addHook('onResponse', async (request) => { keys.push(routeKey(request, app.portcullisCore.pathOptions)) })
  app.get('/orders/:id', async () => 'ok')
  await app.inject('/orders/1?a=b')
  await app.inject('/orders/%32')
  await app.inject('/missing/%41?q')
  t.same(keys, ['/orders/:id', '/orders/:id', '/missing/A'])
  const malformed = { url: '/%E0%A4%A', is404: true, routeOptions: {} }
  t.equal(routeKey(malformed as never), MALFORMED_PATH_KEY)
})
