// Writes the policy document's JSON Schema next to the build, for editors and other tools:
// `@portcullis/policy/policy.schema.json`.
import { writeFileSync } from 'node:fs'
import { policySchema } from '../dist/index.js'

writeFileSync(new URL('../dist/policy.schema.json', import.meta.url), `${JSON.stringify(policySchema, null, 2)}\n`)
