import Fastify from 'fastify'
import { portcullis } from '@portcullis/gateway'
import { SnapshotHolder } from '@portcullis/core'
const app = Fastify({ logger: false })
await app.register(portcullis, { core: { trustedProxies: ['127.0.0.1/32'], snapshot: new SnapshotHolder({ version: 'v1', value: {} }) } })
if (process.env.HOOK === 'abort') app.addHook('onRequestAbort', (req, done) => done())
if (process.env.HOOK === 'response') app.addHook('onResponse', (req, reply, done) => done())
app.get('/orders/:id', async (request) => ({ id: request.params.id }))
await app.ready()
for (let i = 0; i < 30000; i++) await app.inject({ url: '/orders/42', headers: { 'x-forwarded-for': '198.51.100.7' } })
await app.close()
global.gc(); console.log(process.env.HOOK, 'heapUsed MB', (process.memoryUsage().heapUsed/1e6).toFixed(1))
