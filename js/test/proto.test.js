// Unit tests of the codec (js/src/improto.js), byte for byte against
// docs/PROTOCOL.md, the same cases the C codec is tested with. The examples of
// docs/vectors.json, the seed's among them, are checked by vectors.test.js.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import * as P from '../src/improto.js';

const { CMD } = P;
const MSGID = '550e8400e29b41d4a716446655440000';
const MSGID_HEX = Buffer.from(MSGID, 'latin1').toString('hex');
const HELLO_HEX = Buffer.from('hello world').toString('hex');

const hex = (s) => new Uint8Array(Buffer.from(s.replace(/[\s|]/g, ''), 'hex'));
const text = (b) => Buffer.from(b).toString('utf8');

function assertBytes(actual, expectedHex) {
  assert.ok(actual instanceof Uint8Array, 'result is a Uint8Array');
  assert.equal(P.toHex(actual), expectedHex.replace(/[\s|]/g, ''));
}

function assertProtoError(fn, reason, extra = {}) {
  assert.throws(fn, (e) => {
    assert.ok(e instanceof P.ProtoError, `ProtoError expected, got ${e}`);
    assert.equal(e.reason, reason, e.message);
    for (const [k, v] of Object.entries(extra)) assert.equal(e[k], v, `error.${k}`);
    return true;
  });
}

describe('CONNECT variants (§3.1)', () => {
  test('no Role, no ClientId', () => {
    const b = P.encodeConnect({ username: 'test', password: '123456' });
    assertBytes(b, '01 0004 74657374 0006 313233343536');
    const m = P.decodeClientMessage(b);
    assert.equal(m.role, undefined);
    assert.equal(m.clientId, undefined);
  });
  test('Role + ClientId', () => {
    const b = P.encodeConnect({ username: 'test', password: '123456', role: 1, clientId: 2 });
    assertBytes(b, '01 0004 74657374 0006 313233343536 01 02');
    const m = P.decodeClientMessage(b);
    assert.equal(m.role, 1);
    assert.equal(m.clientId, 2);
  });
  test('ClientId without Role sends Role 0', () => {
    assertBytes(P.encodeConnect({ username: 'a', password: 'b', clientId: 127 }), '01 0001 61 0001 62 00 7f');
  });
  test('empty username and password', () => {
    assertBytes(P.encodeConnect({ username: '', password: '' }), '01 0000 0000');
    const m = P.decodeClientMessage(hex('01 0000 0000'));
    assert.equal(m.username, '');
    assert.equal(m.password, '');
  });
  test('usernames are opaque bytes (UTF-8 and the field app form)', () => {
    const b = P.encodeConnect({ username: 'bs|##|src|##|42', password: 'pä' });
    const m = P.decodeClientMessage(b);
    assert.equal(m.username, 'bs|##|src|##|42');
    assert.equal(m.password, 'pä');
    assert.equal(m.passwordBytes.length, 3);
    const raw = P.encodeConnect({ username: Uint8Array.of(0xff, 0x00), password: '' });
    assertBytes(raw, '01 0002 ff00 0000');
  });
  test('more than Role + ClientId is trailing', () => {
    assertProtoError(() => P.decodeClientMessage(hex('01 0001 61 0001 62 01 02 03')), 'trailing', { cmd: 1 });
  });
  test('errors, as in the C codec: truncated fixed fields, lengths past the end, trailing', () => {
    const cases = [
      ['01', 'truncated', 'CONNECT without UserLen'],
      ['01 00', 'truncated', 'CONNECT with half a UserLen'],
      ['01 0005 61626364', 'length', 'UserLen past the end'],
      ['01 ffff 61626364', 'length', 'UserLen 65535 past the end'],
      ['01 0001 61', 'truncated', 'CONNECT without PassLen'],
      ['01 0001 61 00', 'truncated', 'CONNECT with half a PassLen'],
      ['01 0001 61 0003 7070', 'length', 'PassLen past the end'],
      ['01 0000 0000 000000', 'trailing', 'empty fields, 3 bytes after PassLen'],
    ];
    for (const [h, reason, name] of cases) {
      assertProtoError(() => P.decodeClientMessage(hex(h)), reason, { cmd: 1, msgId: undefined });
      assert.ok(name);
    }
  });
  test('encode refuses out-of-range role / clientId and over-long fields', () => {
    assertProtoError(() => P.encodeConnect({ username: 'a', password: 'b', role: 256 }), 'bad_value');
    assertProtoError(() => P.encodeConnect({ username: 'a', password: 'b', role: 1, clientId: -1 }), 'bad_value');
    assertProtoError(() => P.encodeConnect({ username: 'x'.repeat(65536), password: '' }), 'too_long');
  });
});

