import { test, type Test } from 'tap'
import { constants } from 'node:buffer'
import { Readable } from 'node:stream'
import { brotliCompressSync, deflateRawSync, deflateSync, gunzipSync, gzipSync } from 'node:zlib'
import Fastify, { type FastifyInstance } from 'fastify'
import replyFrom from '@fastify/reply-from'
import { request as undiciRequest } from 'undici'
import { portcullisCore } from '@portcullis/core'
import { portcullisMasking, type MaskingOptions } from '../src/index.js'

const person = { name: 'Alice', email: 'alice@example.com', card: '4111 1111 1111 1111', orderId: '1718000000000', pan: 4111111111111111, note: 'call 555-0100' }
const masked = { name: 'Alice', email: 'a***@example.com', card: '**** **** **** 1111', orderId: '1718000000000', pan: '************1111', note: 'call 555-0100' }

function encode (bytes: Buffer, how: string): Buffer {
  switch (how) {
    case 'gzip': case 'x-gzip': return gzipSync(bytes)
    case 'br': return brotliCompressSync(bytes)
    case 'deflate': return deflateSync(bytes)
    case 'raw-deflate': return deflateRawSync(bytes)
    case 'deflate, gzip': return gzipSync(deflateSync(bytes))
    case 'gzip, identity': return gzipSync(bytes)
    case 'identity': return bytes
    default: return Buffer.from('not what it claims to be')
  }
}

function chunks (bytes: Buffer, size: number): Buffer[] {
  const list: Buffer[] = []
  for (let i = 0; i < bytes.length; i += size) list.push(bytes.subarray(i, i + size))
  return list
}

interface Echo { kind?: 'text' | 'buffer' | 'stream', type?: string, encoding?: string }

/** An app whose POST /echo answers with the body it was sent, as text, a buffer or a stream, typed and encoded as asked. */
async function appWith (options?: MaskingOptions, setup?: (app: FastifyInstance) => void): Promise<FastifyInstance & { decisions: string[] }> {
  const app = Fastify() as unknown as FastifyInstance & { decisions: string[] }
  app.decisions = []
  await app.register(portcullisCore)
  setup?.(app)
  await app.register(portcullisMasking, options ?? {})
  app.addHook('onResponse', async (request) => {
    for (const d of request.decisions ?? []) app.decisions.push(`${d.outcome} ${d.reason} ${d.rule ?? '-'}`)
  })
  app.post('/echo', async (request, reply) => {
    const text = request.body as string
    reply.type(String(request.headers['x-type'] ?? 'application/json')).header('etag', '"v1"')
    const how = request.headers['x-encoding'] as string | undefined
    let bytes: Buffer = Buffer.from(text)
    if (how !== undefined) {
      bytes = encode(bytes, how)
      reply.header('content-encoding', how === 'raw-deflate' ? 'deflate' : how)
    }
    switch (request.headers['x-kind']) {
      case 'buffer': return reply.send(bytes)
      case 'stream': return reply.header('content-length', bytes.length).send(Readable.from(chunks(bytes, 5)))
      default: return reply.send(how === undefined ? text : bytes)
    }
  })
  return app
}

async function echo (app: FastifyInstance, body: unknown, { kind = 'text', type, encoding }: Echo = {}) {
  const headers: Record<string, string> = { 'content-type': 'text/plain', 'x-kind': kind }
  if (type !== undefined) headers['x-type'] = type
  if (encoding !== undefined) headers['x-encoding'] = encoding
  return await app.inject({ method: 'POST', url: '/echo', headers, payload: typeof body === 'string' ? body : JSON.stringify(body) })
}

