import type { FastifyRequest } from 'fastify'

/**
 * The client certificate a request was made with, once verified by `@portcullis/mtls`: over the
 * request's own TLS connection, or forwarded by a trusted TLS-terminating proxy. Frozen.
 */
export interface ClientCertificate {
  /**
   * The certificate's SHA-256 thumbprint as RFC 8705 writes it (`x5t#S256`): base64url of the
   * SHA-256 of its DER encoding, without padding.
   */
  readonly thumbprint: string
  /** The subject's common name, when the subject has one. */
  readonly commonName: string | null
  /** DNS names of the subject alternative name, in certificate order. */
  readonly dnsNames: readonly string[]
  /** URIs of the subject alternative name (SPIFFE IDs such as `spiffe://example.org/ns/svc`). */
  readonly uris: readonly string[]
  /** Serial number, upper-case hex without leading zeros. */
  readonly serialNumber: string
  /** The issuer's distinguished name, one `attribute=value` per line as Node prints it. */
  readonly issuer: string
  /** Start and end of validity, in milliseconds since the epoch. */
  readonly notBefore: number
  readonly notAfter: number
  /** `tls`: this connection's handshake; `forwarded`: a header from a trusted proxy. */
  readonly source: 'tls' | 'forwarded'
}

export const kClientCertificate: unique symbol = Symbol.for('portcullis.clientCertificate')

interface CertificateSlot { [kClientCertificate]: ClientCertificate | null }

/**
 * Sets `request.clientCertificate`. Only `@portcullis/mtls` should call it, once it has verified
 * the certificate: the property itself is read-only.
 */
export function setClientCertificate (request: FastifyRequest, certificate: ClientCertificate): void {
  (request as unknown as CertificateSlot)[kClientCertificate] = Object.isFrozen(certificate) ? certificate : Object.freeze({ ...certificate })
}

/** The getter behind `request.clientCertificate`. */
export function clientCertificateGetter (this: FastifyRequest): ClientCertificate | null {
  return (this as unknown as CertificateSlot)[kClientCertificate]
}
