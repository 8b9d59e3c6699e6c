import { unwatchFile, watchFile } from 'node:fs'
import type { TLSSocket } from 'node:tls'
import fp from 'fastify-plugin'
import { LRUCache } from 'lru-cache'
import type { FastifyPluginAsync, FastifyRequest } from 'fastify'
import {
  claimChainStep, checkKnownKeys, checkMode, checkNumber, deny, invalidOption, prepareDecision, recordPrepared, routeConfigOf, setClientCertificate,
  setPrincipal, withHeaders, type Mode, type PortcullisError, type Principal
} from '@portcullis/core'
import { parseCertificate, type ParsedCertificate } from './certificate.js'
import {
  CertificateExpired, CertificateInvalid, CertificateNotAllowed, CertificateNotYetValid, CertificateRequired, CertificateRevoked, RevocationUnknown
} from './errors.js'
import { compileForwarded, type Forwarded, type ForwardedOptions } from './forwarded.js'
import { compileIdentity, type Identify, type Pin, type PrincipalMapping } from './identity.js'
import { CrlStore, loadCaBundle, type CrlSummary, type PemInput, type TrustAnchor } from './trust.js'

export const PLUGIN_NAME = '@portcullis/mtls'

/** What a route requires of the client certificate. `false`: the route does not look at it. */
export type RouteMtls = false | {
  /** Refuse requests without a certificate. A certificate that is presented is verified either way. @default the plugin's `required` */
  required?: boolean
  /** @default the plugin's mode */
  mode?: Mode
}

export interface MtlsOptions {
  /**
   * The CA bundle (PEM) client certificates chain to: the one given to `mtlsServerOptions`.
   * Needed for `crl` (CRLs must be signed by one of these CAs) and `forwarded`.
   */
  ca?: PemInput
  /** CRL files (PEM or DER), read at startup and again by `app.mtls.reloadCrl()`. @default [] */
  crl?: string[]
  /** Reload the CRL files when they change. @default false */
  watchCrl?: boolean
  /** How often, in milliseconds, watched CRL files are looked at. @default 5000 */
  crlWatchInterval?: number
  /** What routes without `config.mtls` require: a certificate (`true`) or not. @default true */
  required?: boolean
  /** @default 'enforce' */
  mode?: Mode
  /**
   * How a verified certificate becomes `request.principal`; `false` sets only
   * `request.clientCertificate` (to bind tokens, say, with authn setting the principal).
   * @default { from: ['uri', 'dns', 'cn'], type: 'service' }
   */
  principal?: false | PrincipalMapping
  /**
   * Certificates accepted by SHA-256 thumbprint (`x5t#S256`), each with its principal. With pins,
   * every other certificate is refused with 403, however well it verifies.
   */
  pins?: Record<string, Pin>
  /** Certificates forwarded by TLS-terminating proxies, in a header, from their addresses only. */
  forwarded?: ForwardedOptions
}

export interface MtlsContext {
  /**
   * Reads and verifies the CRL files again. On any failure it rejects and the lists loaded
   * before keep serving.
   */
  reloadCrl: () => Promise<CrlSummary>
}

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Client-certificate requirement of this route (`@portcullis/mtls`); `false` turns it off. */
    mtls?: RouteMtls
  }
  interface FastifyInstance {
    mtls: MtlsContext
  }
}

interface Policy {
  required: boolean
  mode: Mode
}

/**
 * A certificate as the plugin keeps it, per connection or per forwarded value: `parsed` is `null`
 * for a forwarded one that could not be read. `null` instead of a peer: no certificate at all.
 */
interface Peer {
  readonly parsed: ParsedCertificate | null
  /** Whether its chain verified against the CA bundle (by the TLS handshake, or here). */
  readonly trusted: boolean
  /** Its principal; `null` when it has none (or `principal: false`). */
  readonly principal: Principal | null
}

const OPTION_KEYS = ['ca', 'crl', 'watchCrl', 'crlWatchInterval', 'required', 'mode', 'principal', 'pins', 'forwarded']

const kPolicy = Symbol('portcullis.mtls.policy')
type WithPolicy = Record<typeof kPolicy, Policy | null | undefined>

