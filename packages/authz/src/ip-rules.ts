import fp from 'fastify-plugin'
import type { FastifyPluginAsync } from 'fastify'
import { claimChainStep, checkKnownKeys, checkMode, compileIpMatcher, deny, invalidOption, prepareDecision, recordPrepared, routeConfigOf, type Mode } from '@portcullis/core'
import { IpDenied } from './errors.js'

export const IP_RULES_PLUGIN = '@portcullis/authz/ip-rules'

/** Addresses, CIDR ranges or aliases (`loopback`, `private`, `linklocal`) to allow or deny. */
export interface IpRuleList {
  /** When given, only these may pass. */
  allow?: string[]
  /** These never pass, even when also allowed: deny wins. */
  deny?: string[]
}

export interface IpRulesOptions extends IpRuleList {
  /** @default 'enforce' */
  mode?: Mode
}

declare module 'fastify' {
  interface FastifyContextConfig {
    /** IP rules for this route, checked after the global ones (a route can only narrow). */
    ipRules?: IpRuleList
  }
}

type Check = (ip: string) => string | null

/** Compiles an allow/deny list once; the check answers the rule that refused, or null. */
export function compileIpRules (list: IpRuleList, path: string, keys: readonly string[] = ['allow', 'deny']): Check | null {
  checkKnownKeys(list, keys, path)
  const denied = list.deny === undefined ? null : compileIpMatcher(listOf(list.deny, `${path}.deny`), `${path}.deny`)
  const allowed = list.allow === undefined ? null : compileIpMatcher(listOf(list.allow, `${path}.allow`), `${path}.allow`)
  if (denied === null && allowed === null) return null
  return (ip) => {
    if (denied?.(ip) === true) return `${path}.deny`
    if (allowed !== null && !allowed(ip)) return `${path}.allow`
    return null
  }
}

function listOf (value: unknown, path: string): string[] {
  if (!Array.isArray(value)) throw invalidOption(path, 'a list of IP addresses, CIDR ranges or aliases', value)
  return value as string[]
}

const kRules = Symbol('portcullis.ipRules')

const plugin: FastifyPluginAsync<IpRulesOptions> = async (app, options) => {
  const mode = checkMode(options.mode, 'ipRules.mode')
  claimChainStep(app, { step: 2, name: IP_RULES_PLUGIN, hooks: ['onRequest'] })
  const global = compileIpRules(options, 'ipRules', ['allow', 'deny', 'mode'])
  app.addHook('onRoute', (route) => {
    const config = (route.config ?? {}) as { ipRules?: IpRuleList }
    if (config.ipRules === undefined) return
    route.config = Object.assign({ ...config }, { [kRules]: compileIpRules(config.ipRules, `route ${route.method} ${route.url} config.ipRules`) })
  })
  const ipAllowed = prepareDecision({ plugin: IP_RULES_PLUGIN, outcome: 'allow', reason: 'PORTCULLIS_AUTHZ_IP_OK' })
  app.addHook('onRequest', (request, _reply, done) => {
    const route = (routeConfigOf(request) as unknown as Record<typeof kRules, Check | null | undefined>)[kRules] ?? null
    if (global === null && route === null) return done()
    // The client IP comes from core: the socket, or the forwarded chain through trusted proxies only.
    const refused = global?.(request.clientIp) ?? route?.(request.clientIp) ?? null
    try {
      if (refused === null) recordPrepared(request, ipAllowed)
      else deny(request, mode, IP_RULES_PLUGIN, new IpDenied(), refused)
    } catch (err) {
      return done(err as Error)
    }
    done()
  })
}

/**
 * IP allow and deny lists, globally and per route, on the client IP from core. Registered early
 * (step 2 of the request path): the cheapest rejection comes first.
 */
export const portcullisIpRules = fp(plugin, { fastify: '5.x', name: IP_RULES_PLUGIN, dependencies: ['@portcullis/core'] })
