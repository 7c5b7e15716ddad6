// The byte-exact examples of docs/vectors.json (schema: docs/PROTOCOL.md §9)
// against the codec (js/src/improto.js): every vector is decoded in each
// direction it names and compared field by field, or must fail with its error
// (and still report the MsgId when the vector says it was read); every valid one
// is built again from its fields and must give the same bytes. The C unit tests
// and the Perl harness load the same file.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as P from '../src/improto.js';

const { CMD } = P;
const file = new URL('../../docs/vectors.json', import.meta.url);
const { vectors } = JSON.parse(readFileSync(file, 'utf8'));

const bytesOf = (hex) => new Uint8Array(Buffer.from(hex.replace(/\s+/g, ''), 'hex'));
const utf8 = (s) => new Uint8Array(Buffer.from(s, 'utf8'));
const FIELDS = new Set(['cmd', 'user', 'pass', 'role', 'client_id', 'code', 'to', 'gid', 'msgid', 'uids',
  'payload', 'extra', 'bad_cmd', 'uid']);
const isAck = (cmd) => cmd === CMD.PUB_ACK || cmd === CMD.GROUP_PUB_ACK || cmd === CMD.GROUP_PART_PUB_ACK;

function directions(v) {
  return v.direction === 'both' ? ['c2s', 's2c'] : [v.direction];
}

function decode(dir, bytes) {
  return dir === 'c2s' ? P.decodeClientMessage(bytes) : P.decodeServerMessage(bytes);
}

// The vector's fields in improto.js's names and types.
function expected(dir, f) {
  const m = { cmd: f.cmd };
  if ('user' in f) m.usernameBytes = utf8(f.user);
  if ('pass' in f) m.passwordBytes = utf8(f.pass);
  if ('role' in f) m.role = f.role ?? undefined;
  if ('client_id' in f) m.clientId = f.client_id ?? undefined;
  if ('code' in f) m.code = f.code;
  if ('to' in f) m.toUid = f.to;
  if ('gid' in f) m.gid = f.gid;
  if ('msgid' in f) m.msgId = f.msgid ?? undefined;
  if ('uids' in f) m.uids = f.uids;
  if ('payload' in f) m.payload = utf8(f.payload);
  if ('extra' in f) m.extra = utf8(f.extra);
  if ('bad_cmd' in f) m.invalidCmd = f.bad_cmd;
  if ('uid' in f) m.uid = f.uid;
  return m;
}

function encode(dir, f) {
  const msgId = f.msgid;
  switch (f.cmd) {
    case CMD.CONNECT:
      return P.encodeConnect({
        username: utf8(f.user), password: utf8(f.pass), role: f.role, clientId: f.client_id,
      });
    case CMD.CONNECT_ACK:
      return P.encodeConnectAck(f.code);
    case CMD.PUBLISH:
      return dir === 'c2s'
        ? P.encodePublish({ toUid: f.to, msgId, payload: f.payload })
        : P.encodePush({ msgId, payload: f.payload });
    case CMD.GROUP_PUBLISH:
      return P.encodeGroupPublish({ gid: f.gid, msgId, payload: f.payload });
    case CMD.GROUP_PART_PUBLISH:
      return P.encodeGroupPartPublish({ gid: f.gid, msgId, uids: f.uids, payload: f.payload });
    case CMD.PUB_ACK:
    case CMD.GROUP_PUB_ACK:
    case CMD.GROUP_PART_PUB_ACK:
      return P.encodeAck(f.cmd, msgId, f.extra === '' ? undefined : utf8(f.extra));
    case CMD.PING: return P.encodePing();
    case CMD.PING_RESP: return P.encodePingResp();
    case CMD.DISCONNECT: return P.encodeDisconnect();
    case CMD.LOGOUT: return P.encodeLogout();
    case CMD.INVALID_PACKET:
      return P.encodeInvalid(f.bad_cmd, msgId ?? undefined);
    case CMD.RECEIPT:
      return P.encodeReceipt({ msgId, uid: f.uid });
    default:
      throw new Error(`no encoder for cmd ${f.cmd}`);
  }
}

describe('docs/vectors.json', () => {
  test('the file: unique names, known directions, errors only on invalid vectors', () => {
    assert.ok(vectors.length >= 80, `${vectors.length} vectors`);
    const names = new Set();
    for (const v of vectors) {
      assert.ok(!names.has(v.name), `duplicate name ${v.name}`);
      names.add(v.name);
      assert.ok(['c2s', 's2c', 'both'].includes(v.direction), v.name);
      assert.match(v.hex, /^[0-9a-f ]*$/, v.name);
      assert.equal(typeof v.valid, 'boolean', v.name);
      assert.equal('error' in v, !v.valid, v.name);
      for (const k of Object.keys(v.fields)) assert.ok(FIELDS.has(k), `${v.name}: unknown field ${k}`);
      if (v.seed) assert.ok(v.valid, v.name);
    }
  });

  test('every command of the protocol has a valid vector in each of its directions', () => {
    const seen = new Set();
    for (const v of vectors.filter((x) => x.valid)) {
      for (const dir of directions(v)) seen.add(`${dir} ${v.fields.cmd}`);
    }
    for (const c of [1, 3, 4, 5, 6, 7, 8, 9, 11, 12]) assert.ok(seen.has(`c2s ${c}`), `c2s ${c}`);
    for (const c of [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 20]) assert.ok(seen.has(`s2c ${c}`), `s2c ${c}`);
  });

  for (const v of vectors) {
    const bytes = bytesOf(v.hex);
    for (const dir of directions(v)) {
      test(`${dir} ${v.name}`, () => {
        if (v.valid) {
          const m = decode(dir, bytes);
          for (const [k, want] of Object.entries(expected(dir, v.fields))) {
            assert.deepEqual(m[k], want, `${v.name}: ${k}`);
          }
          if (isAck(v.fields.cmd) && v.fields.extra === '') assert.equal(m.extra.length, 0);
          if ('user' in v.fields) assert.equal(m.username, v.fields.user, `${v.name}: username`);
          if ('pass' in v.fields) assert.equal(m.password, v.fields.pass, `${v.name}: password`);
          assert.deepEqual(P.toHex(encode(dir, v.fields)), P.toHex(bytes), `${v.name}: built`);
        } else {
          assert.throws(() => decode(dir, bytes), (e) => {
            assert.ok(e instanceof P.ProtoError, `${v.name}: ProtoError expected, got ${e}`);
            assert.equal(e.reason, v.error, `${v.name}: ${e.message}`);
            if ('cmd' in v.fields) assert.equal(e.cmd, v.fields.cmd, `${v.name}: cmd`);
            if ('msgid' in v.fields) assert.equal(e.msgId, v.fields.msgid ?? undefined, `${v.name}: msgId`);
            return true;
          });
        }
        if (v.tcp_hex !== undefined) {
          const framed = bytesOf(v.tcp_hex);
          const len = new DataView(framed.buffer, framed.byteOffset).getUint32(0);
          assert.equal(len, bytes.length, `${v.name}: TCP length`);
          assert.deepEqual(framed.subarray(4), bytes, `${v.name}: TCP body`);
        }
      });
    }
  }
});
