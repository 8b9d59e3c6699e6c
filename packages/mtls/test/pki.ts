// Certificates for the tests, made in the test with real keys and signatures: a CA, a server
// certificate, client certificates of every kind, and CRLs.
import { webcrypto } from 'node:crypto'
import * as asn1js from 'asn1js'
import * as pkijs from 'pkijs'

const ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256' }
const DAY = 86_400_000

export interface Issued {
  /** The certificate, PEM. */
  cert: string
  /** Its private key, PKCS #8 PEM. */
  key: string
  der: Buffer
  parsed: pkijs.Certificate
  privateKey: webcrypto.CryptoKey
}

export interface CertificateSpec {
  cn?: string
  dns?: string[]
  uris?: string[]
  ips?: string[]
  serial?: number
  /** Validity, in days from now. @default [-1, 30] */
  days?: [number, number]
  ca?: boolean
  /** Signed by this issuer; self-signed without. */
  issuer?: Issued
}

let nextSerial = 0x1000

function name (cn: string): pkijs.RelativeDistinguishedNames {
  return new pkijs.RelativeDistinguishedNames({
    typesAndValues: [new pkijs.AttributeTypeAndValue({ type: '2.5.4.3', value: new asn1js.Utf8String({ value: cn }) })]
  })
}

function pem (label: string, der: ArrayBuffer | Buffer): string {
  const body = Buffer.from(der as ArrayBuffer).toString('base64').replace(/.{1,64}/g, '$&\n')
  return `-----BEGIN ${label}-----\n${body}-----END ${label}-----\n`
}

function ipBytes (ip: string): asn1js.OctetString {
  return new asn1js.OctetString({ valueHex: new Uint8Array(ip.split('.').map(Number)).buffer })
}

export async function issue (spec: CertificateSpec = {}): Promise<Issued> {
  const keys = await webcrypto.subtle.generateKey(ALGORITHM, true, ['sign', 'verify']) as webcrypto.CryptoKeyPair
  const certificate = new pkijs.Certificate()
  certificate.version = 2
  certificate.serialNumber = new asn1js.Integer({ value: spec.serial ?? nextSerial++ })
  certificate.subject = spec.cn === undefined ? new pkijs.RelativeDistinguishedNames({ typesAndValues: [] }) : name(spec.cn)
  certificate.issuer = spec.issuer === undefined ? certificate.subject : spec.issuer.parsed.subject
  const [from, to] = spec.days ?? [-1, 30]
  certificate.notBefore.value = new Date(Date.now() + from * DAY)
  certificate.notAfter.value = new Date(Date.now() + to * DAY)
  const constraints = new pkijs.BasicConstraints({ cA: spec.ca === true })
  certificate.extensions = [new pkijs.Extension({ extnID: '2.5.29.19', critical: true, extnValue: constraints.toSchema().toBER(false), parsedValue: constraints })]
  if (spec.ca === true) {
    // keyCertSign and cRLSign
    const usage = new asn1js.BitString({ valueHex: new Uint8Array([0x06]).buffer, unusedBits: 1 })
    certificate.extensions.push(new pkijs.Extension({ extnID: '2.5.29.15', critical: true, extnValue: usage.toBER(false) }))
  }
  const altNames = [
    ...(spec.dns ?? []).map((value) => new pkijs.GeneralName({ type: 2, value })),
    ...(spec.uris ?? []).map((value) => new pkijs.GeneralName({ type: 6, value })),
    ...(spec.ips ?? []).map((value) => new pkijs.GeneralName({ type: 7, value: ipBytes(value) }))
  ]
  if (altNames.length > 0) {
    const alt = new pkijs.AltName({ altNames })
    certificate.extensions.push(new pkijs.Extension({ extnID: '2.5.29.17', extnValue: alt.toSchema().toBER(false), parsedValue: alt }))
  }
  await certificate.subjectPublicKeyInfo.importKey(keys.publicKey)
  await certificate.sign(spec.issuer?.privateKey ?? keys.privateKey, 'SHA-256')
  const der = Buffer.from(certificate.toSchema(true).toBER(false))
  const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', keys.privateKey)
  return { cert: pem('CERTIFICATE', der), key: pem('PRIVATE KEY', pkcs8), der, parsed: pkijs.Certificate.fromBER(der), privateKey: keys.privateKey }
}

/** A CRL of `issuer` revoking `revoked`, PEM. Updates in days from now; `nextUpdate: null` leaves it out. */
export async function crlOf (issuer: Issued, revoked: Issued[], options: { nextUpdate?: number | null, thisUpdate?: number, signer?: Issued } = {}): Promise<string> {
  const crl = new pkijs.CertificateRevocationList()
  crl.version = 1
  crl.issuer = issuer.parsed.subject
  crl.thisUpdate = new pkijs.Time({ type: 0, value: new Date(Date.now() + (options.thisUpdate ?? -1 / 24) * DAY) })
  if (options.nextUpdate !== null) crl.nextUpdate = new pkijs.Time({ type: 0, value: new Date(Date.now() + (options.nextUpdate ?? 7) * DAY) })
  if (revoked.length > 0) {
    crl.revokedCertificates = revoked.map((cert) => new pkijs.RevokedCertificate({
      userCertificate: cert.parsed.serialNumber,
      revocationDate: new pkijs.Time({ type: 0, value: new Date(Date.now() - 60_000) })
    }))
  }
  await crl.sign((options.signer ?? issuer).privateKey, 'SHA-256')
  return pem('X509 CRL', crl.toSchema(true).toBER(false))
}

/** The set the tests use: two CAs, a server certificate, and client certificates of every kind. */
export async function createPki () {
  const ca = await issue({ cn: 'Portcullis test CA', ca: true, days: [-10, 3650] })
  const foreignCa = await issue({ cn: 'Some other CA', ca: true, days: [-10, 3650] })
  const server = await issue({ cn: 'localhost', dns: ['localhost'], ips: ['127.0.0.1'], issuer: ca })
  const service = await issue({ cn: 'orders', dns: ['orders.internal'], uris: ['spiffe://example.org/ns/shop/sa/orders'], issuer: ca })
  const dnsOnly = await issue({ cn: 'billing', dns: ['billing.internal', 'billing'], issuer: ca })
  const cnOnly = await issue({ cn: 'legacy-batch', issuer: ca })
  const nameless = await issue({ issuer: ca })
  const twoUris = await issue({ cn: 'two', uris: ['spiffe://example.org/a', 'spiffe://example.org/b'], issuer: ca })
  const expired = await issue({ cn: 'expired', uris: ['spiffe://example.org/ns/shop/sa/expired'], days: [-30, -1], issuer: ca })
  const notYetValid = await issue({ cn: 'future', days: [1, 30], issuer: ca })
  const revoked = await issue({ cn: 'revoked', uris: ['spiffe://example.org/ns/shop/sa/revoked'], issuer: ca })
  const foreign = await issue({ cn: 'orders', uris: ['spiffe://example.org/ns/shop/sa/orders'], issuer: foreignCa })
  const selfSigned = await issue({ cn: 'orders', uris: ['spiffe://example.org/ns/shop/sa/orders'] })
  return { ca, foreignCa, server, service, dnsOnly, cnOnly, nameless, twoUris, expired, notYetValid, revoked, foreign, selfSigned }
}

export type Pki = Awaited<ReturnType<typeof createPki>>
