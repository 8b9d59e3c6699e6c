import Fastify from 'fastify'
import { Writable } from 'node:stream'
import { portcullis } from '@portcullis/gateway'
import { SnapshotHolder } from '@portcullis/core'
const sink = new Writable({ decodeStrings: process.env.DS !== '0', write (c, e, cb) { cb() } })
const app = Fastify({ logger: false })
const snapshot = new SnapshotHolder({ version: 'v1', value: {} })
await app.register(portcullis, { core: { trustedProxies: ['127.0.0.1/32'], snapshot }, audit: { sinks: [{ type: process.argv[2] ?? 'stream', stream: sink, path: '/tmp/m.log' }].map(s => s.type === 'file' ? { type: 'file', path: s.path } : { type: 'stream', stream: sink }) } })
app.get('/orders/:id', async (request) => ({ id: request.params.id }))
await app.ready()
for (let i = 0; i < 30000; i++) await app.inject({ url: '/orders/42', headers: { 'x-forwarded-for': '198.51.100.7' } })
console.log(JSON.stringify(app.audit.stats()), sink.writableLength)
await app.close()
global.gc?.(); console.log('heapUsed MB', (process.memoryUsage().heapUsed/1e6).toFixed(1))

