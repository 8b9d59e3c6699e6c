// Which sources each test file is responsible for covering: a package's tests cover every file of
// its src/ (so an untested file shows up as uncovered); end-to-end tests, which drive built
// artifacts or child processes, contribute none.
import { readdirSync } from 'node:fs'

export default function coverageMap (testFile) {
  const unit = /^(packages|examples)\/([^/]+)\/test\//.exec(testFile.replaceAll('\\', '/'))
  if (unit === null) return null
  const src = `${unit[1]}/${unit[2]}/src`
  return readdirSync(src, { recursive: true })
    .filter((file) => /\.[cm]?ts$/.test(file))
    .map((file) => `${src}/${file}`)
}
