// imclient.js — browser / Node client for the ngx_im instant-messaging server.
//
// Dependency-free ES module. In browsers it uses the global WebSocket; in Node 20
// pass a WebSocket constructor (e.g. the npm `ws` package) as the `WebSocket` option.
// The wire codec lives in improto.js; this file is the session logic on top of it:
// login, typed events, sends that resolve on the server's ack, automatic acks of
// pushes, dedupe, the heartbeat (answers to the server's PING, and a reconnect when
// those PINGs stop), reconnect with jittered exponential backoff, a bounded outbox
// that survives reconnects, and a clear error when the server cannot be reached.

import {
  CMD, MAX_PAYLOAD, ProtoError, ackCmdFor, connectCodeInfo, decodeServerMessage,
  encodeAck, encodeConnect, encodeDisconnect, encodeGroupPartPublish, encodeGroupPublish,
  encodePing, encodePingResp, encodePublish, newMsgId, parsePayload,
} from './improto.js';

export {
  CMD, CMD_NAME, CONNECT_CODE, MAX_PAYLOAD, ProtoError, connectCodeInfo, newMsgId,
} from './improto.js';

/**
 * Errors the client rejects promises with. `code` is one of:
 *   'timeout'            once(): no such event in time; ping(): no PING_RESP in time
 *   'invalid'            the server refused the message (INVALID_PACKET with its MsgId)
 *   'payload_too_large'  refused locally, payload over maxPayload
 *   'bad_argument'       bad uid / gid / uids / MsgId
 *   'queue_full'         the outbox already holds maxQueue messages (an 'overflow' event too)
 *   'cancelled'          cancel() took the message out of the outbox
 *   'refused'            login refused (CONNECT_ACK 1, 3 or an unknown code); see .connectCode
 *   'logout'             logged in elsewhere (LOGOUT)
 *   'unreachable'        no login after connectAttempts tries (reconnect.maxAttempts once
 *                        live); .url, .attempts, .lastFailure say what happened
 *   'bad_url'            the WebSocket constructor refused the URL
 *   'heartbeat'          ('error' events only) the server's PINGs stopped, or a probe PING
 *                        went unanswered: the connection is dropped and reopened
 *   'closed'             close() was called, or the connection ended without reconnect
 */
export class ImError extends Error {
  constructor(code, message, extra = {}) {
    super(message);
    this.name = 'ImError';
    this.code = code;
    Object.assign(this, extra);
  }
}

/** A bounded set that forgets the least recently seen key first. */
export class LruSet {
  constructor(max = 1000) { this.max = Math.max(1, max); this.map = new Map(); }
  get size() { return this.map.size; }
  has(key) {
    if (!this.map.has(key)) return false;
    this.map.delete(key);
    this.map.set(key, true);
    return true;
  }
  add(key) {
    this.map.delete(key);
    this.map.set(key, true);
    while (this.map.size > this.max) this.map.delete(this.map.keys().next().value);
    return this;
  }
}

const WS_OPEN = 1;
const noop = () => {};

const DEFAULT_RECONNECT = {
  initialDelay: 500, maxDelay: 30000, factor: 2, jitter: 0.5, maxAttempts: Infinity,
};
// The server's defaults (im_ping_interval 30s, im_ping_timeout 10s, docs/GUIDE.md §5).
const DEFAULT_HEARTBEAT = { interval: 30000, timeout: 10000 };

const PUSH_EVENT = {
  [CMD.PUBLISH]: 'message',
  [CMD.GROUP_PUBLISH]: 'group',
  [CMD.GROUP_PART_PUBLISH]: 'partGroup',
};

const Ev = typeof CustomEvent === 'function' ? CustomEvent : class extends Event {
  constructor(type, init = {}) { super(type); this.detail = init.detail; }
};

