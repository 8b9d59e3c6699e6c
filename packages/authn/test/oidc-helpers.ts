import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { once } from 'node:events'
import { generateKeyPairSync } from 'node:crypto'
import Provider from 'oidc-provider'

export const RESOURCE = 'https://orders.example.com/'
/** A resource whose access tokens are opaque: only introspection can tell what they are. */
export const OPAQUE_RESOURCE = 'https://ledger.example.com/'
export const GATEWAY = { id: 'gateway', secret: 'gateway-secret-0123456789abcdef0123456789abcdef' }
export const CLIENT = { id: 'billing', secret: 'billing-secret-0123456789abcdef0123456789abcdef' }

export function signingKey (kid: string): Record<string, unknown> {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  return { ...privateKey.export({ format: 'jwk' }), kid, alg: 'ES256', use: 'sig' }
}

/** A real OpenID provider on a loopback port. Its keys can be replaced while it runs. */
export class TestProvider {
  readonly server: Server
  issuer = ''
  /** Requests the provider received, by path. */
  readonly hits = new Map<string, number>()
  #handler: ((req: IncomingMessage, res: ServerResponse) => void) | undefined

  constructor () {
    this.server = createServer((req, res) => {
      const path = (req.url ?? '').split('?')[0] as string
      this.hits.set(path, (this.hits.get(path) ?? 0) + 1)
      this.#handler?.(req, res)
    })
  }

  async start (keys: Array<Record<string, unknown>>): Promise<this> {
    this.server.listen(0, '127.0.0.1')
    await once(this.server, 'listening')
    this.issuer = `http://127.0.0.1:${(this.server.address() as { port: number }).port}`
    this.useKeys(keys)
    return this
  }

  /** Serves the same issuer with another key set (the first key signs), as after a rotation. */
  useKeys (keys: Array<Record<string, unknown>>): void {
    const provider = new Provider(this.issuer, {
      clients: [{
        client_id: GATEWAY.id,
        client_secret: GATEWAY.secret,
        grant_types: [],
        redirect_uris: [],
        response_types: [],
        token_endpoint_auth_method: 'client_secret_basic',
        id_token_signed_response_alg: 'ES256'
      }, {
        client_id: CLIENT.id,
        client_secret: CLIENT.secret,
        grant_types: ['client_credentials'],
        redirect_uris: [],
        response_types: [],
        token_endpoint_auth_method: 'client_secret_basic',
        id_token_signed_response_alg: 'ES256'
      }],
      jwks: { keys: keys as never },
      scopes: ['orders:read', 'orders:write'],
      features: {
        clientCredentials: { enabled: true },
        introspection: { enabled: true, allowedPolicy: () => true },
        revocation: { enabled: true },
        resourceIndicators: {
          enabled: true,
          defaultResource: () => RESOURCE,
          useGrantedResource: () => true,
          getResourceServerInfo: (_ctx: unknown, resource: string) => resource === OPAQUE_RESOURCE
            ? { scope: 'orders:read orders:write', audience: OPAQUE_RESOURCE, accessTokenFormat: 'opaque', accessTokenTTL: 300 }
            : { scope: 'orders:read orders:write', audience: RESOURCE, accessTokenFormat: 'jwt', accessTokenTTL: 300, jwt: { sign: { alg: 'ES256' } } }
        }
      }
    })
    this.#handler = provider.callback() as (req: IncomingMessage, res: ServerResponse) => void
  }

  /** A client-credentials access token (a JWT) for the billing client. */
  async token (scope = 'orders:read', resource = RESOURCE): Promise<string> {
    const response = await fetch(`${this.issuer}/token`, {
      method: 'POST',
      headers: {
        authorization: `Basic ${Buffer.from(`${CLIENT.id}:${CLIENT.secret}`).toString('base64')}`,
        'content-type': 'application/x-www-form-urlencoded'
      },
      body: new URLSearchParams({ grant_type: 'client_credentials', scope, resource })
    })
    const body = await response.json() as { access_token?: string, error?: string }
    if (body.access_token === undefined) throw new Error(`no token: ${JSON.stringify(body)}`)
    return body.access_token
  }

  /** Revokes a token at the provider (RFC 7009). */
  async revoke (token: string): Promise<void> {
    const response = await fetch(`${this.issuer}/token/revocation`, {
      method: 'POST',
      headers: {
        authorization: `Basic ${Buffer.from(`${CLIENT.id}:${CLIENT.secret}`).toString('base64')}`,
        'content-type': 'application/x-www-form-urlencoded'
      },
      body: new URLSearchParams({ token })
    })
    if (response.status !== 200) throw new Error(`revocation failed: ${response.status}`)
  }

  async stop (): Promise<void> {
    this.server.closeAllConnections()
    await new Promise((resolve) => this.server.close(resolve))
  }
}
