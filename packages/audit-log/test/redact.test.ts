import { test } from 'tap'
import fc from 'fast-check'
import { compileRedaction, REDACTED } from '../src/redact.js'
import { alice, audited } from './helpers.js'

const SECRETS = {
  bearer: 'eyJhbGciOiJFUzI1NiJ9.secret-bearer-token.sig',
  proxy: 'Basic cHJveHk6c2VjcmV0LXByb3h5',
  cookie: 'session=secret-session-cookie',
  setCookie: 'session=secret-set-cookie; HttpOnly',
  session: 'secret-custom-session-header',
  queryToken: 'secret-query-token',
  custom: 'secret-custom-param',
  password: 'secret-password-value',
  card: '4111111111111111',
  cvv: 'secret-cvv-737',
  nested: 'secret-nested-pin'
}

test('no secret is ever written: headers, API keys, query parameters and body paths', async (t) => {
  const { app, text, records } = await audited(t, {
    headers: { request: '*', response: '*' },
    body: true,
    redact: { headers: ['x-session'], query: ['custom'], body: ['/card/number', '/payments/*/pin'] }
  })
  app.post('/login', { config: { authn: false, authz: false } }, async (_request, reply) => {
    reply.header('set-cookie', SECRETS.setCookie)
    reply.header('x-session', 'secret-response-session')
    reply.header('x-multi', ['a', 'b'])
    return { ok: true }
  })
  await app.inject({
    method: 'POST',
    url: `/login?access_token=${SECRETS.queryToken}&custom=${SECRETS.custom}&%ZZ=undecodable-secret&page=2&flag`,
    headers: {
      authorization: `Bearer ${SECRETS.bearer}`,
      'proxy-authorization': SECRETS.proxy,
      cookie: SECRETS.cookie,
      'x-session': SECRETS.session,
      'x-api-key': alice.key,
      'x-trace': ['t1', 't2'],
      'content-type': 'application/json'
    },
    payload: {
      user: 'alice',
      password: SECRETS.password,
      card: { number: SECRETS.card, cvv: SECRETS.cvv, holder: 'A. Liddell' },
      payments: [{ pin: SECRETS.nested, amount: 3 }, { amount: 4 }]
    }
  })
  // The API key in the query string: it authenticates, and is never written either.
  await app.inject({ url: `/orders/1?api_key=${alice.key}` })
  const written = await text()
  for (const [kind, secret] of Object.entries({ ...SECRETS, apiKey: alice.key, undecodable: 'undecodable-secret', responseSession: 'secret-response-session' })) {
    t.notOk(written.includes(secret), `no ${kind} in the audit file`)
  }
  const [login, order] = await records()
  t.match(login.http.request.headers, { authorization: REDACTED, 'proxy-authorization': REDACTED, cookie: REDACTED, 'x-session': REDACTED, 'x-api-key': REDACTED, 'x-trace': 't1, t2', 'content-type': 'application/json' })
  t.match(login.http.response.headers, { 'set-cookie': REDACTED, 'x-session': REDACTED, 'x-multi': ['a', 'b'], 'content-type': /json/, 'content-length': /^\d+$/ })
  t.same(Object.keys(login.http.request.headers), Object.keys(login.http.request.headers).sort(), 'headers in name order')
  t.equal(login.url.query, `access_token=${REDACTED}&custom=${REDACTED}&%ZZ=${REDACTED}&page=2&flag`)
  t.same(JSON.parse(login.http.request.body.content), {
    user: 'alice',
    password: REDACTED,
    card: { number: REDACTED, cvv: REDACTED, holder: 'A. Liddell' },
    payments: [{ pin: REDACTED, amount: 3 }, { amount: 4 }]
  })
  t.ok(login.http.request.body.bytes > 100, 'the body size')
  t.equal(order.url.query, `api_key=${REDACTED}`)
  t.match(order, { user: { id: 'alice' }, portcullis: { principal: { credential_id: 'key-alice' } } })
})

test('bodies: off by default, on per route, only JSON, not past bodyMaxBytes', async (t) => {
  const { app, records } = await audited(t, { bodyMaxBytes: 64 })
  app.post('/notes', { config: { authn: false, authz: false, audit: { body: true } } }, async () => 'ok')
  app.post('/plain', { config: { authn: false, authz: false } }, async () => 'ok')
  await app.inject({ method: 'POST', url: '/plain', payload: { note: 'not written' } })
  await app.inject({ method: 'POST', url: '/notes', payload: { note: 'short' } })
  await app.inject({ method: 'POST', url: '/notes', payload: { note: 'x'.repeat(100) } })
  await app.inject({ method: 'POST', url: '/notes', headers: { 'content-type': 'text/plain' }, payload: 'password=hunter2' })
  await app.inject({ method: 'POST', url: '/notes', payload: [{ pin: '1' }, 2] })
  const [plain, short, long, text, list] = await records()
  t.same(list.http.request.body, { bytes: 15, content: '[{"pin":"1"},2]' }, 'a JSON array')
  t.same(plain.http.request.body, { bytes: 22 })
  t.same(short.http.request.body, { bytes: 16, content: '{"note":"short"}' })
  t.same(long.http.request.body, { bytes: 111 }, 'too long: only its size')
  t.same(text.http.request.body, { bytes: 16 }, 'a text body is never written')
  t.notOk('body' in (await (async () => { await app.inject('/public'); return (await records())[5] })()).http.request, 'no body, no body field')
})

test('body redaction copies: the request body is left as it was, and "__proto__" keys pollute nothing', async (t) => {
  const redaction = compileRedaction({ headers: [], query: [], body: ['/a~1b/*'], bodyKeys: ['Pin'] })
  const body = JSON.parse('{"__proto__":{"polluted":true},"a/b":{"x":1,"y":[1]},"list":[{"PIN":"1"}],"keep":null}')
  const copy = redaction.body(body) as Record<string, unknown>
  t.same(JSON.parse(JSON.stringify(copy)), { ['__proto__']: { polluted: true }, 'a/b': { x: REDACTED, y: REDACTED }, list: [{ PIN: REDACTED }], keep: null })
  t.same(body['a/b'], { x: 1, y: [1] }, 'the original is untouched')
  t.equal(({} as Record<string, unknown>).polluted, undefined)
  t.equal(redaction.headers({ accept: 'a' }, ['authorization']), null, 'none of the named headers: no field')
})

test('whatever the body, a redacted key never survives and no prototype is polluted', async (t) => {
  const redaction = compileRedaction({ headers: [], query: [], body: ['/*/secretish'], bodyKeys: [] })
  fc.assert(fc.property(fc.jsonValue(), fc.string({ minLength: 1 }), (value, secret) => {
    const body = { wrapper: { secretish: secret, inner: value }, password: secret }
    const copy = JSON.parse(JSON.stringify(redaction.body(body)))
    return copy.wrapper.secretish === REDACTED && copy.password === REDACTED && ({} as Record<string, unknown>).secretish === undefined
  }), { numRuns: 300 })
  t.pass('no redacted value in 300 random bodies')
})
