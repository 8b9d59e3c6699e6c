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
   * nearest proxy appended, the last one, is read. `pem`: a URL-encoded PEM certificate, optionally
   * followed by its intermediates (nginx `$ssl_client_escaped_cert`), or base64 DER.
   * @default 'xfcc'
   */
  format?: 'xfcc' | 'pem'
}

/** A forwarded certificate once read: verified against the CA bundle, or refused. */
export type ForwardedResult = ParsedCertificate | 'invalid'

export interface Forwarded {
  readonly header: string
  readonly isTrusted: (address: string | undefined) => boolean
  /** Reads and verifies the header's certificate; answers for a value seen before come from a cache. */
  readonly read: (value: string) => Promise<ForwardedResult>
}

const CACHE_SIZE = 1000
const CACHE_TTL = 5 * 60_000

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

  // A proxy forwards the same few certificates over and over: each is verified once, then
  // answered from here for a few minutes. Validity dates and revocation are checked on every
  // request regardless, by the plugin.
  const cache = new Map<string, { until: number, result: Promise<ForwardedResult> }>()
  const read = async (value: string): Promise<ForwardedResult> => {
    const now = Date.now()
    const cached = cache.get(value)
    if (cached !== undefined && cached.until > now) return await cached.result
    if (cache.size >= CACHE_SIZE) cache.delete(cache.keys().next().value as string)
    const result = verify(extract(value), anchors)
    cache.set(value, { until: now + CACHE_TTL, result })
    return await result
  }
  return {
    header,
    isTrusted: (address) => address !== undefined && matches(address),
    read
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
  const engine = new pkijs.CertificateChainValidationEngine({
    trustedCerts: anchors.map((anchor) => anchor.parsed),
    certs: [leaf.parsed, ...chain],
    checkDate: new Date()
  })
  try {
    const outcome = await engine.verify()
    return outcome.result ? leaf : 'invalid'
  } catch {
    return 'invalid'
  }
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

/** A URL-encoded PEM certificate with its chain, or a base64 DER certificate. */
export function fromPem (value: string): Buffer[] | null {
  const pem = decodePem(value)
  if (pem !== null) return pem
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
