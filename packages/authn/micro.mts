import { generateKeyPairSync, createHash } from 'node:crypto'
import { createSigner, createVerifier } from 'fast-jwt'
import { compileJwt } from './src/jwt.ts'
const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
const pub = publicKey.export({ type: 'spki', format: 'pem' })
const token = createSigner({ key: privateKey.export({ type: 'pkcs8', format: 'pem' }), algorithm: 'ES256', kid: 'k1', expiresIn: 3600000 })({ iss: 'i', aud: 'a', sub: 'alice', scope: 'orders:read' })
const v = compileJwt({ type: 'jwt', issuer: 'i', audience: 'a', keys: [{ kid: 'k1', algorithms: ['ES256'], key: pub }] }, 'x')
const raw = createVerifier({ key: async () => pub, algorithms: ['ES256'], cache: 1000 })
async function time (label, fn, n = 200000) {
  for (let i = 0; i < 20000; i++) await fn()
  const t = process.hrtime.bigint()
  for (let i = 0; i < n; i++) await fn()
  console.log(label, (Number(process.hrtime.bigint() - t) / n / 1000).toFixed(2), 'µs')
}
await time('compileJwt.verify (cached)', () => v.verify(token))
await time('fast-jwt raw cached', () => raw(token))
await time('sha256 token', () => createHash('sha256').update(token).digest('hex'))
await time('await noop', async () => {})
