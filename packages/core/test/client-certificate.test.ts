import { test } from 'tap'
import Fastify from 'fastify'
import { portcullisCore, setClientCertificate, type ClientCertificate } from '../src/index.js'

const CERTIFICATE: ClientCertificate = {
  thumbprint: 'x4E3mq0QfH3W2qPRnJvGZ7Lq3s8eQeBkYk1mS6yZbXc',
  commonName: 'orders',
  dnsNames: ['orders.internal'],
  uris: ['spiffe://example.org/ns/shop/sa/orders'],
  serialNumber: '1A2B',
  issuer: 'CN=Example CA',
  notBefore: 0,
  notAfter: 1,
  source: 'tls'
}

test('request.clientCertificate starts null, is set by setClientCertificate, frozen, and cannot be assigned', async (t) => {
  const app = Fastify()
  await app.register(portcullisCore)
  app.addHook('onRequest', async (request) => {
    if (request.headers['x-test-certificate'] === 'plain') setClientCertificate(request, CERTIFICATE)
    if (request.headers['x-test-certificate'] === 'frozen') setClientCertificate(request, Object.freeze({ ...CERTIFICATE, commonName: null }))
  })
  app.get('/', async (request) => {
    let assignment = 'allowed'
    try {
      (request as { clientCertificate: unknown }).clientCertificate = CERTIFICATE
    } catch (err) {
      assignment = (err as Error).name
    }
    return { certificate: request.clientCertificate, frozen: Object.isFrozen(request.clientCertificate), assignment }
  })
  t.same((await app.inject('/')).json(), { certificate: null, frozen: true, assignment: 'TypeError' })
  t.same((await app.inject({ url: '/', headers: { 'x-test-certificate': 'plain' } })).json(), { certificate: CERTIFICATE, frozen: true, assignment: 'TypeError' })
  t.match((await app.inject({ url: '/', headers: { 'x-test-certificate': 'frozen' } })).json(), { certificate: { commonName: null, serialNumber: '1A2B' }, frozen: true })
})