test('e-mail addresses and card numbers are masked in JSON sent as text, buffers and streams', async (t) => {
  const app = await appWith()
  for (const kind of ['text', 'buffer', 'stream'] as const) {
    app.decisions.length = 0
    const res = await echo(app, person, { kind })
    t.equal(res.statusCode, 200, kind)
    t.same(res.json(), masked, kind)
    t.equal(res.headers['content-length'], String(res.rawPayload.length), `${kind}: the length is the masked body's`)
    t.equal(res.headers.etag, undefined, `${kind}: the validator of the unmasked body is dropped`)
    t.same(app.decisions, ['allow PORTCULLIS_GATEWAY_MASKED email,card'], kind)
  }
})

test('a body without personal data is sent untouched, at the cost of one scan', async (t) => {
  const app = await appWith()
  const again = JSON.stringify(masked)
  t.equal((await echo(app, again)).body, again, 'masked data is not masked again')
  const clean = '{ "id": 1718000000000, "order": "1234567890123", "ts": "2025-07-01T00:00:00Z", "version": "lodash@4.17.21", "phone": "+1 555 123 4567" }'
  for (const kind of ['text', 'buffer', 'stream'] as const) {
    app.decisions.length = 0
    const res = await echo(app, clean, { kind })
    t.equal(res.body, clean, `${kind}: byte for byte, layout included`)
    t.equal(res.headers.etag, '"v1"', kind)
    t.same(app.decisions, [], kind)
  }
})

test('card numbers: 13 to 19 digits of the card ranges that pass the Luhn check, with spaces or dashes', async (t) => {
  const app = await appWith()
  const cases: Array<[unknown, unknown]> = [
    ['4111-1111-1111-1111', '****-****-****-1111'],
    ['Amex 378282246310005.', 'Amex ***********0005.'],
    ['card 4111 1111 1111 1111 123', 'card **** **** **** 1111 123'],
    ['2 4111111111111111', '2 ************1111'],
    ['order 4111111111111112', 'order 4111111111111112'],
    ['ts 1718000000001', 'ts 1718000000001'],
    ['41111111111111111111', '41111111111111111111'],
    ['4111 1111 1111 1111 1111', '**** **** **** 1111 1111'],
    ['4111 1111 1111 1112 1111', '4111 1111 1111 1112 1111'],
    ['12 4111 1111 1111 1111', '12 **** **** **** 1111'],
    ['4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1', '4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1'],
    ['4111 11 11 4111 1111 1111 1111', '4111 11 11 **** **** **** 1111'],
    [{ pan: 5555555555554444, other: 4111111111111112, neg: -4111111111111111 }, { pan: '************4444', other: 4111111111111112, neg: -4111111111111111 }]
  ]
  for (const [value, expected] of cases) {
    const body = typeof value === 'string' ? { value } : value
    const res = await echo(app, body)
    t.same(res.json(), typeof expected === 'string' ? { value: expected } : expected, JSON.stringify(value))
  }
  const precise = '{"id":4111111111111112,"pan":4111111111111111,"huge":41111111111111111111,"frac":4111111111111111.5,"exp":4111111111111111e3}'
  t.equal((await echo(app, precise)).body, '{"id":4111111111111112,"pan":"************1111","huge":41111111111111111111,"frac":4111111111111111.5,"exp":4111111111111111e3}',
    'other numbers keep every digit; only whole numbers of a card\'s length are cards')
})

test('e-mail addresses: the first character and the domain stay, wherever they are', async (t) => {
  const app = await appWith()
  const body = {
    'bob.smith+tag@mail.example.co.uk': ['contact: bob.smith+tag@mail.example.co.uk, or x@example.org', 'José.Niño@exämple.es', '😀pat@example.com'],
    path: '\\\\server\\share',
    quoted: 'say "o\'brien@example.net"'
  }
  const res = await echo(app, body)
  t.same(res.json(), {
    'b***@mail.example.co.uk': ['contact: b***@mail.example.co.uk, or x***@example.org', 'J***@exämple.es', '😀***@example.com'],
    path: '\\\\server\\share',
    quoted: 'say "o***@example.net"'
  }, 'keys too; non-ASCII addresses too; a character outside the BMP is kept whole')
})

