import * as pkijs from 'pkijs'
import { checkKnownKeys, compileIpMatcher, invalidOption, isHeaderName } from '@portcullis/core'
import { parseCertificate, pemBlocks, type ParsedCertificate } from './certificate.js'
import type { TrustAnchor } from './trust.js'

export interface ForwardedOptions {
  /**
   * Addresses, CIDR ranges or aliases (`loopback`, `private`) of the TLS-terminating proxies that
   * may forward a client certificate. From any other address the header is ignored and removed.
   */
  trustedProxies: readonly string[]
  /**
   * The header the proxy puts the certificate in.
   * @default 'x-forwarded-client-cert'
   */
  header?: string
  /**
   * `xfcc`: Envoy's `X-Forwarded-Client-Cert` (`Hash=…;Cert="…";Chain="…"`); the element the
   * nearest proxy appended, the last one, is read. `pem`: one URL-encoded PEM certificate (nginx
   * `$ssl_client_escaped_cert`) or one base64 DER certificate; its intermediates must be in `ca`.
   * @default 'xfcc'
   */
  format?: 'xfcc' | 'pem'
}

/** A forwarded certificate once read: verified against the CA bundle, or refused. */
export type ForwardedResult = ParsedCertificate | 'invalid'

export interface Forwarded {
  readonly header: string
  readonly isTrusted: (address: string) => boolean
  /** Reads the header's certificate and verifies its chain against the CA bundle. */
  readonly read: (value: string) => Promise<ForwardedResult>
}

export function compileForwarded (options: ForwardedOptions, anchors: readonly TrustAnchor[] | null, path: string): Forwarded {
  checkKnownKeys(options, ['trustedProxies', 'header', 'format'], path)
  if (!Array.isArray(options.trustedProxies) || options.trustedProxies.length === 0) {
    throw invalidOption(`${path}.trustedProxies`, 'a non-empty list of proxy addresses, CIDR ranges or aliases', options.trustedProxies)
  }
  const matches = compileIpMatcher(options.trustedProxies, `${path}.trustedProxies`)
  const header = (options.header ?? 'x-forwarded-client-cert').toLowerCase()
  if (!isHeaderName(header)) throw invalidOption(`${path}.header`, 'an HTTP header name', options.header)
  const format = options.format ?? 'xfcc'
  if (format !== 'xfcc' && format !== 'pem') throw invalidOption(`${path}.format`, 'xfcc or pem', format)
  if (anchors === null) throw invalidOption('mtls.ca', 'the CA bundle forwarded certificates are verified against, when mtls.forwarded is set')
  const extract = format === 'xfcc' ? fromXfcc : fromPem

  return {
    header,
    isTrusted: matches,
    read: async (value) => await verify(extract(value), anchors)
  }
}

async function verify (ders: Buffer[] | null, anchors: readonly TrustAnchor[]): Promise<ForwardedResult> {
  if (ders === null || ders.length === 0) return 'invalid'
  let leaf: ParsedCertificate
  let chain: pkijs.Certificate[]
  try {
    leaf = parseCertificate(ders[0] as Buffer, 'forwarded')
    chain = ders.slice(1).map((der) => pkijs.Certificate.fromBER(der))
  } catch {
    return 'invalid'
  }
  // The chain is checked at a moment the leaf is valid: now, if it is. A leaf that has expired or
  // is not valid yet is then still told apart from a forged one, and refused for its dates by
  // the plugin, as on a TLS connection.
  const { notBefore, notAfter } = leaf.certificate
  const engine = new pkijs.CertificateChainValidationEngine({
    trustedCerts: anchors.map((anchor) => anchor.parsed),
    // pkijs takes the last of `certs` as the end-entity certificate.
    certs: [...chain, leaf.parsed],
    checkDate: new Date(Math.min(Math.max(Date.now(), notBefore), notAfter))
  })
  // pkijs answers every failure as a result, never by throwing.
  const outcome = await engine.verify()
  return outcome.result ? leaf : 'invalid'
}

/** The certificate (and chain) of the last XFCC element: the one the nearest proxy added. */
export function fromXfcc (value: string): Buffer[] | null {
  const elements = splitOutsideQuotes(value, ',')
  const last = elements[elements.length - 1] as string
  let cert: string | undefined
  let chain = ''
  for (const pair of splitOutsideQuotes(last, ';')) {
    const at = pair.indexOf('=')
    if (at === -1) continue
    const key = pair.slice(0, at).trim().toLowerCase()
    const raw = pair.slice(at + 1).trim()
    const text = raw.startsWith('"') && raw.endsWith('"') && raw.length >= 2 ? raw.slice(1, -1).replace(/\\(.)/g, '$1') : raw
    if (key === 'cert') cert = text
    else if (key === 'chain') chain = text
  }
  if (cert === undefined) return null
  const leaf = decodePem(cert)
  const rest = chain === '' ? [] : decodePem(chain)
  return leaf === null || rest === null || leaf.length !== 1 ? null : [...leaf, ...rest]
}

/**
 * One URL-encoded PEM certificate, or one base64 DER certificate. Two certificates are refused:
 * a header sent twice, a forged one and the proxy's, would read as a certificate and its chain.
 */
export function fromPem (value: string): Buffer[] | null {
  const pem = decodePem(value)
  if (pem !== null) return pem.length === 1 ? pem : null
  const compact = value.trim()
  return /^[A-Za-z0-9+/]+={0,2}$/.test(compact) ? [Buffer.from(compact, 'base64')] : null
}

function decodePem (encoded: string): Buffer[] | null {
  let text: string
  try {
    text = decodeURIComponent(encoded)
  } catch {
    return null
  }
  if (!text.includes('-----BEGIN CERTIFICATE-----')) return null
  const blocks = pemBlocks(text, 'CERTIFICATE')
  return blocks.length === 0 ? null : blocks
}

function splitOutsideQuotes (value: string, separator: string): string[] {
  const parts: string[] = []
  let quoted = false
  let start = 0
  for (let i = 0; i < value.length; i++) {
    const char = value[i]
    if (char === '\\' && quoted) i++
    else if (char === '"') quoted = !quoted
    else if (char === separator && !quoted) {
      parts.push(value.slice(start, i))
      start = i + 1
    }
  }
  parts.push(value.slice(start))
  return parts
}