const plugin: FastifyPluginAsync<MtlsOptions> = async (app, options) => {
  checkKnownKeys(options, OPTION_KEYS, 'mtls')
  claimChainStep(app, { step: 3, name: PLUGIN_NAME, hooks: ['onRequest'] })
  const mode = checkMode(options.mode, 'mtls.mode')
  const required = options.required ?? true
  if (typeof required !== 'boolean') throw invalidOption('mtls.required', 'a boolean', required)
  const anchors: TrustAnchor[] | null = options.ca === undefined ? null : loadCaBundle(options.ca, 'mtls.ca')
  const identify: Identify | null = options.principal === false
    ? (options.pins === undefined ? null : compileIdentity(undefined, options.pins))
    : compileIdentity(options.principal, options.pins)
  if (options.principal !== undefined && options.principal !== false && options.pins !== undefined) {
    throw invalidOption('mtls.principal', 'left out when mtls.pins is set: a pinned certificate\'s principal is its pin')
  }
  const forwarded: Forwarded | null = options.forwarded === undefined ? null : compileForwarded(options.forwarded, anchors, 'mtls.forwarded')
  const crls = await loadCrls(app, options, anchors)

  const compile = (route: RouteMtls | undefined, path: string): Policy | null => {
    if (route === false) return null
    const spec = checkKnownKeys(route ?? {}, ['required', 'mode'], path) as Exclude<RouteMtls, false>
    if (spec.required !== undefined && typeof spec.required !== 'boolean') throw invalidOption(`${path}.required`, 'a boolean', spec.required)
    return { required: spec.required ?? required, mode: spec.mode === undefined ? mode : checkMode(spec.mode, `${path}.mode`) }
  }
  const defaults = compile(undefined, 'mtls') as Policy
  app.addHook('onRoute', (route) => {
    const config = (route.config ?? {}) as { mtls?: RouteMtls }
    const compiled = config.mtls === undefined ? defaults : compile(config.mtls, `route ${String(route.method)} ${route.url} config.mtls`)
    route.config = Object.assign({ ...config }, { [kPolicy]: compiled })
  })

  const peerOf = (parsed: ParsedCertificate | null, trusted: boolean): Peer => {
    const principal = parsed === null || !trusted || identify === null ? null : identify(parsed.certificate)
    return { parsed, trusted, principal }
  }
  const unreadable: Peer = { parsed: null, trusted: false, principal: null }

  // A connection's certificate does not change: it is read and mapped once per connection.
  const connections = new WeakMap<object, Peer | null>()
  const fromConnection = (request: FastifyRequest): Peer | null => {
    const socket = request.raw.socket as Partial<TLSSocket>
    let peer = connections.get(socket)
    if (peer !== undefined) return peer
    const x509 = typeof socket.getPeerX509Certificate === 'function' ? socket.getPeerX509Certificate() : undefined
    // `authorized` is OpenSSL's verdict on the chain, against the listener's `ca`.
    peer = x509 === undefined ? null : peerOf(parseCertificate(x509.raw, 'tls'), socket.authorized === true)
    connections.set(socket, peer)
    return peer
  }
  // A proxy forwards the same few certificates over and over: each header value is verified once,
  // then answered from here for a few minutes. Validity dates and revocation are checked on
  // every request regardless.
  const fromHeader = new LRUCache<string, Promise<Peer>>({ max: 1000, ttl: 5 * 60_000 })
  const forwardedPeer = async (value: string): Promise<Peer> => {
    let peer = fromHeader.get(value)
    if (peer === undefined) {
      peer = (forwarded as Forwarded).read(value).then((result) => result === 'invalid' ? unreadable : peerOf(result, true))
      fromHeader.set(value, peer)
    }
    return await peer
  }

  // Facts about the certificate the client holds come first (its dates), then whether it is
  // trusted, revoked, and allowed here.
  const refusalOf = (peer: Peer, request: FastifyRequest): PortcullisError | null => {
    if (peer.parsed === null) return new CertificateInvalid()
    const { certificate, issuerKey } = peer.parsed
    const now = Date.now()
    if (now < certificate.notBefore) return new CertificateNotYetValid()
    if (now > certificate.notAfter) return new CertificateExpired()
    if (!peer.trusted) return new CertificateInvalid()
    const status = crls === null ? 'good' : crls.status(issuerKey, certificate.serialNumber, now)
    if (status === 'revoked') return new CertificateRevoked()
    if (status === 'stale') {
      request.log.warn('the CRL of the client certificate\'s issuer is past its next update: certificates of that issuer are refused until it is reloaded')
      return withHeaders(new RevocationUnknown(), { 'retry-after': '60' })
    }
    if (identify !== null && peer.principal === null) return new CertificateNotAllowed()
    return null
  }

  const allowed = prepareDecision({ plugin: PLUGIN_NAME, outcome: 'allow', reason: 'PORTCULLIS_MTLS_OK' })
  const absent = prepareDecision({ plugin: PLUGIN_NAME, outcome: 'allow', reason: 'PORTCULLIS_MTLS_NO_CERTIFICATE' })

  app.addHook('onRequest', async (request) => {
    // A trusted proxy speaks for its client: only the header it forwards counts, never the
    // certificate the proxy itself connected with. Anyone else's header is removed unread, so
    // neither a later hook nor an upstream can take it for the proxy's.
    let peer: Peer | null | undefined
    if (forwarded !== null) {
      // Node joins a header sent more than once into one value, as a proxy appending to it would.
      const value = request.headers[forwarded.header]
      // A socket already closed has no address: as text, "undefined", which no range matches.
      if (forwarded.isTrusted(String(request.raw.socket.remoteAddress))) peer = value === undefined ? null : await forwardedPeer(String(value))
      else if (value !== undefined) delete request.headers[forwarded.header]
    }
    if (request.is404) return
    const compiled = (routeConfigOf(request) as unknown as WithPolicy)[kPolicy]
    const policy = compiled === undefined ? defaults : compiled
    if (policy === null) return
    if (peer === undefined) peer = fromConnection(request)
    if (peer === null) {
      if (policy.required) deny(request, policy.mode, PLUGIN_NAME, new CertificateRequired())
      else recordPrepared(request, absent)
      return
    }
    const refusal = refusalOf(peer, request)
    if (refusal !== null) {
      request.log.info({ code: refusal.code }, 'client certificate refused')
      deny(request, policy.mode, PLUGIN_NAME, refusal)
      return
    }
    setClientCertificate(request, (peer.parsed as ParsedCertificate).certificate)
    if (peer.principal !== null) setPrincipal(request, peer.principal)
    recordPrepared(request, allowed)
  })
}

