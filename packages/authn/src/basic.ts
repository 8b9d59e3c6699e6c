import { randomBytes, scrypt as scryptCallback, timingSafeEqual, type ScryptOptions } from 'node:crypto'
import { promisify } from 'node:util'
import { invalidOption } from '@portcullis/core'
import type { KeyOwner } from './api-key.js'

/** A Basic user: a username, a password hash made by {@link hashPassword}, and who it is. */
export interface BasicUser {
  username: string
  passwordHash: string
  /** The principal; `id` defaults to the username and `type` to `user`. */
  owner?: Partial<KeyOwner>
}

interface ScryptParams { N: number, r: number, p: number, salt: Buffer, hash: Buffer }

export const DEFAULT_SCRYPT = Object.freeze({ N: 16384, r: 8, p: 1 })
const KEY_LENGTH = 32
const FORMAT = /^scrypt\$(\d+)\$(\d+)\$(\d+)\$([A-Za-z0-9_-]{16,})\$([A-Za-z0-9_-]{43})$/

const scryptAsync = promisify(scryptCallback) as (password: string, salt: Buffer, length: number, options: ScryptOptions) => Promise<Buffer>

function scrypt (password: string, salt: Buffer, { N, r, p }: { N: number, r: number, p: number }): Promise<Buffer> {
  return scryptAsync(password, salt, KEY_LENGTH, { N, r, p, maxmem: 256 * N * r })
}

/**
 * Hashes a password with scrypt (a memory-hard, deliberately slow hash) and a random salt, as
 * `scrypt$N$r$p$salt$hash`. Store only this.
 */
export async function hashPassword (password: string, params: { N?: number, r?: number, p?: number } = {}): Promise<string> {
  const { N, r, p } = { ...DEFAULT_SCRYPT, ...params }
  const salt = randomBytes(16)
  const hash = await scrypt(password.normalize('NFC'), salt, { N, r, p })
  return `scrypt$${N}$${r}$${p}$${salt.toString('base64url')}$${hash.toString('base64url')}`
}

/** Parses a stored hash; throws naming `path` when it is not one {@link hashPassword} makes. */
export function parsePasswordHash (text: string, path: string): ScryptParams {
  const match = typeof text === 'string' ? FORMAT.exec(text) : null
  if (match === null) throw invalidOption(path, 'a hash made by hashPassword() ("scrypt$N$r$p$salt$hash")')
  const [N, r, p] = [Number(match[1]), Number(match[2]), Number(match[3])]
  // Bounded above too: a hash that asks for gigabytes per check would be a denial of service.
  if (N < 16384 || N > 1048576 || (N & (N - 1)) !== 0 || r < 8 || r > 32 || p < 1 || p > 16) {
    throw invalidOption(path, 'scrypt parameters with N a power of 2 from 16384 to 1048576, r from 8 to 32, p from 1 to 16')
  }
  return { N, r, p, salt: Buffer.from(match[4] as string, 'base64url'), hash: Buffer.from(match[5] as string, 'base64url') }
}

/** Checks a password against a parsed hash, in constant time. */
export async function verifyPassword (password: string, stored: ScryptParams): Promise<boolean> {
  const hash = await scrypt(password.normalize('NFC'), stored.salt, { N: stored.N, r: stored.r, p: stored.p })
  return timingSafeEqual(hash, stored.hash)
}

/**
 * Decodes Basic credentials (RFC 7617): base64 of UTF-8 `user-id:password`. The user-id ends at
 * the first colon; the password may contain colons. `null` when malformed.
 */
export function decodeBasic (value: string): { username: string, password: string } | null {
  const bytes = Buffer.from(value, 'base64')
  // Buffer.from ignores junk; the strict check is that the text re-encodes to itself.
  if (bytes.toString('base64').replace(/=+$/, '') !== value.replace(/=+$/, '')) return null
  let text: string
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes)
  } catch {
    return null
  }
  const colon = text.indexOf(':')
  if (colon <= 0 || /[\u0000-\u001f\u007f]/.test(text)) return null // eslint-disable-line no-control-regex -- control characters are what we refuse
  return { username: text.slice(0, colon).normalize('NFC'), password: text.slice(colon + 1) }
}