describe('CONNECT_ACK (§3.1)', () => {
  const names = ['accepted', 'duplicate', 'service_unavailable', 'bad_credentials'];
  for (let code = 0; code <= 3; code++) {
    test(`code ${code} = ${names[code]}`, () => {
      const b = P.encodeConnectAck(code);
      assertBytes(b, `02 0${code}`);
      const m = P.decodeServerMessage(b);
      assert.equal(m.cmd, 2);
      assert.equal(m.code, code);
      assert.equal(m.name, names[code]);
      assert.equal(typeof m.text, 'string');
    });
  }
  test('unknown code still decodes', () => {
    const m = P.decodeServerMessage(hex('02 09'));
    assert.equal(m.code, 9);
    assert.equal(m.name, 'unknown');
  });
  test('truncated and trailing', () => {
    assertProtoError(() => P.decodeServerMessage(hex('02')), 'truncated', { cmd: 2 });
    assertProtoError(() => P.decodeServerMessage(hex('02 00 00')), 'trailing', { cmd: 2 });
  });
});

describe('every message, both directions', () => {
  const payload = '{"from":1001,"to":1002,"content":{"type":"text","text":"hi"}}';
  const serverSide = [
    ['CONNECT_ACK', P.encodeConnectAck(0), { cmd: 2, code: 0 }],
    ['1:1 push', P.encodePush({ msgId: MSGID, payload }), { cmd: 3, msgId: MSGID, payload }],
    ['PUB_ACK', P.encodeAck(4, MSGID), { cmd: 4, msgId: MSGID }],
    ['group push', P.encodeGroupPublish({ gid: 1, msgId: MSGID, payload }), { cmd: 5, gid: 1, msgId: MSGID, payload }],
    ['GROUP_PUB_ACK', P.encodeAck(6, MSGID), { cmd: 6, msgId: MSGID }],
    ['PING', P.encodePing(), { cmd: 7 }],
    ['PING_RESP', P.encodePingResp(), { cmd: 8 }],
    ['DISCONNECT', P.encodeDisconnect(), { cmd: 9 }],
    ['INVALID_PACKET short', P.encodeInvalid(3), { cmd: 10, invalidCmd: 3 }],
    ['INVALID_PACKET with MsgId', P.encodeInvalid(5, MSGID), { cmd: 10, invalidCmd: 5, msgId: MSGID }],
    ['part-group push', P.encodeGroupPartPublish({ gid: 7, msgId: MSGID, uids: [1002, 1003], payload }),
      { cmd: 11, gid: 7, msgId: MSGID, uids: [1002, 1003], payload }],
    ['GROUP_PART_PUB_ACK', P.encodeAck(12, MSGID), { cmd: 12, msgId: MSGID }],
    ['LOGOUT', P.encodeLogout(), { cmd: 20 }],
  ];
  for (const [name, bytes, want] of serverSide) {
    test(`server -> client ${name}`, () => {
      const m = P.decodeServerMessage(bytes);
      for (const [k, v] of Object.entries(want)) {
        assert.deepEqual(k === 'payload' ? text(m[k]) : m[k], v, `${name}.${k}`);
      }
    });
  }
  const clientSide = [
    ['CONNECT', P.encodeConnect({ username: 'alice', password: 'alice-secret', role: 0, clientId: 1 }),
      { cmd: 1, username: 'alice', password: 'alice-secret', role: 0, clientId: 1 }],
    ['PUBLISH', P.encodePublish({ toUid: 1002, msgId: MSGID, payload }), { cmd: 3, toUid: 1002, msgId: MSGID, payload }],
    ['PUB_ACK', P.encodeAck(4, MSGID), { cmd: 4, msgId: MSGID }],
    ['GROUP_PUBLISH', P.encodeGroupPublish({ gid: 1, msgId: MSGID, payload }), { cmd: 5, gid: 1, msgId: MSGID, payload }],
    ['GROUP_PUB_ACK', P.encodeAck(6, MSGID), { cmd: 6, msgId: MSGID }],
    ['PING', P.encodePing(), { cmd: 7 }],
    ['PING_RESP', P.encodePingResp(), { cmd: 8 }],
    ['DISCONNECT', P.encodeDisconnect(), { cmd: 9 }],
    ['GROUP_PART_PUBLISH', P.encodeGroupPartPublish({ gid: 1, msgId: MSGID, uids: [1002], payload }),
      { cmd: 11, gid: 1, msgId: MSGID, uids: [1002], payload }],
    ['GROUP_PART_PUB_ACK', P.encodeAck(12, MSGID), { cmd: 12, msgId: MSGID }],
  ];
  for (const [name, bytes, want] of clientSide) {
    test(`client -> server ${name}`, () => {
      const m = P.decodeClientMessage(bytes);
      for (const [k, v] of Object.entries(want)) {
        assert.deepEqual(k === 'payload' ? text(m[k]) : m[k], v, `${name}.${k}`);
      }
    });
  }
  test('server-only commands are unknown from a client, and the reverse', () => {
    for (const c of [2, 10, 20]) assertProtoError(() => P.decodeClientMessage(Uint8Array.of(c)), 'unknown_cmd', { cmd: c });
    assertProtoError(() => P.decodeServerMessage(P.encodeConnect({ username: 'a', password: 'b' })), 'unknown_cmd', { cmd: 1 });
  });
  test('decode accepts ArrayBuffer, Buffer and offset views', () => {
    const b = P.encodeAck(4, MSGID);
    assert.equal(P.decodeServerMessage(b.buffer).msgId, MSGID);
    assert.equal(P.decodeServerMessage(Buffer.from(b)).msgId, MSGID);
    const big = new Uint8Array(b.length + 10);
    big.set(b, 5);
    assert.equal(P.decodeServerMessage(big.subarray(5, 5 + b.length)).msgId, MSGID);
  });
  test('decoded payload is a copy, not a view of the input', () => {
    const b = P.encodePush({ msgId: MSGID, payload: 'abc' });
    const m = P.decodeServerMessage(b);
    b[b.length - 1] = 0x7a;
    assert.equal(text(m.payload), 'abc');
  });
});