/**
 * ImClient — one logical session (it may span several WebSocket connections).
 *
 * Events (listen with addEventListener(type, e => e.detail) or client.on(type, detail => …)):
 *   connecting   {url, attempt}            a WebSocket is being opened
 *   connectAck   {code, name, text}        CONNECT_ACK; code 0 = live
 *   message      push cmd 3                {cmd, msgId, payload, json, raw}
 *   group        push cmd 5                {cmd, gid, msgId, payload, json, raw}
 *   partGroup    push cmd 11               {cmd, gid, uids, msgId, payload, json, raw}
 *   duplicate    a push already seen (acked again, not re-emitted)  {cmd, msgId}
 *   sent         a message was written to the socket  {msgId, cmd, resend}
 *   ack          an ack (4/6/12) from the server       {cmd, msgId, extra, known}
 *   ackTimeout   no ack within ackTimeout of writing it; it stays queued  {msgId, cmd, timeout}
 *   overflow     a send refused: the outbox is full    {msgId, cmd, size, max}
 *   invalid      INVALID_PACKET                        {cmd, msgId?}
 *   receipt      RECEIPT (13): uid acked our message  {msgId, uid}  (im_receipts on)
 *   ping / pong  PING (answered automatically) / PING_RESP
 *   disconnect   the server sent DISCONNECT (9)
 *   logout       LOGOUT (20): logged in elsewhere; no reconnect
 *   close        {code, reason, wasClean, willReconnect, stopReason}
 *   reconnecting {attempt, delay}
 *   error        {error}                   undecodable data, socket errors, heartbeat loss
 */
export class ImClient extends EventTarget {
  /**
   * @param {object} o
   * @param {string} o.url             ws://host:9095/ws or wss://host:8443/wss
   * @param {string|Uint8Array} o.username
   * @param {string|Uint8Array} o.password
   * @param {number} [o.role]          0..255, sent when given
   * @param {number} [o.clientId]      0..255 (1 pc, 2 app, 3 3g), sent when given
   * @param {number|string} [o.uid]    our uid, used as `from` in payloads (default: username)
   * @param {Function} [o.WebSocket]   constructor; default globalThis.WebSocket
   * @param {number} [o.ackTimeout=10000]     ms from writing a message until it counts as
   *                                          late ('ackTimeout', a probe PING); 0 = never
   * @param {number} [o.connectTimeout=15000] ms for the socket to open and CONNECT_ACK to come
   * @param {number} [o.connectAttempts=5]    tries before the first login gives up ('unreachable')
   * @param {boolean|object} [o.reconnect=true] false, or {initialDelay, maxDelay, factor,
   *                                          jitter, maxAttempts}
   * @param {boolean|object} [o.heartbeat=true] false, or {interval, timeout}: the server's
   *                                          im_ping_interval and im_ping_timeout in ms
   * @param {number} [o.maxQueue=1000]        messages the outbox holds (queued or unacked)
   * @param {number} [o.dedupeSize=1000]      MsgIds remembered for dedupe
   * @param {number} [o.maxPayload=32767]     local payload limit
   */
  constructor(o = {}) {
    super();
    if (!o.url) throw new TypeError('ImClient: url is required');
    this.url = o.url;
    this.username = o.username ?? '';
    this.password = o.password ?? '';
    this.role = o.role;
    this.clientId = o.clientId;
    this.uid = o.uid ?? o.username;
    this._WS = o.WebSocket ?? globalThis.WebSocket;
    if (typeof this._WS !== 'function') {
      throw new TypeError('ImClient: no WebSocket available; pass the WebSocket option (e.g. from the "ws" package)');
    }
    this.ackTimeout = o.ackTimeout ?? 10000;
    this.connectTimeout = o.connectTimeout ?? 15000;
    this.connectAttempts = Math.max(1, o.connectAttempts ?? 5);
    this.maxQueue = Math.max(1, o.maxQueue ?? 1000);
    this.maxPayload = o.maxPayload ?? MAX_PAYLOAD;
    this._reconnect = o.reconnect === false ? null
      : { ...DEFAULT_RECONNECT, ...(typeof o.reconnect === 'object' ? o.reconnect : {}) };
    this._heartbeat = o.heartbeat === false ? null
      : { ...DEFAULT_HEARTBEAT, ...(typeof o.heartbeat === 'object' ? o.heartbeat : {}) };

    this._state = 'idle';
    this._ws = null;
    this._attempt = 0;           // reconnects since the last CONNECT_ACK 0
    this._failed = 0;            // attempts in a row that ended before CONNECT_ACK 0
    this._lastFailure = '';      // what the last of them ran into
    this._wasLive = false;       // a login was accepted since connect()
    this._connectTimer = null;
    this._reconnectTimer = null;
    this._beatTimer = null;      // the server's next PING is due before this fires
    this._probe = null;          // the PING sent after an ack timeout, until its PING_RESP
    this._stop = null;           // {reason, error} once the session has ended for good
    this._outbox = new Map();    // msgId -> entry, in send order
    this._seen = new LruSet(o.dedupeSize ?? 1000);
    this._pings = [];
    this._connectWaiter = null;
  }

