// Requests that mean one thing to a gateway and another to an application. Sent as raw bytes over
// a real socket, because encoding is decided on the wire: none may reach a handler the principal
// is denied.
import { test } from 'tap'
import { connect } from 'node:net'
import { once } from 'node:events'
import { as, build } from './helpers.js'

const targets = [
  '/ADMIN/1', '/Admin/1', '//admin/1', '/admin//1', '/admin/1/', '/admin/./1', '/admin/../admin/1', '/./admin/1',
  '/%61dmin/1', '/%41DMIN/1', '/%2561dmin/1', '/admin%2F1', '/admin%2f1', '/admin;x=1/1', '/admin/1;jsessionid=1',
  '/admin%5C1', '/admin\\1', '/%EF%BD%81dmin/1', '/ａdmin/1', '/admin/%2e%2e/admin/1', '/admin%00/1', '/admin/1%23',
  'http://evil.example/admin/1', 'HTTP://gateway/admin/1', '/admin/1?x=../../public', '/admin/1#frag'
]

async function raw (port: number, line: string, headers: Record<string, string>): Promise<number> {
  const socket = connect(port, '127.0.0.1')
  let text = ''
  socket.setEncoding('utf8')
  socket.on('data', (chunk: string) => { text += chunk })
  const closed = once(socket, 'close')
  socket.write(`${line}\r\nHost: gateway\r\nConnection: close\r\n${Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`)
  await closed
  return Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0)
}

test('variants of a denied path never reach its handler', async (t) => {
  for (const routerOptions of [{}, { ignoreTrailingSlash: true, ignoreDuplicateSlashes: true, caseSensitive: false }]) {
    const app = await build({ roles: { user: {}, admin: { inherits: ['user'] } } }, { 'GET /admin/:id': { anyRole: ['admin'] }, 'GET /public': false }, { routerOptions })
    await app.listen({ host: '127.0.0.1', port: 0 })
    const port = (app.server.address() as { port: number }).port
    t.equal(await raw(port, 'GET /admin/1 HTTP/1.1', as('bob;admin')), 200, 'the admin may')
    app.reached.length = 0
    for (const target of targets) {
      for (const method of ['GET', 'HEAD']) {
        const status = await raw(port, `${method} ${target} HTTP/1.1`, as('alice;user'))
        t.ok(status === 403 || status === 404 || status === 400, `${method} ${target} → ${status}`)
      }
    }
    for (const [header, value] of [['X-HTTP-Method-Override', 'GET'], ['X-Original-URL', '/admin/1'], ['X-Rewrite-URL', '/admin/1']]) {
      t.equal(await raw(port, 'GET /public HTTP/1.1', { ...as('alice;user'), [header as string]: value as string }), 400, `${header as string} refused`)
    }
    t.same(app.reached, [], `no denied request reached the handler (${JSON.stringify(routerOptions)})`)
    await app.close()
  }
})

test('OPTIONS never stands in for the method it asks about', async (t) => {
  const app = await build({}, { 'GET /admin/:id': { anyRole: ['admin'] }, 'OPTIONS /*': false, 'OPTIONS /private/*': undefined })
  await app.listen({ host: '127.0.0.1', port: 0 })
  t.teardown(() => app.close())
  const port = (app.server.address() as { port: number }).port
  t.equal(await raw(port, 'OPTIONS /admin/1 HTTP/1.1', as('alice;user')), 200, 'a public preflight route answers')
  t.equal(await raw(port, 'OPTIONS /private/1 HTTP/1.1', as('alice;user')), 403, 'an OPTIONS route without a rule is denied like any other')
  t.same(app.reached, ['OPTIONS /admin/1'], 'only the OPTIONS handler ran, never the GET one')
})

test('variants of another principal\'s id never pass an ownership check', async (t) => {
  const app = await build({}, { 'GET /users/:userId/cart': { owner: { param: 'userId' } } })
  await app.listen({ host: '127.0.0.1', port: 0 })
  t.teardown(() => app.close())
  const port = (app.server.address() as { port: number }).port
  t.equal(await raw(port, 'GET /users/alice/cart HTTP/1.1', as('alice')), 200)
  app.reached.length = 0
  for (const id of ['bob', 'alice%2F..%2Fbob', 'bob%2F..%2Falice', 'Alice', 'alice%00', 'alice%20', '%EF%BD%81lice', 'alice;bob', 'alice,bob', '%2561lice']) {
    const status = await raw(port, `GET /users/${id}/cart HTTP/1.1`, as('alice'))
    t.ok(status === 403 || status === 400 || status === 404, `${id} → ${status}`)
  }
  t.same(app.reached, [])
})
