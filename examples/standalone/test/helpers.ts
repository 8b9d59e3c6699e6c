import { copyFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { DEFAULT_POLICY_FILE } from '../src/main.js'

export interface Answer { status: number, headers: Headers, body: any }

export async function call (url: string, init: { method?: string, headers?: Record<string, string>, body?: string, json?: unknown } = {}): Promise<Answer> {
  const { method = 'GET', headers = {}, json } = init
  const body = json === undefined ? init.body : JSON.stringify(json)
  const response = await fetch(url, { method, headers: { ...headers, ...(json === undefined ? {} : { 'content-type': 'application/json' }) }, ...(body === undefined ? {} : { body }) })
  const text = await response.text()
  return { status: response.status, headers: response.headers, body: text === '' ? null : JSON.parse(text) }
}

// The policy and its contract, copied where a test's audit log may go.
export async function policyCopy (dir: string): Promise<string> {
  await copyFile(DEFAULT_POLICY_FILE, join(dir, 'policy.yaml'))
  await copyFile(join(dirname(DEFAULT_POLICY_FILE), 'orders.openapi.yaml'), join(dir, 'orders.openapi.yaml'))
  return join(dir, 'policy.yaml')
}