  /** 'idle' | 'connecting' | 'authenticating' | 'live' | 'reconnecting' | 'closed' */
  get state() { return this._state; }
  get connected() { return this._state === 'live'; }
  /**
   * Why the session ended: 'logout' | 'refused' | 'unreachable' | 'bad_url' | 'closed' |
   * 'disconnected' | null.
   */
  get stopReason() { return this._stop ? this._stop.reason : null; }
  /** Messages waiting for an ack (queued or sent). */
  get pendingCount() { return this._outbox.size; }

  /** The outbox in send order: [{msgId, cmd, state: 'queued'|'sent', late}]. */
  pending() {
    return [...this._outbox.values()].map((e) => ({ msgId: e.msgId, cmd: e.cmd, state: e.state, late: e.late }));
  }

  /** Listen to the detail of an event; returns a function that unsubscribes. */
  on(type, fn) {
    const h = (e) => fn(e.detail);
    this.addEventListener(type, h);
    return () => this.removeEventListener(type, h);
  }

  /** Wait for the next event of a type (with optional timeout in ms). */
  once(type, timeout = 0) {
    return new Promise((resolve, reject) => {
      let t = null;
      const off = this.on(type, (d) => { off(); clearTimeout(t); resolve(d); });
      if (timeout > 0) t = setTimeout(() => { off(); reject(new ImError('timeout', `no ${type} event in ${timeout} ms`)); }, timeout);
    });
  }

  _emit(type, detail = {}) { this.dispatchEvent(new Ev(type, { detail })); }

  /**
   * Open the session. Resolves when the server accepts the login (CONNECT_ACK 0),
   * possibly after reconnect attempts; rejects with ImError 'refused' (codes 1, 3),
   * 'unreachable' (connectAttempts tries failed), 'bad_url', 'logout' or 'closed'
   * when the session ends for good first.
   */
  connect() {
    if (this._state === 'live') return Promise.resolve();
    if (this._connectWaiter) return this._connectWaiter.promise;
    const w = {};
    w.promise = new Promise((resolve, reject) => { w.resolve = resolve; w.reject = reject; });
    w.promise.catch(noop); // an ignored connect() must not be an unhandled rejection
    this._connectWaiter = w;
    if (this._state === 'idle' || this._state === 'closed') {
      this._stop = null;
      this._attempt = 0;
      this._failed = 0;
      this._wasLive = false;
      this._openSocket();
    }
    return w.promise;
  }

  /**
   * Try now instead of waiting for the backoff (a "retry" button); after the session
   * ended (unreachable, refused, closed) this is connect(). Returns connect()'s promise.
   */
  reconnectNow() {
    const p = this.connect();
    if (this._state === 'reconnecting') {
      clearTimeout(this._reconnectTimer);
      this._reconnectTimer = null;
      this._openSocket();
    }
    return p;
  }

  /** Leave: sends DISCONNECT when live, closes, rejects what is pending. No reconnect. */
  close() {
    if (this._state === 'closed' && !this._ws) return;
    this._stopFor('closed', new ImError('closed', 'client closed'));
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = null;
    if (this._ws) {
      if (this._state === 'live') this._write(encodeDisconnect());
      this._closeSocket('client closed');
    } else {
      this._state = 'closed';
      this._finishStop();
    }
  }

  // ------------------------------------------------------------ sending

  /**
   * Send a 1:1 message. `content` is a string (sent as {type:'text', text}) or a content
   * object. The payload is {from, to, content, ...opts.fields}. Resolves with
   * {msgId, cmd} on PUB_ACK; the returned promise also carries `.msgId`.
   */
  sendMessage(toUid, content, opts = {}) {
    return this.publish({ toUid }, this._payload(toUid, content, opts), opts);
  }

  /** Send to a group (GROUP_PUBLISH); resolves on GROUP_PUB_ACK. */
  sendGroupMessage(gid, content, opts = {}) {
    return this.publish({ gid }, this._payload(gid, content, opts), opts);
  }

