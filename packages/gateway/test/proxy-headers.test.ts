import { test, type Test } from 'tap'
import { createServer, request as httpRequest, type IncomingHttpHeaders, type ServerResponse } from 'node:http'
import { connect } from 'node:net'
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import { buildGateway, type GatewayConfig } from '../src/index.js'

interface Echo { method: string, url: string, headers: IncomingHttpHeaders, body: string }

// A real upstream over a real socket, answering what it received; `answer` may add to its response.
async function startUpstream (t: Test, answer: (res: ServerResponse, url: string) => boolean = () => false): Promise<string> {
  const server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (chunk: Buffer) => chunks.push(chunk))
    req.on('end', () => {
      if (answer(res, req.url ?? '')) return
      const echo: Echo = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks).toString('utf8') }
      const text = JSON.stringify(echo)
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) })
      res.end(text)
    })
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => { server.closeAllConnections(); server.close() })
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
}

async function startGateway (t: Test, config: GatewayConfig): Promise<{ url: string, port: number }> {
  const app = await buildGateway(config)
  const url = await app.listen({ host: '127.0.0.1', port: 0 })
  t.teardown(() => app.close())
  return { url, port: (app.server.address() as AddressInfo).port }
}

// One request written by hand, so that any header field can be sent; the gateway is asked to close
// the connection after it, so the answer is everything read until then.
async function rawRequest (port: number, head: string, body = ''): Promise<{ status: number, headers: Record<string, string>, body: string }> {
  const socket = connect(port, '127.0.0.1')
  await once(socket, 'connect')
  socket.write(`${head.trim().split('\n').map((line) => line.trim()).join('\r\n')}\r\n\r\n${body}`)
  const chunks: Buffer[] = []
  socket.on('data', (chunk: Buffer) => chunks.push(chunk))
  await once(socket, 'close')
  const text = Buffer.concat(chunks).toString('latin1')
  const split = text.indexOf('\r\n\r\n')
  const [statusLine = '', ...lines] = text.slice(0, split).split('\r\n')
  const headers: Record<string, string> = {}
  for (const line of lines) {
    const colon = line.indexOf(':')
    headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim()
  }
  return { status: Number(statusLine.split(' ')[1]), headers, body: text.slice(split + 4) }
}

test('X-Forwarded-* are the gateway\'s own: what an untrusted client sends is never passed on', async (t) => {
  const upstream = await startUpstream(t)
  const gateway = await startGateway(t, { upstreams: [{ prefix: '/api', url: upstream, routes: [{ method: 'GET', path: '/orders/:id' }] }] })
  for (const path of ['/api/orders/7', '/api/elsewhere']) {
    const res = await fetch(`${gateway.url}${path}`, {
      headers: { 'x-forwarded-for': '6.6.6.6', 'x-forwarded-proto': 'https', 'x-forwarded-host': 'evil.example', forwarded: 'for=6.6.6.6;proto=https' }
    })
    const { headers } = await res.json() as Echo
    t.equal(headers['x-forwarded-for'], '127.0.0.1', `${path}: the client as the gateway saw it, alone`)
    t.equal(headers['x-forwarded-proto'], 'http', `${path}: the protocol the client spoke to the gateway`)
    t.equal(headers['x-forwarded-host'], `127.0.0.1:${gateway.port}`, `${path}: the host the client asked the gateway for`)
    t.equal(headers.forwarded, undefined, `${path}: Forwarded is dropped`)
    t.equal(headers.host, new URL(upstream).host, `${path}: Host names the upstream`)
  }
})

