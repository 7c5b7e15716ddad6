// improto.js — pure codec for the ngx_im wire protocol (the contract: docs/PROTOCOL.md).
//
// No I/O and no dependencies: every function takes or returns Uint8Array.
// All integers are unsigned big-endian. A MsgId is exactly 32 opaque bytes; in
// JavaScript it is a 32-character string, one character per byte (latin1), so
// the usual 32 lowercase hex characters are simply their ASCII bytes and any
// other byte string still round-trips exactly.
//
// "Client" messages travel client -> server, "server" messages server -> client.
// Both directions are encoded and decoded here, so a test can play either side.

export const CMD = Object.freeze({
  CONNECT: 1,
  CONNECT_ACK: 2,
  PUBLISH: 3,
  PUB_ACK: 4,
  GROUP_PUBLISH: 5,
  GROUP_PUB_ACK: 6,
  PING: 7,
  PING_RESP: 8,
  DISCONNECT: 9,
  INVALID_PACKET: 10,
  GROUP_PART_PUBLISH: 11,
  GROUP_PART_PUB_ACK: 12,
  RECEIPT: 13,
  LOGOUT: 20,
});

export const CMD_NAME = Object.freeze(
  Object.fromEntries(Object.entries(CMD).map(([k, v]) => [v, k])));

export const MSGID_LEN = 32;
export const MAX_PAYLOAD = 32767; // the field's Android client reads Len as signed 16 bits
export const MAX_UINT16 = 0xffff;
export const MAX_UINT32 = 0xffffffff;

// CONNECT_ACK codes (docs/PROTOCOL.md §3.1).
export const CONNECT_CODE = Object.freeze({
  ACCEPTED: 0,
  DUPLICATE: 1,
  SERVICE_UNAVAILABLE: 2,
  BAD_CREDENTIALS: 3,
});

const CONNECT_CODE_INFO = {
  0: ['accepted', 'Connection accepted'],
  1: ['duplicate', 'Duplicate connection: already logged in'],
  2: ['service_unavailable', 'Service unavailable: the user centre could not be asked'],
  3: ['bad_credentials', 'Bad username or password'],
};

/** Name and human text of a CONNECT_ACK code. */
export function connectCodeInfo(code) {
  const info = CONNECT_CODE_INFO[code];
  return info ? { code, name: info[0], text: info[1] }
              : { code, name: 'unknown', text: `Connection refused (code ${code})` };
}

/** The ack command that answers a push: 4 for 3, 6 for 5, 12 for 11. */
export function ackCmdFor(pushCmd) {
  switch (pushCmd) {
    case CMD.PUBLISH: return CMD.PUB_ACK;
    case CMD.GROUP_PUBLISH: return CMD.GROUP_PUB_ACK;
    case CMD.GROUP_PART_PUBLISH: return CMD.GROUP_PART_PUB_ACK;
    default: throw new RangeError(`no ack command for cmd ${pushCmd}`);
  }
}

/**
 * A codec error. `reason` is one of:
 *   'empty'             zero-length message
 *   'unknown_cmd'       command byte not defined for this direction
 *   'truncated'         a field runs past the end of the message
 *   'trailing'          bytes left after the last field
 *   'payload_too_large' encode: payload over the limit
 *   'too_long'          encode: a 16-bit length field would overflow
 *   'bad_msgid'         encode: MsgId is not 32 bytes
 *   'bad_uid'           encode: uid/gid is not an integer in 0..2^32-1
 *   'bad_value'         encode: another field is out of range
 * `cmd` is the command byte (when known) and `msgId` the MsgId when it could be read,
 * which is exactly what the server echoes in INVALID_PACKET.
 */
export class ProtoError extends Error {
  constructor(reason, message, { cmd, msgId } = {}) {
    super(message);
    this.name = 'ProtoError';
    this.reason = reason;
    if (cmd !== undefined) this.cmd = cmd;
    if (msgId !== undefined) this.msgId = msgId;
  }
}

const utf8enc = new TextEncoder();
const utf8dec = new TextDecoder('utf-8');

// ---------------------------------------------------------------- helpers

/** Bytes of a string (UTF-8), an ArrayBuffer or a typed array. */
export function toBytes(v) {
  if (v instanceof Uint8Array) return v;
  if (typeof v === 'string') return utf8enc.encode(v);
  if (v instanceof ArrayBuffer) return new Uint8Array(v);
  if (ArrayBuffer.isView(v)) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  throw new TypeError('expected a string, an ArrayBuffer or a typed array');
}

