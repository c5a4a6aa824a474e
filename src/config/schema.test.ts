import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { describe, it } from 'node:test'
import { parse } from 'yaml'
import {
  GATEWAY_OPTIONS,
  type OptionKey,
  optionEnvVar,
  optionFlag,
  rawGatewayConfigSchema,
} from './schema.ts'

const KEYS = Object.keys(GATEWAY_OPTIONS) as OptionKey[]

describe('GATEWAY_OPTIONS', () => {
  it('names flags, YAML keys and env variables consistently', () => {
    assert.equal(optionFlag('maxClientConnections'), '--max-client-connections')
    assert.equal(optionEnvVar('maxClientConnections'), 'TIDEPOOL_MAX_CLIENT_CONNECTIONS')
    for (const key of KEYS) {
      // commander turns --kebab-name into camelCase; the loader relies on that mapping.
      const camel = GATEWAY_OPTIONS[key].name.replace(/-(\w)/g, (_, c: string) => c.toUpperCase())
      assert.equal(camel, key)
    }
  })

  it('covers exactly the schema', () => {
    assert.deepEqual(KEYS.toSorted(), Object.keys(rawGatewayConfigSchema.shape).toSorted())
  })

  it('is documented in docs/configuration.md', () => {
    const docs = readFileSync(new URL('../../docs/configuration.md', import.meta.url), 'utf8')
    for (const key of KEYS) {
      const spec = GATEWAY_OPTIONS[key]
      assert.ok(docs.includes(`\`${optionFlag(key)}`), `${optionFlag(key)} missing from the docs table`)
      assert.ok(docs.includes(`\`${spec.name}\``), `YAML key ${spec.name} missing`)
      assert.ok(docs.includes(`\`${optionEnvVar(key)}\``), `${optionEnvVar(key)} missing`)
    }
  })

  it('has an example YAML file that sets every option and nothing else', () => {
    const docs = readFileSync(new URL('../../docs/configuration.md', import.meta.url), 'utf8')
    const example = /```yaml\n([\s\S]*?)```/.exec(docs)
    assert.ok(example, 'no yaml block in the docs')
    const names = KEYS.map((key) => GATEWAY_OPTIONS[key].name).toSorted()
    assert.deepEqual(Object.keys(parse(example[1])).toSorted(), names)
  })
})
