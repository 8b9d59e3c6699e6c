import Fastify from 'fastify'
import { Writable } from 'node:stream'
import { portcullis } from '@portcullis/gateway'
import { SnapshotHolder } from '@portcullis/core'
async function build (audit) {
  const app = Fastify({ logger: false })
  const snapshot = new SnapshotHolder({ version: 'v1', value: {} })
  await app.register(portcullis, { core: { trustedProxies: ['127.0.0.1/32'], snapshot }, ...(audit ? { audit } : {}) })
  app.get('/orders/:id', async (request) => ({ id: request.params.id }))
  await app.ready()
  return app
}
const sink = new Writable({ write (c, e, cb) { cb() } })
const variants = {
  none: undefined,
  nullstream: { sinks: [{ type: 'stream', stream: sink }] },
  file: { sinks: [{ type: 'file', path: '/tmp/micro-audit.log' }] },
  chain: { sinks: [{ type: 'stream', stream: sink }], chain: true }
}
for (const round of [1, 2]) for (const [name, audit] of Object.entries(variants)) {
  const app = await build(audit)
  const N = 20000
  for (let i = 0; i < 2000; i++) await app.inject({ url: '/orders/42', headers: { 'x-forwarded-for': '198.51.100.7' } })
  const t0 = process.cpuUsage()
  for (let i = 0; i < N; i++) await app.inject({ url: '/orders/42', headers: { 'x-forwarded-for': '198.51.100.7' } })
  const t = process.cpuUsage(t0)
  if (round === 2) console.log(name, ((t.user + t.system) / N).toFixed(2), 'µs/req')
  await app.close()
}
