import { test } from 'tap'
import { catalogEntry, checkKnownKeys, checkNumber, checkRealm, createError, errorCatalog, invalidOption, isHeaderName, pointerToken, withHeaders } from '../src/index.js'

test('createError makes classes with a stable code and status, listed in the catalog', async (t) => {
  const Limited = createError('PORTCULLIS_TEST_LIMITED', 'Too many requests for %s', 429, 'Too Many Requests')
  const err = new Limited('alice')
  t.equal(err.code, 'PORTCULLIS_TEST_LIMITED')
  t.equal(err.statusCode, 429)
  t.equal(err.message, 'Too many requests for alice')
  t.ok(err instanceof Error)
  t.same(catalogEntry('PORTCULLIS_TEST_LIMITED'), { code: 'PORTCULLIS_TEST_LIMITED', statusCode: 429, title: 'Too Many Requests', message: 'Too many requests for %s' })
  t.equal(catalogEntry(42), undefined)
  t.ok(errorCatalog().some((e) => e.code === 'PORTCULLIS_CORE_NOT_FOUND'))
  t.equal(withHeaders(err, { 'retry-after': '1' }).headers['retry-after'], '1')
  t.doesNotThrow(() => createError('PORTCULLIS_TEST_LIMITED', 'Too many requests for %s', 429, 'Too Many Requests'), 'the same definition twice is fine (a module loaded twice)')
})

test('createError refuses codes and statuses outside the contract', async (t) => {
  t.throws(() => createError('PORTCULLIS_lower_case' as never, 'm', 400, 't'), /must match/)
  t.throws(() => createError('PORTCULLIS_NOREASON' as never, 'm', 400, 't'), /must match/)
  t.throws(() => createError('PORTCULLIS_TEST_OK', 'm', 200, 't'), /statusCode must be an integer from 400 to 599, got 200/)
  t.throws(() => createError('PORTCULLIS_TEST_LIMITED', 'other', 429, 'x'), /already defined/)
  t.throws(() => createError('PORTCULLIS_TEST_LIMITED', 'Too many requests for %s', 503, 'x'), /already defined/)
})

test('option helpers name the option and what is allowed', async (t) => {
  t.throws(() => checkKnownKeys({ trustedProxy: [] }, ['trustedProxies'], 'core'), { message: 'core.trustedProxy is not a known option; allowed: trustedProxies' })
  for (const value of [null, [], 'x']) t.throws(() => checkKnownKeys(value, [], 'core'), { message: /^core must be an object/ })
  t.equal(invalidOption('a.b', 'a number', 'x'.repeat(50)).message, `a.b must be a number (got "${'x'.repeat(40)}…")`)
  t.equal(invalidOption('a.b', 'a number', { secret: 1 }).message, 'a.b must be a number (got an object)', 'objects are never printed')
  t.equal(invalidOption('a.b', 'a number', null).message, 'a.b must be a number (got null)')
  t.equal(invalidOption('a.b', 'a number', true).message, 'a.b must be a number (got true)')
  t.equal(invalidOption('a.b', 'set').message, 'a.b must be set')
})

test('shared checks: header names, realms, numbers', async (t) => {
  t.ok(isHeaderName('X-Request-Id'))
  for (const bad of ['x request', '', 'x:y', 42]) t.notOk(isHeaderName(bad), String(bad))
  t.equal(checkRealm('orders api', 'x.realm'), 'orders api')
  for (const bad of ['', 'a"b', 'a\\b', 'a\nb', 7]) t.throws(() => checkRealm(bad, 'x.realm'), { message: /^x\.realm must be a non-empty string without quotes, backslashes or control characters/ })
  const positive = (n: number) => n > 0
  t.equal(checkNumber(undefined, 5, 'x.n', 'a positive number', positive), 5)
  t.equal(checkNumber(2, 5, 'x.n', 'a positive number', positive), 2)
  for (const bad of [0, Number.NaN, Number.POSITIVE_INFINITY, '3']) t.throws(() => checkNumber(bad, 5, 'x.n', 'a positive number', positive), { message: /^x\.n must be a positive number/ })
})

test('a property name as a JSON Pointer token names exactly one field', async (t) => {
  t.equal(pointerToken('qty'), 'qty')
  t.equal(pointerToken('a/b~c'), 'a~1b~0c', 'a slash is not a separator, a tilde not an escape')
  t.equal(pointerToken('~1'), '~01', 'tildes first, so an escaped-looking name stays itself')
})
