import Fastify from 'fastify'
import { portcullisCore, setPrincipal, createPrincipal } from '@portcullis/core'
import { portcullisAuthz } from '@portcullis/authz'
const principal = createPrincipal({ id: 'alice', type: 'user', method: 'bench', roles: ['user'], scopes: ['orders:read'] })
async function build (withAuthz, cel) {
  const app = Fastify()
  await app.register(portcullisCore)
  app.addHook('onRequest', (req, reply, done) => { setPrincipal(req, principal); done() })
  if (withAuthz) await app.register(portcullisAuthz, { roles: { user: {}, admin: { inherits: ['user'] } } })
  const rule = { anyRole: ['user'], allScopes: ['orders:read'], ...(cel ? { when: cel } : {}) }
  app.get('/orders/:id', { config: { authz: rule } }, async (request) => ({ id: request.params.id }))
  await app.ready()
  return app
}
const apps = { base: await build(false), authz: await build(true), ...(process.env.CEL ? { cel: await build(true, process.env.CEL) } : {}) }
const N = 20000
const results = {}
for (let round = 0; round < 7; round++) {
  for (const [name, app] of Object.entries(apps)) {
    const before = process.cpuUsage()
    for (let i = 0; i < N; i++) { const res = await app.inject({ method: 'GET', url: '/orders/42' }); if (res.statusCode !== 200) throw new Error(name + ' ' + res.statusCode + res.body) }
    const cpu = process.cpuUsage(before)
    ;(results[name] ??= []).push((cpu.user + cpu.system) / N)
  }
}
const med = (a) => a.slice().sort((x, y) => x - y)[Math.floor(a.length / 2)]
for (const [name, r] of Object.entries(results)) console.log(name, med(r).toFixed(2), 'µs/req', name === 'base' ? '' : `+${(med(r) - med(results.base)).toFixed(2)}`)
