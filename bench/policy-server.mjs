// A child of bench/policy.mjs: either the upstream, or the gateway under test. It reports its
// address over IPC, then takes commands: `{ apply }` applies a document and answers how long it
// took; `{ every, documents }` applies the documents in turn every `every` ms (0 stops it and
// answers how many were applied).
import { performance } from 'node:perf_hooks'
import Fastify from 'fastify'
import { startPolicyGateway } from '@portcullis/gateway'

const [role, file] = process.argv.slice(2)

if (role === 'upstream') {
  const app = Fastify({ keepAliveTimeout: 60_000 })
  app.all('/*', async () => ({ ok: true }))
  process.send({ url: await app.listen({ host: '127.0.0.1', port: 0 }) })
} else {
  const gateway = await startPolicyGateway({ file, host: '127.0.0.1', port: 0, watch: false })
  const url = await gateway.listen()
  let timer = null
  let updates = 0
  process.on('message', async (message) => {
    if (message.apply !== undefined) {
      const started = performance.now()
      await gateway.policy.apply(message.apply, { source: 'bench' })
      process.send({ ms: performance.now() - started })
    } else if (message.every > 0) {
      updates = 0
      timer = setInterval(() => {
        gateway.policy.apply(message.documents[updates % message.documents.length], { source: 'bench' }).then(() => { updates++ }, (err) => { console.error(err) })
      }, message.every)
      process.send({ started: true })
    } else {
      clearInterval(timer)
      process.send({ updates })
    }
  })
  process.send({ url })
}
