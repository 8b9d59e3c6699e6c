import { test } from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import { portcullisCore } from '@portcullis/core'
import { LiveGeneration } from '../src/generation.js'
import { Trial } from '../src/trial.js'

// An app whose every response goes through the trial, as the active version's last hook.
async function activeApp (trial: Trial): Promise<FastifyInstance> {
  const app = Fastify()
  await app.register(portcullisCore)
  app.addHook('onResponse', trial.onActiveResponse)
  app.get('/', async () => 'ok')
  return app
}

async function shadowOf (version: string): Promise<LiveGeneration> {
  const app = Fastify()
  app.get('/', async () => 'ok')
  await app.ready()
  return new LiveGeneration(version, 'shadow', app, () => {})
}

test('beyond the bound of evaluations under way, requests are skipped, not queued', async (t) => {
  const trial = new Trial(Fastify().log, null, () => {}, 0)
  const shadow = await shadowOf('v2')
  t.teardown(() => shadow.close())
  trial.start(shadow, 'shadow', null)
  const app = await activeApp(trial)
  t.teardown(() => app.close())
  await app.inject('/')
  await app.inject('/')
  t.match(trial.stats().shadow, { skipped: 2, evaluated: 0, pending: 0 })
})

test('an evaluation the shadow cannot make is counted as failed, and serves on', async (t) => {
  const warnings: string[] = []
  const log = Object.assign(Object.create(Fastify().log), { warn: (_object: unknown, message: string) => { warnings.push(message) } })
  const trial = new Trial(log, null, () => {})
  const shadow = await shadowOf('v2')
  await shadow.close()
  trial.start(shadow, 'shadow', null)
  const app = await activeApp(trial)
  t.teardown(() => app.close())
  t.equal((await app.inject('/')).statusCode, 200, 'the active version answers regardless')
  const until = Date.now() + 2000
  while (trial.stats().shadow.failed === 0 && Date.now() < until) await new Promise((resolve) => setTimeout(resolve, 5))
  t.match(trial.stats().shadow, { failed: 1, evaluated: 0, pending: 0 })
  t.same(warnings, ['shadow evaluation failed'])
})

test('a canary within its thresholds is judged and kept', async (t) => {
  const rollbacks: string[] = []
  const trial = new Trial(Fastify().log, { minRequests: 1, denyRateIncrease: 0.5 }, (reason) => { rollbacks.push(reason) })
  const canary = await shadowOf('v2')
  t.teardown(() => canary.close())
  trial.start(canary, 'canary', 0.5)
  const app = Fastify()
  await app.register(portcullisCore)
  app.addHook('onResponse', trial.onCandidateResponse)
  app.get('/', async () => 'ok')
  t.teardown(() => app.close())
  await app.inject('/')
  await app.inject('/')
  t.match(trial.stats(), { mode: 'canary', candidate: { requests: 2, denied: 0 }, rolledBack: false })
  t.same(rollbacks, [])
})
