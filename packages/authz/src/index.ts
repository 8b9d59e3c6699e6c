import { portcullisAuthz } from './plugin.js'

export { portcullisAuthz, PLUGIN_NAME, OVERRIDE_HEADERS, type AuthzOptions } from './plugin.js'
export { portcullisIpRules, compileIpRules, IP_RULES_PLUGIN, type IpRuleList, type IpRulesOptions } from './ip-rules.js'
export type { AuthzRule, Requirement } from './rules.js'
export type { RoleDefinition } from './roles.js'
export type { Conditions, ResourceLoader } from './route-checks.js'
export type { OwnerRule, OwnerField, OwnerCheck, OwnerResolver } from './ownership.js'
export type { PropertyRule, PropertyRules } from './properties.js'
export { compileCondition, MAX_CONDITION_LENGTH, type ConditionInput } from './conditions.js'
export { MASK } from './properties.js'
export * from './errors.js'
export default portcullisAuthz