test('JSON escapes cannot hide personal data; escapes alone change nothing', async (t) => {
  const app = await appWith()
  const hidden = '{"email":"alice\\u0040example.com","card":"\\u0034111111111111111"}'
  t.same((await echo(app, hidden)).json(), { email: 'a***@example.com', card: '************1111' })
  const harmless = '{"name":"Jos\\u00e9","path":"a\\/b"}'
  const res = await echo(app, harmless)
  t.equal(res.body, harmless, 'sent as it was')
  t.equal(res.headers.etag, '"v1"')
  t.same(app.decisions, ['allow PORTCULLIS_GATEWAY_MASKED email,card'])
})

test('patterns of your own, matched case-insensitively, come before the built-in ones', async (t) => {
  const app = await appWith({
    patterns: [
      { name: 'ssn', regex: '\\b\\d{3}-\\d{2}-\\d{4}\\b' },
      { name: 'iban', regex: '\\b[a-z]{2}\\d{2}(?: ?[a-z0-9]{1,4}){3,8}\\b', replacement: '[iban]' },
      { name: 'staff', regex: 'staff-[a-z]+@corp\\.example', replacement: '[staff]' }
    ]
  })
  const res = await echo(app, { ssn: '078-05-1120', iban: 'de89 3704 0044 0532 0130 00', mail: 'staff-ops@corp.example and ann@example.com', path: 'a\\b' })
  t.same(res.json(), { ssn: '***', iban: '[iban]', mail: '[staff] and a***@example.com', path: 'a\\b' })
  t.same(app.decisions, ['allow PORTCULLIS_GATEWAY_MASKED pattern:ssn,pattern:iban,pattern:staff,email'])
  app.decisions.length = 0
  const escaped = '{"path":"a\\\\b"}'
  t.equal((await echo(app, escaped)).body, escaped, 'with patterns of your own, any escape is decoded first; nothing found, nothing changed')
})

test('only JSON is masked; empty bodies pass', async (t) => {
  const app = await appWith(undefined, (app) => {
    // A hook before masking that leaves no body at all.
    app.addHook('onSend', async (request, _reply, payload) => request.headers['x-null'] === undefined ? payload : null)
  })
  app.get('/none', async (_request, reply) => reply.type('application/json').send())
  for (const type of ['application/json; charset=utf-8', 'application/vnd.api+json', 'application/problem+json']) {
    t.same((await echo(app, person, { type })).json(), masked, type)
  }
  for (const type of ['text/plain', 'text/html']) {
    t.same((await echo(app, person, { type })).json(), person, `${type} is not looked at`)
  }
  t.equal((await echo(app, '')).body, '')
  t.equal((await echo(app, '', { kind: 'stream', encoding: 'gzip' })).statusCode, 200, 'an empty body is not decoded')
  t.equal((await app.inject('/none')).body, '')
  const gone = await app.inject({ method: 'POST', url: '/echo', headers: { 'content-type': 'text/plain', 'x-null': '1' }, payload: JSON.stringify(person) })
  t.equal(gone.body, '')
})

test('compressed bodies are decoded, masked and sent decoded; clean ones are sent as they came', async (t) => {
  const app = await appWith()
  for (const encoding of ['gzip', 'x-gzip', 'br', 'deflate', 'raw-deflate', 'deflate, gzip', 'gzip, identity']) {
    for (const kind of ['buffer', 'stream'] as const) {
      const res = await echo(app, person, { kind, encoding })
      t.equal(res.statusCode, 200, `${encoding} ${kind}`)
      t.equal(res.headers['content-encoding'], undefined, `${encoding} ${kind}`)
      t.same(JSON.parse(res.body), masked, `${encoding} ${kind}`)
      t.equal(res.headers['content-length'], String(res.rawPayload.length))
    }
  }
  t.same((await echo(app, person, { kind: 'buffer', encoding: 'identity' })).json(), masked, 'identity is no coding')
  const clean = await echo(app, { id: 7 }, { kind: 'stream', encoding: 'gzip' })
  t.equal(clean.headers['content-encoding'], 'gzip')
  t.same(JSON.parse(gunzipSync(clean.rawPayload).toString()), { id: 7 })
  t.equal(clean.headers['content-length'], String(clean.rawPayload.length))
  t.equal(clean.headers.etag, '"v1"')
})