  /** Send to some members of a group (GROUP_PART_PUBLISH); resolves on GROUP_PART_PUB_ACK. */
  sendPartGroupMessage(gid, uids, content, opts = {}) {
    return this.publish({ gid, uids }, this._payload(gid, content, opts), opts);
  }

  _payload(to, content, opts) {
    const c = typeof content === 'string' ? { type: 'text', text: content } : content;
    return { from: this.uid, to, content: c, ...(opts.fields || {}) };
  }

  /**
   * Low-level send. target: {toUid} | {gid} | {gid, uids}. payload: Uint8Array, string
   * (UTF-8) or any other value (JSON). opts: {msgId, timeout}.
   * Returns a promise (with `.msgId`) resolved on the matching ack. A message whose ack
   * is late stays in the outbox and is sent again, same MsgId, after a reconnect; the
   * promise settles on the ack, a refusal, cancel(), or the end of the session.
   */
  publish(target, payload, opts = {}) {
    const msgId = opts.msgId ?? newMsgId();
    const timeout = opts.timeout ?? this.ackTimeout;
    let frame;
    let cmd;
    let p;
    try {
      const bytes = payload instanceof Uint8Array || typeof payload === 'string' ? payload
        : JSON.stringify(payload);
      const lim = { maxPayload: this.maxPayload };
      if (target.uids !== undefined) {
        if (!Array.isArray(target.uids) || target.uids.length === 0) {
          throw new ImError('bad_argument', 'uids must be a non-empty array');
        }
        cmd = CMD.GROUP_PART_PUBLISH;
        frame = encodeGroupPartPublish({ gid: target.gid, msgId, uids: target.uids, payload: bytes }, lim);
      } else if (target.gid !== undefined) {
        cmd = CMD.GROUP_PUBLISH;
        frame = encodeGroupPublish({ gid: target.gid, msgId, payload: bytes }, lim);
      } else {
        cmd = CMD.PUBLISH;
        frame = encodePublish({ toUid: target.toUid, msgId, payload: bytes }, lim);
      }
      if (this._outbox.has(msgId)) throw new ImError('bad_argument', `MsgId ${msgId} is already pending`);
      if (this._state === 'closed') throw this._stop ? this._stop.make() : new ImError('closed', 'client closed');
      if (this._outbox.size >= this.maxQueue) {
        this._emit('overflow', { msgId, cmd, size: this._outbox.size, max: this.maxQueue });
        throw new ImError('queue_full', `outbox full: ${this._outbox.size} messages wait for an ack`, { msgId });
      }
    } catch (e) {
      const err = e instanceof ProtoError
        ? new ImError(e.reason === 'payload_too_large' ? 'payload_too_large' : 'bad_argument', e.message)
        : e;
      p = Promise.reject(err);
      p.msgId = msgId;
      return p;
    }
    const entry = { msgId, cmd, frame, state: 'queued', timeout, timer: null, late: false, writes: 0 };
    p = new Promise((resolve, reject) => { entry.resolve = resolve; entry.reject = reject; });
    p.msgId = msgId;
    this._outbox.set(msgId, entry);
    if (this._state === 'live') this._sendEntry(entry);
    return p;
  }

  /**
   * Take a message out of the outbox: it is not sent (again) and its promise rejects
   * with 'cancelled'. One already written may still reach the server. Returns whether
   * the MsgId was pending.
   */
  cancel(msgId) {
    const entry = this._outbox.get(msgId);
    if (!entry) return false;
    this._settle(entry);
    entry.reject(new ImError('cancelled', `message ${msgId} cancelled`, { msgId }));
    return true;
  }

  /** Send PING; resolves on the server's PING_RESP (rejects after `timeout` ms). */
  ping(timeout = this.ackTimeout || 10000) {
    if (this._state !== 'live') return Promise.reject(new ImError('closed', 'not connected'));
    return new Promise((resolve, reject) => {
      const w = { resolve, reject, timer: null };
      w.timer = setTimeout(() => {
        this._pings = this._pings.filter((x) => x !== w);
        reject(new ImError('timeout', `no PING_RESP within ${timeout} ms`));
      }, timeout);
      this._pings.push(w);
      this._write(encodePing());
    });
  }