test('behind a trusted proxy, the chain it vouches for is kept and the gateway\'s peer appended', async (t) => {
  const upstream = await startUpstream(t)
  const gateway = await startGateway(t, {
    core: { trustedProxies: ['127.0.0.1', '10.0.0.0/8'] },
    upstreams: [{ prefix: '/api', url: upstream }]
  })
  const seen = async (headers: Record<string, string>): Promise<IncomingHttpHeaders> => ((await (await fetch(`${gateway.url}/api/x`, { headers })).json()) as Echo).headers
  const one = await seen({ 'x-forwarded-for': '198.51.100.7', 'x-forwarded-proto': 'https', 'x-forwarded-host': 'shop.example', forwarded: 'for=198.51.100.7' })
  t.equal(one['x-forwarded-for'], '198.51.100.7, 127.0.0.1')
  t.equal(one['x-forwarded-proto'], 'https', 'the trusted proxy knows how its client came')
  t.equal(one['x-forwarded-host'], 'shop.example')
  t.equal(one.forwarded, undefined, 'Forwarded is dropped, from trusted proxies too')
  const spoofed = await seen({ 'x-forwarded-for': '6.6.6.6, 203.0.113.9, 10.1.2.3' })
  t.equal(spoofed['x-forwarded-for'], '203.0.113.9, 10.1.2.3, 127.0.0.1', 'what the client wrote before its own address is dropped')
  const garbled = await seen({ 'x-forwarded-for': 'not-an-address, 10.1.2.3' })
  t.equal(garbled['x-forwarded-for'], '10.1.2.3, 127.0.0.1', 'a malformed entry ends the chain')
  const none = await seen({})
  t.equal(none['x-forwarded-for'], '127.0.0.1', 'a trusted peer with no chain is the client')
  t.equal(none['x-forwarded-proto'], 'http')
  t.equal(none['x-forwarded-host'], `127.0.0.1:${gateway.port}`)
})

test('core reading the chain from another header: that header is not passed on either', async (t) => {
  const upstream = await startUpstream(t)
  const gateway = await startGateway(t, { core: { trustedProxies: ['127.0.0.1'], forwardedHeader: 'X-Real-Chain' }, upstreams: [{ prefix: '/api', url: upstream }] })
  const { headers } = await (await fetch(`${gateway.url}/api/x`, { headers: { 'x-real-chain': '198.51.100.7', 'x-forwarded-for': '6.6.6.6' } })).json() as Echo
  t.equal(headers['x-forwarded-for'], '198.51.100.7, 127.0.0.1')
  t.equal(headers['x-real-chain'], undefined)
})

test('hop-by-hop request fields, and those the Connection field names, stop at the gateway', async (t) => {
  const upstream = await startUpstream(t)
  const gateway = await startGateway(t, { upstreams: [{ prefix: '/api', url: upstream, routes: [{ method: 'GET', path: '/orders/:id' }] }] })
  for (const path of ['/api/orders/7', '/api/elsewhere']) {
    const res = await rawRequest(gateway.port, `
      GET ${path} HTTP/1.1
      Host: gateway.example
      Connection: close, X-Secret
      Keep-Alive: timeout=5
      Proxy-Connection: keep-alive
      TE: trailers
      Trailer: X-Checksum
      Upgrade: websocket
      Proxy-Authorization: Basic cHJveHk6c2VjcmV0
      X-Secret: for-this-hop
      Set-Cookie: a=1
      Set-Cookie: b=2
      X-Kept: yes`)
    t.equal(res.status, 200, path)
    const { headers } = JSON.parse(res.body) as Echo
    for (const name of ['keep-alive', 'proxy-connection', 'te', 'trailer', 'upgrade', 'proxy-authorization', 'x-secret']) {
      t.equal(headers[name], undefined, `${path}: ${name} is not forwarded`)
    }
    t.not(headers.connection, 'close, X-Secret', `${path}: the client's Connection field is its own`)
    t.equal(headers['x-kept'], 'yes', `${path}: end-to-end fields are`)
    t.same(headers['set-cookie'], ['a=1', 'b=2'], `${path}: a repeated field goes as it came`)
    t.equal(headers['x-forwarded-host'], 'gateway.example')
  }
})

