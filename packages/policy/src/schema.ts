import { Ajv, type ErrorObject } from 'ajv'
import { pointerToken } from '@portcullis/core'
import type { ParsedPolicy } from './document.js'
import type { PolicyProblem } from './errors.js'

/** The versions of the document format this package reads. */
export const POLICY_FORMAT_VERSIONS: readonly number[] = Object.freeze([1])

const str = { type: 'string', minLength: 1 } as const
const strList = { type: 'array', items: str } as const
const mode = { enum: ['enforce', 'report'], description: 'enforce rejects what the policy denies; report only records that it would have.' } as const
const limit = {
  type: 'object',
  required: ['name', 'limit', 'window'],
  additionalProperties: false,
  properties: {
    name: { ...str, description: 'Tells limits apart in headers and in the store; the same name keeps its counts across policy versions.' },
    algorithm: { enum: ['gcra', 'fixed-window', 'sliding-window'] },
    limit: { type: 'integer', minimum: 1 },
    window: { type: ['string', 'integer'], description: 'A duration such as "1m", "1h", "1d", or milliseconds.' },
    burst: { type: 'integer', minimum: 1 }
  }
} as const
const rateLimit = {
  type: 'object',
  additionalProperties: false,
  properties: {
    limits: { type: 'array', items: limit },
    plans: { type: 'object', additionalProperties: { type: 'array', items: limit }, description: 'Limits per principal.plan, in place of limits.' },
    ipv6Prefix: { type: 'integer', minimum: 1, maximum: 128 },
    headers: { type: 'object' },
    mode
  }
} as const
const authzRule = { anyOf: [{ const: false }, { type: 'object' }], description: '@portcullis/authz rule: anyRole, allRoles, anyScope, allScopes, permissions, when, owner, properties; false: public.' } as const
const secretText = { type: 'string', description: 'A secret: give it as env:NAME or file:/path, never inline.' } as const

const deprecation = {
  type: 'object',
  additionalProperties: false,
  description: 'The route is retiring: Deprecation (RFC 9745) and Sunset (RFC 8594) headers; with cutoff, 410 after the sunset.',
  properties: { deprecated: str, sunset: str, link: str, sunsetLink: str, cutoff: { type: 'boolean' } }
} as const

const uaPattern = { anyOf: [str, { type: 'object', required: ['regex'], additionalProperties: false, properties: { regex: str } }] } as const

const route = {
  type: 'object',
  required: ['method', 'path'],
  additionalProperties: false,
  properties: {
    method: {
      anyOf: [
        { enum: ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] },
        { type: 'array', minItems: 1, items: { enum: ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] } }
      ]
    },
    path: { type: 'string', pattern: '^/', description: 'Under the upstream prefix, in Fastify syntax: /orders/:id' },
    authz: authzRule,
    rateLimit: { anyOf: [{ const: false }, { type: 'array', items: limit }] },
    resource: { type: 'object', required: ['path'], properties: { path: str } },
    deprecation
  }
} as const

/**
 * The JSON Schema of a policy document (draft-07), published as
 * `@portcullis/policy/policy.schema.json` for editor completion. It checks the document's shape;
 * each plugin checks its own options in full when the document is compiled.
 */
