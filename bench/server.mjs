// One benchmark server, run as a child of run.mjs so that the load generator never shares its
// event loop. Usage: node bench/server.mjs <scenario>. Reports { port } to the parent over IPC.
import Fastify from 'fastify'
import { portcullis } from '@portcullis/gateway'
import { SnapshotHolder } from '@portcullis/core'

// Each scenario registers its plugins on the app; the route is added after, identically for all.
const SCENARIOS = {
  baseline: async () => {},
  core: async (app) => {
    const snapshot = new SnapshotHolder({ version: 'v1', value: {} })
    await app.register(portcullis, { core: { trustedProxies: ['127.0.0.1/32'], snapshot } })
  }
}

async function buildApp (scenario) {
  const app = Fastify({ logger: false })
  await SCENARIOS[scenario](app)
  app.get('/orders/:id', async (request) => {
    return { id: request.params.id, item: 'lamp', quantity: 1 }
  })
  await app.ready()
  if (scenario === 'core') assertCoreSetup(app)
  return app
}

// Guards against measuring a misconfigured plugin: the forwarded header the load sends must
// actually be honored, otherwise client-IP resolution would take its cheap early exit.
function assertCoreSetup (app) {
  const { resolveClientIp, snapshot } = app.portcullisCore
  const ip = resolveClientIp('127.0.0.1', { 'x-forwarded-for': '198.51.100.7' })
  if (ip !== '198.51.100.7') throw new Error(`core resolves the client IP to ${ip}, expected 198.51.100.7`)
  if (snapshot?.current.version !== 'v1') throw new Error('core has no policy snapshot installed')
}

async function main () {
  const scenario = process.argv[2]
  if (!Object.hasOwn(SCENARIOS, scenario)) {
    throw new Error(`unknown scenario "${scenario}"; known: ${Object.keys(SCENARIOS).join(', ')}`)
  }
  if (typeof process.send !== 'function') throw new Error('server.mjs must be started by run.mjs (needs an IPC channel)')
  const app = await buildApp(scenario)
  await app.listen({ host: '127.0.0.1', port: 0 })
  // Never outlive the parent, even if it dies without killing us.
  process.on('disconnect', () => process.exit(0))
  process.send({ port: app.server.address().port })
}

main().catch((err) => {
  console.error(`bench server: ${err.stack ?? err}`)
  process.exit(1)
})
