import { test } from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import { portcullisCore } from '@portcullis/core'
import { BUILTIN_USER_AGENTS, portcullisUserAgents, type UserAgentsOptions } from '../src/index.js'

async function appWith (options?: UserAgentsOptions): Promise<FastifyInstance & { served: number }> {
  const app = Fastify() as unknown as FastifyInstance & { served: number }
  app.served = 0
  await app.register(portcullisCore)
  await app.register(portcullisUserAgents, options ?? {})
  app.get('/', async (request) => {
    app.served++
    return { decisions: (request.decisions ?? []).map((d) => `${d.outcome} ${d.reason} ${d.rule ?? '-'}`) }
  })
  return app
}

// Without a value, the request has no User-Agent at all (inject sends one of its own otherwise).
const ua = (agent?: string): { headers: Record<string, string | undefined> } => ({ headers: { 'user-agent': agent } })

test('attack tools of the built-in list are refused with a generic 403, before the handler', async (t) => {
  const app = await appWith()
  const tools: Array<[string, string]> = [
    ['sqlmap/1.7.2#stable (https://sqlmap.org)', 'sqlmap'],
    ['Mozilla/5.00 (Nikto/2.1.6) (Evasions:None) (Test:007596)', 'nikto'],
    ['Mozilla/5.0 (compatible; Nmap Scripting Engine; https://nmap.org/book/nse.html)', 'nmap'],
    ['masscan/1.3 (https://github.com/robertdavidgraham/masscan)', 'masscan'],
    ['Mozilla/5.0 zgrab/0.x', 'zgrab'],
    ['Nuclei - Open-source project (github.com/projectdiscovery/nuclei)', 'nuclei'],
    ['WPScan v3.8.22 (https://wpscan.com/wordpress-security-scanner)', 'wpscan'],
    ['gobuster/3.6', 'gobuster'],
    ['Fuzz Faster U Fool v2.1.0-dev', 'ffuf'],
    ['Mozilla/4.0 (Hydra)', 'hydra'],
    ['Mozilla/5.0 (Windows NT 6.1) acunetix_wvs_security_test', 'acunetix'],
    ['DirBuster-1.0-RC1 (http://www.owasp.org/index.php/Category:OWASP_DirBuster_Project)', 'dirbuster'],
    ['SQLMAP/1.0', 'sqlmap']
  ]
  const rules: string[] = []
  app.addHook('onResponse', async (request) => { rules.push(...(request.decisions ?? []).map((d) => `${d.outcome} ${d.rule ?? '-'}`)) })
  for (const [agent] of tools) {
    const res = await app.inject({ url: '/', ...ua(agent) })
    t.equal(res.statusCode, 403, agent)
    t.equal(res.headers['content-type'], 'application/problem+json; charset=utf-8')
    t.match(res.json(), { code: 'PORTCULLIS_GATEWAY_USER_AGENT_DENIED', detail: 'This client is not allowed', status: 403 })
    t.notMatch(res.body, new RegExp(agent.slice(0, 6).replace(/[()]/g, '.'), 'i'), 'the User-Agent is not echoed back')
  }
  t.same(rules, tools.map(([, name]) => `deny userAgents.builtin:${name}`), 'each denial names the entry that matched')
  t.equal(app.served, 0, 'no denied request reached the handler')
})

test('ordinary clients pass, and words that merely contain a tool name are no match', async (t) => {
  const app = await appWith()
  for (const agent of [
    'Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0',
    'curl/8.4.0',
    'Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)',
    'unmapped-client/1.0',
    'nucleic-acids-lab/2.0',
    'paros-travel-app 3.1'
  ]) {
    const res = await app.inject({ url: '/', ...ua(agent) })
    t.equal(res.statusCode, 200, agent)
    t.same(res.json(), { decisions: ['allow PORTCULLIS_GATEWAY_USER_AGENT_OK -'] })
  }
  t.ok(BUILTIN_USER_AGENTS.length >= 30)
  t.ok(Object.isFrozen(BUILTIN_USER_AGENTS) && Object.isFrozen(BUILTIN_USER_AGENTS[0]))
})

