import { test } from 'tap'
import { SnapshotHolder } from '@portcullis/core'
import { diffSummary } from '../src/index.js'
import { audited } from './helpers.js'

test('every policy activation, refusal and rollback is a record with both versions and what changed', async (t) => {
  const { app, records } = await audited(t)
  app.audit.policyChange({ action: 'activate', version: 'v2', previousVersion: 'v1', mode: 'shadow', diff: diffSummary({ limit: 1 }, { limit: 2 }), source: 'file' })
  app.audit.policyChange({ action: 'reject', version: 'v3', previousVersion: 'v2', reason: 'PORTCULLIS_POLICY_INVALID', actor: 'ops@example.com', source: 'admin-api' })
  app.audit.policyChange({ action: 'rollback', version: 'v1', previousVersion: 'v2' })
  const [activate, reject, rollback] = await records()
  t.match(activate, {
    event: { action: 'policy-activate', category: ['configuration'], type: ['change'], outcome: 'success', kind: 'event', dataset: 'portcullis.audit' },
    portcullis: { policy: { version: 'v2', previous_version: 'v1', mode: 'shadow', source: 'file', diff: { added: [], changed: ['/limit'], removed: [], truncated: false } } }
  })
  t.match(reject, { event: { action: 'policy-reject', outcome: 'failure', reason: 'PORTCULLIS_POLICY_INVALID' }, user: { id: 'ops@example.com' }, portcullis: { policy: { version: 'v3', previous_version: 'v2', source: 'admin-api' } } })
  t.match(rollback, { event: { action: 'policy-rollback', outcome: 'success' }, portcullis: { policy: { version: 'v1', previous_version: 'v2' } } })
  t.notOk('diff' in rollback.portcullis.policy)
  t.notOk('user' in rollback)
})

test('a swap of the core\'s snapshot is recorded as an activation with the difference, unless turned off', async (t) => {
  const snapshot = new SnapshotHolder<unknown>({ version: 'v1', value: { routes: { orders: { limit: 10 }, old: true } } })
  const { app, records } = await audited(t, {}, { snapshot })
  snapshot.swap({ version: 'v2', value: { routes: { orders: { limit: 20 }, fresh: true } } })
  const [swap] = await records()
  t.match(swap, { event: { action: 'policy-activate' }, portcullis: { policy: { version: 'v2', previous_version: 'v1', diff: { added: ['/routes/fresh'], changed: ['/routes/orders/limit'], removed: ['/routes/old'] } } } })
  await app.close()
  snapshot.swap({ version: 'v3', value: {} })
  t.pass('a closed audit log stops listening')

  const quiet = new SnapshotHolder({ version: 'v1', value: {} })
  const off = await audited(t, { policySwaps: false }, { snapshot: quiet })
  quiet.swap({ version: 'v2', value: {} })
  await off.app.inject('/public')
  t.same((await off.records()).map((r) => r.event.action), ['http-request'])
})

test('diffSummary: pointers of what was added, removed and changed, escaped, bounded', async (t) => {
  t.same(diffSummary({ a: 1, 'x/y': { '~': 1 } }, { a: 1, 'x/y': { '~': 2 } }), { added: [], changed: ['/x~1y/~0'], removed: [], truncated: false })
  t.same(diffSummary({ list: [1, { a: 1 }] }, { list: [1, { a: 1 }] }), { added: [], changed: [], removed: [], truncated: false }, 'equal arrays')
  t.same(diffSummary({ list: [1, 2] }, { list: [1, 3] }).changed, ['/list'], 'arrays that differ are one change')
  t.same(diffSummary({ list: [1] }, { list: [1, 2] }).changed, ['/list'])
  t.same(diffSummary(1, 2).changed, ['/'], 'the whole document')
  t.same(diffSummary({ a: null }, { a: {} }).changed, ['/a'])
  const fn = (): void => {}
  t.same(diffSummary({ compiled: fn }, { compiled: fn }).changed, [], 'the same compiled value')
  t.same(diffSummary({ compiled: new Map() }, { compiled: new Map() }).changed, ['/compiled'], 'other objects compare by identity')
  const deep = (n: number, leaf: unknown): unknown => n === 0 ? leaf : { d: deep(n - 1, leaf) }
  t.same(diffSummary(deep(12, 1), deep(12, 2)).changed, ['/d/d/d/d/d/d/d/d'], 'no deeper than 8')
  t.same(diffSummary(deep(12, { a: 1 }), deep(12, { a: 1 })).changed, [], 'equal below the depth limit')
  t.same(diffSummary(deep(9, { a: 1 }), deep(9, { a: 1, b: 2 })).changed, ['/d/d/d/d/d/d/d/d'])
  t.same(diffSummary(deep(9, { a: 1 }), deep(9, { b: 1 })).changed, ['/d/d/d/d/d/d/d/d'])
  const many = Object.fromEntries(Array.from({ length: 60 }, (_, i) => [`k${i}`, i]))
  const summary = diffSummary({}, many)
  t.equal(summary.added.length, 50)
  t.equal(summary.truncated, true)
  t.same(diffSummary(Object.create(null), { a: 1 }).added, ['/a'], 'objects without a prototype are plain')
})
