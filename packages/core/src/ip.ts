import ipaddr from 'ipaddr.js'
import { InvalidOption } from './errors.js'

export type IpAddress = ipaddr.IPv4 | ipaddr.IPv6
type Range = readonly [IpAddress, number]

/** Names that stand for well-known ranges in IP lists, as in `trustedProxies: ['loopback']`. */
export const IP_RANGE_ALIASES: Readonly<Record<string, readonly string[]>> = Object.freeze({
  loopback: ['127.0.0.0/8', '::1/128'],
  private: ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', 'fc00::/7'],
  linklocal: ['169.254.0.0/16', 'fe80::/10']
})

/**
 * Parses an IP address strictly: IPv4 only in four-part decimal without leading zeros (so
 * `127.1`, `0x7f.0.0.1` and `010.0.0.1` are refused rather than guessed at), IPv6 in any
 * standard text form. Returns `null` for anything else.
 */
export function parseIp (text: string): IpAddress | null {
  if (text.includes(':')) {
    const dotted = text.lastIndexOf(':')
    if (text.includes('.', dotted) && !isStrictIPv4(text.slice(dotted + 1))) return null
    return ipaddr.IPv6.isValid(text) ? ipaddr.IPv6.parse(text) : null
  }
  return isStrictIPv4(text) ? ipaddr.IPv4.parse(text) : null
}

/** The one canonical text of an address: IPv4-mapped IPv6 as IPv4, IPv6 per RFC 5952. */
export function formatIp (address: IpAddress): string {
  if (address.kind() === 'ipv4') return address.toString()
  const v6 = address as ipaddr.IPv6
  return v6.isIPv4MappedAddress() ? v6.toIPv4Address().toString() : v6.toRFC5952String()
}

/**
 * Parses one entry of an IP list: an address, a CIDR range or an alias from
 * {@link IP_RANGE_ALIASES}. Throws a `TypeError` naming `path` for an invalid or ambiguous entry,
 * including a range with host bits set (`10.0.0.1/8`), which usually hides a typo.
 */
export function parseIpRanges (entry: string, path: string): Range[] {
  const alias = IP_RANGE_ALIASES[entry]
  if (alias !== undefined) return alias.map((cidr) => parseIpRanges(cidr, path)[0] as Range)
  const slash = entry.indexOf('/')
  const address = parseIp(slash === -1 ? entry : entry.slice(0, slash))
  if (address === null) {
    throw new InvalidOption(`${path}: "${entry}" is not an IP address or CIDR range (IPv4 must be four decimal parts)`)
  }
  const max = address.kind() === 'ipv4' ? 32 : 128
  const prefixText = slash === -1 ? String(max) : entry.slice(slash + 1)
  if (!/^(0|[1-9]\d{0,2})$/.test(prefixText) || Number(prefixText) > max) {
    throw new InvalidOption(`${path}: "${entry}" has an invalid prefix length (0 to ${max} allowed)`)
  }
  const prefix = Number(prefixText)
  const network = networkOf(address, prefix)
  if (network.toNormalizedString() !== address.toNormalizedString()) {
    throw new InvalidOption(`${path}: "${entry}" has host bits set; did you mean "${formatIp(network)}/${prefix}"?`)
  }
  return [toComparable(address, prefix)]
}

/**
 * Compiles a list of addresses, ranges and aliases into a matcher, once, at load time. The
 * matcher takes a parsed address or a text (strictly parsed; text that is not an address never
 * matches). IPv4-mapped IPv6 addresses match their IPv4 form, both as entries and as addresses.
 */
export function compileIpMatcher (entries: readonly string[], path: string): (address: IpAddress | string) => boolean {
  const ranges = entries.flatMap((entry, i) => {
    if (typeof entry !== 'string') throw new InvalidOption(`${path}[${i}] must be a string`)
    return parseIpRanges(entry, `${path}[${i}]`)
  })
  // IPv4 ranges as [network, mask] integers: the common case costs a few integer operations.
  const v4 = ranges.filter(([a]) => a.kind() === 'ipv4').map(([a, prefix]) => {
    const mask = prefix === 0 ? 0 : (~0 << (32 - prefix)) >>> 0
    return [(ipv4ToInt(a as ipaddr.IPv4) & mask) >>> 0, mask] as const
  })
  const v6 = ranges.filter(([a]) => a.kind() === 'ipv6')
  const matchV4 = (value: number): boolean => {
    for (const [network, mask] of v4) {
      if (((value & mask) >>> 0) === network) return true
    }
    return false
  }
  return (input) => {
    let address: IpAddress | null
    if (typeof input === 'string') {
      const value = parseIPv4(input)
      if (value !== -1) return matchV4(value)
      address = parseIp(input)
      if (address === null) return false
    } else {
      address = input
    }
    address = unmap(address)
    if (address.kind() === 'ipv4') return matchV4(ipv4ToInt(address as ipaddr.IPv4))
    for (const range of v6) {
      if (address.match(range as [IpAddress, number])) return true
    }
    return false
  }
}

/**
 * The canonical text of an address given as text (see {@link formatIp}), or `null` when it is
 * not one. Dotted-quad IPv4, the common case, is checked without building an address object.
 */
export function canonicalIp (text: string): string | null {
  if (parseIPv4(text) !== -1) return text
  const address = parseIp(text)
  return address === null ? null : formatIp(address)
}

/**
 * Parses strict dotted-quad IPv4 (four decimal parts from 0 to 255, no leading zeros) into an
 * unsigned 32-bit integer; -1 for anything else.
 */
export function parseIPv4 (text: string): number {
  const length = text.length
  if (length < 7 || length > 15) return -1
  let value = 0
  let part = 0
  let digits = 0
  let dots = 0
  for (let i = 0; i < length; i++) {
    const c = text.charCodeAt(i)
    if (c === 46) { // '.'
      if (digits === 0 || dots === 3) return -1
      value = value * 256 + part
      part = 0
      digits = 0
      dots++
    } else if (c >= 48 && c <= 57) {
      if (digits > 0 && part === 0) return -1 // leading zero
      part = part * 10 + (c - 48)
      if (part > 255) return -1
      digits++
    } else {
      return -1
    }
  }
  if (digits === 0 || dots !== 3) return -1
  return value * 256 + part
}

function ipv4ToInt (address: ipaddr.IPv4): number {
  const [a, b, c, d] = address.octets as [number, number, number, number]
  return ((a << 24) | (b << 16) | (c << 8) | d) >>> 0
}

function unmap (address: IpAddress): IpAddress {
  if (address.kind() === 'ipv6' && (address as ipaddr.IPv6).isIPv4MappedAddress()) {
    return (address as ipaddr.IPv6).toIPv4Address()
  }
  return address
}

function toComparable (address: IpAddress, prefix: number): Range {
  if (address.kind() === 'ipv6' && (address as ipaddr.IPv6).isIPv4MappedAddress() && prefix >= 96) {
    return [(address as ipaddr.IPv6).toIPv4Address(), prefix - 96]
  }
  return [address, prefix]
}

function networkOf (address: IpAddress, prefix: number): IpAddress {
  const bytes = address.toByteArray()
  for (let bit = prefix; bit < bytes.length * 8; bit++) {
    const index = bit >> 3
    bytes[index] = (bytes[index] as number) & ~(0x80 >> (bit & 7))
  }
  return ipaddr.fromByteArray(bytes)
}

function isStrictIPv4 (text: string): boolean {
  return parseIPv4(text) !== -1
}