async function loadCrls (app: Parameters<FastifyPluginAsync>[0], options: MtlsOptions, anchors: TrustAnchor[] | null): Promise<CrlStore | null> {
  const files = options.crl ?? []
  if (!Array.isArray(files) || !files.every((file) => typeof file === 'string' && file !== '')) throw invalidOption('mtls.crl', 'a list of CRL file paths', files)
  const watch = options.watchCrl ?? false
  if (typeof watch !== 'boolean') throw invalidOption('mtls.watchCrl', 'a boolean', watch)
  const interval = checkNumber(options.crlWatchInterval, 5000, 'mtls.crlWatchInterval', 'a number of milliseconds from 100', (n) => n >= 100)
  if (files.length === 0) {
    app.decorate('mtls', { reloadCrl: async () => ({ files: 0, issuers: 0, revoked: 0 }) })
    return null
  }
  if (anchors === null) throw invalidOption('mtls.ca', 'the CA bundle that signs the CRLs, when mtls.crl is set')
  const store = new CrlStore(files, anchors)
  try {
    await store.reload()
  } catch (err) {
    throw invalidOption('mtls.crl', `readable CRLs signed by a CA of mtls.ca: ${(err as Error).message}`)
  }
  app.decorate('mtls', { reloadCrl: async () => await store.reload() })
  if (watch) {
    const reload = (): void => {
      store.reload().then(
        (summary) => { app.log.info({ crl: summary }, 'CRLs reloaded') },
        (err: Error) => { app.log.error({ err: err.message }, 'CRL reload failed: the lists loaded before keep serving') }
      )
    }
    for (const file of files) watchFile(file, { interval, persistent: false }, reload)
    app.addHook('onClose', async () => { for (const file of files) unwatchFile(file, reload) })
  }
  return store
}

/**
 * Turns the verified client certificate of a request into `request.clientCertificate` and, unless
 * told otherwise, `request.principal`. Routes follow the plugin's `required` unless their
 * `config.mtls` says otherwise; a certificate that is presented and fails (untrusted, expired,
 * not yet valid, revoked) is refused with 401 on every route that looks at certificates.
 */
export const portcullisMtls = fp(plugin, { fastify: '5.x', name: PLUGIN_NAME, dependencies: ['@portcullis/core'] })
