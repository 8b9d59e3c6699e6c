import { portcullisAuthn } from './plugin.js'

export { portcullisAuthn, PLUGIN_NAME, type AuthnOptions, type RouteAuthn } from './plugin.js'
export type { ApiKeyMethodOptions, BasicMethodOptions, MethodOptions } from './methods.js'
export {
  createApiKey, hashApiKey, MemoryApiKeyStore, RedisApiKeyStore, MIN_API_KEY_LENGTH, MAX_API_KEY_LENGTH,
  type ApiKeyRecord, type ApiKeyStore, type KeyOwner
} from './api-key.js'
export { hashPassword, DEFAULT_SCRYPT, type BasicUser } from './basic.js'
export type { JwtKey, JwtLocalKeys, JwtMethodOptions, JwtPrincipalMapping, JwtRemoteKeys } from './jwt.js'
export type { RemoteKeyOptions } from './remote-keys.js'
export type { IntrospectionMethodOptions } from './introspection.js'
export {
  MemoryRevocationStore, RedisRevocationStore, revocationKey,
  type RedisRevocationOptions, type RevocationStore
} from './revocation.js'
export type { RedisLike } from './redis.js'
export {
  devJwtMethod, loadDevIdentity, loadOrCreateDevIdentity, signDevToken,
  type DevIdentity, type DevPrincipal
} from './dev-identity.js'
export * from './errors.js'
export default portcullisAuthn
