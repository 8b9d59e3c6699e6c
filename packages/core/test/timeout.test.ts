import { test } from 'tap'
import { within } from '../src/index.js'

test('within passes on what settles in time, and rejects what does not', async (t) => {
  t.equal(await within(Promise.resolve('answer'), 50), 'answer')
  await t.rejects(within(Promise.reject(new Error('refused')), 50), { message: 'refused' }, 'a rejection is passed on as is')
  const started = Date.now()
  await t.rejects(within(new Promise(() => {}), 30), { message: 'no answer within 30 ms' })
  t.ok(Date.now() - started >= 25, 'it waited for the time given')
})
