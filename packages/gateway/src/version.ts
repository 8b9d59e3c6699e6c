import { createRequire } from 'node:module'

// Read at run time from the package itself, so the command and the published version agree.
export const VERSION: string = (createRequire(import.meta.url)('../package.json') as { version: string }).version
