import { test } from 'tap'
import Fastify from 'fastify'
import { PassThrough } from 'node:stream'
import { portcullisCore } from '@portcullis/core'
import { portcullisAuditLog, type AuditLogOptions } from '../src/index.js'

test('bad options fail startup, naming the option and what is allowed', async (t) => {
  const cases: Array<[AuditLogOptions, RegExp]> = [
    [{ sink: [] } as never, /audit\.sink is not a known option; allowed: sinks, redact/],
    [{ sinks: [] }, /audit\.sinks must be a non-empty list of sinks/],
    [{ sinks: [{ type: 'syslog' }] } as never, /audit\.sinks\[0\]\.type must be one of stdout, stream, file, http, pino \(got "syslog"\)/],
    [{ sinks: [null] } as never, /audit\.sinks\[0\]\.type must be one of/],
    [{ sinks: [{ type: 'stdout', path: 'x' }] } as never, /audit\.sinks\[0\]\.path is not a known option; allowed: type, flushInterval, maxBufferBytes/],
    [{ sinks: [{ type: 'stdout', maxBufferBytes: 0 }] }, /audit\.sinks\[0\]\.maxBufferBytes must be a whole number of bytes from 1/],
    [{ sinks: [{ type: 'file', path: 'a.log', flushInterval: 0 }] }, /audit\.sinks\[0\]\.flushInterval must be a number of milliseconds from 1 to 60000/],
    [{ sinks: [{ type: 'stream', stream: {} }] } as never, /audit\.sinks\[0\]\.stream must be a writable stream/],
    [{ sinks: [{ type: 'stream', stream: new PassThrough(), name: '' }] }, /audit\.sinks\[0\]\.name must be a non-empty string/],
    [{ sinks: [{ type: 'file', path: '' }] }, /audit\.sinks\[0\]\.path must be a file path/],
    [{ sinks: [{ type: 'file', path: 'a.log', maxSize: 10 }] }, /audit\.sinks\[0\]\.maxSize must be a whole number of bytes from 1024/],
    [{ sinks: [{ type: 'file', path: 'a.log', maxFiles: 0 }] }, /audit\.sinks\[0\]\.maxFiles must be a whole number from 1 to 1000/],
    [{ sinks: [{ type: 'file', path: 'a.log', retry: { minDelay: 0 } }] }, /audit\.sinks\[0\]\.retry\.minDelay must be a number of milliseconds from 1/],
    [{ sinks: [{ type: 'file', path: 'a.log', retry: { minDelay: 100, maxDelay: 50 } }] }, /audit\.sinks\[0\]\.retry\.maxDelay must be a number of milliseconds from minDelay \(100\)/],
    [{ sinks: [{ type: 'file', path: 'a.log', retry: { tries: 1 } }] } as never, /audit\.sinks\[0\]\.retry\.tries is not a known option/],
    [{ sinks: [{ type: 'http', url: 'ftp://collector' }] }, /audit\.sinks\[0\]\.url must be an http or https URL/],
    [{ sinks: [{ type: 'http', url: 'not a url' }] }, /audit\.sinks\[0\]\.url must be an http or https URL/],
    [{ sinks: [{ type: 'http', url: 'https://user:pw@collector/' }] }, /audit\.sinks\[0\]\.url must be a URL without credentials \(send them in headers\)$/],
    [{ sinks: [{ type: 'http', url: 'https://collector/', headers: [] }] } as never, /audit\.sinks\[0\]\.headers must be an object of header names and values/],
    [{ sinks: [{ type: 'http', url: 'https://collector/', headers: { 'bad header': 'x' } }] }, /audit\.sinks\[0\]\.headers must be keyed by header names \(got "bad header"\)/],
    [{ sinks: [{ type: 'http', url: 'https://collector/', headers: { authorization: 1 } }] } as never, /audit\.sinks\[0\]\.headers\.authorization must be a string$/],
    [{ sinks: [{ type: 'http', url: 'https://collector/', batchSize: 0 }] }, /batchSize must be a whole number from 1/],
    [{ sinks: [{ type: 'http', url: 'https://collector/', flushInterval: 1 }] }, /flushInterval must be a number of milliseconds from 10/],
    [{ sinks: [{ type: 'http', url: 'https://collector/', maxBufferRecords: 1.5 }] }, /maxBufferRecords must be a whole number from 1/],
    [{ sinks: [{ type: 'http', url: 'https://collector/', timeout: 5 }] }, /timeout must be a number of milliseconds from 100/],
    [{ sinks: [{ type: 'pino', target: '' }] }, /audit\.sinks\[0\]\.target must be the module name or path of a pino transport/],
    [{ sinks: [{ type: 'pino', target: 'pino/file', options: [] }] } as never, /audit\.sinks\[0\]\.options must be an object/],
    [{ headers: { request: 'all' } } as never, /audit\.headers\.request must be "\*" or a list of header names/],
    [{ headers: { req: [] } } as never, /audit\.headers\.req is not a known option; allowed: request, response/],
    [{ redact: { headers: ['bad header'] } }, /audit\.redact\.headers must be a list of header names/],
    [{ redact: { query: [''] } }, /audit\.redact\.query must be a list of query parameter names/],
    [{ redact: { body: ['card.number'] } }, /audit\.redact\.body must be a list of JSON pointers such as "\/card\/number"/],
    [{ redact: { bodyKeys: 'pin' } } as never, /audit\.redact\.bodyKeys must be a list of property names/],
    [{ redact: { cookies: [] } } as never, /audit\.redact\.cookies is not a known option/],
    [{ body: 'yes' } as never, /audit\.body must be a boolean/],
    [{ bodyMaxBytes: 0 }, /audit\.bodyMaxBytes must be a whole number of bytes from 1/],
    [{ sample: 1.5 }, /audit\.sample must be a share from 0 to 1/],
    [{ onSinkFailure: 'block' } as never, /audit\.onSinkFailure must be one of drop, refuse/],
    [{ policySwaps: 1 } as never, /audit\.policySwaps must be a boolean/]
  ]
  for (const [options, message] of cases) {
    const app = Fastify()
    await app.register(portcullisCore)
    app.register(portcullisAuditLog, options)
    await t.rejects(async () => await app.ready(), { code: 'PORTCULLIS_CORE_INVALID_OPTION', message }, message.source)
  }
})

test('the audit log needs the core plugin', async (t) => {
  const app = Fastify()
  app.register(portcullisAuditLog, { sinks: [{ type: 'stream', stream: new PassThrough() }] })
  await t.rejects(async () => await app.ready(), /@portcullis\/core/)
})

test('the defaults: records on stdout', async (t) => {
  const app = Fastify()
  await app.register(portcullisCore)
  await app.register(portcullisAuditLog)
  t.teardown(async () => { await app.close() })
  t.match(app.audit.stats(), { records: 0, sinks: [{ name: 'stdout', healthy: true }] })
})
