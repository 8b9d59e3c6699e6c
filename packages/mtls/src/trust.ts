import { readFile } from 'node:fs/promises'
import * as pkijs from 'pkijs'
import { invalidOption } from '@portcullis/core'
import { nameKey, pemBlocks, serialOf } from './certificate.js'

/** PEM text, or a list of them: what Node's `tls` takes as `ca`. */
export type PemInput = string | Buffer | ReadonlyArray<string | Buffer>

/** A certificate of the CA bundle: it may sign client certificates and CRLs. */
export interface TrustAnchor {
  readonly parsed: pkijs.Certificate
  /** Its subject's DER, in hex: the issuer key of what it signs. */
  readonly subjectKey: string
}

/** Parses a CA bundle (one or more PEM certificates) once, at load time. */
export function loadCaBundle (input: PemInput, path: string): TrustAnchor[] {
  const texts = (Array.isArray(input) ? input : [input]) as Array<string | Buffer>
  const anchors = texts.flatMap((text, i) => {
    if (typeof text !== 'string' && !Buffer.isBuffer(text)) throw invalidOption(`${path}[${i}]`, 'PEM text (a string or a Buffer)', text)
    return pemBlocks(text.toString('latin1'), 'CERTIFICATE').map((der) => {
      try {
        const parsed = pkijs.Certificate.fromBER(der)
        return { parsed, subjectKey: nameKey(parsed.subject) }
      } catch {
        throw invalidOption(path, 'PEM certificates', 'a block that is not a certificate')
      }
    })
  })
  if (anchors.length === 0) throw invalidOption(path, 'one or more PEM certificates ("-----BEGIN CERTIFICATE-----")', 'none')
  return anchors
}

/** What a CRL says about one certificate. `stale`: the issuer's CRL is past its next update. */
export type RevocationStatus = 'good' | 'revoked' | 'stale'

interface IssuerList {
  readonly revoked: ReadonlySet<string>
  readonly thisUpdate: number
  /** Milliseconds since the epoch; `Infinity` when the CRL names no next update. */
  readonly nextUpdate: number
}

/** What a reload read: the CRL files, and how many certificates they revoke. */
export interface CrlSummary {
  readonly files: number
  readonly issuers: number
  readonly revoked: number
}

/**
 * The revoked serial numbers of each issuer, from CRL files. A reload reads and verifies every
 * file before it replaces anything: a file that is missing, malformed or not signed by a CA of
 * the bundle fails the reload, and the lists loaded before keep serving.
 */
export class CrlStore {
  readonly #files: readonly string[]
  readonly #anchors: readonly TrustAnchor[]
  #lists: ReadonlyMap<string, IssuerList> = new Map()

  constructor (files: readonly string[], anchors: readonly TrustAnchor[]) {
    this.#files = files
    this.#anchors = anchors
  }

  async reload (): Promise<CrlSummary> {
    const lists = new Map<string, IssuerList>()
    for (const file of this.#files) {
      for (const crl of parseCrls(await readFile(file), file)) {
        const list = await this.#verified(crl, file)
        const known = lists.get(list.key)
        // Two CRLs of one issuer: the newer is the one in force.
        if (known === undefined || list.value.thisUpdate > known.thisUpdate) lists.set(list.key, list.value)
      }
    }
    this.#lists = lists
    let revoked = 0
    for (const list of lists.values()) revoked += list.revoked.size
    return { files: this.#files.length, issuers: lists.size, revoked }
  }

  /** The status of a certificate by its issuer and serial number; `good` when no CRL covers the issuer. */
  status (issuerKey: string, serialNumber: string, now: number): RevocationStatus {
    const list = this.#lists.get(issuerKey)
    if (list === undefined) return 'good'
    if (list.revoked.has(serialNumber)) return 'revoked'
    return now > list.nextUpdate ? 'stale' : 'good'
  }

  async #verified (crl: pkijs.CertificateRevocationList, file: string): Promise<{ key: string, value: IssuerList }> {
    const key = nameKey(crl.issuer)
    for (const anchor of this.#anchors) {
      if (anchor.subjectKey !== key) continue
      if (!await crl.verify({ issuerCertificate: anchor.parsed })) continue
      const revoked = new Set((crl.revokedCertificates ?? []).map((entry) => serialOf(entry.userCertificate.valueBlock.valueHexView)))
      return { key, value: { revoked, thisUpdate: crl.thisUpdate.value.getTime(), nextUpdate: crl.nextUpdate?.value.getTime() ?? Infinity } }
    }
    throw new Error(`CRL ${file} is not signed by a CA of mtls.ca`)
  }
}

function parseCrls (content: Buffer, file: string): pkijs.CertificateRevocationList[] {
  const text = content.toString('latin1')
  const ders = text.includes('-----BEGIN') ? pemBlocks(text, 'X509 CRL') : [content]
  if (ders.length === 0) throw new Error(`CRL ${file} holds no "-----BEGIN X509 CRL-----" block`)
  return ders.map((der) => {
    try {
      return pkijs.CertificateRevocationList.fromBER(der)
    } catch {
      throw new Error(`CRL ${file} is not a CRL (PEM or DER)`)
    }
  })
}