test('deny patterns of your own: substrings match case-insensitively and literally, regexes as written', async (t) => {
  const app = await appWith({ builtin: false, deny: ['Bad.Bot', { regex: '^python-requests/2\\.[0-9]\\.' }] })
  const decisions: string[] = []
  app.addHook('onResponse', async (request) => { decisions.push(...(request.decisions ?? []).map((d) => `${d.outcome} ${d.rule ?? '-'}`)) })
  t.equal((await app.inject({ url: '/', ...ua('Mozilla/5.0 (bad.bot 1.0)') })).statusCode, 403)
  t.equal((await app.inject({ url: '/', ...ua('BAD.BOT') })).statusCode, 403)
  t.equal((await app.inject({ url: '/', ...ua('badxbot') })).statusCode, 200, 'a dot in a string is a dot, not any character')
  t.equal((await app.inject({ url: '/', ...ua('Python-Requests/2.3.1') })).statusCode, 403)
  t.equal((await app.inject({ url: '/', ...ua('python-requests/2.31.0') })).statusCode, 200)
  t.equal((await app.inject({ url: '/', ...ua('sqlmap/1.7') })).statusCode, 200, 'builtin: false turns the built-in list off')
  t.same(decisions, ['deny userAgents.deny[0]', 'deny userAgents.deny[0]', 'allow -', 'deny userAgents.deny[1]', 'allow -', 'allow -'])
})

test('with no list at all, every User-Agent passes', async (t) => {
  const app = await appWith({ builtin: false })
  t.equal((await app.inject({ url: '/', ...ua('sqlmap/1.7') })).statusCode, 200)
})

test('the allow list wins over every deny list, and is only asked when a deny pattern matched', async (t) => {
  const app = await appWith({ deny: ['scanner'], allow: ['acme-monitor/', { regex: '^uptime-probe \\d+$' }] })
  const monitored = await app.inject({ url: '/', ...ua('acme-monitor/2.0 (nmap scanner based)') })
  t.equal(monitored.statusCode, 200)
  t.same(monitored.json(), { decisions: ['allow PORTCULLIS_GATEWAY_USER_AGENT_OK userAgents.allow[0]'] })
  t.same((await app.inject({ url: '/', ...ua('Uptime-Probe 42') })).json(), { decisions: ['allow PORTCULLIS_GATEWAY_USER_AGENT_OK -'] }, 'not denied in the first place: no exemption recorded')
  t.equal((await app.inject({ url: '/', ...ua('uptime-probe 42 scanner') })).statusCode, 403, 'an allow regex must match as written')
  t.equal((await app.inject({ url: '/', ...ua('other scanner') })).statusCode, 403)
})

test('requests without a User-Agent pass by default, or are refused with missing: deny', async (t) => {
  const open = await appWith()
  t.equal((await open.inject({ url: '/', ...ua() })).statusCode, 200)
  const strict = await appWith({ missing: 'deny', allow: ['x'] })
  const rules: string[] = []
  strict.addHook('onResponse', async (request) => { rules.push(...(request.decisions ?? []).map((d) => `${d.outcome} ${d.rule ?? '-'}`)) })
  for (const agent of [undefined, '', '   ']) {
    const res = await strict.inject({ url: '/', ...ua(agent) })
    t.equal(res.statusCode, 403, JSON.stringify(agent))
    t.equal(res.json().code, 'PORTCULLIS_GATEWAY_USER_AGENT_DENIED')
  }
  t.same(rules, ['deny userAgents.missing', 'deny userAgents.missing', 'deny userAgents.missing'])
  t.equal((await strict.inject({ url: '/', ...ua('curl/8.4.0') })).statusCode, 200)
})

test('report mode records would-deny and serves the request', async (t) => {
  const app = await appWith({ mode: 'report', missing: 'deny' })
  const res = await app.inject({ url: '/', ...ua('sqlmap/1.7') })
  t.equal(res.statusCode, 200)
  t.same(res.json(), { decisions: ['would-deny PORTCULLIS_GATEWAY_USER_AGENT_DENIED userAgents.builtin:sqlmap'] })
  t.same((await app.inject({ url: '/', ...ua() })).json(), { decisions: ['would-deny PORTCULLIS_GATEWAY_USER_AGENT_DENIED userAgents.missing'] })
})

