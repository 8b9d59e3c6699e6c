import { test } from 'tap'
import v8 from 'node:v8'
import vm from 'node:vm'
import { compileLimit, MemoryStore } from '../src/index.js'

v8.setFlagsFromString('--expose-gc')
const gc = vm.runInNewContext('gc') as () => void

// The bound documented in the README: 100,000 keys (the default maxKeys) in at most 36 MiB.
const BOUND = 36 * 1024 * 1024

test('one million distinct keys through the memory store stay under the documented bound', async (t) => {
  const gcra = compileLimit({ name: 'burst', limit: 60, window: '1m' }, 'limit')
  const window = compileLimit({ name: 'minute', algorithm: 'sliding-window', limit: 300, window: '1m' }, 'limit')
  gc()
  const before = process.memoryUsage().heapUsed
  const store = new MemoryStore()
  for (let i = 0; i < 1_000_000; i++) {
    // Keys shaped like the real ones: a limit name and an IPv6 /64 or a principal id.
    store.consume([{ key: `ip:2001:db8:${(i >>> 16).toString(16)}:${(i & 0xffff).toString(16)}::/64`, limit: i % 2 === 0 ? gcra : window }])
  }
  gc()
  const grown = process.memoryUsage().heapUsed - before
  t.equal(store.size, 100_000, 'the store holds maxKeys keys, no more')
  t.ok(grown < BOUND, `heap grew by ${(grown / 1024 / 1024).toFixed(1)} MiB for 100,000 keys (bound ${BOUND / 1024 / 1024} MiB)`)
  t.ok(store.consume([{ key: 'ip:2001:db8:f:423f::/64', limit: window }]).states[0]!.remaining < 299, 'the most recent keys are still counted')
})