test('hop-by-hop response fields stop at the gateway too', async (t) => {
  const upstream = await startUpstream(t, (res) => {
    res.setHeader('connection', 'keep-alive, X-Upstream-Secret')
    res.setHeader('keep-alive', 'timeout=99')
    res.setHeader('x-upstream-secret', 'between the gateway and me')
    res.setHeader('proxy-authenticate', 'Basic realm="upstream"')
    res.setHeader('proxy-connection', 'keep-alive')
    res.setHeader('trailer', 'X-Checksum')
    res.setHeader('x-kept', 'yes')
    res.setHeader('content-type', 'text/plain')
    res.end('ok')
    return true
  })
  const gateway = await startGateway(t, { upstreams: [{ prefix: '/api', url: upstream, routes: [{ method: 'GET', path: '/orders/:id' }] }] })
  for (const path of ['/api/orders/7', '/api/elsewhere']) {
    const res = await rawRequest(gateway.port, `
      GET ${path} HTTP/1.1
      Host: gateway.example
      Connection: close`)
    t.equal(res.status, 200, path)
    for (const name of ['keep-alive', 'x-upstream-secret', 'proxy-authenticate', 'proxy-connection', 'trailer']) {
      t.equal(res.headers[name], undefined, `${path}: ${name} is not passed back`)
    }
    t.equal(res.headers['x-kept'], 'yes')
    // Announcing a trailer made the upstream chunk its body, which the gateway streams on.
    t.equal(res.headers['transfer-encoding'], 'chunked')
    t.match(res.body, /^2\r\nok\r\n0\r\n/)
  }
})

test('Expect: 100-continue is answered by the gateway, and the body still goes upstream', async (t) => {
  const upstream = await startUpstream(t)
  const gateway = await startGateway(t, { upstreams: [{ prefix: '/api', url: upstream }] })
  const echo = await new Promise<Echo>((resolve, reject) => {
    const req = httpRequest(`${gateway.url}/api/upload`, { method: 'POST', headers: { expect: '100-continue', 'content-type': 'application/octet-stream', 'content-length': 5 } })
    req.on('continue', () => req.end('hello'))
    req.on('response', (res) => {
      let text = ''
      res.on('data', (chunk: Buffer) => { text += chunk.toString() })
      res.on('end', () => resolve(JSON.parse(text) as Echo))
    })
    req.on('error', reject)
  })
  t.equal(echo.body, 'hello')
  t.equal(echo.headers.expect, undefined)
})