describe('long acks (§3.4)', () => {
  const MSGID2 = '0123456789abcdef0123456789ABCDEF';
  for (const cmd of [4, 6, 12]) {
    test(`ack ${cmd}: longer from a client is fine, from the server exactly 33 bytes`, () => {
      const extra = '_' + MSGID2;
      const b = P.encodeAck(cmd, MSGID, extra);
      assert.equal(b.length, 1 + 32 + 33);
      assertBytes(b, `${cmd.toString(16).padStart(2, '0')} ${MSGID_HEX} ${Buffer.from(extra).toString('hex')}`);
      // client -> server: MsgId ++ "_" ++ 32 more bytes (the field client's)
      let m = P.decodeClientMessage(b);
      assert.equal(m.cmd, cmd);
      assert.equal(m.msgId, MSGID);
      assert.equal(text(m.extra), extra);
      m = P.decodeClientMessage(b.subarray(0, 34));
      assert.equal(m.extra.length, 1);
      m = P.decodeClientMessage(b.subarray(0, 33));
      assert.equal(m.extra.length, 0);
      assertProtoError(() => P.decodeClientMessage(b.subarray(0, 32)), 'truncated', { cmd, msgId: undefined });
      assertProtoError(() => P.decodeClientMessage(b.subarray(0, 1)), 'truncated', { cmd });
      // server -> client: the server sends none longer
      assert.equal(P.decodeServerMessage(b.subarray(0, 33)).msgId, MSGID);
      assertProtoError(() => P.decodeServerMessage(b.subarray(0, 34)), 'trailing', { cmd, msgId: MSGID });
      assertProtoError(() => P.decodeServerMessage(b.subarray(0, 20)), 'truncated', { cmd });
    });
  }
});