test('a body that cannot be checked is not sent: 502 problem+json, the reason recorded', async (t) => {
  const app = await appWith({ maxBytes: 2048 })
  const bomb = Buffer.from(JSON.stringify({ pad: 'x'.repeat(4096) }))
  app.get('/bomb', async (_request, reply) => reply.type('application/json').header('content-encoding', 'gzip').send(gzipSync(bomb)))
  let upstream: Readable | null = null
  app.get('/big', async (_request, reply) => {
    upstream = new Readable({ read () { this.push(Buffer.alloc(1024, 32)) } })
    return reply.type('application/json').send(upstream)
  })
  app.get('/big-text', async (_request, reply) => reply.type('application/json').send(JSON.stringify({ email: 'alice@example.com', pad: ' '.repeat(4096) })))
  const cases: Array<[() => Promise<Awaited<ReturnType<typeof echo>>>, string]> = [
    [async () => await app.inject('/big'), 'masking.maxBytes'],
    [async () => await app.inject('/big-text'), 'masking.maxBytes'],
    [async () => await app.inject('/bomb'), 'masking.content-encoding'],
    [async () => await echo(app, person, { kind: 'buffer', encoding: 'zstd' }), 'masking.content-encoding'],
    [async () => await echo(app, person, { kind: 'buffer', encoding: 'gzip, zstd' }), 'masking.content-encoding'],
    [async () => await echo(app, '{"email": "alice@example.com", }'), 'masking.json']
  ]
  for (const [send, rule] of cases) {
    app.decisions.length = 0
    const res = await send()
    t.equal(res.statusCode, 502, rule)
    t.equal(res.headers['content-type'], 'application/problem+json; charset=utf-8')
    t.match(res.json(), { code: 'PORTCULLIS_GATEWAY_MASKING_FAILED', status: 502 })
    t.equal(res.headers['content-encoding'], undefined, 'the problem is not said to be compressed')
    t.equal(res.headers.etag, undefined)
    t.notMatch(res.body, /alice/)
    t.same(app.decisions, [`deny PORTCULLIS_GATEWAY_MASKING_FAILED ${rule}`])
  }
  t.equal((upstream as Readable | null)?.destroyed, true, 'the unread rest of a stream is let go')
  const broken = '{"id": 7, '
  t.equal((await echo(app, broken)).body, broken, 'a broken body without anything to mask is none of masking\'s business')
})

test('report mode records what would be masked, and what could not be checked, and sends the body as it is', async (t) => {
  const app = await appWith({ mode: 'report', maxBytes: 64 })
  app.get('/big', async (_request, reply) => reply.type('application/json').send(Readable.from([Buffer.from(JSON.stringify({ email: 'alice@example.com', pad: ' '.repeat(100) }))])))
  t.same((await echo(app, { email: 'bob@example.com' })).json(), { email: 'bob@example.com' })
  t.same(app.decisions, ['would-deny PORTCULLIS_GATEWAY_MASKED email'])
  app.decisions.length = 0
  const big = await app.inject('/big')
  t.equal(big.statusCode, 200)
  t.equal(big.json().email, 'alice@example.com')
  t.same(app.decisions, ['would-deny PORTCULLIS_GATEWAY_MASKING_FAILED masking.maxBytes'])
})

