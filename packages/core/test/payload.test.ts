import t from 'tap'
import { Readable } from 'node:stream'
import { text } from 'node:stream/consumers'
import { isJsonMediaType, readPayload } from '../src/index.js'

t.test('a body within the limit is read as text, whatever form it came in', async (t) => {
  t.same(await readPayload('{"a":1}', 10), { text: '{"a":1}', payload: '{"a":1}' })
  const buffer = Buffer.from('{"é":1}')
  t.same(await readPayload(buffer, 10), { text: '{"é":1}', payload: buffer })
  const read = await readPayload(Readable.from([Buffer.from('{"a":'), '1}']), 7)
  t.equal(read.text, '{"a":1}')
  t.ok(Buffer.isBuffer(read.payload), 'a stream read in full is sent on as the bytes read')
})

t.test('a body past the limit is not read as text, and nothing of it is lost', async (t) => {
  const long = await readPayload(Readable.from(['abc', 'def', 'ghi']), 4)
  t.equal(long.text, null)
  t.equal(await text(long.payload as Readable), 'abcdefghi', 'the bytes already read come first, then the rest')
  const string = await readPayload('é'.repeat(3), 5)
  t.equal(string.text, null, 'the limit counts bytes, not characters')
  t.equal(await text(string.payload as Readable), 'ééé')
  const buffer = await readPayload(Buffer.alloc(6, 'x'), 5)
  t.equal(await text(buffer.payload as Readable), 'xxxxxx')
})

t.test('JSON media types, with parameters, case and whitespace as clients write them', async (t) => {
  for (const type of ['application/json', 'Application/JSON; charset=utf-8', ' application/problem+json', 'application/vnd.api+json;v=1']) t.ok(isJsonMediaType(type), type)
  for (const type of ['text/plain', 'application/jsonx', 'application/json-seq', 'text/json', undefined, 42]) t.notOk(isJsonMediaType(type), String(type))
})
