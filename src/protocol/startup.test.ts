import assert from 'node:assert/strict'
import { Buffer } from 'node:buffer'
import { describe, test } from 'node:test'
import { MAX_STARTUP_PACKET_LENGTH, StartupCode } from './constants.ts'
import { cancelRequest, startupMessage } from './frontend.ts'
import {
  parseOptionsParameter,
  parseStartupPacket,
  StartupPacketError,
  startupPacketLength,
} from './startup.ts'

/** An untyped packet: int32 length (counting itself), int32 code, then `body`. */
function packet(code: number, body: Buffer = Buffer.alloc(0)): Buffer {
  const out = Buffer.alloc(8 + body.length)
  out.writeInt32BE(out.length, 0)
  out.writeInt32BE(code, 4)
  body.copy(out, 8)
  return out
}

/** Body of a StartupMessage: name\0value\0 pairs, as raw text with \0 separators. */
function pairs(text: string): Buffer {
  return Buffer.from(text, 'utf8')
}

/** Asserts `fn` throws a StartupPacketError with SQLSTATE `code`. */
function throwsCode(fn: () => unknown, code: string): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof StartupPacketError, `expected StartupPacketError, got ${String(error)}`)
    assert.equal(error.code, code)
    return true
  })
}

describe('startupPacketLength', () => {
  test('fewer than 4 bytes: not known yet', () => {
    assert.equal(startupPacketLength(Buffer.alloc(0)), 0)
    assert.equal(startupPacketLength(Buffer.from([0, 0, 0])), 0)
  })

  test('a valid length is returned before the packet is complete', () => {
    assert.equal(startupPacketLength(Buffer.from([0, 0, 0, 8])), 8)
    assert.equal(startupPacketLength(Buffer.from([0, 0, 0x27, 0x10])), MAX_STARTUP_PACKET_LENGTH)
  })

  for (const length of [0, 4, 7, MAX_STARTUP_PACKET_LENGTH + 1, 0x0fffffff, -1]) {
    test(`length ${length} is refused with 08P01`, () => {
      const head = Buffer.alloc(4)
      head.writeInt32BE(length, 0)
      throwsCode(() => startupPacketLength(head), '08P01')
    })
  }
})

describe('parseStartupPacket', () => {
  test('SSLRequest and GSSENCRequest', () => {
    assert.deepEqual(parseStartupPacket(packet(StartupCode.SSLRequest)), { kind: 'ssl' })
    assert.deepEqual(parseStartupPacket(packet(StartupCode.GSSENCRequest)), { kind: 'gssenc' })
  })

  test('CancelRequest carries process id and secret key', () => {
    assert.deepEqual(parseStartupPacket(cancelRequest(1234, -5)), {
      kind: 'cancel',
      processId: 1234,
      secretKey: -5,
    })
  })

  test('CancelRequest of the wrong length is refused', () => {
    const body = Buffer.alloc(12)
    throwsCode(() => parseStartupPacket(packet(StartupCode.CancelRequest, body)), '08P01')
    throwsCode(() => parseStartupPacket(packet(StartupCode.CancelRequest)), '08P01')
  })

  test('StartupMessage parameters, in order, with UTF-8 values', () => {
    const parsed = parseStartupPacket(
      startupMessage({ user: 'alice', database: 'db', application_name: 'été', options: '-c a=b' }),
    )
    assert.equal(parsed.kind, 'startup')
    assert.ok(parsed.kind === 'startup')
    assert.deepEqual(
      [...parsed.parameters],
      [
        ['user', 'alice'],
        ['database', 'db'],
        ['application_name', 'été'],
        ['options', '-c a=b'],
      ],
    )
    assert.equal(parsed.minorVersion, 0)
  })

  test('an empty value is kept', () => {
    const parsed = parseStartupPacket(packet(StartupCode.ProtocolV3, pairs('user\0bob\0database\0\0\0')))
    assert.ok(parsed.kind === 'startup')
    assert.equal(parsed.parameters.get('database'), '')
  })

  test('protocol 3.2 is accepted and reports its minor version', () => {
    const parsed = parseStartupPacket(packet((3 << 16) | 2, pairs('user\0bob\0\0')))
    assert.ok(parsed.kind === 'startup')
    assert.equal(parsed.minorVersion, 2)
  })

  test('protocol 2.0 and 4.0 are refused with 0A000', () => {
    throwsCode(() => parseStartupPacket(packet(2 << 16, pairs('user\0bob\0\0'))), '0A000')
    throwsCode(() => parseStartupPacket(packet(4 << 16, pairs('user\0bob\0\0'))), '0A000')
  })

  test('no user is 28000', () => {
    throwsCode(() => parseStartupPacket(packet(StartupCode.ProtocolV3, pairs('database\0db\0\0'))), '28000')
    throwsCode(() => parseStartupPacket(packet(StartupCode.ProtocolV3, pairs('\0'))), '28000')
  })

  test('layout errors are 08P01', () => {
    const bad = [
      '', // no terminator at all
      'user\0bob\0', // last pair not followed by the terminator
      'user\0bob', // value not terminated
      'user', // name not terminated
      'user\0bob\0\0x', // bytes after the terminator
      'user\0bob\0\0\0', // two terminators
    ]
    for (const body of bad) {
      throwsCode(() => parseStartupPacket(packet(StartupCode.ProtocolV3, pairs(body))), '08P01')
    }
  })
})

describe('parseOptionsParameter', () => {
  const cases: [string, [string, string][]][] = [
    ['', []],
    ['   ', []],
    ['-c a=b', [['a', 'b']]],
    ['-ca=b', [['a', 'b']]],
    ['--a-b=c', [['a_b', 'c']]],
    ['-c a-b=c-d', [['a_b', 'c-d']]],
    ['-c search_path=foo,public', [['search_path', 'foo,public']]],
    ['-c a=b=c', [['a', 'b=c']]],
    ['-c a=', [['a', '']]],
    [
      '  -c a=1 \t --b=2\n-cc=3  ',
      [
        ['a', '1'],
        ['b', '2'],
        ['c', '3'],
      ],
    ],
    ['-c application_name=my\\ app', [['application_name', 'my app']]],
    ['-c a=back\\\\slash', [['a', 'back\\slash']]],
    ['-c\\ a=b', [[' a', 'b']]], // one word "-c a=b": getopt's optarg keeps the space, as in PG
    ['-c a=\\x', [['a', 'x']]], // any escaped character stands for itself
    [
      '-c a=1 -c a=2',
      [['a', '2']], // the last one wins, as with repeated SET
    ],
  ]
  for (const [options, expected] of cases) {
    test(`${JSON.stringify(options)}`, () => {
      assert.deepEqual([...parseOptionsParameter(options)], expected)
    })
  }

  // pg_split_opts (src/backend/utils/init/postinit.c) drops a backslash that escapes nothing.
  test('a trailing backslash is dropped, as pg_split_opts does', () => {
    assert.deepEqual([...parseOptionsParameter('-c a=b\\')], [['a', 'b']])
  })

  for (const bad of ['foo', '-c', '-c a', '--a', '-x a=b', '-c =b', 'a=b']) {
    test(`${JSON.stringify(bad)} is refused with 42601`, () => {
      throwsCode(() => parseOptionsParameter(bad), '42601')
    })
  }
})
