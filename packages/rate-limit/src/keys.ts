import type { FastifyRequest } from 'fastify'
import { invalidOption, parseIp, routeKey, type PathOptions } from '@portcullis/core'

/**
 * What a limit counts by. Every part comes from something the client cannot choose: the client
 * IP from core (forwarded addresses only through trusted proxies), the principal from authn, the
 * route Fastify matched.
 */
export type KeyPart = 'ip' | 'principal' | 'credential' | 'plan' | 'tenant' | 'route'

export const KEY_PARTS: readonly KeyPart[] = ['ip', 'principal', 'credential', 'plan', 'tenant', 'route']
// Before authentication there is no principal: only these mean anything.
export const IP_STAGE_PARTS: readonly KeyPart[] = ['ip', 'route']

/**
 * A limit's key for a request, in two parts: `scope`, fixed at load time (the limit's name, and
 * the kind of part when there is one), and the subject a request is counted as. The key is
 * `scope + subject`; the subject's parts are tagged with their kind (`ip:`, `p:`…) where the scope
 * does not say it and, when there are several, length-prefixed so that none can pose as two.
 */
export interface CompiledKey {
  readonly scope: string
  readonly subjectOf: (request: FastifyRequest) => string
}

export interface KeyContext {
  /** IPv6 addresses are counted by this prefix, since a client usually holds a whole /64. */
  ipv6Prefix: number
  pathOptions: PathOptions
}

export function compileKey (name: string, parts: unknown, allowed: readonly KeyPart[], path: string, context: KeyContext): CompiledKey {
  const list = typeof parts === 'string' ? [parts] : parts
  if (!Array.isArray(list) || list.length === 0 || !list.every((p) => allowed.includes(p as KeyPart)) || new Set(list).size !== list.length) {
    throw invalidOption(path, `one of ${allowed.join(', ')}, or a list of them without repeats`, parts)
  }
  const prefix = `${name}:`
  if (list.length === 1) {
    // An address alone, the usual case: the scope says what it is, the subject is the address.
    if (list[0] === 'ip') {
      const { ipv6Prefix } = context
      return { scope: `${prefix}ip:`, subjectOf: (request) => groupIp(request.clientIp, ipv6Prefix) }
    }
    return { scope: prefix, subjectOf: reader(list[0] as KeyPart, context) }
  }
  const readers = (list as KeyPart[]).map((part) => reader(part, context))
  return {
    scope: prefix,
    subjectOf: (request) => {
      let subject = ''
      for (const read of readers) subject += framed(read(request))
      return subject
    }
  }
}

function framed (value: string): string {
  return `${value.length}:${value}`
}

function reader (part: KeyPart, { ipv6Prefix, pathOptions }: KeyContext): (request: FastifyRequest) => string {
  const ip = (request: FastifyRequest): string => `ip:${groupIp(request.clientIp, ipv6Prefix)}`
  switch (part) {
    case 'ip': return ip
    // Anonymous requests have no principal of their own: they are counted by address.
    case 'principal': return (request) => identified(request) ? `p:${(request.principal as { id: string }).id}` : ip(request)
    case 'credential': return (request) => identified(request) ? `c:${request.principal?.credentialId ?? request.principal?.id as string}` : ip(request)
    case 'plan': return (request) => `plan:${request.principal?.plan ?? ''}`
    case 'tenant': return (request) => `t:${request.principal?.tenant ?? ''}`
    case 'route': return (request) => `r:${request.method} ${routeKey(request, pathOptions)}`
  }
}

function identified (request: FastifyRequest): boolean {
  return request.principal !== null && request.principal.type !== 'anonymous'
}

/**
 * An IPv4 address as is; an IPv6 address by its first `prefix` bits (`2001:db8:1:2::/64`).
 * Core hands over IPv4-mapped IPv6 addresses as IPv4 already.
 */
export function groupIp (address: string, prefix: number): string {
  if (!address.includes(':') || prefix === 128) return address
  const parsed = parseIp(address)
  if (parsed === null || parsed.kind() !== 'ipv6') return address
  const parts = (parsed as unknown as { parts: number[] }).parts
  const kept: string[] = []
  for (let i = 0; i < 8; i++) {
    const bits = Math.min(16, Math.max(0, prefix - 16 * i))
    kept.push(((parts[i] as number) & (0xffff << (16 - bits))).toString(16))
  }
  return `${kept.join(':')}/${prefix}`
}