test('the proxy path: redirects under the prefix, no way out of it, early hints, broken and abandoned answers', async (t) => {
  const upstream = await startUpstream(t, (res, url) => {
    if (url.startsWith('/moved') || url.startsWith('/internal/moved')) {
      res.writeHead(302, { location: new URLSearchParams(url.split('?')[1]).get('to') ?? '/', 'content-length': 0 })
      res.end()
    } else if (url === '/hinted') {
      res.writeEarlyHints({ link: '</style.css>; rel=preload' })
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 2 })
      res.end('ok')
    } else if (url === '/broken') {
      res.writeHead(200, { 'content-type': 'text/plain' })
      res.write('partial')
      setTimeout(() => res.socket?.destroy(), 50)
    } else if (url === '/slow') {
      setTimeout(() => { res.writeHead(200, { 'content-length': 2 }); res.end('ok') }, 300)
    } else {
      return false
    }
    return true
  })
  const gateway = await startGateway(t, { upstreams: [{ prefix: '/api', url: upstream }, { prefix: '/v2', url: upstream, rewritePrefix: '/internal' }] })
  const location = async (path: string): Promise<string | null> => (await fetch(`${gateway.url}${path}`, { redirect: 'manual' })).headers.get('location')
  t.equal(await location('/api/moved?to=/orders/43'), '/api/orders/43', 'the upstream\'s own paths are under the prefix')
  t.equal(await location('/v2/moved?to=/internal/orders/43'), '/v2/orders/43', 'the rewritten prefix is put back')
  t.equal(await location('/v2/moved?to=/internal'), '/v2')
  t.equal(await location('/v2/moved?to=/elsewhere'), '/elsewhere', 'a path outside the rewritten prefix is left alone')
  t.equal(await location('/v2/moved?to=https://example.com/x'), 'https://example.com/x', 'absolute URLs are the upstream\'s to give')
  t.equal(await location('/v2/moved?to=//example.com/x'), '//example.com/x')

  for (const path of ['/api/%2e%2e/admin', '/api/x/..%5cadmin', '/v2/a/../../b', '/api/x/%E0%A4%A.']) {
    t.equal((await rawRequest(gateway.port, `GET ${path} HTTP/1.1\nHost: g\nConnection: close`)).status, 400, `${path} never leaves the prefix`)
  }
  t.equal((await fetch(`${gateway.url}/api/file.txt?q=%2e%2e`)).status, 200, 'dots and escapes elsewhere are fine')
  t.equal((await fetch(`${gateway.url}/api?x=1`)).status, 200, 'the prefix itself, with a query')

  const hinted = await fetch(`${gateway.url}/api/hinted`)
  t.equal(hinted.status, 200, 'early hints are the upstream\'s business with the gateway')
  t.equal(await hinted.text(), 'ok')

  const broken = await fetch(`${gateway.url}/api/broken`)
  t.equal(broken.status, 200, 'headers went out before the upstream broke')
  await t.rejects(broken.text(), 'the client sees the body cut short, not a complete one')

  // A client that goes away while the upstream is still thinking.
  const socket = connect(gateway.port, '127.0.0.1')
  await once(socket, 'connect')
  socket.write('GET /api/slow HTTP/1.1\r\nHost: g\r\n\r\n')
  setTimeout(() => socket.destroy(), 50)
  await once(socket, 'close')
  await new Promise((resolve) => setTimeout(resolve, 400))
  t.equal((await fetch(`${gateway.url}/api/slow`)).status, 200, 'and the gateway serves on')
})

test('a chain of trusted proxies: the first X-Forwarded-Proto and -Host, those nearest the client', async (t) => {
  const upstream = await startUpstream(t)
  const gateway = await startGateway(t, { core: { trustedProxies: ['127.0.0.1'] }, upstreams: [{ prefix: '/api', url: upstream }] })
  const res = await rawRequest(gateway.port, `GET /api/x HTTP/1.1
    Host: gw.internal
    X-Forwarded-Proto: https
    X-Forwarded-Proto: http
    X-Forwarded-Host: shop.example, lb.internal
    Connection: close`)
  const { headers } = JSON.parse(res.body) as Echo
  t.equal(headers['x-forwarded-proto'], 'https')
  t.equal(headers['x-forwarded-host'], 'shop.example')
})

test('answers of known length in several pieces, or broken before their end', async (t) => {
  const upstream = await startUpstream(t, (res, url) => {
    if (url === '/pieces') {
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 30_000 })
      res.write('a'.repeat(10_000))
      setTimeout(() => { res.write('b'.repeat(10_000)) }, 20)
      setTimeout(() => { res.end('c'.repeat(10_000)) }, 40)
    } else if (url === '/cut') {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': 100, 'x-upstream-note': 'partial' })
      res.write('{"half":')
      setTimeout(() => res.socket?.destroy(), 30)
    } else {
      return false
    }
    return true
  })
  const gateway = await startGateway(t, { upstreams: [{ prefix: '/api', url: upstream }] })
  const pieces = await fetch(`${gateway.url}/api/pieces`)
  const text = await pieces.text()
  t.equal(text.length, 30_000)
  t.ok(text.startsWith('a') && text.includes('b') && text.endsWith('c'), 'every piece, in order')
  const cut = await fetch(`${gateway.url}/api/cut`)
  t.equal(cut.status, 502, 'nothing of it had been sent yet: the client gets a clean 502')
  t.equal(cut.headers.get('x-upstream-note'), null, 'without the headers of the answer that broke')
  t.equal(((await cut.json()) as { code: string }).code, 'PORTCULLIS_CORE_BAD_GATEWAY')
})

