import { portcullis } from './plugin.js'

export { portcullis, replacement, withCredentialRedaction, type PortcullisOptions, type Replacement } from './plugin.js'
export { portcullisSecurityHeaders, securityHeadersOf, SECURITY_HEADERS_PLUGIN, type SecurityHeadersOptions } from './security-headers.js'
export { corsRegistration, type CorsOptions } from './cors.js'
export { RECOMMENDED_ORDER, type ChainStep } from './order.js'
export { buildGateway, SHADOW_OUTCOME_HEADER } from './standalone.js'
export { startPolicyGateway, checkPolicyFile, type PolicyGateway, type PolicyGatewayOptions, type PolicyRedisOptions } from './live.js'
export type { Generation } from './generation.js'
export type { AdminOptions } from './admin.js'
export { previewPolicy, type PreviewReport } from './preview.js'
export { inCanaryShare, canaryKey, type AutoRollbackOptions, type SideCounts, type TrialStats } from './trial.js'
export {
  loadGatewayConfig, validateGatewayConfig, resolveConfigPaths, DEFAULT_HOST, DEFAULT_PORT, DEFAULT_UPSTREAM_TIMEOUT, HEALTH_PATHS,
  ROUTE_METHODS, type GatewayConfig,
  type AuditConfig, type RateLimitStoreConfig, type UpstreamConfig, type UpstreamRoute, type ValidGatewayConfig, type ValidUpstream
} from './config.js'
export type { UpstreamResource } from './resources.js'
export { installShutdown, type ShutdownHost } from './shutdown.js'
export default portcullis
export { portcullisUserAgents, BUILTIN_USER_AGENTS, USER_AGENTS_PLUGIN, type UserAgentsOptions, type UserAgentPattern } from './user-agents.js'
export { portcullisDeprecation, DEPRECATION_PLUGIN, type DeprecationOptions, type RouteDeprecation, type DeprecationDate } from './deprecation.js'
export { portcullisMasking, MASKING_PLUGIN, DEFAULT_MASKING_MAX_BYTES, type MaskingOptions, type MaskingRouteOptions, type MaskingPattern } from './masking.js'
export { createChainObserver, metricsHandler, UNMATCHED_ROUTE, DEFAULT_METRICS_BUCKETS, DEFAULT_METRICS_PREFIX, POLICY_UPDATE_OUTCOMES, type ChainObserver, type ObserveOptions, type MetricsOptions, type TracingOptions, type StageHook, type PolicyUpdateOutcome, type WatchedStore } from './observe.js'
