import fp from 'fastify-plugin'
import type { FastifyPluginAsync } from 'fastify'
import { claimChainStep, checkKnownKeys, checkMode, deny, invalidOption, prepareDecision, recordDecision, recordPrepared, routeConfigOf, type Mode } from '@portcullis/core'
import { UserAgentDenied } from './errors.js'

export const USER_AGENTS_PLUGIN = '@portcullis/gateway/user-agents'

/** A case-insensitive substring of the User-Agent, or a regular expression (also case-insensitive). */
export type UserAgentPattern = string | { regex: string }

export interface UserAgentsOptions {
  /**
   * Deny the clients of the built-in list: vulnerability scanners, fuzzers, brute-forcers and
   * known attack bots (see `BUILTIN_USER_AGENTS`).
   * @default true
   */
  builtin?: boolean
  /** Further clients to deny. @example ['badbot', { regex: '^curl/7\\.[0-5]\\.' }] */
  deny?: UserAgentPattern[]
  /** Clients never denied by a User-Agent, even when a deny pattern matches them. @example ['internal-monitor/'] */
  allow?: UserAgentPattern[]
  /** What to do with a request without a User-Agent, or with an empty one. @default 'allow' */
  missing?: 'allow' | 'deny'
  /** @default 'enforce' */
  mode?: Mode
}

declare module 'fastify' {
  interface FastifyContextConfig {
    /** `false`: this route does not look at the User-Agent. */
    userAgents?: boolean
  }
}

/**
 * Clients that announce themselves as attack tools: scanners, fuzzers, brute-forcers and the
 * bots of known exploit campaigns. Each pattern is matched case-insensitively anywhere in the
 * User-Agent; word boundaries keep short names from matching ordinary words.
 */
export const BUILTIN_USER_AGENTS: ReadonlyArray<{ readonly name: string, readonly pattern: string }> = Object.freeze([
  // SQL injection and other injection tools
  { name: 'sqlmap', pattern: 'sqlmap' },
  { name: 'sqlninja', pattern: 'sqlninja' },
  { name: 'havij', pattern: 'havij' },
  { name: 'bsqlbf', pattern: 'bsqlbf' },
  { name: 'commix', pattern: 'commix' },
  { name: 'xsser', pattern: 'xsser' },
  { name: 'fimap', pattern: 'fimap' },
  { name: 'dotdotpwn', pattern: 'dotdotpwn' },
  // Web vulnerability scanners
  { name: 'nikto', pattern: 'nikto' },
  { name: 'nuclei', pattern: '\\bnuclei\\b' },
  { name: 'projectdiscovery', pattern: 'projectdiscovery' },
  { name: 'jaeles', pattern: 'jaeles' },
  { name: 'wpscan', pattern: 'wpscan' },
  { name: 'joomscan', pattern: 'joomscan' },
  { name: 'whatweb', pattern: 'whatweb' },
  { name: 'acunetix', pattern: 'acunetix' },
  { name: 'netsparker', pattern: 'netsparker' },
  { name: 'webinspect', pattern: 'webinspect' },
  { name: 'w3af', pattern: 'w3af' },
  { name: 'arachni', pattern: 'arachni' },
  { name: 'skipfish', pattern: 'skipfish' },
  { name: 'paros', pattern: '\\bparos/' },
  { name: 'openvas', pattern: 'openvas' },
  { name: 'nessus', pattern: '\\bnessus' },
  // Content discovery and fuzzing
  { name: 'dirbuster', pattern: 'dirbuster' },
  { name: 'gobuster', pattern: 'gobuster' },
  { name: 'feroxbuster', pattern: 'feroxbuster' },
  { name: 'dirsearch', pattern: 'dirsearch' },
  { name: 'ffuf', pattern: '\\bffuf\\b|fuzz faster u fool' },
  { name: 'wfuzz', pattern: 'wfuzz' },
  // Port and internet-wide scanners
  { name: 'nmap', pattern: '\\bnmap\\b' },
  { name: 'masscan', pattern: 'masscan' },
  { name: 'zgrab', pattern: 'zgrab' },
  { name: 'l9explore', pattern: '\\bl9(?:explore|tcpid)\\b' },
  // Credential brute-forcers and exploit-campaign bots
  { name: 'hydra', pattern: '\\(hydra\\)' },
  { name: 'zmeu', pattern: '\\bzmeu\\b' },
  { name: 'morfeus', pattern: 'morfeus f' },
  { name: 'jorgee', pattern: '\\bjorgee\\b' }
].map((entry) => Object.freeze(entry)))

/**
 * Checks the source of a regular expression that is joined with others into one expression:
 * it must compile, must not match an empty string (it would match everything), and must not
 * refer to groups (`\1`, named groups), whose numbers and names change once joined.
 */
export function checkRegexSource (value: unknown, path: string): string {
  const expected = 'a regular expression (a string) that compiles, cannot match an empty string and has no back-references or named groups'
  if (typeof value !== 'string' || value === '') throw invalidOption(path, expected, value)
  let compiled: RegExp
  try {
    compiled = new RegExp(value, 'i')
  } catch (err) {
    throw invalidOption(path, `${expected}; ${(err as Error).message}`, value)
  }
  if (compiled.test('') || refersToGroups(value)) throw invalidOption(path, expected, value)
  return value
}