  _sendEntry(entry) {
    if (!this._write(entry.frame)) return;
    entry.state = 'sent';
    this._emit('sent', { msgId: entry.msgId, cmd: entry.cmd, resend: entry.writes++ > 0 });
    clearTimeout(entry.timer);
    if (entry.timeout > 0) {
      entry.timer = setTimeout(() => this._ackLate(entry), entry.timeout);
    }
  }

  /*
   * No ack in time. The server answers every publish, in order (PROTOCOL.md §3.3), so
   * either it is slow or the connection is dead without a close (a half-open TCP
   * connection). The message stays; a PING tells the two apart: no PING_RESP within
   * the heartbeat timeout drops the connection, and the reconnect sends it again.
   */
  _ackLate(entry) {
    entry.timer = null;
    if (this._outbox.get(entry.msgId) !== entry || entry.state !== 'sent') return;
    entry.late = true;
    this._emit('ackTimeout', { msgId: entry.msgId, cmd: entry.cmd, timeout: entry.timeout });
    if (this._state !== 'live' || this._probe) return;
    const ws = this._ws;
    const wait = this._heartbeat ? this._heartbeat.timeout : (this.ackTimeout || 10000);
    this._probe = this.ping(wait).then(
      () => { this._probe = null; },
      () => {
        this._probe = null;
        if (this._ws === ws && ws) this._connectionDead(`no PING_RESP within ${wait} ms after an ack timeout`);
      });
  }

  _flush() {
    for (const e of [...this._outbox.values()]) {
      if (this._state !== 'live') return;
      if (e.state === 'queued') this._sendEntry(e);
    }
  }

  /** Out of the outbox: no more timers or resends. The caller settles the promise. */
  _settle(entry) {
    this._outbox.delete(entry.msgId);
    clearTimeout(entry.timer);
    entry.timer = null;
  }

  _write(bytes) {
    const ws = this._ws;
    if (!ws || ws.readyState !== WS_OPEN) return false;
    try {
      ws.send(bytes);
      return true;
    } catch (error) {
      this._emit('error', { error });
      return false;
    }
  }

  // ------------------------------------------------------------ heartbeat

  /*
   * The server sends PING im_ping_interval after the login and after each PING_RESP
   * (PROTOCOL.md §3.5); this client answers at once, so the next one is due within
   * interval + timeout of the last. Nothing by then means nothing gets through.
   */
  _armHeartbeat() {
    clearTimeout(this._beatTimer);
    this._beatTimer = null;
    if (!this._heartbeat || this._state !== 'live') return;
    const { interval, timeout } = this._heartbeat;
    const ws = this._ws;
    this._beatTimer = setTimeout(() => {
      this._beatTimer = null;
      if (this._ws === ws && ws) this._connectionDead(`no PING from the server in ${interval + timeout} ms`);
    }, interval + timeout);
  }

  _connectionDead(why) {
    this._emit('error', { error: new ImError('heartbeat', why) });
    this._closeSocket(why, { code: 1006, wasClean: false, terminate: true });
  }

  // ------------------------------------------------------------ connection

  _openSocket() {
    this._state = 'connecting';
    this._emit('connecting', { url: this.url, attempt: this._attempt });
    let ws;
    try {
      ws = new this._WS(this.url);
    } catch (error) {
      // A URL the WebSocket constructor refuses will not get better by retrying.
      this._emit('error', { error });
      this._ws = null;
      this._stopFor('bad_url', new ImError('bad_url',
        `cannot open a WebSocket to ${JSON.stringify(this.url)}: ${error && error.message}`, { url: this.url }));
      this._socketGone({ code: 1006, reason: String(error && error.message), wasClean: false });
      return;
    }
    this._ws = ws;
    ws.binaryType = 'arraybuffer';
    let opened = false;
    ws.onopen = () => {
      if (this._ws !== ws) return;
      opened = true;
      this._state = 'authenticating';
      this._write(encodeConnect({
        username: this.username, password: this.password, role: this.role, clientId: this.clientId,
      }));
    };
    ws.onmessage = (ev) => { if (this._ws === ws) this._onData(ev.data); };
    ws.onerror = (ev) => { if (this._ws === ws) this._emit('error', { error: ev && (ev.error || ev) }); };
    ws.onclose = (ev) => {
      if (this._ws !== ws) return;
      this._ws = null;
      if (this._state !== 'live') {
        this._lastFailure = opened ? `the connection closed during the login (close ${ev.code})`
          : `the WebSocket did not open (close ${ev.code}${ev.reason ? `: ${ev.reason}` : ''})`;
      }
      this._socketGone({ code: ev.code, reason: ev.reason, wasClean: ev.wasClean });
    };
    this._connectTimer = setTimeout(() => {
      if (this._ws !== ws || this._state === 'live') return;
      const why = `no CONNECT_ACK within ${this.connectTimeout} ms`;
      this._lastFailure = opened ? why : `the WebSocket did not open within ${this.connectTimeout} ms`;
      this._emit('error', { error: new ImError('timeout', why) });
      this._closeSocket('connect timeout', { terminate: true });
    }, this.connectTimeout);
  }

