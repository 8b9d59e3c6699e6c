import { portcullisCore } from './plugin.js'

export { portcullisCore, type CoreOptions, type CoreContext } from './plugin.js'
export * from './errors.js'
export * from './problem.js'
export * from './principal.js'
export * from './decisions.js'
export * from './mode.js'
export * from './options.js'
export * from './ip.js'
export * from './client-ip.js'
export * from './path.js'
export * from './snapshot.js'
export default portcullisCore