function refersToGroups (source: string): boolean {
  for (let i = 0; i < source.length; i++) {
    const c = source[i]
    if (c === '\\') {
      // An escape: `\1`…`\9` and `\k<name>` refer to groups; skip the escaped character either way.
      if (/[1-9k]/.test(source.charAt(++i))) return true
    } else if (c === '(' && source.startsWith('?<', i + 1) && !/[=!]/.test(source.charAt(i + 3))) {
      return true
    }
  }
  return false
}

export function escapeRegex (text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
}

interface Rule {
  /** How the rule is named in decisions: `userAgents.builtin:sqlmap`, `userAgents.deny[2]`. */
  readonly rule: string
  readonly regex: RegExp
}

function compileList (value: unknown, path: string): Rule[] {
  if (value === undefined) return []
  if (!Array.isArray(value)) throw invalidOption(path, 'a list of strings or { regex } objects', value)
  return value.map((item: unknown, index) => {
    const at = `${path}[${index}]`
    let source: string
    if (typeof item === 'string') {
      if (item === '') throw invalidOption(at, 'a non-empty string or a { regex } object', item)
      source = escapeRegex(item)
    } else {
      const { regex } = checkKnownKeys(item, ['regex'], at)
      source = checkRegexSource(regex, `${at}.regex`)
    }
    return { rule: at, regex: new RegExp(source, 'i') }
  })
}

/** One expression for a whole list, so that a request costs one test; `null` for an empty list. */
function combine (rules: readonly Rule[]): RegExp | null {
  return rules.length === 0 ? null : new RegExp(rules.map((r) => `(?:${r.regex.source})`).join('|'), 'i')
}

const OPTION_KEYS = ['builtin', 'deny', 'allow', 'missing', 'mode']

const plugin: FastifyPluginAsync<UserAgentsOptions> = async (app, options) => {
  checkKnownKeys(options, OPTION_KEYS, 'userAgents')
  claimChainStep(app, { step: 2, name: USER_AGENTS_PLUGIN, hooks: ['onRequest'] })
  const mode = checkMode(options.mode, 'userAgents.mode')
  const builtin = options.builtin ?? true
  if (typeof builtin !== 'boolean') throw invalidOption('userAgents.builtin', 'a boolean', builtin)
  const missing = options.missing ?? 'allow'
  if (missing !== 'allow' && missing !== 'deny') throw invalidOption('userAgents.missing', 'one of allow, deny', missing)
  const denyRules = [
    ...(builtin ? BUILTIN_USER_AGENTS.map(({ name, pattern }) => ({ rule: `userAgents.builtin:${name}`, regex: new RegExp(pattern, 'i') })) : []),
    ...compileList(options.deny, 'userAgents.deny')
  ]
  const allowRules = compileList(options.allow, 'userAgents.allow')
  const denied = combine(denyRules)
  const allowed = combine(allowRules)

  // Until a route says `false`, no request needs its route's config looked up.
  let routesSay = false
  app.addHook('onRoute', (route) => {
    const own = (route.config as { userAgents?: unknown } | undefined)?.userAgents
    if (own === undefined) return
    if (typeof own !== 'boolean') throw invalidOption(`route ${String(route.method)} ${route.url} config.userAgents`, 'a boolean (false turns the check off)', own)
    if (!own) routesSay = true
  })

  const ok = prepareDecision({ plugin: USER_AGENTS_PLUGIN, outcome: 'allow', reason: 'PORTCULLIS_GATEWAY_USER_AGENT_OK' })
  app.addHook('onRequest', (request, _reply, done) => {
    if (routesSay && routeConfigOf(request).userAgents === false) return done()
    const agent = request.headers['user-agent']
    let refused: string | null = null
    if (agent === undefined || agent.trim() === '') {
      if (missing === 'deny') refused = 'userAgents.missing'
    } else if (denied?.test(agent) === true) {
      // The rare path: name the rule that matched, and let the allow list overrule it.
      const exempt = allowed?.test(agent) === true ? allowRules.find((r) => r.regex.test(agent)) as Rule : null
      if (exempt !== null) {
        recordDecision(request, { plugin: USER_AGENTS_PLUGIN, outcome: 'allow', reason: 'PORTCULLIS_GATEWAY_USER_AGENT_OK', rule: exempt.rule })
        return done()
      }
      refused = (denyRules.find((r) => r.regex.test(agent)) as Rule).rule
    }
    if (refused === null) {
      recordPrepared(request, ok)
      return done()
    }
    try {
      // The message stays generic: the User-Agent is never echoed back.
      deny(request, mode, USER_AGENTS_PLUGIN, new UserAgentDenied(), refused)
    } catch (err) {
      return done(err as Error)
    }
    done()
  })
}

/**
 * Refuses clients by their User-Agent: known attack tools (built in), your own deny list, and
 * optionally requests without one. Registered early (step 2): the cheapest rejection comes first.
 * A User-Agent is chosen by the client, so this stops careless and automated attackers only.
 */
export const portcullisUserAgents = fp(plugin, { fastify: '5.x', name: USER_AGENTS_PLUGIN, dependencies: ['@portcullis/core'] })