test('routes can turn masking off or set their own options', async (t) => {
  const app = await appWith({ patterns: [{ name: 'secret', regex: 'sekrit-\\d+' }] })
  const body = { email: 'alice@example.com', card: '4111111111111111', code: 'sekrit-42' }
  app.get('/raw', { config: { masking: false } }, async () => body)
  app.get('/cards-only', { config: { masking: { emails: false, patterns: [] } } }, async () => body)
  app.get('/nothing', { config: { masking: { emails: false, cards: false, patterns: [] } } }, async () => body)
  app.get('/emails-only', { config: { masking: { cards: false } } }, async () => ({ ...body, pan: 4111111111111111 }))
  app.get('/default', async () => body)
  t.same((await app.inject('/raw')).json(), body)
  t.same((await app.inject('/cards-only')).json(), { ...body, card: '************1111' })
  t.same((await app.inject('/nothing')).json(), body)
  t.same((await app.inject('/emails-only')).json(), { ...body, email: 'a***@example.com', code: '***', pan: 4111111111111111 }, 'cards: false leaves card numbers, in strings and as numbers')
  t.same((await app.inject('/default')).json(), { email: 'a***@example.com', card: '************1111', code: '***' })
  t.same((await app.inject('/users/bob@example.com')).json().instance, '/users/b***@example.com', 'problem bodies are JSON too')
})

test('with nothing to mask, nothing is read', async (t) => {
  const app = await appWith({ emails: false, cards: false })
  t.same((await echo(app, person)).json(), person)
})

test('bad options fail startup, naming the option and what is allowed', async (t) => {
  const cases: Array<[unknown, string]> = [
    [{ email: true }, 'masking.email is not a known option; allowed: emails, cards, patterns, maxBytes, mode'],
    [{ mode: 'shadow' }, 'masking.mode must be one of enforce, report (got "shadow")'],
    [{ emails: 'yes' }, 'masking.emails must be a boolean (got "yes")'],
    [{ cards: 1 }, 'masking.cards must be a boolean (got 1)'],
    [{ maxBytes: 0 }, 'masking.maxBytes must be a positive whole number of bytes, at most '],
    [{ maxBytes: 1.5 }, 'masking.maxBytes must be a positive whole number of bytes, at most '],
    [{ maxBytes: constants.MAX_LENGTH + 1 }, 'masking.maxBytes must be a positive whole number of bytes, at most '],
    [{ patterns: { ssn: '\\d+' } }, 'masking.patterns must be a list of { name, regex, replacement? } (got an object)'],
    [{ patterns: ['\\d+'] }, 'masking.patterns[0] must be an object (got "\\\\d+")'],
    [{ patterns: [{ name: 'a', regex: 'x', flags: 'i' }] }, 'masking.patterns[0].flags is not a known option; allowed: name, regex, replacement'],
    [{ patterns: [{ regex: 'x' }] }, 'masking.patterns[0].name must be a name of its own, of letters, digits, _, . and - (got undefined)'],
    [{ patterns: [{ name: 'my id', regex: 'x' }] }, 'masking.patterns[0].name must be a name of its own'],
    [{ patterns: [{ name: 'id', regex: 'x' }, { name: 'id', regex: 'y' }] }, 'masking.patterns[1].name must be a name of its own, of letters, digits, _, . and - (got "id")'],
    [{ patterns: [{ name: 'id', regex: 'x', replacement: null }] }, 'masking.patterns[0].replacement must be a string (got null)'],
    [{ patterns: [{ name: 'id', regex: '[' }] }, 'masking.patterns[0].regex must be a regular expression (a string) that compiles'],
    [{ patterns: [{ name: 'id', regex: '\\d*' }] }, 'masking.patterns[0].regex must be a regular expression (a string) that compiles, cannot match an empty string']
  ]
  for (const [options, message] of cases) {
    const app = Fastify()
    await app.register(portcullisCore)
    app.register(portcullisMasking, options as MaskingOptions)
    await t.rejects(async () => app.ready(), { code: 'PORTCULLIS_CORE_INVALID_OPTION', message: new RegExp(`^${message.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`) }, JSON.stringify(options))
  }
  for (const [masking, message] of [
    [true, 'route GET /x config.masking must be an object (got true)'],
    [{ mode: 'report' }, 'route GET /x config.masking.mode is not a known option; allowed: emails, cards, patterns, maxBytes'],
    [{ maxBytes: -1 }, /^route GET \/x config\.masking\.maxBytes must be a positive whole number of bytes, at most \d+ \(got -1\)$/]
  ] as const) {
    const app = await appWith()
    await t.rejects(async () => {
      app.get('/x', { config: { masking: masking as never } }, async () => 'x')
      await app.ready()
    }, { code: 'PORTCULLIS_CORE_INVALID_OPTION', message })
  }
})

