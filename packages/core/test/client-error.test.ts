import { test, type Test } from 'tap'
import { createServer } from 'node:http'
import { connect, type AddressInfo } from 'node:net'
import Fastify from 'fastify'
import { problemClientErrorHandler } from '../src/index.js'

// What a raw connection receives in answer to what it sends, until the server closes it.
async function exchange (port: number, ...parts: Array<string | number>): Promise<string> {
  return await new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1')
    let received = ''
    socket.setEncoding('latin1')
    socket.on('data', (chunk: string) => { received += chunk })
    socket.on('close', () => { resolve(received) })
    socket.on('error', reject)
    const send = async (): Promise<void> => {
      for (const part of parts) {
        if (typeof part === 'number') await new Promise((resolve) => setTimeout(resolve, part))
        else socket.write(part)
      }
    }
    send().catch(reject)
  })
}

function problemOf (answer: string): { status: string, type: string | undefined, body: Record<string, unknown> } {
  const [head = '', body = ''] = answer.split('\r\n\r\n')
  return { status: head.split('\r\n')[0] ?? '', type: /content-type: (.*)/i.exec(head)?.[1], body: JSON.parse(body) }
}

async function start (t: Test, options: { requestTimeout?: number, maxHeaderSize?: number } = {}): Promise<number> {
  const app = Fastify({
    clientErrorHandler: problemClientErrorHandler('https://errors.example/#'),
    serverFactory: (handler) => {
      const server = createServer({ maxHeaderSize: options.maxHeaderSize ?? 16384, connectionsCheckingInterval: 50 }, handler)
      server.requestTimeout = options.requestTimeout ?? 0
      server.headersTimeout = options.requestTimeout ?? 60_000
      return server
    }
  })
  app.get('/', async () => 'ok')
  await app.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(async () => { await app.close() })
  return (app.server.address() as AddressInfo).port
}

test('a request Node cannot parse is a 400 problem', async (t) => {
  const port = await start(t)
  const answer = problemOf(await exchange(port, 'NOT HTTP AT ALL\r\n\r\n'))
  t.equal(answer.status, 'HTTP/1.1 400 Bad Request')
  t.equal(answer.type, 'application/problem+json; charset=utf-8')
  t.same(answer.body, { type: 'https://errors.example/#PORTCULLIS_CORE_BAD_REQUEST', title: 'Bad Request', status: 400, detail: 'The request is malformed', code: 'PORTCULLIS_CORE_BAD_REQUEST' })
})

test('headers over maxHeaderSize are a 431 problem', async (t) => {
  const port = await start(t, { maxHeaderSize: 1024 })
  const answer = problemOf(await exchange(port, `GET / HTTP/1.1\r\nHost: a\r\nX-Pad: ${'a'.repeat(2048)}\r\n\r\n`))
  t.equal(answer.status, 'HTTP/1.1 431 Request Header Fields Too Large')
  t.equal(answer.body.code, 'PORTCULLIS_CORE_HEADERS_TOO_LARGE')
})

test('a request not received within requestTimeout is a 408 problem', async (t) => {
  const port = await start(t, { requestTimeout: 100 })
  const answer = problemOf(await exchange(port, 'GET / HTTP/1.1\r\nHost: a\r\n'))
  t.equal(answer.status, 'HTTP/1.1 408 Request Timeout')
  t.equal(answer.body.code, 'PORTCULLIS_CORE_REQUEST_TIMEOUT')
})

test('nothing is written once an answer has started on the connection, or to a reset one', async (t) => {
  const port = await start(t)
  const answer = await exchange(port, 'GET / HTTP/1.1\r\nHost: a\r\n\r\n', 50, 'BROKEN\r\n\r\n')
  t.match(answer, /^HTTP\/1\.1 200 OK/)
  t.equal(answer.match(/HTTP\/1\.1/g)?.length, 1, 'the second, broken request gets no answer: the connection is closed')
  const handler = problemClientErrorHandler()
  const written: string[] = []
  const socket = { destroyed: false, writable: true, bytesWritten: 0, write: (text: string) => written.push(text), destroy: () => written.push('destroyed') }
  handler(Object.assign(new Error('reset'), { code: 'ECONNRESET' }), socket as never)
  t.same(written, [], 'a reset connection is left alone')
})