  /**
   * Close the current socket ourselves and carry on at once (no wait for the close
   * frame, which a dead connection never brings).
   */
  _closeSocket(reason, { code = 1000, wasClean = true, terminate = false } = {}) {
    const ws = this._ws;
    if (!ws) return;
    this._ws = null;
    ws.onopen = ws.onmessage = ws.onerror = ws.onclose = noop;
    try {
      // The npm ws package can drop the TCP connection at once; a browser closes it in
      // the background (its close handshake times out on a dead connection).
      if (terminate && typeof ws.terminate === 'function') ws.terminate();
      else ws.close(1000);
    } catch { /* already closing */ }
    this._socketGone({ code, reason, wasClean });
  }

  _socketGone({ code, reason, wasClean }) {
    clearTimeout(this._connectTimer);
    this._connectTimer = null;
    clearTimeout(this._beatTimer);
    this._beatTimer = null;
    const wasLive = this._state === 'live';
    for (const e of this._outbox.values()) {
      if (e.state === 'sent') e.state = 'queued';
      clearTimeout(e.timer);
      e.timer = null;
    }
    for (const w of this._pings) { clearTimeout(w.timer); w.reject(new ImError('closed', 'connection closed')); }
    this._pings = [];
    if (!wasLive && !this._stop) {
      this._failed++;
      // Without reconnects the first failure is the last.
      const max = !this._reconnect ? 1
        : this._wasLive ? this._reconnect.maxAttempts : this.connectAttempts;
      if (this._failed >= max) {
        const n = this._failed;
        this._stopFor('unreachable', new ImError('unreachable',
          `cannot log in at ${this.url}: ${n} attempt${n === 1 ? '' : 's'} failed; the last: `
          + `${this._lastFailure || `closed (${code})`}`,
          { url: this.url, attempts: n, lastFailure: this._lastFailure }));
      }
    }
    if (!this._stop && !this._reconnect) {
      this._stopFor('disconnected', new ImError('closed', `connection closed (${code})`));
    }
    const willReconnect = !this._stop;
    this._state = willReconnect ? 'reconnecting' : 'closed';
    this._emit('close', { code, reason, wasClean, willReconnect, stopReason: this.stopReason });
    if (willReconnect) this._scheduleReconnect();
    else this._finishStop();
  }

  _scheduleReconnect() {
    const { initialDelay, maxDelay, factor, jitter } = this._reconnect;
    const base = Math.min(maxDelay, initialDelay * factor ** this._attempt);
    const delay = Math.max(0, Math.round(base * (1 - jitter * Math.random())));
    this._attempt++;
    this._state = 'reconnecting';
    this._emit('reconnecting', { attempt: this._attempt, delay });
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = setTimeout(() => {
      this._reconnectTimer = null;
      if (this._state === 'reconnecting' && !this._stop) this._openSocket();
    }, delay);
  }

  _stopFor(reason, error) {
    if (this._stop) return;
    // Each rejection gets its own Error object (stack, per-message fields).
    this._stop = { reason, make: () => new ImError(error.code, error.message, { ...error }) };
  }

  _finishStop() {
    const stop = this._stop;
    for (const e of [...this._outbox.values()]) {
      this._settle(e);
      e.reject(Object.assign(stop.make(), { msgId: e.msgId }));
    }
    if (this._connectWaiter) {
      this._connectWaiter.reject(stop.make());
      this._connectWaiter = null;
    }
  }

