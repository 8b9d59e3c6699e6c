import { defineConfig } from 'tsup'

export default defineConfig({
  entry: ['src/index.ts', 'src/cli.ts'],
  format: ['esm', 'cjs'],
  dts: { entry: 'src/index.ts' },
  clean: true,
  // import.meta.url in the CommonJS build
  shims: true,
  target: 'node20',
  tsconfig: 'tsconfig.build.json'
})
