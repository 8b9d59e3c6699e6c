import { test } from 'tap'
import { canonicalIp, compileIpMatcher, parseIp, parseIPv4 } from '../src/index.js'

function ip (text: string) {
  const address = parseIp(text)
  if (address === null) throw new Error(`test address ${text} does not parse`)
  return address
}

test('parseIp accepts only unambiguous notations', async (t) => {
  for (const good of ['0.0.0.0', '255.255.255.255', '192.0.2.1', '::', '::1', '2001:db8::1', '::ffff:192.0.2.1', 'fe80::1%eth0']) {
    t.not(parseIp(good), null, good)
  }
  for (const bad of ['256.0.0.1', '1.2.3', '127.1', '0x7f.0.0.1', '0177.0.0.1', '01.2.3.4', '1.2.3.4.5', ' 1.2.3.4', '::ffff:1.2.3', '2001:db8::g', 'localhost', '']) {
    t.equal(parseIp(bad), null, bad)
  }
})

test('canonicalIp gives one text per address', async (t) => {
  t.equal(canonicalIp('::FFFF:192.0.2.1'), '192.0.2.1')
  t.equal(canonicalIp('2001:0db8:0000:0000:0000:0000:0000:0001'), '2001:db8::1')
  t.equal(canonicalIp('2001:db8:0:0:1:0:0:1'), '2001:db8::1:0:0:1')
  t.equal(canonicalIp('nope'), null)
})

test('compileIpMatcher matches ranges, single addresses and aliases across families', async (t) => {
  const match = compileIpMatcher(['10.0.0.0/8', '2001:db8::/32', '192.0.2.7', 'linklocal', '198.51.100.0/24'], 'list')
  const is = (text: string) => match(ip(text))
  t.ok(is('10.255.0.1'))
  t.ok(is('::ffff:10.0.0.1'), 'IPv4-mapped address matches the IPv4 range')
  t.ok(is('2001:db8:ffff::1'))
  t.ok(is('192.0.2.7'))
  t.notOk(is('192.0.2.8'))
  t.ok(is('169.254.1.1'))
  t.ok(is('fe80::1'))
  t.ok(is('198.51.100.200'))
  t.notOk(is('11.0.0.1'))
  t.notOk(is('2001:db9::1'))
  const none = compileIpMatcher([], 'empty')
  t.notOk(none(ip('10.0.0.1')))
})

test('parseIPv4 reads strict dotted quads as unsigned integers', async (t) => {
  t.equal(parseIPv4('0.0.0.0'), 0)
  t.equal(parseIPv4('255.255.255.255'), 0xffffffff)
  t.equal(parseIPv4('10.1.2.3'), 0x0a010203)
  for (const bad of ['1.2.3.4.', '10.20.30.', '.1.2.3.4', '1..2.3', '1.2.3.4.5', '1.2.3.256', '1.2.3.04', '1.2.3.-4', '1.2.3.4 ', '1234567', '1.2.3.4444444444']) {
    t.equal(parseIPv4(bad), -1, bad)
  }
})

test('compileIpMatcher takes text as well as parsed addresses', async (t) => {
  const match = compileIpMatcher(['10.0.0.0/8', '2001:db8::/32'], 'list')
  t.ok(match('10.9.8.7'))
  t.ok(match('::ffff:10.9.8.7'))
  t.ok(match('2001:db8::5'))
  t.notOk(match('11.0.0.1'))
  t.notOk(match('garbage'))
  t.notOk(match('010.0.0.1'), 'ambiguous notation never matches')
  const all = compileIpMatcher(['0.0.0.0/0'], 'all')
  t.ok(all('255.255.255.255') && all('0.0.0.0'), 'a /0 range matches everything')
})
