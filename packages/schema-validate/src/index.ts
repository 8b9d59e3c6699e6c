import { portcullisSchemaValidate } from './plugin.js'

export { portcullisSchemaValidate, PLUGIN_NAME, MAX_CHECKED_RESPONSE, shapeOf, violationsOf, type SchemaValidateOptions, type RouteValidation, type UnknownOperations } from './plugin.js'
export { essenceOf } from './media.js'
export { documentRoutes, type DocumentRoute } from './document.js'
export type { RouteSchemas } from './operations.js'
export * from './errors.js'
export default portcullisSchemaValidate
