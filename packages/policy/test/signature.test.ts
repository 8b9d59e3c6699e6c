import { test } from 'tap'
import { createSecretKey, generateKeyPairSync, type KeyObject } from 'node:crypto'
import { policyPublicKey, signPolicy, verifyPolicySignature } from '../src/index.js'

const pem = (key: KeyObject): string => key.export({ type: key.type === 'private' ? 'pkcs8' : 'spki', format: 'pem' }).toString()
const pairs = {
  Ed25519: generateKeyPairSync('ed25519'),
  'EC P-256': generateKeyPairSync('ec', { namedCurve: 'P-256' }),
  'RSA 2048': generateKeyPairSync('rsa', { modulusLength: 2048 })
}
const text = 'version: 1\n# reviewed by security\nupstreams:\n  - prefix: /api\n    url: http://orders:8080\n    public: true\n'

test('a signed document verifies under its public key, and no other', async (t) => {
  for (const [kind, { publicKey, privateKey }] of Object.entries(pairs)) {
    const signature = signPolicy(text, privateKey)
    t.match(signature, /^[A-Za-z0-9+/]+=*$/, `${kind}: base64`)
    t.ok(verifyPolicySignature(text, signature, publicKey), `${kind}: verifies`)
    t.ok(verifyPolicySignature(Buffer.from(text), signature, publicKey), `${kind}: the same bytes as a Buffer`)
    t.ok(verifyPolicySignature(text, `${signature}\n`, publicKey), `${kind}: with the line break a .sig file ends with`)
    t.ok(verifyPolicySignature(text, signPolicy(Buffer.from(text), pem(privateKey)), policyPublicKey(pem(publicKey))), `${kind}: keys as PEM`)
    t.ok(verifyPolicySignature(text, signPolicy(text, Buffer.from(pem(privateKey))), publicKey), `${kind}: a private key as a PEM Buffer`)
    const other = Object.entries(pairs).find(([name]) => name !== kind)?.[1] as typeof pairs.Ed25519
    t.notOk(verifyPolicySignature(text, signature, other.publicKey), `${kind}: another kind of key`)
    const same = kind === 'Ed25519' ? generateKeyPairSync('ed25519') : kind === 'EC P-256' ? generateKeyPairSync('ec', { namedCurve: 'P-256' }) : generateKeyPairSync('rsa', { modulusLength: 2048 })
    t.notOk(verifyPolicySignature(text, signature, same.publicKey), `${kind}: another key of the same kind`)
  }
})

test('a change of one byte, a comment or a space included, breaks the signature', async (t) => {
  for (const [kind, { publicKey, privateKey }] of Object.entries(pairs)) {
    const signature = signPolicy(text, privateKey)
    t.notOk(verifyPolicySignature(text.replace('8080', '8081'), signature, publicKey), `${kind}: a value`)
    t.notOk(verifyPolicySignature(text.replace('reviewed', 'Reviewed'), signature, publicKey), `${kind}: a comment`)
    t.notOk(verifyPolicySignature(`${text} `, signature, publicKey), `${kind}: a trailing space`)
    const bytes = Buffer.from(signature, 'base64')
    const middle = bytes.length >> 1
    bytes.writeUInt8(bytes.readUInt8(middle) ^ 1, middle)
    t.notOk(verifyPolicySignature(text, bytes.toString('base64'), publicKey), `${kind}: one bit of the signature`)
  }
})

test('a missing, empty or malformed signature is simply false', async (t) => {
  const { publicKey } = pairs.Ed25519
  for (const signature of [undefined, '', '   \n', '!!!!', 'AAAA', 'not a signature at all', 'A'.repeat(4096)]) {
    t.equal(verifyPolicySignature(text, signature, publicKey), false, JSON.stringify(signature)?.slice(0, 20))
  }
  t.equal(verifyPolicySignature(text, 'AAAA', pairs['EC P-256'].publicKey), false, 'not a DER signature')
  t.equal(verifyPolicySignature(text, 'AAAA', pairs['RSA 2048'].publicKey), false, 'too short for RSA')
  // A key-agreement key cannot verify anything: the error is a plain false.
  const x25519 = policyPublicKey(generateKeyPairSync('x25519').publicKey)
  t.equal(verifyPolicySignature(text, signPolicy(text, pairs.Ed25519.privateKey), x25519), false, 'a key that cannot verify')
})

test('policyPublicKey() reads a public key and refuses a private key or garbage, naming the option', async (t) => {
  const { publicKey, privateKey } = pairs['EC P-256']
  t.equal(policyPublicKey(publicKey), publicKey, 'a KeyObject as it is')
  const fromPem = policyPublicKey(pem(publicKey))
  t.equal(fromPem.type, 'public')
  t.ok(fromPem.equals(publicKey))
  t.ok(policyPublicKey(Buffer.from(pem(publicKey))).equals(publicKey), 'PEM in a Buffer')
  const rsaPkcs1 = pairs['RSA 2048'].publicKey.export({ type: 'pkcs1', format: 'pem' }).toString()
  t.ok(policyPublicKey(rsaPkcs1).equals(pairs['RSA 2048'].publicKey), 'RSA PUBLIC KEY (PKCS#1)')

  const privateMessage = /^publicKey must be a public key \(never the private key that signs documents\)$/
  const privates: Array<[string, unknown]> = [
    ['a private KeyObject', privateKey],
    ['a private key in PEM', pem(privateKey)],
    ['a private key in a PEM Buffer', Buffer.from(pem(privateKey))],
    ['an EC PRIVATE KEY (SEC 1)', privateKey.export({ type: 'sec1', format: 'pem' }).toString()],
    ['an RSA PRIVATE KEY (PKCS#1)', pairs['RSA 2048'].privateKey.export({ type: 'pkcs1', format: 'pem' }).toString()],
    ['an Ed25519 private key', pem(pairs.Ed25519.privateKey)],
    ['a secret key', createSecretKey(Buffer.alloc(32, 1))]
  ]
  for (const [what, key] of privates) {
    t.throws(() => policyPublicKey(key as string), { code: 'PORTCULLIS_CORE_INVALID_OPTION', message: privateMessage }, what)
  }
  const garbage = /^policy\.publicKey must be a public key, PEM \(SPKI\) or a KeyObject$/
  for (const key of ['', 'not a key', '-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n', Buffer.from('junk')]) {
    t.throws(() => policyPublicKey(key, 'policy.publicKey'), { code: 'PORTCULLIS_CORE_INVALID_OPTION', message: garbage }, String(key).slice(0, 20))
  }
  const encrypted = privateKey.export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase: 'pw' }).toString()
  t.throws(() => policyPublicKey(encrypted, 'policy.publicKey'), { message: /^policy\.publicKey must be a public key/ }, 'an encrypted private key is refused too')
})