describe('errors: truncated, trailing, unknown command', () => {
  const full = {
    publish: P.encodePublish({ toUid: 1234, msgId: MSGID, payload: 'hello world' }),
    group: P.encodeGroupPublish({ gid: 1234, msgId: MSGID, payload: 'hello world' }),
    part: P.encodeGroupPartPublish({ gid: 1234, msgId: MSGID, uids: [1234, 1235], payload: 'hello world' }),
  };
  // Like check_prefixes() of the C tests: each cut gives the error of the field it
  // cuts (ends of fields and their error), and the MsgId is reported iff it was read.
  const T = 'truncated';
  const L = 'length';
  const prefixCases = [
    ['PUBLISH C->S', P.decodeClientMessage, full.publish, 5, [[5, T], [37, T], [39, T], [50, L]]],
    ['push S->C', P.decodeServerMessage, P.encodePush({ msgId: MSGID, payload: 'hello world' }), 1, [[33, T], [35, T], [46, L]]],
    ['GROUP_PUBLISH C->S', P.decodeClientMessage, full.group, 5, [[5, T], [37, T], [39, T], [50, L]]],
    ['GROUP_PUBLISH S->C', P.decodeServerMessage, full.group, 5, [[5, T], [37, T], [39, T], [50, L]]],
    ['GROUP_PART_PUBLISH C->S', P.decodeClientMessage, full.part, 5, [[5, T], [37, T], [39, T], [47, L], [49, T], [60, L]]],
    ['GROUP_PART_PUBLISH S->C', P.decodeServerMessage, full.part, 5, [[5, T], [37, T], [39, T], [47, L], [49, T], [60, L]]],
  ];
  for (const [name, decode, b, msgIdOff, cuts] of prefixCases) {
    test(`${name}: every prefix gives its field's error, MsgId iff read`, () => {
      assert.equal(b.length, cuts.at(-1)[0]);
      assertProtoError(() => decode(b.subarray(0, 0)), 'empty');
      for (let k = 1; k < b.length; k++) {
        const want = cuts.find(([end]) => k < end)[1];
        const msgId = k >= msgIdOff + 32 ? MSGID : undefined;
        assertProtoError(() => decode(b.subarray(0, k)), want, { cmd: b[0], msgId });
      }
      assert.equal(decode(b).msgId, MSGID);
    });
  }
  test('MsgId is reported when it could be read (what INVALID_PACKET echoes)', () => {
    const b = full.publish;
    let e = null;
    try { P.decodeClientMessage(b.subarray(0, 1 + 4 + 31)); } catch (x) { e = x; }
    assert.equal(e.msgId, undefined);
    try { P.decodeClientMessage(b.subarray(0, 1 + 4 + 32 + 1)); } catch (x) { e = x; }
    assert.equal(e.msgId, MSGID);
    assert.equal(e.reason, 'truncated');
  });
  test('payload length pointing past the end', () => {
    assertProtoError(() => P.decodeClientMessage(hex(`03 000004d2 ${MSGID_HEX} 000c ${HELLO_HEX}`)), 'length', { msgId: MSGID });
    assertProtoError(() => P.decodeServerMessage(hex(`03 ${MSGID_HEX} ffff ${HELLO_HEX}`)), 'length');
  });
  test('uid count pointing past the end', () => {
    assertProtoError(() => P.decodeClientMessage(hex(`0b 000004d2 ${MSGID_HEX} 0003 000004d2 000004d3 000b ${HELLO_HEX}`)), 'length');
    const MSGID2 = '0123456789abcdef0123456789ABCDEF';
    const m2 = Buffer.from(MSGID2).toString('hex');
    assertProtoError(() => P.decodeClientMessage(hex(`0b 00000007 ${m2} ffff 00000001 0000`)), 'length', { msgId: MSGID2 });
  });
  test('part-group with N = 0 is well formed (refusing it is the session\'s job)', () => {
    const MSGID2 = '0123456789abcdef0123456789ABCDEF';
    const b = P.encodeGroupPartPublish({ gid: 7, msgId: MSGID2, uids: [], payload: 'x' });
    assertBytes(b, `0b 00000007 ${Buffer.from(MSGID2).toString('hex')} 0000 0001 78`);
    const m = P.decodeClientMessage(b);
    assert.deepEqual(m.uids, []);
    assert.equal(m.gid, 7);
  });
  test('trailing bytes after every fixed-shape message', () => {
    for (const [name, b] of Object.entries(full)) {
      const t = new Uint8Array(b.length + 1);
      t.set(b);
      assertProtoError(() => P.decodeClientMessage(t), 'trailing', { cmd: b[0], msgId: MSGID });
      assert.ok(name);
    }
    assertProtoError(() => P.decodeServerMessage(hex(`03 ${MSGID_HEX} 0000 00`)), 'trailing');
    for (const c of [7, 8, 9]) {
      assertProtoError(() => P.decodeClientMessage(Uint8Array.of(c, 0)), 'trailing', { cmd: c });
      assertProtoError(() => P.decodeServerMessage(Uint8Array.of(c, 0)), 'trailing', { cmd: c });
    }
    assertProtoError(() => P.decodeServerMessage(hex('14 00')), 'trailing', { cmd: 20 });
  });
  test('INVALID_PACKET: only <<10,Cmd>> or <<10,Cmd,MsgId>>', () => {
    assertBytes(P.encodeInvalid(3), '0a 03');
    assertBytes(P.encodeInvalid(3, MSGID), `0a 03 ${MSGID_HEX}`);
    assertProtoError(() => P.decodeServerMessage(hex('0a')), 'truncated', { cmd: 10 });
    assertProtoError(() => P.decodeServerMessage(hex('0a 03 3535')), 'truncated');
    assertProtoError(() => P.decodeServerMessage(hex(`0a 03 ${MSGID_HEX} 00`)), 'trailing');
  });
  test('exactly the commands of docs/PROTOCOL.md are known, in each direction', () => {
    const clientOk = new Set([1, 3, 4, 5, 6, 7, 8, 9, 11, 12]);
    const serverOk = new Set([2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 20]);
    for (const [decode, ok] of [[P.decodeClientMessage, clientOk], [P.decodeServerMessage, serverOk]]) {
      for (let c = 0; c < 256; c++) {
        const msg = new Uint8Array(40);
        msg[0] = c;
        let reason = 'ok';
        try { decode(msg); } catch (e) { reason = e.reason; assert.equal(e.cmd, c); }
        assert.equal(reason === 'unknown_cmd', !ok.has(c), `cmd ${c}: ${reason}`);
      }
    }
  });
  test('INVALID_PACKET of 3..33 bytes: truncated MsgId, not reported', () => {
    const b = P.encodeInvalid(5, MSGID);
    for (let k = 3; k < 34; k++) {
      assertProtoError(() => P.decodeServerMessage(b.subarray(0, k)), 'truncated', { cmd: 10, msgId: undefined });
    }
    assertProtoError(() => P.decodeClientMessage(b), 'unknown_cmd');
  });
  test('unknown and empty commands', () => {
    for (const c of [0, 13, 19, 21, 255]) {
      if (c !== 13) {
        assertProtoError(() => P.decodeServerMessage(Uint8Array.of(c)), 'unknown_cmd', { cmd: c });
      }
      assertProtoError(() => P.decodeClientMessage(Uint8Array.of(c, 1, 2, 3)), 'unknown_cmd', { cmd: c });
    }
    // RECEIPT goes only from the server
    assertProtoError(() => P.decodeServerMessage(Uint8Array.of(13)), 'truncated', { cmd: 13 });
    assertProtoError(() => P.decodeServerMessage(new Uint8Array(0)), 'empty');
    assertProtoError(() => P.decodeClientMessage(new Uint8Array(0)), 'empty');
  });
});

