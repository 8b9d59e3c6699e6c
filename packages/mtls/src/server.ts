import type { SecureContextOptions } from 'node:tls'
import { checkKnownKeys, invalidOption } from '@portcullis/core'
import type { PemInput } from './trust.js'

export interface MtlsServerInput {
  /** The server's private key (PEM). */
  key: string | Buffer
  /** The server's certificate chain (PEM). */
  cert: string | Buffer
  /** The CAs client certificates must chain to (PEM), the same bundle as the plugin's `ca`. */
  ca: PemInput
  /** Passphrase of an encrypted `key`. */
  passphrase?: string
  /**
   * The oldest TLS version accepted. TLS 1.3 is negotiated whenever the client offers it.
   * @default 'TLSv1.2'
   */
  minVersion?: 'TLSv1.2' | 'TLSv1.3'
}

/** Options for Fastify's `https`: TLS 1.2 or later, a client certificate asked for but not demanded at the handshake. */
export interface MtlsServerOptions extends Pick<SecureContextOptions, 'key' | 'cert' | 'ca' | 'passphrase'> {
  requestCert: true
  rejectUnauthorized: false
  minVersion: 'TLSv1.2' | 'TLSv1.3'
}

/**
 * The `https` options of a listener that asks every client for a certificate chaining to `ca`.
 * The handshake succeeds either way: the plugin then decides per route, so a route that accepts
 * requests without a certificate can, and a refusal is a problem+json answer rather than a
 * broken connection.
 *
 * @example
 * const app = Fastify({ https: mtlsServerOptions({ key, cert, ca }) })
 */
export function mtlsServerOptions (input: MtlsServerInput): MtlsServerOptions {
  checkKnownKeys(input, ['key', 'cert', 'ca', 'passphrase', 'minVersion'], 'mtlsServerOptions')
  for (const name of ['key', 'cert'] as const) {
    const value = input[name]
    if (!((typeof value === 'string' && value !== '') || (Buffer.isBuffer(value) && value.length > 0))) {
      throw invalidOption(`mtlsServerOptions.${name}`, 'PEM text (a string or a Buffer)', value)
    }
  }
  const ca = input.ca
  const cas = (Array.isArray(ca) ? ca : [ca]) as unknown[]
  if (cas.length === 0 || !cas.every((entry) => (typeof entry === 'string' && entry.includes('-----BEGIN CERTIFICATE-----')) || (Buffer.isBuffer(entry) && entry.includes('-----BEGIN CERTIFICATE-----')))) {
    throw invalidOption('mtlsServerOptions.ca', 'PEM certificates (a string, a Buffer or a list of them)', ca)
  }
  const minVersion = input.minVersion ?? 'TLSv1.2'
  if (minVersion !== 'TLSv1.2' && minVersion !== 'TLSv1.3') throw invalidOption('mtlsServerOptions.minVersion', 'TLSv1.2 or TLSv1.3', minVersion)
  return {
    key: input.key,
    cert: input.cert,
    ca: cas as Array<string | Buffer>,
    ...(input.passphrase === undefined ? {} : { passphrase: input.passphrase }),
    requestCert: true,
    rejectUnauthorized: false,
    minVersion
  }
}
