import { checkKnownKeys, createPrincipal, invalidOption, type ClientCertificate, type Principal, type PrincipalType } from '@portcullis/core'

/** Where a certificate's identity is read from: its one SAN URI, its first SAN DNS name, its subject CN. */
export type IdentitySource = 'uri' | 'dns' | 'cn'

export interface PrincipalMapping {
  /**
   * Sources tried in order; the first the certificate has is the principal's id. `uri` applies to
   * a certificate with exactly one URI name, as SPIFFE requires of an X.509-SVID.
   * @default ['uri', 'dns', 'cn']
   */
  from?: IdentitySource[]
  /** @default 'service' */
  type?: Exclude<PrincipalType, 'anonymous'>
  /**
   * Roles by identity.
   * @example { 'spiffe://example.org/ns/shop/sa/billing': ['billing'] }
   */
  roles?: Record<string, string[]>
}

/** A pinned certificate: who it is. */
export interface Pin {
  id: string
  /** @default 'service' */
  type?: Exclude<PrincipalType, 'anonymous'>
  roles?: string[]
}

/** Turns a verified certificate into a principal, or `null` when it is not allowed one. */
export type Identify = (certificate: ClientCertificate) => Principal | null

const SOURCES: readonly IdentitySource[] = ['uri', 'dns', 'cn']
const TYPES = ['service', 'user']
const THUMBPRINT = /^[A-Za-z0-9_-]{43}$/

export function compileIdentity (mapping: PrincipalMapping | undefined, pins: Record<string, Pin> | undefined): Identify {
  if (pins !== undefined) return compilePins(pins)
  const spec = checkKnownKeys(mapping ?? {}, ['from', 'type', 'roles'], 'mtls.principal') as PrincipalMapping
  const from = spec.from ?? SOURCES
  if (!Array.isArray(from) || from.length === 0 || !from.every((source) => SOURCES.includes(source))) {
    throw invalidOption('mtls.principal.from', `a non-empty list of ${SOURCES.join(', ')}`, from)
  }
  const type = checkType(spec.type, 'mtls.principal.type')
  const roles = new Map(Object.entries(checkKnownKeys(spec.roles ?? {}, Object.keys(spec.roles ?? {}), 'mtls.principal.roles')).map(([id, list]) => {
    return [id, checkRoles(list, `mtls.principal.roles["${id}"]`)]
  }))
  return (certificate) => {
    const id = identityOf(certificate, from)
    if (id === null) return null
    return principalOf(certificate, id, type, roles.get(id) ?? [])
  }
}

function compilePins (pins: Record<string, Pin>): Identify {
  const entries = Object.entries(checkKnownKeys(pins, Object.keys(pins ?? {}), 'mtls.pins'))
  if (entries.length === 0) throw invalidOption('mtls.pins', 'at least one pinned thumbprint')
  const byThumbprint = new Map(entries.map(([thumbprint, pin]) => {
    const path = `mtls.pins["${thumbprint}"]`
    if (!THUMBPRINT.test(thumbprint)) throw invalidOption('mtls.pins', 'keyed by SHA-256 thumbprints in base64url without padding (43 characters, as x5t#S256)', thumbprint)
    const spec = checkKnownKeys(pin, ['id', 'type', 'roles'], path) as unknown as Pin
    if (typeof spec.id !== 'string' || spec.id === '') throw invalidOption(`${path}.id`, 'a non-empty string', spec.id)
    return [thumbprint, { id: spec.id, type: checkType(spec.type, `${path}.type`), roles: checkRoles(spec.roles ?? [], `${path}.roles`) }]
  }))
  return (certificate) => {
    const pin = byThumbprint.get(certificate.thumbprint)
    return pin === undefined ? null : principalOf(certificate, pin.id, pin.type, pin.roles)
  }
}

function identityOf (certificate: ClientCertificate, from: readonly IdentitySource[]): string | null {
  for (const source of from) {
    if (source === 'uri' && certificate.uris.length === 1) return certificate.uris[0] as string
    if (source === 'dns' && certificate.dnsNames.length > 0) return certificate.dnsNames[0] as string
    if (source === 'cn' && certificate.commonName !== null && certificate.commonName !== '') return certificate.commonName
  }
  return null
}

function principalOf (certificate: ClientCertificate, id: string, type: Exclude<PrincipalType, 'anonymous'>, roles: readonly string[]): Principal {
  const { commonName, dnsNames, uris, serialNumber, issuer } = certificate
  return createPrincipal({ id, type, method: 'mtls', roles, claims: { commonName, dnsNames, uris, serialNumber, issuer }, credentialId: certificate.thumbprint })
}

function checkType (value: unknown, path: string): Exclude<PrincipalType, 'anonymous'> {
  if (value === undefined) return 'service'
  if (!TYPES.includes(value as string)) throw invalidOption(path, 'service or user', value)
  return value as Exclude<PrincipalType, 'anonymous'>
}

function checkRoles (value: unknown, path: string): string[] {
  if (!Array.isArray(value) || !value.every((role) => typeof role === 'string' && role !== '')) throw invalidOption(path, 'a list of role names', value)
  return value
}