describe('limits and field checks', () => {
  test('payload cap 32767 is refused locally above it', () => {
    const ok = new Uint8Array(32767);
    const b = P.encodePublish({ toUid: 1, msgId: MSGID, payload: ok });
    assert.equal(b.length, 1 + 4 + 32 + 2 + 32767);
    assert.equal(P.decodeClientMessage(b).payload.length, 32767);
    assertProtoError(() => P.encodePublish({ toUid: 1, msgId: MSGID, payload: new Uint8Array(32768) }), 'payload_too_large');
    assertProtoError(() => P.encodeGroupPublish({ gid: 1, msgId: MSGID, payload: 'x'.repeat(32768) }), 'payload_too_large');
    assertProtoError(() => P.encodeGroupPartPublish({ gid: 1, msgId: MSGID, uids: [1], payload: 'é'.repeat(16384) }), 'payload_too_large');
    // a smaller operator limit
    assertProtoError(() => P.encodePublish({ toUid: 1, msgId: MSGID, payload: 'abc' }, { maxPayload: 2 }), 'payload_too_large');
  });
  test('codec limits: uid 2^32-1, 65535-byte payload, 65535 uids (operator limit above the default)', () => {
    const payload = Uint8Array.from({ length: 65535 }, (_, i) => (i * 7) & 0xff);
    const b = P.encodePublish({ toUid: 0xffffffff, msgId: MSGID, payload }, { maxPayload: 65535 });
    assert.equal(b.length, 1 + 4 + 32 + 2 + 65535);
    assertBytes(b.subarray(37, 39), 'ffff');
    const m = P.decodeClientMessage(b);
    assert.equal(m.toUid, 0xffffffff);
    assert.deepEqual(m.payload, payload);
    const uids = Array.from({ length: 65535 }, (_, i) => 0xfffe0000 + i);
    const big = P.encodeGroupPartPublish({ gid: 1, msgId: MSGID, uids, payload }, { maxPayload: 65535 });
    assertBytes(big.subarray(37, 43), 'fffffffe0000');
    const pm = P.decodeServerMessage(big);
    assert.equal(pm.uids.length, 65535);
    assert.equal(pm.uids[65534], 0xfffe0000 + 65534);
    assertProtoError(() => P.decodeClientMessage(big.subarray(0, big.length - 1)), 'length');
    assertProtoError(() => P.encodePublish({ toUid: 1, msgId: MSGID, payload: new Uint8Array(65536) }, { maxPayload: 70000 }),
      'payload_too_large');
  });
  test('empty payload', () => {
    assertBytes(P.encodePublish({ toUid: 1, msgId: MSGID, payload: '' }), `03 00000001 ${MSGID_HEX} 0000`);
  });
  test('uid / gid range', () => {
    assertBytes(P.encodePublish({ toUid: 0xffffffff, msgId: MSGID, payload: '' }).subarray(0, 5), '03 ffffffff');
    assert.equal(P.decodeClientMessage(P.encodePublish({ toUid: 0xffffffff, msgId: MSGID, payload: '' })).toUid, 4294967295);
    for (const bad of [-1, 2 ** 32, 1.5, '1', NaN]) {
      assertProtoError(() => P.encodePublish({ toUid: bad, msgId: MSGID, payload: '' }), 'bad_uid');
    }
    assertProtoError(() => P.encodeGroupPartPublish({ gid: 1, msgId: MSGID, uids: [1, -2], payload: '' }), 'bad_uid');
  });
  test('MsgId must be 32 bytes; any bytes round-trip', () => {
    assertProtoError(() => P.encodeAck(4, 'abc'), 'bad_msgid');
    assertProtoError(() => P.encodeAck(4, 'é'.repeat(31) + '\u0100'), 'bad_msgid');
    assertProtoError(() => P.encodeAck(4, new Uint8Array(31)), 'bad_msgid');
    const raw = Uint8Array.from({ length: 32 }, (_, i) => 255 - i * 3);
    const m = P.decodeServerMessage(P.encodeAck(12, raw));
    assert.deepEqual(P.msgIdToBytes(m.msgId), raw);
  });
  test('many uids in a part-group message', () => {
    const uids = Array.from({ length: 1000 }, (_, i) => 1000 + i);
    const m = P.decodeServerMessage(P.encodeGroupPartPublish({ gid: 1, msgId: MSGID, uids, payload: 'x' }));
    assert.deepEqual(m.uids, uids);
  });
  test('encodeAck only for 4, 6, 12; ackCmdFor maps pushes', () => {
    assertProtoError(() => P.encodeAck(3, MSGID), 'bad_value');
    assert.equal(P.ackCmdFor(3), 4);
    assert.equal(P.ackCmdFor(5), 6);
    assert.equal(P.ackCmdFor(11), 12);
    assert.throws(() => P.ackCmdFor(4), RangeError);
  });
});

