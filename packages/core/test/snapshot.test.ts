import { test } from 'tap'
import Fastify from 'fastify'
import { setTimeout as sleep } from 'node:timers/promises'
import { portcullisCore, SnapshotHolder, type PolicySnapshot } from '../src/index.js'

interface Limits { limit: number }

test('every request reads the snapshot it pinned, even when a swap happens mid-request', async (t) => {
  const holder = new SnapshotHolder<Limits>({ version: 'v1', value: { limit: 1 } })
  const app = Fastify()
  await app.register(portcullisCore, { snapshot: holder })
  app.get('/work', async (request) => {
    const pinned = request.policySnapshot as PolicySnapshot<Limits>
    await sleep(Number(request.headers['x-delay']))
    // Read again after the wait: a request must not see half of an update.
    const after = request.policySnapshot as PolicySnapshot<Limits>
    return { atStart: pinned.version, atEnd: after.version, limit: after.value.limit }
  })
  await app.ready()

  const before = Array.from({ length: 50 }, () => app.inject({ url: '/work', headers: { 'x-delay': '40' } }))
  await sleep(10)
  const previous = holder.swap({ version: 'v2', value: { limit: 2 } })
  t.equal(previous.version, 'v1')
  const after = Array.from({ length: 50 }, () => app.inject({ url: '/work', headers: { 'x-delay': '1' } }))

  for (const res of await Promise.all(before)) t.same(res.json(), { atStart: 'v1', atEnd: 'v1', limit: 1 })
  for (const res of await Promise.all(after)) t.same(res.json(), { atStart: 'v2', atEnd: 'v2', limit: 2 })
})

test('swap notifies listeners until they unsubscribe, and freezes snapshots', async (t) => {
  const holder = new SnapshotHolder({ version: 'a', value: 1 })
  const seen: string[] = []
  const stop = holder.onSwap((next, prev) => { seen.push(`${prev.version}->${next.version}`) })
  holder.swap({ version: 'b', value: 2 })
  stop()
  holder.swap({ version: 'c', value: 3 })
  t.same(seen, ['a->b'])
  t.ok(Object.isFrozen(holder.current))
  const frozen = Object.freeze({ version: 'd', value: 4 })
  holder.swap(frozen)
  t.equal(holder.current, frozen, 'an already frozen snapshot is kept as is')
  t.throws(() => holder.swap({ version: '', value: 5 }), TypeError)
  t.throws(() => new SnapshotHolder(null as never), /non-empty string version/)
  t.equal(holder.current.version, 'd', 'a refused snapshot leaves the active one serving')
})

test('core refuses a snapshot option that is not a holder', async (t) => {
  for (const snapshot of [{ version: 'v1', value: {} }, 'v1', { current: null }, { current: { version: 1 } }]) {
    const app = Fastify()
    app.register(portcullisCore, { snapshot: snapshot as never })
    await t.rejects(async () => app.ready(), { code: 'PORTCULLIS_CORE_INVALID_OPTION', message: /core\.snapshot must be a SnapshotHolder/ })
  }
})
