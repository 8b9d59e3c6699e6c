import type { Socket } from 'node:net'
import { Readable } from 'node:stream'
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { Dispatcher } from 'undici'
import { BadGateway, BadRequest, canonicalIp, compileIpMatcher, GatewayTimeout, recordUpstream } from '@portcullis/core'

/**
 * Header fields that belong to one connection (RFC 9110 §7.6.1), never forwarded in either
 * direction, with the proxy's own: `Proxy-Authorization` holds credentials for this hop, not for
 * the upstream. `Expect` is answered by the gateway itself (Node.js sends `100 Continue`).
 */
const HOP_BY_HOP = ['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'proxy-authorization', 'proxy-authenticate']

/**
 * Request fields the gateway sets itself. `Forwarded` (RFC 7239) is never passed on: the gateway
 * speaks `X-Forwarded-*`, and a `Forwarded` it did not write could contradict them.
 */
const SET_BY_GATEWAY = ['host', 'expect', 'forwarded', 'x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host']

// Response bodies up to this size, with their length and type announced, are read whole and sent
// as one buffer: cheaper than a stream, and a timeout while reading one is still a clean 504.
// Anything else (larger, chunked, event streams) is streamed as it arrives.
const BUFFERED_BODY_LIMIT = 64 * 1024

/** Who the proxies of a gateway trust to say who their client is: core's `trustedProxies`. */
export interface ForwardingOptions {
  trustedProxies?: readonly string[]
  /** The header core reads the forwarded chain from. @default 'x-forwarded-for' */
  forwardedHeader?: string
}

/** One upstream as the proxy handler sends to it. */
export interface ProxyTarget {
  /** The upstream's origin, as recorded in the audit log. */
  origin: string
  /** The gateway's path prefix for the upstream, and what replaces it upstream. */
  prefix: string
  rewritePrefix: string
  /** The connection pool to the upstream. */
  dispatcher: Dispatcher
  headersTimeout: number
  bodyTimeout: number
}

type Handler = (request: FastifyRequest, reply: FastifyReply) => void

/** What the handlers of one chain share: how forwarded headers are written. */
export interface Forwarding {
  /** The X-Forwarded-For value to send for a request whose peer is `peer`. */
  forwardedFor: (peer: string, headers: FastifyRequest['headers']) => string
  /** Whether the peer may tell the gateway about its own client (proto, host). */
  trusts: (peer: string) => boolean
  /** The header the forwarded chain came in, when it is not X-Forwarded-For; never passed on. */
  chainHeader: string
}

/**
 * Compiles core's trusted proxies into the forwarded headers the gateway writes: the client as the
 * gateway saw it, appended to the part of the chain that trusted proxies vouch for (exactly the
 * part core walked to find `request.clientIp`), and nothing a client wrote itself.
 */
export function compileForwarding ({ trustedProxies = [], forwardedHeader = 'x-forwarded-for' }: ForwardingOptions = {}): Forwarding {
  const chainHeader = forwardedHeader.toLowerCase()
  if (trustedProxies.length === 0) return { forwardedFor: (peer) => peer, trusts: () => false, chainHeader }
  const isTrusted = compileIpMatcher(trustedProxies, 'core.trustedProxies')
  return {
    chainHeader,
    trusts: (peer) => isTrusted(peer),
    forwardedFor: (peer, headers) => {
      const value = headers[chainHeader]
      if (value === undefined || !isTrusted(peer)) return peer
      // Node joins repeated fields of this kind into one value, separated by commas.
      const chain = (value as string).split(',')
      const kept: string[] = [peer]
      for (let i = chain.length - 1; i >= 0; i--) {
        const hop = canonicalIp((chain[i] as string).trim())
        if (hop === null) break
        kept.push(hop)
        if (!isTrusted(hop)) break
      }
      return kept.reverse().join(', ')
    }
  }
}

/**
 * The handler that sends a request to `target` as it arrived, the prefix rewritten, and answers
 * with what the upstream answered: one undici dispatch, no URL parsing, no retries. Failures are
 * problem+json: 504 when the upstream did not connect or answer in time, 502 otherwise.
 */
export function proxyHandler (target: ProxyTarget, forwarding: Forwarding): Handler {
  const { origin, prefix, rewritePrefix, dispatcher, headersTimeout, bodyTimeout } = target
  const prefixLength = prefix.length
  const upstreamHost = new URL(origin).host
  const dropped = new Set([...HOP_BY_HOP, ...SET_BY_GATEWAY, forwarding.chainHeader])
  const rewriteLocation = locationRewriter(prefix, rewritePrefix)

  return function proxy (request, reply) {
    const path = upstreamPath(rewritePrefix, request.url.slice(prefixLength))
    if (path === null) {
      reply.send(new BadRequest())
      return
    }
    const incoming = request.headers
    const listed = incoming.connection === undefined ? null : connectionTokens(incoming.connection)
    let body: string | Buffer | Readable | null = null
    let encodedType: string | null = null
    const parsed = request.body as unknown
    if (parsed instanceof Readable) {
      body = parsed
    } else if (parsed !== undefined && parsed !== null) {
      // A body Fastify parsed (and validation may have checked) goes upstream as it was read.
      const type = mediaTypeOf(incoming['content-type'] as string)
      body = typeof parsed === 'string' || Buffer.isBuffer(parsed) ? parsed : JSON.stringify(parsed)
      encodedType = type
    }
    const headers: string[] = []
    for (const name in incoming) {
      const value = incoming[name]
      if (value === undefined || dropped.has(name) || (listed !== null && listed.includes(name))) continue
      if (encodedType !== null && (name === 'content-length' || name === 'content-type')) continue
      if (typeof value === 'string') headers.push(name, value)
      else for (const item of value) headers.push(name, item)
    }
    if (encodedType !== null) headers.push('content-type', encodedType, 'content-length', String(Buffer.byteLength(body as string | Buffer)))
    // The request's own socket reference is dropped once its body has been read; the response keeps it.
    const socket = reply.raw.socket as (Socket & { encrypted?: boolean }) | null
    // A client gone before its request left: nobody would read the answer, so nothing is sent.
    if (socket === null || socket.destroyed) return
    const peer = socketIp(socket.remoteAddress as string)
    const trusted = forwarding.trusts(peer)
    headers.push('host', upstreamHost, 'x-forwarded-for', forwarding.forwardedFor(peer, incoming))
    const proto = trusted ? firstOf(incoming['x-forwarded-proto'] as string | undefined) : undefined
    headers.push('x-forwarded-proto', proto ?? (socket.encrypted === true ? 'https' : 'http'))
    const host = trusted ? firstOf(incoming['x-forwarded-host'] as string | undefined) ?? incoming.host : incoming.host
    if (host !== undefined) headers.push('x-forwarded-host', host)

    dispatcher.dispatch(
      { origin, path, method: request.method as Dispatcher.HttpMethod, headers, body, headersTimeout, bodyTimeout },
      new UpstreamExchange(request, reply, origin, rewriteLocation) as unknown as Dispatcher.DispatchHandler
    )
  }
}

/**
 * One request's exchange with the upstream, as undici's dispatch handler (its callback form, which
 * undici calls without an adapter in between).
 */
class UpstreamExchange {
  private readonly request: FastifyRequest
  private readonly reply: FastifyReply
  private readonly origin: string
  private readonly rewriteLocation: (location: string) => string
  // undici hands it over (onConnect) before anything else happens.
  private abort!: (err?: Error) => void
  private chunks: Buffer[] | null = null
  private stream: Readable | null = null
  /** The response header fields copied from the upstream's answer. */
  private copied: string[] | null = null
  /** Set once the client is gone: the exchange is abandoned. */
  private gone = false

  constructor (request: FastifyRequest, reply: FastifyReply, origin: string, rewriteLocation: (location: string) => string) {
    this.request = request
    this.reply = reply
    this.origin = origin
    this.rewriteLocation = rewriteLocation
  }

  onConnect (abort: (err?: Error) => void): void {
    this.abort = abort
  }

  onHeaders (statusCode: number, rawHeaders: Buffer[], resume: () => void): boolean {
    // Informational answers (100, 103) are the upstream's business with this hop.
    if (statusCode < 200) return true
    const { request, reply } = this
    recordUpstream(request, this.origin, statusCode)
    const socket = reply.raw.socket
    if (socket === null || socket.destroyed) {
      // The client went away while the upstream was answering: nothing is left to send to.
      this.gone = true
      this.abort()
      return false
    }
    let length = -1
    let typed = false
    let listed: string[] | null = null
    const names: string[] = []
    const values: string[] = []
    for (let i = 0; i < rawHeaders.length; i += 2) {
      const name = (rawHeaders[i] as Buffer).toString('latin1').toLowerCase()
      const value = (rawHeaders[i + 1] as Buffer).toString('latin1')
      if (name === 'connection') listed = connectionTokens(value)
      names.push(name)
      values.push(value)
    }
    for (let i = 0; i < names.length; i++) {
      const name = names[i] as string
      if (HOP_BY_HOP.includes(name) || (listed !== null && listed.includes(name))) continue
      let value = values[i] as string
      if (name === 'content-length') length = Number(value)
      else if (name === 'content-type') typed = true
      else if (name === 'location') value = this.rewriteLocation(value)
      reply.header(name, value)
    }
    this.copied = names
    // An HTTP/1 connection cannot be reused until the request body is read: if the upstream
    // answered before that, the client's connection ends with this response.
    if (!request.raw.complete) reply.header('connection', 'close')
    reply.code(statusCode)
    if (request.method === 'HEAD' || statusCode === 204 || statusCode === 304 || length === 0) {
      this.chunks = []
    } else if (typed && length > 0 && length <= BUFFERED_BODY_LIMIT) {
      this.chunks = []
    } else {
      const exchange = this
      this.stream = new Readable({
        read () { resume() },
        destroy (err, callback) {
          // The client went away, or the reply failed: stop reading from the upstream.
          if (exchange.stream !== null) exchange.abort()
          callback(err)
        }
      })
      reply.send(this.stream)
    }
    return true
  }

  onData (chunk: Buffer): boolean {
    if (this.stream !== null) return this.stream.push(chunk)
    this.chunks?.push(chunk)
    return true
  }

  onComplete (): void {
    const stream = this.stream
    if (stream !== null) {
      this.stream = null
      stream.push(null)
      return
    }
    // A client that went away aborted the exchange, which then ends in onError, not here.
    const chunks = this.chunks as Buffer[]
    if (chunks.length === 0) this.reply.send()
    else this.reply.send(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks))
  }

  onError (err: Error & { code?: string }): void {
    const stream = this.stream
    if (stream !== null) {
      // Part of the body is on its way to the client already: all that is left is to end it.
      this.stream = null
      stream.destroy(err)
      return
    }
    const { request, reply } = this
    if (this.gone || reply.sent) return
    // Headers may have been set from an answer whose body then failed: none of them apply now.
    if (this.copied !== null) for (const name of this.copied) reply.removeHeader(name)
    // A streamed body cut off at the body limit is the client's fault, not the upstream's.
    if (err.code === 'PORTCULLIS_CORE_PAYLOAD_TOO_LARGE') {
      reply.send(err)
      return
    }
    recordUpstream(request, this.origin, null)
    reply.log.warn({ err }, 'upstream request failed')
    reply.send(TIMEOUTS.has(err.code as string) ? new GatewayTimeout() : new BadGateway())
  }
}