  // ------------------------------------------------------------ receiving

  _onData(data) {
    if (typeof data === 'string') {
      this._emit('error', { error: new ImError('bad_argument', 'text WebSocket message ignored (protocol is binary)') });
      return;
    }
    let m;
    try {
      m = decodeServerMessage(data instanceof ArrayBuffer ? new Uint8Array(data) : data);
    } catch (error) {
      this._emit('error', { error });
      return;
    }
    switch (m.cmd) {
      case CMD.CONNECT_ACK: return this._onConnectAck(m);
      case CMD.PUBLISH:
      case CMD.GROUP_PUBLISH:
      case CMD.GROUP_PART_PUBLISH: return this._onPush(m);
      case CMD.PUB_ACK:
      case CMD.GROUP_PUB_ACK:
      case CMD.GROUP_PART_PUB_ACK: return this._onAck(m);
      case CMD.PING:
        this._write(encodePingResp());
        this._armHeartbeat();
        return this._emit('ping', {});
      case CMD.PING_RESP: {
        const w = this._pings.shift();
        if (w) { clearTimeout(w.timer); w.resolve(); }
        return this._emit('pong', {});
      }
      case CMD.INVALID_PACKET: return this._onInvalid(m);
      case CMD.RECEIPT:
        return this._emit('receipt', { msgId: m.msgId, uid: m.uid });
      case CMD.LOGOUT:
        this._stopFor('logout', new ImError('logout', 'logged in elsewhere'));
        this._emit('logout', {});
        return this._closeSocket('logout');
      case CMD.DISCONNECT:
        this._emit('disconnect', {});
        return this._closeSocket('server disconnect');
      default:
        return undefined;
    }
  }

  _onConnectAck(m) {
    clearTimeout(this._connectTimer);
    this._connectTimer = null;
    const info = { code: m.code, name: m.name, text: m.text };
    if (m.code === 0) {
      this._state = 'live';
      this._attempt = 0;
      this._failed = 0;
      this._lastFailure = '';
      this._wasLive = true;
      this._armHeartbeat();
      this._emit('connectAck', info);
      if (this._connectWaiter) { this._connectWaiter.resolve(); this._connectWaiter = null; }
      this._flush();
      return;
    }
    this._lastFailure = `CONNECT_ACK ${m.code} (${m.name})`;
    if (m.code !== 2 || !this._reconnect) {
      this._stopFor('refused', new ImError('refused', m.text, { connectCode: m.code, connectName: m.name }));
    }
    this._emit('connectAck', info);
    // The server waits for the client to close after a refusal: close now.
    this._closeSocket(`connect refused: ${m.name}`);
  }

  _onPush(m) {
    this._write(encodeAck(ackCmdFor(m.cmd), m.msgId));
    if (this._seen.has(m.msgId)) {
      this._emit('duplicate', { cmd: m.cmd, msgId: m.msgId });
      return;
    }
    this._seen.add(m.msgId);
    const parsed = parsePayload(m.payload);
    const detail = { cmd: m.cmd, msgId: m.msgId };
    if (m.gid !== undefined) detail.gid = m.gid;
    if (m.uids !== undefined) detail.uids = m.uids;
    detail.payload = parsed.value;
    detail.json = parsed.json;
    detail.raw = m.payload;
    this._emit(PUSH_EVENT[m.cmd], detail);
  }

  _onAck(m) {
    const entry = this._outbox.get(m.msgId);
    this._emit('ack', { cmd: m.cmd, msgId: m.msgId, extra: m.extra, known: !!entry });
    if (!entry) return;
    this._settle(entry);
    entry.resolve({ msgId: m.msgId, cmd: m.cmd });
  }

  _onInvalid(m) {
    this._emit('invalid', { cmd: m.invalidCmd, msgId: m.msgId });
    if (m.msgId === undefined) return; // a protocol violation: the server closes the connection
    const entry = this._outbox.get(m.msgId);
    if (!entry) return;
    this._settle(entry);
    entry.reject(new ImError('invalid', `server refused message ${m.msgId} (cmd ${m.invalidCmd})`,
      { msgId: m.msgId, cmd: m.invalidCmd }));
  }
}

export default ImClient;
