import { test } from 'tap'
import Fastify from 'fastify'
import { compileClientIp, portcullisCore, type CoreOptions } from '../src/index.js'

async function clientIpOf (options: CoreOptions, remoteAddress: string, headers: Record<string, string> = {}) {
  const app = Fastify()
  await app.register(portcullisCore, options)
  app.get('/ip', async (request) => ({ ip: request.clientIp }))
  const res = await app.inject({ url: '/ip', remoteAddress, headers })
  return res.json().ip as string
}

test('without trusted proxies the socket address is the client, whatever the headers say', async (t) => {
  t.equal(await clientIpOf({}, '203.0.113.9', { 'x-forwarded-for': '198.51.100.1' }), '203.0.113.9')
  t.equal(await clientIpOf({}, '::ffff:203.0.113.9'), '203.0.113.9', 'IPv4-mapped IPv6 is reported as IPv4')
  t.equal(await clientIpOf({}, '2001:db8::1'), '2001:db8::1')
})

test('a trusted proxy may name its client; an untrusted peer may not', async (t) => {
  const options = { trustedProxies: ['10.0.0.0/8'] }
  t.equal(await clientIpOf(options, '10.1.2.3', { 'x-forwarded-for': '198.51.100.7' }), '198.51.100.7')
  t.equal(await clientIpOf(options, '203.0.113.9', { 'x-forwarded-for': '198.51.100.7' }), '203.0.113.9')
  t.equal(await clientIpOf(options, '10.1.2.3'), '10.1.2.3', 'a trusted proxy without the header is the client')
})

test('the chain is walked from the nearest hop, stopping at the first untrusted one', async (t) => {
  const options = { trustedProxies: ['10.0.0.0/8', '192.0.2.10'] }
  // The client wrote the first entry itself: it is not believed, because 198.51.100.7 is not a proxy.
  t.equal(await clientIpOf(options, '10.0.0.1', { 'x-forwarded-for': '1.1.1.1, 198.51.100.7, 192.0.2.10' }), '198.51.100.7')
  t.equal(await clientIpOf(options, '10.0.0.1', { 'x-forwarded-for': '10.9.9.9, 192.0.2.10' }), '10.9.9.9', 'all trusted: the farthest hop')
})

test('IPv4-mapped IPv6 equals its IPv4 form, in the peer, the chain and the trusted list', async (t) => {
  t.equal(await clientIpOf({ trustedProxies: ['10.0.0.0/8'] }, '::ffff:10.0.0.1', { 'x-forwarded-for': '::ffff:198.51.100.7' }), '198.51.100.7')
  t.equal(await clientIpOf({ trustedProxies: ['::ffff:10.0.0.0/104'] }, '10.0.0.1', { 'x-forwarded-for': '198.51.100.7' }), '198.51.100.7')
  t.equal(await clientIpOf({ trustedProxies: ['::ffff:10.0.0.1'] }, '10.0.0.1', { 'x-forwarded-for': '198.51.100.8' }), '198.51.100.8')
})

test('IPv6 proxies and clients are canonicalized', async (t) => {
  const options = { trustedProxies: ['2001:db8:1::/48', 'loopback'] }
  t.equal(await clientIpOf(options, '2001:db8:1::5', { 'x-forwarded-for': '2001:DB8:0:0:0:0:0:00AB' }), '2001:db8::ab')
  t.equal(await clientIpOf(options, '::1', { 'x-forwarded-for': '198.51.100.3' }), '198.51.100.3')
})

test('a malformed or ambiguous entry ends the walk at the proxy that passed it on', async (t) => {
  const options = { trustedProxies: ['10.0.0.0/8'] }
  for (const forged of ['127.1', '0x7f.0.0.1', '010.0.0.1', 'unknown', '', '1.2.3.4:80', '::ffff:127.1']) {
    t.equal(await clientIpOf(options, '10.0.0.1', { 'x-forwarded-for': forged }), '10.0.0.1', JSON.stringify(forged))
  }
})

test('forwardedHeader names another header', async (t) => {
  const options = { trustedProxies: ['10.0.0.0/8'], forwardedHeader: 'X-Real-IP' }
  t.equal(await clientIpOf(options, '10.0.0.1', { 'x-real-ip': '198.51.100.4', 'x-forwarded-for': '198.51.100.5' }), '198.51.100.4')
})

test('the resolver works on raw values too', async (t) => {
  const resolve = compileClientIp({ trustedProxies: ['private'] })
  t.equal(resolve(undefined, {}), '', 'a socket already gone has no address')
  t.equal(resolve('not-an-ip', { 'x-forwarded-for': '1.2.3.4' }), 'not-an-ip')
  t.equal(resolve('192.168.1.1', { 'x-forwarded-for': ['198.51.100.1', '172.16.0.1'] }), '198.51.100.1', 'repeated headers form one chain')
  t.equal(compileClientIp()(undefined, {}), '')
})

test('bad trusted-proxy settings fail at startup naming the option', async (t) => {
  const cases: Array<[unknown, RegExp]> = [
    [['10.0.0.1/8'], /core\.trustedProxies\[0\]: "10\.0\.0\.1\/8" has host bits set; did you mean "10\.0\.0\.0\/8"\?/],
    [['127.1'], /core\.trustedProxies\[0\]: "127\.1" is not an IP address/],
    [['10.0.0.0/33'], /invalid prefix length \(0 to 32 allowed\)/],
    [['::/129'], /invalid prefix length \(0 to 128 allowed\)/],
    [['10.0.0.0/08'], /invalid prefix length/],
    [['10.0.0.0/'], /invalid prefix length/],
    [[42], /core\.trustedProxies\[0\] must be a string/],
    ['10.0.0.0/8', /core\.trustedProxies must be an array/]
  ]
  for (const [trustedProxies, message] of cases) {
    const app = Fastify()
    app.register(portcullisCore, { trustedProxies } as CoreOptions)
    await t.rejects(async () => app.ready(), { code: 'PORTCULLIS_CORE_INVALID_OPTION', message }, JSON.stringify(trustedProxies))
  }
  const app = Fastify()
  app.register(portcullisCore, { trustedProxies: ['10.0.0.0/8'], forwardedHeader: 'bad header' })
  await t.rejects(async () => app.ready(), { message: /core\.forwardedHeader must be an HTTP header name/ })
})