describe('helpers', () => {
  test('newMsgId: 32 lowercase hex chars, v4 UUID, unique', () => {
    const seen = new Set();
    for (let i = 0; i < 200; i++) {
      const id = P.newMsgId();
      assert.match(id, /^[0-9a-f]{12}4[0-9a-f]{3}[89ab][0-9a-f]{15}$/);
      seen.add(id);
    }
    assert.equal(seen.size, 200);
  });
  test('parsePayload: JSON when JSON, raw bytes otherwise', () => {
    const j = P.parsePayload(new TextEncoder().encode('{"from":1,"to":2,"content":{"type":"text","text":"hé"}}'));
    assert.equal(j.json, true);
    assert.equal(j.value.content.text, 'hé');
    const n = P.parsePayload(new TextEncoder().encode('hello world'));
    assert.equal(n.json, false);
    assert.ok(n.value instanceof Uint8Array);
    const bad = P.parsePayload(Uint8Array.of(0x22, 0xff, 0x22)); // invalid UTF-8 in a "string"
    assert.equal(bad.json, false);
  });
  test('connectCodeInfo names', () => {
    assert.deepEqual([0, 1, 2, 3].map((c) => P.connectCodeInfo(c).name),
      ['accepted', 'duplicate', 'service_unavailable', 'bad_credentials']);
  });
});