test('an upstream that answers before reading the body: the client connection closes after the answer', async (t) => {
  const server = createServer((_req, res) => {
    res.writeHead(413, { 'content-type': 'text/plain', 'content-length': 8 })
    res.end('too much')
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => { server.closeAllConnections(); server.close() })
  const gateway = await startGateway(t, { server: { bodyLimit: 10_000_000 }, upstreams: [{ prefix: '/api', url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` }] })
  const answer = await new Promise<{ status: number, connection: string | undefined }>((resolve, reject) => {
    const req = httpRequest(`${gateway.url}/api/upload`, { method: 'POST', headers: { 'content-type': 'application/octet-stream', 'content-length': 5_000_000 } }, (res) => {
      res.resume()
      resolve({ status: res.statusCode as number, connection: res.headers.connection })
      req.destroy()
    })
    req.on('error', reject)
    req.write(Buffer.alloc(65_536))
  })
  t.same(answer, { status: 413, connection: 'close' })
})

test('a client gone before its request leaves: nothing is sent upstream', async (t) => {
  let hits = 0
  const upstream = await startUpstream(t, () => { hits++; return false })
  const { proxyHandler, compileForwarding } = await import('../src/proxy.js')
  const { Agent } = await import('undici')
  const dispatcher = new Agent()
  t.teardown(() => dispatcher.close())
  const Fastify = (await import('fastify')).default
  const app = Fastify()
  // The client hangs up while an earlier hook is still deciding.
  app.get('/x', { preHandler: (request, _reply, done) => { request.raw.socket.destroy(); setTimeout(done, 20) } }, proxyHandler({ origin: upstream, prefix: '', rewritePrefix: '', dispatcher, headersTimeout: 1000, bodyTimeout: 1000 }, compileForwarding()))
  app.get('/y', proxyHandler({ origin: upstream, prefix: '', rewritePrefix: '', dispatcher, headersTimeout: 1000, bodyTimeout: 1000 }, compileForwarding()))
  const url = await app.listen({ host: '127.0.0.1', port: 0 })
  t.teardown(() => app.close())
  await t.rejects(fetch(`${url}/x`))
  await new Promise((resolve) => setTimeout(resolve, 100))
  t.equal(hits, 0)
  t.equal((await fetch(`${url}/y`)).status, 200)
  t.equal(hits, 1, 'while a request whose client stays goes through')
})

test('a client that leaves during a streamed answer stops the upstream\'s answer too', async (t) => {
  let upstreamClosed: () => void = () => {}
  const closed = new Promise<void>((resolve) => { upstreamClosed = resolve })
  const upstream = await startUpstream(t, (res, url) => {
    if (url !== '/feed') return false
    res.writeHead(200, { 'content-type': 'text/plain' })
    const timer = setInterval(() => res.write('tick\n'), 10)
    res.on('close', () => { clearInterval(timer); upstreamClosed() })
    return true
  })
  const gateway = await startGateway(t, { upstreams: [{ prefix: '/api', url: upstream }] })
  await new Promise<void>((resolve, reject) => {
    const req = httpRequest(`${gateway.url}/api/feed`, (res) => {
      res.once('data', () => { req.destroy(); resolve() })
    })
    req.on('error', () => {})
    req.on('close', resolve)
    req.end()
    setTimeout(() => { reject(new Error('no answer')) }, 5000)
  })
  await closed
  t.pass('the upstream connection was closed once the client had gone')
})

test('a client on an IPv4-mapped address is named in its IPv4 form', async (t) => {
  const upstream = await startUpstream(t)
  const app = await buildGateway({ upstreams: [{ prefix: '/api', url: upstream }] })
  // A dual-stack listener: IPv4 clients arrive as ::ffff:a.b.c.d.
  await app.listen({ host: '::', port: 0 })
  t.teardown(() => app.close())
  const port = (app.server.address() as AddressInfo).port
  const { headers } = await (await fetch(`http://127.0.0.1:${port}/api/x`)).json() as Echo
  t.equal(headers['x-forwarded-for'], '127.0.0.1')
})
