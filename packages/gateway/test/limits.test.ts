import { test, type Test } from 'tap'
import { createServer, request as httpRequest } from 'node:http'
import { connect, type AddressInfo } from 'node:net'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { buildGateway, startPolicyGateway, validateGatewayConfig, type GatewayConfig } from '../src/index.js'

// A real upstream that counts the bytes of every body it receives.
async function upstream (t: Test): Promise<{ url: string, received: number[] }> {
  const received: number[] = []
  const server = createServer((req, res) => {
    let size = 0
    req.on('data', (chunk: Buffer) => { size += chunk.length })
    req.on('end', () => {
      received.push(size)
      res.setHeader('content-type', 'application/json')
      res.end(JSON.stringify({ size }))
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { server.close() })
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, received }
}

async function gateway (t: Test, config: GatewayConfig): Promise<number> {
  const app = await buildGateway(config)
  await app.listen({ host: '127.0.0.1', port: 0 })
  t.teardown(() => app.close())
  return (app.server.address() as AddressInfo).port
}

// Sends raw bytes, returns everything the gateway answered until it closed or the answer ended.
async function raw (port: number, text: string): Promise<string> {
  return await new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1')
    let received = ''
    socket.setEncoding('latin1')
    socket.on('data', (chunk: string) => { received += chunk; if (/\r\n\r\n[\s\S]*\}$/.test(received)) socket.end() })
    socket.on('close', () => { resolve(received) })
    // The gateway may close while the rest is still being sent: what it answered still counts.
    socket.on('error', () => {})
    socket.write(text)
  })
}

// A chunked upload of `size` bytes, in 16 KiB chunks.
async function chunked (port: number, size: number): Promise<{ status: number, body: Record<string, unknown> }> {
  return await new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, method: 'POST', path: '/files/upload', headers: { 'content-type': 'application/octet-stream', 'transfer-encoding': 'chunked' } }, (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => { text += chunk })
      res.on('end', () => { resolve({ status: res.statusCode as number, body: JSON.parse(text) }) })
    })
    req.on('error', reject)
    const chunk = Buffer.alloc(16_384, 97)
    let left = size
    const write = (): void => {
      while (left > 0) {
        const part = chunk.subarray(0, Math.min(left, chunk.length))
        left -= part.length
        if (!req.write(part)) { req.once('drain', write); return }
      }
      req.end()
    }
    write()
  })
}

test('server limits are checked at startup, naming the option', async (t) => {
  t.match(validateGatewayConfig({}).server, { requestTimeout: 30_000, keepAliveTimeout: 72_000, maxHeaderSize: 16_384, bodyLimit: 1_048_576 }, 'the defaults')
  const cases: Array<[Record<string, unknown>, RegExp]> = [
    [{ requestTimeout: -1 }, /^server\.requestTimeout must be a whole number of ms from 0 \(no limit\) to 3600000/],
    [{ keepAliveTimeout: 0 }, /^server\.keepAliveTimeout must be a whole number of ms from 1 to 3600000/],
    [{ maxHeaderSize: 100 }, /^server\.maxHeaderSize must be a whole number of bytes from 1024 to 1048576/],
    [{ bodyLimit: 1.5 }, /^server\.bodyLimit must be a whole number of bytes, 0 or more/]
  ]
  for (const [server, message] of cases) t.throws(() => validateGatewayConfig({ server }), { message }, JSON.stringify(server))
})

test('bodies over bodyLimit are refused with 413 before any of them goes upstream, declared or streamed', async (t) => {
  const target = await upstream(t)
  const port = await gateway(t, { server: { bodyLimit: 100_000 }, upstreams: [{ prefix: '/files', url: target.url, public: true }] })
  const base = `http://127.0.0.1:${port}`
  const small = await fetch(`${base}/files/upload`, { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body: Buffer.alloc(50_000) })
  t.same(await small.json(), { size: 50_000 }, 'a body under the limit goes through')
  const declared = await fetch(`${base}/files/upload`, { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body: Buffer.alloc(200_000) })
  t.equal(declared.status, 413)
  t.equal(declared.headers.get('content-type'), 'application/problem+json; charset=utf-8')
  t.equal(((await declared.json()) as { code: string }).code, 'PORTCULLIS_CORE_PAYLOAD_TOO_LARGE')
  t.same(target.received, [50_000], 'the upstream never saw the large one')
  const streamedSmall = await chunked(port, 60_000)
  t.same(streamedSmall, { status: 200, body: { size: 60_000 } }, 'a chunked body under the limit streams through')
  const streamed = await chunked(port, 400_000)
  t.equal(streamed.status, 413, 'a chunked body is cut off at the limit')
  t.equal(streamed.body.code, 'PORTCULLIS_CORE_PAYLOAD_TOO_LARGE')
  t.ok(target.received.every((size) => size <= 100_000), 'no more than the limit ever reached the upstream')
})

test('headers over maxHeaderSize get 431 and a slow request 408, both as problem details', async (t) => {
  const target = await upstream(t)
  const port = await gateway(t, { server: { maxHeaderSize: 2048, requestTimeout: 300 }, upstreams: [{ prefix: '/api', url: target.url, public: true }] })
  const large = await raw(port, `GET /api/x HTTP/1.1\r\nHost: a\r\nX-Pad: ${'a'.repeat(4096)}\r\n\r\n`)
  t.match(large, /^HTTP\/1\.1 431 Request Header Fields Too Large\r\n/)
  t.match(large, /"code":"PORTCULLIS_CORE_HEADERS_TOO_LARGE"/)
  const started = Date.now()
  const slow = await raw(port, 'GET /api/x HTTP/1.1\r\nHost: a\r\n')
  t.match(slow, /^HTTP\/1\.1 408 Request Timeout\r\n[\s\S]*"code":"PORTCULLIS_CORE_REQUEST_TIMEOUT"/)
  t.ok(Date.now() - started < 2000, 'within the timeout and one check of the connections')
})

test('the live gateway takes its limits from the policy document', async (t) => {
  const target = await upstream(t)
  const dir = t.testdir()
  const file = join(dir, 'policy.json')
  await writeFile(file, JSON.stringify({ version: 1, server: { maxHeaderSize: 2048, bodyLimit: 1000 }, upstreams: [{ prefix: '/api', url: target.url, public: true }] }))
  const live = await startPolicyGateway({ file, host: '127.0.0.1', port: 0, watch: false })
  t.teardown(live.close)
  const base = await live.listen()
  const port = Number(new URL(base).port)
  t.match(await raw(port, `GET /api/x HTTP/1.1\r\nHost: a\r\nX-Pad: ${'a'.repeat(4096)}\r\n\r\n`), /^HTTP\/1\.1 431 /)
  const over = await fetch(`${base}/api/upload`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ pad: 'a'.repeat(2000) }) })
  t.equal(over.status, 413)
  t.equal((await fetch(`${base}/api/upload`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' })).status, 200)
})
