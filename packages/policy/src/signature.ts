import { createPrivateKey, createPublicKey, sign, verify, type KeyObject } from 'node:crypto'
import { invalidOption } from '@portcullis/core'

/** A public key that checks documents: PEM text or a KeyObject (Ed25519, Ed448, EC or RSA). */
export type PolicyPublicKey = string | Buffer | KeyObject

/** Reads a public key once, at startup; refuses a private key, which does not belong on a gateway. */
export function policyPublicKey (key: PolicyPublicKey, path = 'publicKey'): KeyObject {
  let object: KeyObject
  try {
    object = typeof key === 'object' && !Buffer.isBuffer(key) ? key : createPublicKey(key)
  } catch {
    throw invalidOption(path, 'a public key, PEM (SPKI) or a KeyObject')
  }
  // createPublicKey derives the public key from a private one: a private key's PEM is told by its label.
  const pem = typeof key === 'string' ? key : Buffer.isBuffer(key) ? key.toString('latin1') : ''
  if (object.type !== 'public' || /-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----/.test(pem)) throw invalidOption(path, 'a public key (never the private key that signs documents)')
  return object
}

// EdDSA signs the message itself; the other kinds sign its SHA-256.
function algorithmOf (key: KeyObject): string | null {
  return key.asymmetricKeyType === 'ed25519' || key.asymmetricKeyType === 'ed448' ? null : 'sha256'
}

/**
 * A detached signature of a policy document's exact bytes, base64: what `<file>.sig` holds. Sign
 * the text as it is stored; a change of one byte, comments and spaces included, breaks it.
 */
export function signPolicy (text: string | Buffer, privateKey: string | Buffer | KeyObject): string {
  const key = typeof privateKey === 'object' && !Buffer.isBuffer(privateKey) ? privateKey : createPrivateKey(privateKey)
  return sign(algorithmOf(key), Buffer.from(text), key).toString('base64')
}

/** Whether `signature` (base64) signs `text` under `publicKey`. Any malformed input is simply `false`. */
export function verifyPolicySignature (text: string | Buffer, signature: string | undefined, publicKey: KeyObject): boolean {
  if (signature === undefined) return false
  const bytes = Buffer.from(signature.trim(), 'base64')
  if (bytes.length === 0) return false
  try {
    return verify(algorithmOf(publicKey), Buffer.from(text), publicKey, bytes)
  } catch {
    return false
  }
}
