import { createHash, X509Certificate } from 'node:crypto'
import * as pkijs from 'pkijs'
import type { ClientCertificate } from '@portcullis/core'

const SUBJECT_ALT_NAME = '2.5.29.17'
const COMMON_NAME = '2.5.4.3'
const DNS_NAME = 2
const URI = 6

/** A certificate parsed once: what the request sees, and what revocation is looked up by. */
export interface ParsedCertificate {
  readonly certificate: ClientCertificate
  /** The issuer's name as DER, in hex: the CRL of that issuer is found by it. */
  readonly issuerKey: string
  readonly parsed: pkijs.Certificate
}

/** Parses a DER certificate; throws on anything that is not one. */
export function parseCertificate (der: Uint8Array, source: ClientCertificate['source']): ParsedCertificate {
  const parsed = pkijs.Certificate.fromBER(der)
  const names = alternativeNames(parsed)
  const certificate: ClientCertificate = Object.freeze({
    thumbprint: thumbprintOf(der),
    commonName: commonNameOf(parsed.subject),
    dnsNames: Object.freeze(names.dns),
    uris: Object.freeze(names.uris),
    serialNumber: serialOf(parsed.serialNumber.valueBlock.valueHexView),
    issuer: new X509Certificate(der).issuer,
    notBefore: parsed.notBefore.value.getTime(),
    notAfter: parsed.notAfter.value.getTime(),
    source
  })
  return { certificate, issuerKey: nameKey(parsed.issuer), parsed }
}

/** RFC 8705 §3.1 `x5t#S256`: base64url of the SHA-256 of the DER certificate, no padding. */
export function thumbprintOf (der: Uint8Array): string {
  return createHash('sha256').update(der).digest('base64url')
}

/** A serial number as upper-case hex without leading zeros, however it was encoded. */
export function serialOf (bytes: Uint8Array): string {
  const hex = Buffer.from(bytes).toString('hex').toUpperCase().replace(/^0+/, '')
  return hex === '' ? '0' : hex
}

/** A distinguished name's DER encoding in hex, to compare issuers byte for byte. */
export function nameKey (name: pkijs.RelativeDistinguishedNames): string {
  return Buffer.from(name.valueBeforeDecode).toString('hex')
}

function commonNameOf (subject: pkijs.RelativeDistinguishedNames): string | null {
  const attribute = subject.typesAndValues.find((entry) => entry.type === COMMON_NAME)
  const value = attribute?.value.valueBlock.value
  return typeof value === 'string' ? value : null
}

function alternativeNames (certificate: pkijs.Certificate): { dns: string[], uris: string[] } {
  const dns: string[] = []
  const uris: string[] = []
  const extension = certificate.extensions?.find((entry) => entry.extnID === SUBJECT_ALT_NAME)
  const altNames = (extension?.parsedValue as pkijs.AltName | undefined)?.altNames ?? []
  for (const name of altNames) {
    if (name.type === DNS_NAME) dns.push(String(name.value))
    else if (name.type === URI) uris.push(String(name.value))
  }
  return { dns, uris }
}

/** The DER bodies of the PEM blocks of one label (`CERTIFICATE`, `X509 CRL`) in a text. */
export function pemBlocks (text: string, label: string): Buffer[] {
  const pattern = new RegExp(`-----BEGIN ${label}-----([A-Za-z0-9+/=\\s]+?)-----END ${label}-----`, 'g')
  return [...text.matchAll(pattern)].map((match) => Buffer.from((match[1] as string).replace(/\s+/g, ''), 'base64'))
}
