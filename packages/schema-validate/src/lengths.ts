import { _, str, type Ajv, type KeywordCxt } from 'ajv'

/**
 * `minLength` and `maxLength` as JSON Schema says, in code points, and cheaply. Ajv counts the
 * code points of every string it checks, one character at a time; a string's `length` (UTF-16
 * units) is never fewer than its code points and never more than twice as many, which settles
 * nearly every check without counting: a string of at most `maxLength` units is short enough; one
 * of at least twice `minLength` units is long enough. Only the strings in between are counted.
 */
export function exactLengths (ajv: Ajv): void {
  ajv.removeKeyword('maxLength')
  ajv.removeKeyword('minLength')
  for (const keyword of ['maxLength', 'minLength'] as const) {
    ajv.addKeyword({
      keyword,
      type: 'string',
      schemaType: 'number',
      error: {
        message: ({ schemaCode }) => str`must NOT have ${keyword === 'maxLength' ? 'more' : 'fewer'} than ${schemaCode} characters`,
        params: ({ schemaCode }) => _`{limit: ${schemaCode}}`
      },
      code (cxt: KeywordCxt) {
        const { data, schemaCode, gen } = cxt
        const count = gen.scopeValue('func', { ref: codePoints })
        cxt.fail(keyword === 'maxLength'
          ? _`${data}.length > ${schemaCode} && ${count}(${data}) > ${schemaCode}`
          : _`${data}.length < ${schemaCode} || (${data}.length < 2 * ${schemaCode} && ${count}(${data}) < ${schemaCode})`)
      }
    })
  }
}

/** The code points of a string: a surrogate pair is one, a lone surrogate one too. */
export function codePoints (text: string): number {
  let count = 0
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i)
    if (unit >= 0xd800 && unit <= 0xdbff && i + 1 < text.length && (text.charCodeAt(i + 1) & 0xfc00) === 0xdc00) i++
    count++
  }
  return count
}
