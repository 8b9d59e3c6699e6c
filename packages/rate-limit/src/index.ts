import { portcullisRateLimit } from './plugin.js'

export { portcullisRateLimit, PLUGIN_NAME, type RateLimitOptions, type RuleOptions } from './plugin.js'
export { groupIp, KEY_PARTS, type KeyPart } from './keys.js'
export { ALGORITHMS, compileLimit, parseWindow, type Algorithm, type Check, type Lease, type Limit, type LimitOptions, type LimitState, type RateLimitStore, type Verdict } from './limits.js'
export { MemoryStore, type MemoryStoreOptions } from './memory-store.js'
export { RedisStore, CONSUME_SCRIPT, type RedisScriptClient, type RedisStoreOptions } from './redis-store.js'
export * from './errors.js'
export default portcullisRateLimit