/** MsgId (32-char latin1 string or 32 bytes) -> 32 bytes. */
export function msgIdToBytes(msgId) {
  if (typeof msgId === 'string') {
    if (msgId.length !== MSGID_LEN) {
      throw new ProtoError('bad_msgid', `MsgId must be ${MSGID_LEN} characters, got ${msgId.length}`);
    }
    const b = new Uint8Array(MSGID_LEN);
    for (let i = 0; i < MSGID_LEN; i++) {
      const c = msgId.charCodeAt(i);
      if (c > 0xff) throw new ProtoError('bad_msgid', 'MsgId characters must be single bytes');
      b[i] = c;
    }
    return b;
  }
  const b = ArrayBuffer.isView(msgId) || msgId instanceof ArrayBuffer ? toBytes(msgId) : null;
  if (!b || b.length !== MSGID_LEN) {
    throw new ProtoError('bad_msgid', `MsgId must be ${MSGID_LEN} bytes`);
  }
  return b;
}

/** 32 bytes -> MsgId string (one char per byte). */
export function bytesToMsgId(bytes) {
  return String.fromCharCode(...bytes);
}

/** A fresh MsgId: a random (v4) UUID as 32 lowercase hex characters. */
export function newMsgId() {
  const c = globalThis.crypto;
  if (c && typeof c.randomUUID === 'function') return c.randomUUID().replace(/-/g, '');
  // crypto.randomUUID exists only in secure contexts; getRandomValues is everywhere.
  const b = new Uint8Array(16);
  if (c && typeof c.getRandomValues === 'function') c.getRandomValues(b);
  else for (let i = 0; i < 16; i++) b[i] = (Math.random() * 256) | 0;
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

function checkUint32(v, what) {
  if (!Number.isInteger(v) || v < 0 || v > MAX_UINT32) {
    throw new ProtoError('bad_uid', `${what} must be an integer in 0..4294967295, got ${v}`);
  }
  return v;
}

function checkPayload(payload, maxPayload) {
  const p = toBytes(payload);
  const max = Math.min(maxPayload ?? MAX_PAYLOAD, MAX_UINT16);
  if (p.length > max) {
    throw new ProtoError('payload_too_large', `payload is ${p.length} bytes, limit ${max}`);
  }
  return p;
}

/** Tiny big-endian writer over a preallocated buffer. */
class Writer {
  constructor(size) { this.buf = new Uint8Array(size); this.dv = new DataView(this.buf.buffer); this.o = 0; }
  u8(v) { this.dv.setUint8(this.o, v); this.o += 1; return this; }
  u16(v) { this.dv.setUint16(this.o, v); this.o += 2; return this; }
  u32(v) { this.dv.setUint32(this.o, v); this.o += 4; return this; }
  bytes(b) { this.buf.set(b, this.o); this.o += b.length; return this; }
  done() {
    if (this.o !== this.buf.length) throw new Error('internal: writer size mismatch');
    return this.buf;
  }
}

/** Big-endian reader that throws ProtoError('truncated') past the end. */
class Reader {
  constructor(bytes) {
    this.b = bytes;
    this.dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.o = 0;
    this.cmd = undefined;
    this.msgId = undefined;
  }
  err(reason, message) { return new ProtoError(reason, message, { cmd: this.cmd, msgId: this.msgId }); }
  need(n, what) {
    if (this.o + n > this.b.length) {
      throw this.err('truncated', `${CMD_NAME[this.cmd] ?? this.cmd}: truncated ${what}`);
    }
  }
  u8(what) { this.need(1, what); return this.dv.getUint8(this.o++); }
  u16(what) { this.need(2, what); const v = this.dv.getUint16(this.o); this.o += 2; return v; }
  u32(what) { this.need(4, what); const v = this.dv.getUint32(this.o); this.o += 4; return v; }
  bytes(n, what) { this.need(n, what); const v = this.b.slice(this.o, this.o + n); this.o += n; return v; }
  /** n bytes announced by a length field: 'length' error when they are not all there. */
  counted(n, what) {
    if (this.o + n > this.b.length) {
      throw this.err('length', `${CMD_NAME[this.cmd] ?? this.cmd}: ${what} length ${n} points past the end`);
    }
    return this.bytes(n, what);
  }
  readMsgId() { this.msgId = bytesToMsgId(this.bytes(MSGID_LEN, 'MsgId')); return this.msgId; }
  left() { return this.b.length - this.o; }
  end() {
    if (this.o !== this.b.length) {
      throw this.err('trailing', `${CMD_NAME[this.cmd] ?? this.cmd}: ${this.left()} trailing byte(s)`);
    }
  }
}

// ---------------------------------------------------------------- encoders

/**
 * CONNECT (1): <<1, UserLen:16, User, PassLen:16, Pass, [Role:8, [ClientId:8]]>>.
 * role and clientId are optional; giving clientId without role sends role 0.
 */
export function encodeConnect({ username, password, role, clientId }) {
  const u = toBytes(username ?? '');
  const p = toBytes(password ?? '');
  if (u.length > MAX_UINT16) throw new ProtoError('too_long', 'username longer than 65535 bytes');
  if (p.length > MAX_UINT16) throw new ProtoError('too_long', 'password longer than 65535 bytes');
  const hasClient = clientId !== undefined && clientId !== null;
  const hasRole = hasClient || (role !== undefined && role !== null);
  for (const [v, what, has] of [[role ?? 0, 'role', hasRole], [clientId, 'clientId', hasClient]]) {
    if (has && (!Number.isInteger(v) || v < 0 || v > 255)) {
      throw new ProtoError('bad_value', `${what} must be an integer in 0..255`);
    }
  }
  const w = new Writer(1 + 2 + u.length + 2 + p.length + (hasRole ? 1 : 0) + (hasClient ? 1 : 0));
  w.u8(CMD.CONNECT).u16(u.length).bytes(u).u16(p.length).bytes(p);
  if (hasRole) w.u8(role ?? 0);
  if (hasClient) w.u8(clientId);
  return w.done();
}

/** CONNECT_ACK (2): <<2, Code:8>>. */
export function encodeConnectAck(code) {
  if (!Number.isInteger(code) || code < 0 || code > 255) throw new ProtoError('bad_value', 'code must be 0..255');
  return Uint8Array.of(CMD.CONNECT_ACK, code);
}

/** Client PUBLISH (3): <<3, ToUid:32, MsgId:32B, Len:16, Payload>>. */
export function encodePublish({ toUid, msgId, payload }, { maxPayload } = {}) {
  checkUint32(toUid, 'toUid');
  const id = msgIdToBytes(msgId);
  const p = checkPayload(payload, maxPayload);
  return new Writer(1 + 4 + MSGID_LEN + 2 + p.length)
    .u8(CMD.PUBLISH).u32(toUid).bytes(id).u16(p.length).bytes(p).done();
}

/** Server 1:1 push (3): <<3, MsgId:32B, Len:16, Payload>>. */
export function encodePush({ msgId, payload }, { maxPayload = MAX_UINT16 } = {}) {
  const id = msgIdToBytes(msgId);
  const p = checkPayload(payload, maxPayload);
  return new Writer(1 + MSGID_LEN + 2 + p.length)
    .u8(CMD.PUBLISH).bytes(id).u16(p.length).bytes(p).done();
}

/** GROUP_PUBLISH (5), same layout both ways: <<5, Gid:32, MsgId:32B, Len:16, Payload>>. */
export function encodeGroupPublish({ gid, msgId, payload }, { maxPayload } = {}) {
  checkUint32(gid, 'gid');
  const id = msgIdToBytes(msgId);
  const p = checkPayload(payload, maxPayload);
  return new Writer(1 + 4 + MSGID_LEN + 2 + p.length)
    .u8(CMD.GROUP_PUBLISH).u32(gid).bytes(id).u16(p.length).bytes(p).done();
}

/**
 * GROUP_PART_PUBLISH (11), same layout both ways:
 * <<11, Gid:32, MsgId:32B, N:16, Uid:32 x N, Len:16, Payload>>.
 */
export function encodeGroupPartPublish({ gid, msgId, uids, payload }, { maxPayload } = {}) {
  checkUint32(gid, 'gid');
  const id = msgIdToBytes(msgId);
  if (!Array.isArray(uids)) throw new ProtoError('bad_value', 'uids must be an array');
  if (uids.length > MAX_UINT16) throw new ProtoError('too_long', 'more than 65535 uids');
  uids.forEach((u) => checkUint32(u, 'uid'));
  const p = checkPayload(payload, maxPayload);
  const w = new Writer(1 + 4 + MSGID_LEN + 2 + 4 * uids.length + 2 + p.length);
  w.u8(CMD.GROUP_PART_PUBLISH).u32(gid).bytes(id).u16(uids.length);
  for (const u of uids) w.u32(u);
  return w.u16(p.length).bytes(p).done();
}

/**
 * An ack (4, 6 or 12), either way: <<Cmd, MsgId:32B>>, optionally followed by
 * extra bytes (the field's client sends `MsgId ++ "_" ++ 32 more bytes`).
 */
export function encodeAck(cmd, msgId, extra) {
  if (cmd !== CMD.PUB_ACK && cmd !== CMD.GROUP_PUB_ACK && cmd !== CMD.GROUP_PART_PUB_ACK) {
    throw new ProtoError('bad_value', `not an ack command: ${cmd}`);
  }
  const id = msgIdToBytes(msgId);
  const x = extra === undefined ? new Uint8Array(0) : toBytes(extra);
  return new Writer(1 + MSGID_LEN + x.length).u8(cmd).bytes(id).bytes(x).done();
}

export const encodePing = () => Uint8Array.of(CMD.PING);
export const encodePingResp = () => Uint8Array.of(CMD.PING_RESP);
export const encodeDisconnect = () => Uint8Array.of(CMD.DISCONNECT);
export const encodeLogout = () => Uint8Array.of(CMD.LOGOUT);

/** RECEIPT (13, server -> client): <<13, MsgId:32B, Uid:32>>: uid acked MsgId. */
export function encodeReceipt({ msgId, uid }) {
  return new Writer(1 + MSGID_LEN + 4).u8(CMD.RECEIPT).bytes(msgIdToBytes(msgId)).u32(uid).done();
}

/** INVALID_PACKET (10): <<10, Cmd:8>> or <<10, Cmd:8, MsgId:32B>>. */
export function encodeInvalid(cmd, msgId) {
  if (!Number.isInteger(cmd) || cmd < 0 || cmd > 255) throw new ProtoError('bad_value', 'cmd must be 0..255');
  if (msgId === undefined || msgId === null) return Uint8Array.of(CMD.INVALID_PACKET, cmd);
  return new Writer(2 + MSGID_LEN).u8(CMD.INVALID_PACKET).u8(cmd).bytes(msgIdToBytes(msgId)).done();
}

// ---------------------------------------------------------------- decoders

function readPayload(r) {
  const len = r.u16('payload length');
  return r.counted(len, 'payload');
}

function readAck(r, cmd, longOk) {
  const msgId = r.readMsgId();
  // From a client, longer acks are accepted: only the first 32 bytes after the
  // command count. The server sends exactly 33 bytes.
  if (!longOk) r.end();
  const extra = r.bytes(r.left(), 'extra');
  return { cmd, msgId, extra };
}

function readGroupPart(r, cmd) {
  const gid = r.u32('Gid');
  const msgId = r.readMsgId();
  const n = r.u16('uid count');
  const ub = r.counted(4 * n, 'uid list');
  const dv = new DataView(ub.buffer, ub.byteOffset, ub.byteLength);
  const uids = new Array(n);
  for (let i = 0; i < n; i++) uids[i] = dv.getUint32(4 * i);
  const payload = readPayload(r);
  r.end();
  return { cmd, gid, msgId, uids, payload };
}

function start(buf) {
  const b = toBytes(buf);
  const r = new Reader(b);
  if (b.length === 0) throw new ProtoError('empty', 'empty message');
  r.cmd = r.u8('cmd');
  return r;
}

/**
 * Decode a message the server sent (server -> client).
 * Returns a plain object whose `cmd` is the command byte:
 *   2  {cmd, code, name, text}
 *   3  {cmd, msgId, payload}               1:1 push
 *   4/6/12 {cmd, msgId, extra}             acks (exactly 33 bytes: extra is empty)
 *   5  {cmd, gid, msgId, payload}          group push
 *   11 {cmd, gid, msgId, uids, payload}    part-group push
 *   7/8/9/20 {cmd}
 *   10 {cmd, invalidCmd, msgId?}
 * Throws ProtoError on anything malformed.
 */
export function decodeServerMessage(buf) {
  const r = start(buf);
  const cmd = r.cmd;
  let m;
  switch (cmd) {
    case CMD.CONNECT_ACK: {
      const code = r.u8('code');
      r.end();
      const { name, text } = connectCodeInfo(code);
      return { cmd, code, name, text };
    }
    case CMD.PUBLISH: {
      const msgId = r.readMsgId();
      const payload = readPayload(r);
      r.end();
      return { cmd, msgId, payload };
    }
    case CMD.GROUP_PUBLISH: {
      const gid = r.u32('Gid');
      const msgId = r.readMsgId();
      const payload = readPayload(r);
      r.end();
      return { cmd, gid, msgId, payload };
    }
    case CMD.GROUP_PART_PUBLISH:
      return readGroupPart(r, cmd);
    case CMD.PUB_ACK:
    case CMD.GROUP_PUB_ACK:
    case CMD.GROUP_PART_PUB_ACK:
      return readAck(r, cmd, false);
    case CMD.PING:
    case CMD.PING_RESP:
    case CMD.DISCONNECT:
    case CMD.LOGOUT:
      r.end();
      return { cmd };
    case CMD.INVALID_PACKET: {
      const invalidCmd = r.u8('cmd');
      m = { cmd, invalidCmd };
      if (r.left() > 0) m.msgId = r.readMsgId();
      r.end();
      return m;
    }
    case CMD.RECEIPT: {
      m = { cmd, msgId: r.readMsgId() };
      m.uid = r.u32('uid');
      r.end();
      return m;
    }
    default:
      throw r.err('unknown_cmd', `unknown server command ${cmd}`);
  }
}

/**
 * Decode a message a client sent (client -> server), as the server would:
 *   1  {cmd, username, password, usernameBytes, passwordBytes, role?, clientId?}
 *      (role / clientId present only when they were sent; absent means 0)
 *   3  {cmd, toUid, msgId, payload}
 *   5  {cmd, gid, msgId, payload}
 *   11 {cmd, gid, msgId, uids, payload}
 *   4/6/12 {cmd, msgId, extra}   (extra: the bytes after the MsgId of a long ack)
 *   7/8/9 {cmd}
 * Throws ProtoError on anything malformed.
 */
export function decodeClientMessage(buf) {
  const r = start(buf);
  const cmd = r.cmd;
  switch (cmd) {
    case CMD.CONNECT: {
      const usernameBytes = r.counted(r.u16('username length'), 'username');
      const passwordBytes = r.counted(r.u16('password length'), 'password');
      const m = {
        cmd,
        username: utf8dec.decode(usernameBytes),
        password: utf8dec.decode(passwordBytes),
        usernameBytes,
        passwordBytes,
      };
      if (r.left() > 0) m.role = r.u8('role');
      if (r.left() > 0) m.clientId = r.u8('clientId');
      r.end();
      return m;
    }
    case CMD.PUBLISH: {
      const toUid = r.u32('ToUid');
      const msgId = r.readMsgId();
      const payload = readPayload(r);
      r.end();
      return { cmd, toUid, msgId, payload };
    }
    case CMD.GROUP_PUBLISH: {
      const gid = r.u32('Gid');
      const msgId = r.readMsgId();
      const payload = readPayload(r);
      r.end();
      return { cmd, gid, msgId, payload };
    }
    case CMD.GROUP_PART_PUBLISH:
      return readGroupPart(r, cmd);
    case CMD.PUB_ACK:
    case CMD.GROUP_PUB_ACK:
    case CMD.GROUP_PART_PUB_ACK:
      return readAck(r, cmd, true);
    case CMD.PING:
    case CMD.PING_RESP:
    case CMD.DISCONNECT:
      r.end();
      return { cmd };
    default:
      throw r.err('unknown_cmd', `unknown client command ${cmd}`);
  }
}

// ---------------------------------------------------------------- payloads

/**
 * Interpret a payload: JSON when it is valid UTF-8 holding JSON, raw bytes otherwise.
 * Returns {json: true, value} or {json: false, value: Uint8Array}.
 */
export function parsePayload(bytes) {
  try {
    const text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    return { json: true, value: JSON.parse(text) };
  } catch {
    return { json: false, value: bytes };
  }
}

/** Hex dump helper (tests, logs). */
export function toHex(bytes) {
  return Array.from(toBytes(bytes), (x) => x.toString(16).padStart(2, '0')).join('');
}