// The upstream did not connect or answer in time.
const TIMEOUTS = new Set(['UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT'])

/**
 * The path sent upstream, or null for one that would leave the rewritten prefix: a `..` segment,
 * percent-encoded or not, with `/` or `\` as separator. Checked in full only when it could be one.
 */
function upstreamPath (rewritePrefix: string, rest: string): string | null {
  // The prefix itself goes to the rewritten prefix itself (`/api?x` to `/v1?x`), or to `/`.
  const path = rest === '' || rest.charCodeAt(0) === 63 /* ? */ ? `${rewritePrefix === '' ? '/' : rewritePrefix}${rest}` : rewritePrefix + rest
  const query = path.indexOf('?')
  const pathname = query === -1 ? path : path.slice(0, query)
  if (pathname.includes('.') || pathname.includes('%')) {
    let decoded: string
    try {
      decoded = decodeURIComponent(pathname)
    /* c8 ignore next 3 -- Fastify's router answers 400 to a malformed escape before any handler runs */
    } catch {
      return null
    }
    if (decoded.replaceAll('\\', '/').split('/').includes('..')) return null
  }
  return path
}

/** The upstream's redirects to its own paths, as the client must follow them: under the gateway's prefix. */
function locationRewriter (prefix: string, rewritePrefix: string): (location: string) => string {
  return (location) => {
    // Absolute and scheme-relative URLs are the upstream's to give.
    if (location.charCodeAt(0) !== 47 /* / */ || location.charCodeAt(1) === 47) return location
    if (rewritePrefix === '') return prefix + location
    if (location === rewritePrefix || location.startsWith(`${rewritePrefix}/`) || location.startsWith(`${rewritePrefix}?`)) {
      return prefix + location.slice(rewritePrefix.length)
    }
    return location
  }
}

/** The header names a Connection field lists, lower-cased (RFC 9110 §7.6.1). */
function connectionTokens (value: string): string[] {
  const tokens: string[] = []
  for (const token of value.split(',')) {
    const name = token.trim().toLowerCase()
    if (name !== '') tokens.push(name)
  }
  return tokens
}

// A body Fastify parsed always came with a content type.
function mediaTypeOf (contentType: string): string {
  return (contentType.split(';')[0] as string).trim().toLowerCase()
}

/**
 * The first value of a field a chain of proxies may have added to (Node joins repeated fields
 * with commas): the one the first proxy, nearest the client, wrote.
 */
function firstOf (value: string | undefined): string | undefined {
  return value === undefined ? undefined : (value.split(',')[0] as string).trim()
}

// The socket address as Node reports it: already canonical except for IPv4-mapped IPv6.
function socketIp (remoteAddress: string): string {
  return remoteAddress.startsWith('::ffff:') ? remoteAddress.slice(7) : remoteAddress
}
