import { InvalidOption } from './errors.js'
import { canonicalIp, compileIpMatcher } from './ip.js'
import { isHeaderName } from './options.js'

export interface ClientIpOptions {
  /**
   * Addresses, CIDR ranges or aliases (`loopback`, `private`, `linklocal`) of the proxies in front
   * of this server. Only a hop from one of them may tell us who its client is.
   * @default []
   */
  trustedProxies?: readonly string[]
  /**
   * The header trusted proxies put the client address in, as a comma-separated list with the
   * nearest hop last.
   * @default 'x-forwarded-for'
   */
  forwardedHeader?: string
}

export type ClientIpResolver = (remoteAddress: string | undefined, headers: Readonly<Record<string, string | string[] | undefined>>) => string

/**
 * Compiles the client-IP rule once. The resolver walks the forwarded chain from the socket
 * address backwards, and stops at the first hop that is not a trusted proxy: that hop is the
 * client. Without trusted proxies, the forwarded header is never read.
 *
 * A malformed entry in the chain ends the walk: the trusted proxy that passed it on is then taken
 * as the client, so a garbled header can never make up an address.
 */
export function compileClientIp (options: ClientIpOptions = {}, path = 'options'): ClientIpResolver {
  const trusted = options.trustedProxies ?? []
  if (!Array.isArray(trusted)) throw new InvalidOption(`${path}.trustedProxies must be an array of IP addresses, CIDR ranges or aliases`)
  const header = (options.forwardedHeader ?? 'x-forwarded-for').toLowerCase()
  if (!isHeaderName(header)) throw new InvalidOption(`${path}.forwardedHeader must be an HTTP header name, got "${header}"`)
  if (trusted.length === 0) return (remoteAddress) => socketIp(remoteAddress)
  const isTrusted = compileIpMatcher(trusted, `${path}.trustedProxies`)
  return (remoteAddress, headers) => {
    const value = headers[header]
    if (remoteAddress === undefined || value === undefined || !isTrusted(remoteAddress)) return socketIp(remoteAddress)
    let client = socketIp(remoteAddress)
    const chain = (Array.isArray(value) ? value.join(',') : value).split(',')
    for (let i = chain.length - 1; i >= 0; i--) {
      const entry = (chain[i] as string).trim()
      const hop = canonicalIp(entry)
      if (hop === null) break
      client = hop
      if (!isTrusted(entry)) break
    }
    return client
  }
}

// The socket address as Node reports it: already canonical except for IPv4-mapped IPv6.
function socketIp (remoteAddress: string | undefined): string {
  if (remoteAddress === undefined) return ''
  return remoteAddress.startsWith('::ffff:') && remoteAddress.includes('.') ? remoteAddress.slice(7) : remoteAddress
}
