// `pnpm portcullis …` in this repository: the portcullis command, with the quickstart's
// development identity as the default for `portcullis token`.
import { fileURLToPath } from 'node:url'

process.env.PORTCULLIS_DEV_IDENTITY ??= fileURLToPath(new URL('../examples/quickstart/.portcullis/dev-identity.json', import.meta.url))
await import('../packages/gateway/bin/portcullis.js')