test('a route can turn the check off with config.userAgents: false', async (t) => {
  const app = await appWith({ missing: 'deny' })
  app.get('/health', { config: { userAgents: false } }, async (request) => ({ decisions: request.decisions }))
  app.get('/on', { config: { userAgents: true } }, async () => 'on')
  t.same((await app.inject({ url: '/health', ...ua('masscan/1.3') })).json(), { decisions: null }, 'not looked at, nothing recorded')
  t.equal((await app.inject({ url: '/health' })).statusCode, 200)
  t.equal((await app.inject({ url: '/on', ...ua('masscan/1.3') })).statusCode, 403)
  t.equal((await app.inject({ url: '/', ...ua('masscan/1.3') })).statusCode, 403, 'routes without a say keep the check')
  t.equal((await app.inject({ url: '/missing', ...ua('masscan/1.3') })).statusCode, 403, 'unknown routes too')
})

test('bad options fail startup, naming the option and what is allowed', async (t) => {
  const cases: Array<[unknown, RegExp]> = [
    [{ block: [] }, /^userAgents\.block is not a known option; allowed: builtin, deny, allow, missing, mode$/],
    [{ builtin: 'yes' }, /^userAgents\.builtin must be a boolean \(got "yes"\)$/],
    [{ missing: 'block' }, /^userAgents\.missing must be one of allow, deny \(got "block"\)$/],
    [{ mode: 'audit' }, /^userAgents\.mode must be one of enforce, report/],
    [{ deny: 'sqlmap' }, /^userAgents\.deny must be a list of strings or \{ regex \} objects \(got "sqlmap"\)$/],
    [{ allow: [''] }, /^userAgents\.allow\[0\] must be a non-empty string or a \{ regex \} object/],
    [{ deny: ['x', 42] }, /^userAgents\.deny\[1\] must be an object \(got 42\)$/],
    [{ deny: [{ pattern: 'x' }] }, /^userAgents\.deny\[0\]\.pattern is not a known option; allowed: regex$/],
    [{ deny: [{ regex: 7 }] }, /^userAgents\.deny\[0\]\.regex must be a regular expression \(a string\) that compiles.* \(got 7\)$/],
    [{ deny: [{ regex: '' }] }, /^userAgents\.deny\[0\]\.regex must be a regular expression/],
    [{ deny: [{ regex: 'bot(' }] }, /^userAgents\.deny\[0\]\.regex must be .*; Invalid regular expression: .*\(got "bot\("\)$/],
    [{ deny: [{ regex: 'x*' }] }, /cannot match an empty string/],
    [{ allow: [{ regex: '(a)b\\1' }] }, /^userAgents\.allow\[0\]\.regex must be .*no back-references or named groups \(got "\(a\)b\\\\1"\)$/],
    [{ deny: [{ regex: '(?<tool>sqlmap)' }] }, /no back-references or named groups/],
    [{ deny: [{ regex: '(?<tool>a)\\k<tool>' }] }, /no back-references or named groups/]
  ]
  for (const [options, message] of cases) {
    const app = Fastify()
    await app.register(portcullisCore)
    app.register(portcullisUserAgents, options as UserAgentsOptions)
    await t.rejects(async () => app.ready(), { code: 'PORTCULLIS_CORE_INVALID_OPTION', message }, JSON.stringify(options))
  }
  const route = Fastify()
  await route.register(portcullisCore)
  await route.register(portcullisUserAgents)
  await t.rejects(async () => {
    route.get('/x', { config: { userAgents: 'off' as never } }, async () => 'x')
    await route.ready()
  }, { message: 'route GET /x config.userAgents must be a boolean (false turns the check off) (got "off")' })
})

test('regexes may use escapes, lookbehinds and lookaheads, which refer to no group', async (t) => {
  const app = await appWith({ builtin: false, deny: [{ regex: '(?<=bot/)\\d+\\\\1' }, { regex: '(?<!good)crawler(?=/)' }, { regex: '\\(compatible; evil\\)' }] })
  t.equal((await app.inject({ url: '/', ...ua('bot/42\\1') })).statusCode, 403, 'an escaped backslash followed by 1 is no back-reference')
  t.equal((await app.inject({ url: '/', ...ua('bad crawler/1') })).statusCode, 403)
  t.equal((await app.inject({ url: '/', ...ua('goodcrawler/1') })).statusCode, 200)
  t.equal((await app.inject({ url: '/', ...ua('Mozilla/5.0 (compatible; Evil)') })).statusCode, 403)
})

test('the plugin needs core', async (t) => {
  const app = Fastify()
  app.register(portcullisUserAgents)
  await t.rejects(async () => app.ready(), /@portcullis\/core/)
})
