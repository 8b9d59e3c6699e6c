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
