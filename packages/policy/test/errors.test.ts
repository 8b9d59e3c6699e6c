import { test } from 'tap'
import { PolicyRejected, formatProblem, isPolicyRejected } from '../src/index.js'
import { rejection } from '../src/errors.js'

test('formatProblem() writes name:line:column: /pointer: message [rule]', async (t) => {
  t.equal(formatProblem('gw.yaml', { stage: 'schema', pointer: '/authz/realm', line: 3, column: 10, rule: 'type', message: 'must be string' }), 'gw.yaml:3:10: /authz/realm: must be string [type]')
  t.equal(formatProblem('gw.yaml', { stage: 'schema', pointer: '/authz', line: 3, message: 'x' }), 'gw.yaml:3:1: /authz: x', 'a line without a column: column 1')
  t.equal(formatProblem('gw.yaml', { stage: 'signature', pointer: '', message: 'the signature does not verify' }), 'gw.yaml: the signature does not verify', 'no position, no pointer, no rule')
})

test('rejection() names the first problem and counts the rest', async (t) => {
  const one = rejection('p.yaml', 'lint', [{ stage: 'lint', pointer: '/a', message: 'first' }])
  t.equal(one.message, 'p.yaml: /a: first')
  t.equal(one.stage, 'lint')
  t.equal(one.code, 'PORTCULLIS_POLICY_REJECTED')
  t.equal(one.statusCode, 422)
  t.ok(one instanceof PolicyRejected)
  const three = rejection('p.yaml', 'schema', [
    { stage: 'schema', pointer: '/a', message: 'first' },
    { stage: 'schema', pointer: '/b', message: 'second' },
    { stage: 'schema', pointer: '/c', message: 'third' }
  ])
  t.equal(three.message, 'p.yaml: /a: first (and 2 more)')
  t.equal(three.problems.length, 3)
})

test('isPolicyRejected() tells a refusal from other errors', async (t) => {
  t.ok(isPolicyRejected(rejection('p', 'parse', [{ stage: 'parse', pointer: '', message: 'x' }])))
  t.ok(isPolicyRejected({ code: 'PORTCULLIS_POLICY_REJECTED', problems: [] }), 'from another build of the package')
  t.notOk(isPolicyRejected(new PolicyRejected('no problems attached')))
  t.notOk(isPolicyRejected(new Error('x')))
  t.notOk(isPolicyRejected(null))
  t.notOk(isPolicyRejected(undefined))
  t.notOk(isPolicyRejected({ code: 'PORTCULLIS_CORE_INVALID_OPTION', problems: [] }))
})