// A real upstream on a loopback port, reached through @fastify/reply-from as the gateway does.
async function upstream (t: Test): Promise<string> {
  const app = Fastify()
  app.get('/person', async () => person)
  app.get('/gzip', async (request, reply) => {
    const text = JSON.stringify(request.query !== null && (request.query as { clean?: string }).clean !== undefined ? { id: 7 } : person)
    if (!String(request.headers['accept-encoding']).includes('gzip')) return reply.type('application/json').send(text)
    return reply.type('application/json').header('content-encoding', 'gzip').header('vary', 'accept-encoding').send(gzipSync(text))
  })
  app.get('/chunked', async (_request, reply) => {
    // No length: sent with Transfer-Encoding: chunked, an address split over two chunks.
    const text = JSON.stringify(person)
    const at = text.indexOf('@')
    return reply.type('application/json').send(Readable.from([text.slice(0, at), text.slice(at, at + 3), text.slice(at + 3)]))
  })
  app.get('/huge', async (_request, reply) => reply.type('application/json').send(Readable.from((function * () {
    yield '{"pad":"'
    for (let i = 0; i < 64; i++) yield ' '.repeat(32 * 1024)
    yield '"}'
  })())))
  const url = await app.listen({ host: '127.0.0.1', port: 0 })
  t.teardown(() => app.close())
  return url
}

async function gateway (t: Test, base: string): Promise<string> {
  const app = Fastify()
  await app.register(portcullisCore)
  await app.register(portcullisMasking)
  await app.register(replyFrom, { base })
  app.get('/*', async (request, reply) => reply.from(request.url))
  const url = await app.listen({ host: '127.0.0.1', port: 0 })
  t.teardown(() => app.close())
  return url
}

test('proxied answers, over real sockets: plain, gzip and chunked upstreams are masked', async (t) => {
  const url = await gateway(t, await upstream(t))
  for (const path of ['/person', '/chunked', '/gzip']) {
    const res = await undiciRequest(`${url}${path}`, { headers: { 'accept-encoding': 'gzip' } })
    const body = await res.body.text()
    t.equal(res.statusCode, 200, path)
    t.same(JSON.parse(body), masked, path)
    t.equal(res.headers['content-encoding'], undefined, `${path}: sent decoded`)
    t.equal(res.headers['content-length'], String(Buffer.byteLength(body)), `${path}: the masked body's length`)
    t.equal(res.headers['transfer-encoding'], undefined, `${path}: one framing only`)
  }
  const clean = await undiciRequest(`${url}/gzip?clean=1`, { headers: { 'accept-encoding': 'gzip' } })
  t.equal(clean.headers['content-encoding'], 'gzip', 'nothing to mask: the upstream\'s compressed bytes go through')
  t.same(JSON.parse(gunzipSync(Buffer.from(await clean.body.arrayBuffer())).toString()), { id: 7 })
  const head = await undiciRequest(`${url}/gzip`, { method: 'HEAD', headers: { 'accept-encoding': 'gzip' } })
  await head.body.dump()
  t.equal(head.statusCode, 200, 'HEAD: no body to decode')
  const huge = await undiciRequest(`${url}/huge`)
  t.equal(huge.statusCode, 502, 'a body over maxBytes is refused')
  t.equal(((await huge.body.json()) as { code: string }).code, 'PORTCULLIS_GATEWAY_MASKING_FAILED')
})
