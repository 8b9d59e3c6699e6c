import { portcullisMtls } from './plugin.js'

export { portcullisMtls, PLUGIN_NAME, type MtlsOptions, type MtlsContext, type RouteMtls } from './plugin.js'
export { mtlsServerOptions, type MtlsServerInput, type MtlsServerOptions } from './server.js'
export { thumbprintOf } from './certificate.js'
export type { PrincipalMapping, Pin, IdentitySource } from './identity.js'
export type { ForwardedOptions } from './forwarded.js'
export type { CrlSummary, PemInput } from './trust.js'
export * from './errors.js'
export default portcullisMtls