export const policySchema = {
  $schema: 'http://json-schema.org/draft-07/schema#',
  $id: 'https://portcullis.dev/schemas/policy-1.json',
  title: 'Portcullis policy document',
  type: 'object',
  required: ['version'],
  additionalProperties: false,
  properties: {
    $schema: { type: 'string' },
    version: { enum: [...POLICY_FORMAT_VERSIONS], description: 'Version of the document format (not of its content, which is versioned by its hash).' },
    server: {
      type: 'object',
      additionalProperties: false,
      description: 'Where the standalone gateway listens, and the limits of what it accepts. Read at start only, but for bodyLimit.',
      properties: {
        host: str,
        port: { type: 'integer', minimum: 0, maximum: 65535 },
        requestTimeout: { type: 'integer', minimum: 0, maximum: 3600000, description: 'ms a client has to send a whole request (408 after); 0 for none. Default 30000.' },
        keepAliveTimeout: { type: 'integer', minimum: 1, maximum: 3600000, description: 'ms an idle keep-alive connection stays open. Default 72000.' },
        maxHeaderSize: { type: 'integer', minimum: 1024, maximum: 1048576, description: 'Largest request line and headers, in bytes (431 over it). Default 16384.' },
        bodyLimit: { type: 'integer', minimum: 0, description: 'Largest request body in bytes, parsed or streamed upstream (413 over it). Default 1048576.' },
        tls: {
          type: 'object',
          required: ['key', 'cert'],
          additionalProperties: false,
          properties: { key: str, cert: str, clientCa: str, minVersion: { enum: ['TLSv1.2', 'TLSv1.3'] } }
        }
      }
    },
    core: {
      type: 'object',
      additionalProperties: false,
      properties: { trustedProxies: strList, forwardedHeader: str, problemDetails: { type: 'boolean' }, problemTypeBase: str, requestIdHeader: { anyOf: [str, { const: false }] } }
    },
    authn: {
      type: 'object',
      required: ['methods'],
      additionalProperties: false,
      properties: {
        methods: {
          type: 'object',
          minProperties: 1,
          additionalProperties: {
            type: 'object',
            required: ['type'],
            properties: {
              type: { enum: ['api-key', 'basic', 'jwt', 'introspection'] },
              keys: { type: 'array', items: { type: 'object', properties: { key: { anyOf: [secretText, { type: 'object' }] } } } },
              clientSecret: secretText
            }
          }
        },
        realm: str,
        mode,
        defaults: { type: 'object' },
        revocation: { type: 'object' },
        authenticateNotFound: { type: 'boolean' }
      }
    },
    helmet: { anyOf: [{ const: true }, { type: 'object' }], description: 'Security response headers: helmet\'s options, or true for its defaults.' },
    cors: {
      type: 'object',
      required: ['origin'],
      description: 'CORS (@fastify/cors options), answered before authentication.',
      properties: { origin: { anyOf: [str, { type: 'boolean' }, strList] }, credentials: { type: 'boolean' }, methods: { anyOf: [str, strList] }, allowedHeaders: { anyOf: [str, strList] }, exposedHeaders: { anyOf: [str, strList] }, maxAge: { type: 'integer', minimum: 0 } }
    },
    ipRules: { type: 'object', additionalProperties: false, properties: { allow: strList, deny: strList, mode } },
    userAgents: {
      anyOf: [{ const: true }, { type: 'object', additionalProperties: false, properties: { builtin: { type: 'boolean' }, deny: { type: 'array', items: uaPattern }, allow: { type: 'array', items: uaPattern }, missing: { enum: ['allow', 'deny'] }, mode } }],
      description: 'User-Agent deny lists: true for the built-in list of attack tools, or its options.'
    },
    masking: {
      anyOf: [{ const: true }, {
        type: 'object',
        additionalProperties: false,
        properties: {
          emails: { type: 'boolean' },
          cards: { type: 'boolean' },
          patterns: { type: 'array', items: { type: 'object', required: ['name', 'regex'], additionalProperties: false, properties: { name: str, regex: str, replacement: { type: 'string' } } } },
          maxBytes: { type: 'integer', minimum: 1 },
          mode
        }
      }],
      description: 'Personal data masked in JSON answers: true for e-mail addresses and card numbers, or its options.'
    },
    observe: {
      type: 'object',
      additionalProperties: false,
      description: 'Prometheus metrics on a listener of their own, and OpenTelemetry spans. Read at start only.',
      properties: {
        metrics: { type: 'object', required: ['port'], additionalProperties: false, properties: { port: { type: 'integer', minimum: 0, maximum: 65535 }, host: str, prefix: str, buckets: { type: 'array', items: { type: 'number' } } } },
        tracing: { type: 'boolean' }
      }
    },
    mtls: {
      type: 'object',
      additionalProperties: false,
      properties: {
        ca: str,
        crl: strList,
        watchCrl: { type: 'boolean' },
        crlWatchInterval: { type: 'integer', minimum: 1 },
        required: { type: 'boolean' },
        mode,
        principal: { type: 'object' },
        pins: { type: 'object' },
        forwarded: { type: 'object' }
      }
    },
    ipRateLimit: rateLimit,
    rateLimit,
    rateLimitStore: {
      type: 'object',
      required: ['redis'],
      additionalProperties: false,
      description: 'Where both rate-limit stages count. Read at start only.',
      properties: {
        redis: {
          type: 'object',
          required: ['url'],
          additionalProperties: false,
          properties: { url: secretText, prefix: str, timeoutMs: { type: 'integer', minimum: 1 }, failMode: { enum: ['open', 'closed'] }, retryAfterMs: { type: 'integer', minimum: 0 } }
        }
      }
    },
    authz: {
      type: 'object',
      additionalProperties: false,
      properties: { roles: { type: 'object' }, defaultRule: authzRule, overrideHeaders: strList, realm: str, mode }
    },
    audit: {
      type: 'object',
      additionalProperties: false,
      description: 'The audit log. Its sinks and chain are read at start only.',
      properties: {
        sinks: { type: 'array', minItems: 1, items: { type: 'object', required: ['type'], properties: { type: { enum: ['stdout', 'stream', 'file', 'http', 'pino'] } } } },
        redact: { type: 'object' },
        headers: { type: 'object' },
        body: { type: 'boolean' },
        bodyMaxBytes: { type: 'integer', minimum: 0 },
        sample: { type: 'number', minimum: 0, maximum: 1 },
        chain: { anyOf: [{ type: 'boolean' }, { type: 'object' }] },
        onSinkFailure: { enum: ['drop', 'refuse'] },
        policySwaps: { type: 'boolean' }
      }
    },
    upstreams: {
      type: 'array',
      items: {
        type: 'object',
        required: ['prefix', 'url'],
        additionalProperties: false,
        properties: {
          prefix: { type: 'string', pattern: '^/', description: 'Path prefix on the gateway, such as /api.' },
          url: { type: 'string', pattern: '^(https?://|env:|file:)', description: 'Origin of the upstream: http(s)://host:port, or env:NAME to read it from the environment.' },
          rewritePrefix: { type: 'string' },
          timeout: { type: 'integer', minimum: 1, maximum: 600000 },
          routes: { type: 'array', items: route },
          openapi: { anyOf: [str, { type: 'object' }] },
          validation: { type: 'object' },
          tls: { type: 'object', additionalProperties: false, properties: { ca: str, cert: str, key: str, servername: str } },
          public: { type: 'boolean', description: 'The upstream needs no credentials: authentication and authorization are off for it.' },
          deprecation
        }
      }
    }
  }
} as const

let validator: ReturnType<Ajv['compile']> | null = null

/** Checks a parsed document against {@link policySchema}: every fault, each with its pointer. */
export function checkSchema (parsed: ParsedPolicy): PolicyProblem[] {
  validator ??= new Ajv({ allErrors: true, strict: true, allowUnionTypes: true }).compile(policySchema)
  if (validator(parsed.data)) return []
  return (validator.errors as ErrorObject[]).map((error) => {
    // An unknown field is pointed at itself, not at the object that holds it.
    const extra = error.keyword === 'additionalProperties' ? `/${pointerToken(String(error.params.additionalProperty))}` : ''
    return { stage: 'schema', pointer: error.instancePath + extra, rule: error.keyword, message: describe(error) }
  })
}

function describe (error: ErrorObject): string {
  const params = error.params as Record<string, unknown>
  switch (error.keyword) {
    case 'additionalProperties': return `"${String(params.additionalProperty)}" is not a known field here`
    case 'required': return `"${String(params.missingProperty)}" is required`
    case 'enum': return `must be one of ${(params.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(', ')}`
    default: return error.message as string
  }
}
