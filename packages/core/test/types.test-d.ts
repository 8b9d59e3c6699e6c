// Type tests, checked by `pnpm typecheck`: each @ts-expect-error must be an error, or the check fails.
import Fastify from 'fastify'
import {
  createError, createPrincipal, deny, portcullisCore, SnapshotHolder,
  type CoreOptions, type Decision, type Mode, type PolicySnapshot, type Principal
} from '../src/index.js'

const app = Fastify()
app.register(portcullisCore, { trustedProxies: ['10.0.0.0/8'], snapshot: new SnapshotHolder({ version: 'v1', value: { limit: 1 } }) })
// @ts-expect-error unknown options are type errors too
app.register(portcullisCore, { trustedProxy: [] })
// @ts-expect-error trustedProxies is a list
const badProxies: CoreOptions = { trustedProxies: '10.0.0.0/8' }

app.get('/', async (request) => {
  const principal: Principal | null = request.principal
  // @ts-expect-error request.principal is read-only
  request.principal = null
  const thumbprint: string | undefined = request.clientCertificate?.thumbprint
  // @ts-expect-error request.clientCertificate is read-only
  request.clientCertificate = null
  const ip: string = request.clientIp
  const snapshot: PolicySnapshot | null = request.policySnapshot
  const decisions: Decision[] | null = request.decisions
  const upstreamStatus: number | null | undefined = request.upstream?.statusCode
  return { principal, thumbprint, ip, snapshot, decisions, upstreamStatus }
})

const Denied = createError('PORTCULLIS_TYPES_DENIED', 'Denied', 403, 'Forbidden')
const code: 'PORTCULLIS_TYPES_DENIED' = new Denied().code
const status: 403 = new Denied().statusCode
// @ts-expect-error codes follow PORTCULLIS_<PKG>_<REASON>
createError('AUTH_DENIED', 'Denied', 403, 'Forbidden')

const mode: Mode = 'report'
// @ts-expect-error only enforce and report exist
const badMode: Mode = 'audit'
app.addHook('onRequest', async (request) => { deny(request, mode, '@portcullis/types', new Denied()) })

// @ts-expect-error a principal needs a type from the contract
createPrincipal({ id: 'x', type: 'robot', method: 'test' })

export { badProxies, code, status, badMode }
