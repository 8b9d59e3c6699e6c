import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Test } from 'tap'
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import { portcullisCore, type CoreOptions } from '@portcullis/core'
import { createApiKey, portcullisAuthn } from '@portcullis/authn'
import { portcullisAuthz } from '@portcullis/authz'
import { portcullisAuditLog, type AuditLogOptions } from '../src/index.js'

/** alice's API key: a user who may read orders. */
export const alice = createApiKey({ id: 'key-alice', owner: { id: 'alice', type: 'user', roles: ['user'], scopes: ['orders:read'], tenant: 'acme', plan: 'gold' } })

export interface Audited {
  app: FastifyInstance
  /** The audit file. */
  file: string
  /** Its records so far, once every sink has written them. */
  records: () => Promise<any[]>
  /** The file's text, once written. */
  text: () => Promise<string>
}

/**
 * An app with core, authn (alice's key, or anonymous on /public), authz (orders:read on
 * /orders/:id) and the audit log writing to a file in a test directory, unless `sinks` say otherwise.
 */
export async function audited (t: Test, options: AuditLogOptions = {}, core: CoreOptions = {}, server: FastifyServerOptions = {}): Promise<Audited> {
  const dir = t.testdir()
  const file = join(dir, 'audit.log')
  const app = Fastify(server)
  await app.register(portcullisCore, core)
  await app.register(portcullisAuthn, { methods: { keys: { type: 'api-key', keys: [alice.record], query: 'api_key' } } })
  await app.register(portcullisAuthz)
  await app.register(portcullisAuditLog, { sinks: [{ type: 'file', path: file }], ...options })
  app.get('/orders/:id', { config: { authz: { anyScope: ['orders:read'] } } }, async (request) => ({ id: (request.params as { id: string }).id }))
  app.post('/orders', { config: { authz: { anyScope: ['orders:read'] } } }, async (request) => ({ received: request.body }))
  app.get('/public', { config: { authn: { anonymous: true }, authz: false } }, async () => ({ ok: true }))
  t.teardown(async () => { await app.close() })
  const text = async (): Promise<string> => {
    await app.audit.flush()
    return await readFile(file, 'utf8')
  }
  return {
    app,
    file,
    text,
    records: async () => (await text()).split('\n').filter((line) => line !== '').map((line) => JSON.parse(line))
  }
}
