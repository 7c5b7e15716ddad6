// The client (js/src/imclient.js) against a tiny scripted server written here with the
// npm `ws` package: it speaks the protocol through improto.js, on 127.0.0.1 with a
// random port, and each test scripts what it answers.
import { test, describe, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { WebSocketServer, WebSocket } from 'ws';
import * as P from '../src/improto.js';
import { ImClient, ImError, LruSet } from '../src/imclient.js';
import { startProxy } from '../testlib/tcp-proxy.js';

const { CMD } = P;
const USERS = { alice: ['alice-secret', 1001], bob: ['bob-secret', 1002], carol: ['carol-secret', 1003] };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const td = new TextDecoder();

/** One server-side connection: decoded messages in order, with a waiting helper. */
class Conn {
  constructor(ws, server) {
    this.ws = ws;
    this.server = server;
    this.msgs = [];
    this.waiters = [];
    this.closed = new Promise((r) => ws.on('close', (code) => r(code)));
    this.closedByClientFirst = null;
  }
  send(bytes) { this.ws.send(bytes); }
  push(m) { this.msgs.push(m); this.waiters = this.waiters.filter((w) => !w.check()); }
  /** Wait for the first message (from index `from`) matching pred. */
  next(pred = () => true, timeout = 2000) {
    return new Promise((resolve, reject) => {
      const w = {
        check: () => {
          const m = this.msgs.find(pred);
          if (!m) return false;
          clearTimeout(w.t);
          resolve(m);
          return true;
        },
      };
      if (w.check()) return;
      w.t = setTimeout(() => {
        this.waiters = this.waiters.filter((x) => x !== w);
        reject(new Error(`scripted server: no matching message in ${timeout} ms; got cmds ${this.msgs.map((m) => m.cmd)}`));
      }, timeout);
      this.waiters.push(w);
    });
  }
}

/**
 * The scripted server. Default behaviour: CONNECT checked against USERS (code 0/3),
 * every publish acked with the matching ack command, PING answered.
 * Override login(m, conn) -> code | null (null = no answer) and onPublish(m, conn).
 */
class ScriptedServer {
  async start() {
    this.conns = [];
    this.connWaiters = [];
    this.login = (m) => (USERS[m.username] && USERS[m.username][0] === m.password ? 0 : 3);
    this.onPublish = (m, conn) => conn.send(P.encodeAck(P.ackCmdFor(m.cmd), m.msgId));
    this.pingInterval = 0;    // ms; 0: the server sends no PING
    this.answerPings = true;  // answer a client's PING with PING_RESP
    this.wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    await new Promise((r) => this.wss.on('listening', r));
    this.url = `ws://127.0.0.1:${this.wss.address().port}/ws`;
    this.wss.on('connection', (ws) => {
      const conn = new Conn(ws, this);
      this.conns.push(conn);
      this.connWaiters.splice(0).forEach((r) => r(conn));
      ws.on('message', (data, isBinary) => {
        if (!isBinary) { ws.close(1003); return; }
        let m;
        try {
          m = P.decodeClientMessage(new Uint8Array(data));
        } catch (e) {
          ws.send(P.encodeInvalid(e.cmd ?? 0));
          ws.close();
          return;
        }
        conn.push(m);
        this.handle(m, conn);
      });
    });
    return this;
  }
  handle(m, conn) {
    switch (m.cmd) {
      case CMD.CONNECT: {
        const code = this.login(m, conn);
        if (code !== null && code !== undefined) conn.send(P.encodeConnectAck(code));
        if (code === 0) this.schedulePing(conn);
        break;
      }
      case CMD.PING_RESP:
        this.schedulePing(conn);
        break;
      case CMD.PUBLISH:
      case CMD.GROUP_PUBLISH:
      case CMD.GROUP_PART_PUBLISH:
        this.onPublish(m, conn);
        break;
      case CMD.PING:
        if (this.answerPings) conn.send(P.encodePingResp());
        break;
      default:
        break;
    }
  }
  /** Like the real server: PING pingInterval ms after the login and after each PING_RESP. */
  schedulePing(conn) {
    if (!this.pingInterval) return;
    clearTimeout(conn.pingTimer);
    conn.pingTimer = setTimeout(() => {
      if (conn.ws.readyState !== 1 || !this.pingInterval) return;
      conn.lastPingAt = Date.now();
      conn.pings = (conn.pings || 0) + 1;
      conn.send(P.encodePing());
    }, this.pingInterval);
  }
  /** The n-th connection (0-based), waiting for it if needed. */
  async conn(n, timeout = 3000) {
    const deadline = Date.now() + timeout;
    while (this.conns.length <= n) {
      if (Date.now() > deadline) throw new Error(`scripted server: connection #${n} never came (${this.conns.length} so far)`);
      await Promise.race([new Promise((r) => this.connWaiters.push(r)), sleep(50)]);
    }
    return this.conns[n];
  }
  async stop() {
    this.pingInterval = 0;
    for (const c of this.conns) clearTimeout(c.pingTimer);
    for (const c of this.wss.clients) c.terminate();
    await new Promise((r) => this.wss.close(r));
  }
}

let srv;
const clients = [];
function makeClient(opts = {}) {
  const c = new ImClient({
    url: srv.url, username: 'alice', password: 'alice-secret', uid: 1001, WebSocket,
    reconnect: { initialDelay: 20, maxDelay: 200, factor: 2, jitter: 0.5 }, ackTimeout: 2000, ...opts,
  });
  c.addEventListener('error', () => {}); // socket errors are expected in several tests
  clients.push(c);
  return c;
}
function record(client, type) {
  const list = [];
  client.on(type, (d) => list.push(d));
  return list;
}

beforeEach(async () => { srv = await new ScriptedServer().start(); });
afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  await srv.stop();
});

describe('login', () => {
  test('CONNECT carries username, password, role and clientId; code 0 resolves connect()', async () => {
    const c = makeClient({ role: 2, clientId: 1 });
    const acks = record(c, 'connectAck');
    await c.connect();
    const m = (await srv.conn(0)).msgs[0];
    assert.equal(m.cmd, CMD.CONNECT);
    assert.equal(m.username, 'alice');
    assert.equal(m.password, 'alice-secret');
    assert.equal(m.role, 2);
    assert.equal(m.clientId, 1);
    assert.equal(c.state, 'live');
    assert.deepEqual(acks.map((a) => [a.code, a.name]), [[0, 'accepted']]);
  });

  test('role and clientId are omitted when not given', async () => {
    const c = makeClient();
    await c.connect();
    const m = (await srv.conn(0)).msgs[0];
    assert.equal(m.role, undefined);
    assert.equal(m.clientId, undefined);
  });

  for (const [code, name] of [[3, 'bad_credentials'], [1, 'duplicate']]) {
    test(`code ${code} (${name}) rejects, the client closes first, no reconnect`, async () => {
      srv.login = () => code;
      const c = makeClient();
      const acks = record(c, 'connectAck');
      const closes = record(c, 'close');
      await assert.rejects(c.connect(), (e) => e instanceof ImError && e.code === 'refused' && e.connectCode === code);
      const conn = await srv.conn(0);
      // The server never closed: the socket closed because the client did.
      await Promise.race([conn.closed, sleep(1000).then(() => assert.fail('client did not close'))]);
      await sleep(300); // several backoff periods
      assert.equal(srv.conns.length, 1, 'no reconnect');
      assert.equal(c.state, 'closed');
      assert.equal(c.stopReason, 'refused');
      assert.deepEqual(acks.map((a) => a.name), [name]);
      assert.equal(closes.length, 1);
      assert.equal(closes[0].willReconnect, false);
    });
  }

  test('code 2 (service unavailable) retries with backoff until accepted', async () => {
    let n = 0;
    srv.login = () => (++n < 3 ? 2 : 0);
    const c = makeClient();
    const acks = record(c, 'connectAck');
    const rec = record(c, 'reconnecting');
    await c.connect();
    assert.deepEqual(acks.map((a) => a.code), [2, 2, 0]);
    assert.equal(srv.conns.length, 3);
    assert.deepEqual(rec.map((r) => r.attempt), [1, 2]);
    assert.ok(acks[0].text.includes('unavailable'));
  });

  test('code 2 without reconnect rejects', async () => {
    srv.login = () => 2;
    const c = makeClient({ reconnect: false });
    await assert.rejects(c.connect(), (e) => e.code === 'refused' && e.connectCode === 2);
  });

  test('no CONNECT_ACK within connectTimeout: close and try again', async () => {
    let n = 0;
    srv.login = () => (++n === 1 ? null : 0);
    const c = makeClient({ connectTimeout: 150 });
    await c.connect();
    assert.equal(srv.conns.length, 2);
  });
});

describe('sending', () => {
  test('sendMessage resolves on PUB_ACK with its MsgId; payload follows the JSON convention', async () => {
    const c = makeClient();
    await c.connect();
    const sent = record(c, 'sent');
    const p = c.sendMessage(1002, 'hi bob');
    assert.match(p.msgId, /^[0-9a-f]{32}$/);
    const r = await p;
    assert.deepEqual(r, { msgId: p.msgId, cmd: CMD.PUB_ACK });
    const m = await (await srv.conn(0)).next((x) => x.cmd === CMD.PUBLISH);
    assert.equal(m.toUid, 1002);
    assert.equal(m.msgId, p.msgId);
    assert.deepEqual(JSON.parse(td.decode(m.payload)),
      { from: 1001, to: 1002, content: { type: 'text', text: 'hi bob' } });
    assert.deepEqual(sent, [{ msgId: p.msgId, cmd: CMD.PUBLISH, resend: false }]);
    assert.equal(c.pendingCount, 0);
  });

  test('group and part-group sends resolve on 6 and 12', async () => {
    const c = makeClient();
    await c.connect();
    const g = await c.sendGroupMessage(1, { type: 'text', text: 'hello group' });
    assert.equal(g.cmd, CMD.GROUP_PUB_ACK);
    const pg = await c.sendPartGroupMessage(1, [1002, 1003], 'just you two', { fields: { qid: 7 } });
    assert.equal(pg.cmd, CMD.GROUP_PART_PUB_ACK);
    const conn = await srv.conn(0);
    const gm = await conn.next((x) => x.cmd === CMD.GROUP_PUBLISH);
    assert.equal(gm.gid, 1);
    const pm = await conn.next((x) => x.cmd === CMD.GROUP_PART_PUBLISH);
    assert.deepEqual(pm.uids, [1002, 1003]);
    assert.deepEqual(JSON.parse(td.decode(pm.payload)),
      { from: 1001, to: 1, content: { type: 'text', text: 'just you two' }, qid: 7 });
  });

  test('raw publish with bytes, a caller-chosen MsgId, and acks out of order', async () => {
    const held = [];
    srv.onPublish = (m, conn) => {
      held.push(m);
      if (held.length === 2) held.reverse().forEach((h) => conn.send(P.encodeAck(P.ackCmdFor(h.cmd), h.msgId)));
    };
    const c = makeClient();
    await c.connect();
    const id = 'f'.repeat(32);
    const a = c.publish({ toUid: 1003 }, Uint8Array.of(1, 2, 3), { msgId: id });
    const b = c.publish({ gid: 9 }, 'plain text');
    assert.equal(a.msgId, id);
    const [ra, rb] = await Promise.all([a, b]);
    assert.equal(ra.msgId, id);
    assert.equal(rb.cmd, CMD.GROUP_PUB_ACK);
    assert.deepEqual([...held[1].payload], [1, 2, 3]);
  });

  test('an ack longer than 33 bytes from the server is a protocol error: reported, not matched', async () => {
    srv.onPublish = (m, conn) => {
      conn.send(P.encodeAck(4, m.msgId, '_' + 'a'.repeat(32)));
      setTimeout(() => conn.send(P.encodeAck(4, m.msgId)), 50);
    };
    const c = makeClient();
    const errs = record(c, 'error');
    const acks = record(c, 'ack');
    await c.connect();
    const r = await c.sendMessage(1002, 'x');
    assert.equal(r.cmd, 4);
    assert.equal(errs.length, 1);
    assert.equal(errs[0].error.reason, 'trailing');
    assert.equal(acks.length, 1);
  });

  test('INVALID_PACKET with the MsgId rejects that send; the session stays up', async () => {
    srv.onPublish = (m, conn) => {
      if (m.gid === 99) conn.send(P.encodeInvalid(m.cmd, m.msgId));
      else conn.send(P.encodeAck(P.ackCmdFor(m.cmd), m.msgId));
    };
    const c = makeClient();
    const inv = record(c, 'invalid');
    await c.connect();
    const p = c.sendGroupMessage(99, 'not a member');
    await assert.rejects(p, (e) => e instanceof ImError && e.code === 'invalid' && e.msgId === p.msgId && e.cmd === 5);
    assert.deepEqual(inv, [{ cmd: 5, msgId: p.msgId }]);
    assert.equal(c.state, 'live');
    await c.sendGroupMessage(1, 'fine'); // still works
    assert.equal(srv.conns.length, 1);
  });

  test('no ack: ackTimeout event, the message stays, a PING probes the connection', async () => {
    srv.onPublish = () => {};
    const c = makeClient({ ackTimeout: 150 });
    const late = record(c, 'ackTimeout');
    await c.connect();
    const t0 = Date.now();
    const p = c.sendMessage(1002, 'late');
    let settled = false;
    p.then(() => { settled = true; }, () => { settled = true; });
    const d = await c.once('ackTimeout', 5000);
    assert.ok(Date.now() - t0 >= 140, 'not sooner than ackTimeout');
    assert.deepEqual(d, { msgId: p.msgId, cmd: CMD.PUBLISH, timeout: 150 });
    const conn = await srv.conn(0);
    await conn.next((m) => m.cmd === CMD.PING); // the probe; the server answers it
    await c.once('pong', 5000);
    assert.equal(settled, false, 'the promise waits for the ack');
    assert.deepEqual(c.pending(), [{ msgId: p.msgId, cmd: CMD.PUBLISH, state: 'sent', late: true }]);
    assert.equal(c.state, 'live', 'an answered probe keeps the connection');
    assert.equal(late.length, 1);
    // the ack comes late after all
    conn.send(P.encodeAck(CMD.PUB_ACK, p.msgId));
    assert.deepEqual(await p, { msgId: p.msgId, cmd: CMD.PUB_ACK });
    assert.equal(c.pendingCount, 0);
    assert.equal(srv.conns.length, 1);
  });

  test('no ack and no answer to the probe: reconnect, same MsgId again, resolved by its ack', async () => {
    let n = 0;
    srv.onPublish = (m, conn) => { if (++n > 1) conn.send(P.encodeAck(P.ackCmdFor(m.cmd), m.msgId)); };
    srv.answerPings = false;
    const c = makeClient({ ackTimeout: 100, heartbeat: { interval: 60000, timeout: 200 } });
    const errs = record(c, 'error');
    const sent = record(c, 'sent');
    await c.connect();
    const p = c.sendGroupMessage(1, 'probe fails');
    const c1 = await srv.conn(1, 10000);
    srv.answerPings = true;
    assert.deepEqual(await p, { msgId: p.msgId, cmd: CMD.GROUP_PUB_ACK });
    const first = srv.conns[0].msgs.find((m) => m.cmd === CMD.GROUP_PUBLISH);
    const again = c1.msgs.find((m) => m.cmd === CMD.GROUP_PUBLISH);
    assert.equal(first.msgId, p.msgId);
    assert.equal(again.msgId, p.msgId);
    assert.deepEqual([...again.payload], [...first.payload]);
    assert.deepEqual(sent.map((s) => s.resend), [false, true]);
    assert.ok(errs.some((e) => e.error.code === 'heartbeat' && /PING_RESP/.test(e.error.message)));
  });

  test('cancel() takes a message out of the outbox; it is not sent again', async () => {
    let first = true;
    srv.onPublish = (m, conn) => {
      if (first) { first = false; conn.ws.terminate(); return; }
      conn.send(P.encodeAck(P.ackCmdFor(m.cmd), m.msgId));
    };
    const c = makeClient();
    await c.connect();
    const p = c.sendMessage(1002, 'never mind');
    await (await srv.conn(0)).next((m) => m.cmd === CMD.PUBLISH);
    assert.equal(c.cancel(p.msgId), true);
    assert.equal(c.cancel(p.msgId), false);
    await assert.rejects(p, (e) => e.code === 'cancelled' && e.msgId === p.msgId);
    const q = c.sendMessage(1002, 'next');
    await q;
    assert.deepEqual(srv.conns[1].msgs.filter((m) => m.cmd === CMD.PUBLISH).map((m) => m.msgId), [q.msgId]);
  });

  test('payload over 32767 bytes is refused locally, nothing is sent', async () => {
    const c = makeClient();
    await c.connect();
    await assert.rejects(c.publish({ toUid: 1002 }, new Uint8Array(32768)), (e) => e.code === 'payload_too_large');
    await assert.rejects(c.sendMessage(1002, 'x'.repeat(32767)), (e) => e.code === 'payload_too_large');
    await c.publish({ toUid: 1002 }, new Uint8Array(32767)); // exactly the cap is fine
    const conn = await srv.conn(0);
    assert.equal(conn.msgs.filter((m) => m.cmd === CMD.PUBLISH).length, 1);
  });

  test('bad arguments reject', async () => {
    const c = makeClient();
    await c.connect();
    await assert.rejects(c.sendMessage(-1, 'x'), (e) => e.code === 'bad_argument');
    await assert.rejects(c.sendPartGroupMessage(1, [], 'x'), (e) => e.code === 'bad_argument');
    await assert.rejects(c.publish({ toUid: 1 }, 'x', { msgId: 'short' }), (e) => e.code === 'bad_argument');
  });
});

describe('receiving', () => {
  test('pushes 3/5/11 are acked with 4/6/12 and emitted with parsed payloads', async () => {
    const c = makeClient();
    const got = [];
    for (const t of ['message', 'group', 'partGroup']) c.on(t, (d) => got.push([t, d]));
    await c.connect();
    const conn = await srv.conn(0);
    const json = JSON.stringify({ from: 1002, to: 1001, content: { type: 'text', text: 'hé' } });
    const ids = [P.newMsgId(), P.newMsgId(), P.newMsgId(), P.newMsgId()];
    conn.send(P.encodePush({ msgId: ids[0], payload: json }));
    conn.send(P.encodeGroupPublish({ gid: 1, msgId: ids[1], payload: json }));
    conn.send(P.encodeGroupPartPublish({ gid: 1, msgId: ids[2], uids: [1001, 1003], payload: json }));
    conn.send(P.encodePush({ msgId: ids[3], payload: Uint8Array.of(0xde, 0xad) }));
    const acks = await Promise.all(ids.map((id) => conn.next((m) => m.msgId === id && [4, 6, 12].includes(m.cmd))));
    assert.deepEqual(acks.map((a) => a.cmd), [4, 6, 12, 4]);
    assert.deepEqual(got.map(([t]) => t), ['message', 'group', 'partGroup', 'message']);
    assert.equal(got[0][1].msgId, ids[0]);
    assert.equal(got[0][1].json, true);
    assert.equal(got[0][1].payload.content.text, 'hé');
    assert.equal(got[1][1].gid, 1);
    assert.deepEqual(got[2][1].uids, [1001, 1003]);
    assert.equal(got[3][1].json, false);
    assert.deepEqual([...got[3][1].payload], [0xde, 0xad]);
  });

  test('a re-pushed MsgId is acked again but emitted once', async () => {
    const c = makeClient();
    const got = record(c, 'message');
    const dups = record(c, 'duplicate');
    await c.connect();
    const conn = await srv.conn(0);
    const id = P.newMsgId();
    for (let i = 0; i < 3; i++) conn.send(P.encodePush({ msgId: id, payload: '{"n":1}' }));
    await sleep(50);
    const last = P.newMsgId();
    conn.send(P.encodePush({ msgId: last, payload: '{"n":2}' }));
    await conn.next((m) => m.msgId === last);
    assert.equal(conn.msgs.filter((m) => m.cmd === 4 && m.msgId === id).length, 3);
    assert.deepEqual(got.map((g) => g.payload.n), [1, 2]);
    assert.equal(dups.length, 2);
  });

  test('dedupe survives a reconnect (offline re-push after login)', async () => {
    const c = makeClient();
    const got = record(c, 'group');
    await c.connect();
    const id = P.newMsgId();
    (await srv.conn(0)).send(P.encodeGroupPublish({ gid: 1, msgId: id, payload: '{}' }));
    await (await srv.conn(0)).next((m) => m.cmd === 6);
    srv.conns[0].ws.terminate();
    const conn = await srv.conn(1);
    await conn.next((m) => m.cmd === CMD.CONNECT);
    conn.send(P.encodeGroupPublish({ gid: 1, msgId: id, payload: '{}' }));
    await conn.next((m) => m.cmd === 6);
    assert.equal(got.length, 1);
  });

  test('the dedupe set is a bounded LRU', () => {
    const s = new LruSet(3);
    ['a', 'b', 'c'].forEach((k) => s.add(k));
    assert.ok(s.has('a')); // touch a: b is now the oldest
    s.add('d');
    assert.equal(s.size, 3);
    assert.ok(!s.has('b'));
    assert.ok(s.has('a') && s.has('c') && s.has('d'));
  });

  test('dedupeSize bounds the memory: an id pushed long ago is emitted again', async () => {
    const c = makeClient({ dedupeSize: 2 });
    const got = record(c, 'message');
    await c.connect();
    const conn = await srv.conn(0);
    const ids = [P.newMsgId(), P.newMsgId(), P.newMsgId()];
    for (const id of [...ids, ids[0]]) conn.send(P.encodePush({ msgId: id, payload: 'x' }));
    await sleep(50);
    await conn.next(() => conn.msgs.filter((m) => m.cmd === 4).length === 4);
    assert.deepEqual(got.map((g) => g.msgId), [...ids, ids[0]]);
  });

  test('PING is answered by PING_RESP; client ping() resolves on PING_RESP', async () => {
    const c = makeClient();
    const pings = record(c, 'ping');
    await c.connect();
    const conn = await srv.conn(0);
    conn.send(P.encodePing());
    await conn.next((m) => m.cmd === CMD.PING_RESP);
    assert.equal(pings.length, 1);
    await c.ping(1000);
    assert.ok(conn.msgs.some((m) => m.cmd === CMD.PING));
  });

  test('RECEIPT (13) is emitted as receipt {msgId, uid}', async () => {
    const c = makeClient();
    await c.connect();
    const id = P.newMsgId();
    (await srv.conn(0)).send(P.encodeReceipt({ msgId: id, uid: 1002 }));
    assert.deepEqual(await c.once('receipt', 5000), { msgId: id, uid: 1002 });
  });

  test('INVALID_PACKET without MsgId is reported', async () => {
    const c = makeClient();
    const inv = record(c, 'invalid');
    await c.connect();
    (await srv.conn(0)).send(P.encodeInvalid(42));
    await sleep(50);
    assert.deepEqual(inv, [{ cmd: 42, msgId: undefined }]);
  });

  test('undecodable and text messages are reported as errors and ignored', async () => {
    const c = makeClient();
    const errs = record(c, 'error');
    await c.connect();
    const conn = await srv.conn(0);
    conn.ws.send(Uint8Array.of(99));
    conn.ws.send('text frame');
    conn.send(P.encodePing());
    await conn.next((m) => m.cmd === CMD.PING_RESP);
    assert.equal(errs.length, 2);
    assert.equal(errs[0].error.reason, 'unknown_cmd');
    assert.equal(c.state, 'live');
  });
});

describe('reconnect, logout and the outbox', () => {
  test('reconnects with jittered exponential backoff, reset after a good login', async () => {
    srv.login = (m, conn) => {
      if (srv.conns.length <= 5) { conn.ws.terminate(); return null; }
      return 0;
    };
    const c = makeClient({ reconnect: { initialDelay: 40, maxDelay: 200, factor: 2, jitter: 0.5 }, connectAttempts: 6 });
    const rec = record(c, 'reconnecting');
    await c.connect();
    assert.equal(srv.conns.length, 6);
    assert.deepEqual(rec.map((r) => r.attempt), [1, 2, 3, 4, 5]);
    const bases = [40, 80, 160, 200, 200];
    rec.forEach((r, i) => {
      assert.ok(r.delay >= bases[i] / 2 && r.delay <= bases[i], `delay ${i}: ${r.delay} within [${bases[i] / 2}, ${bases[i]}]`);
    });
    // after CONNECT_ACK 0 the backoff starts again from the initial delay
    srv.conns[5].ws.terminate();
    await c.once('connectAck', 2000);
    assert.ok(rec[5].attempt === 1 && rec[5].delay <= 40);
  });

  test('LOGOUT: logout event, the client closes, pending sends rejected, no reconnect', async () => {
    srv.onPublish = () => {};
    const c = makeClient();
    const logouts = record(c, 'logout');
    const closes = record(c, 'close');
    await c.connect();
    const pending = c.sendMessage(1002, 'never acked');
    const conn = await srv.conn(0);
    await conn.next((m) => m.cmd === CMD.PUBLISH);
    conn.send(P.encodeLogout());
    await assert.rejects(pending, (e) => e.code === 'logout');
    await Promise.race([conn.closed, sleep(1000).then(() => assert.fail('client did not close'))]);
    await sleep(300);
    assert.equal(srv.conns.length, 1);
    assert.equal(logouts.length, 1);
    assert.equal(c.stopReason, 'logout');
    assert.equal(closes.at(-1).willReconnect, false);
    await assert.rejects(c.sendMessage(1002, 'after logout'), (e) => e.code === 'logout');
  });

  test('queued messages are flushed after the next CONNECT_ACK 0, in order, same MsgId', async () => {
    let accept = false;
    srv.login = (m, conn) => {
      if (!accept) { conn.ws.terminate(); return null; }
      return 0;
    };
    const c = makeClient();
    const sent = record(c, 'sent');
    c.connect();
    const before = [c.sendMessage(1002, 'one'), c.sendGroupMessage(1, 'two'), c.sendPartGroupMessage(1, [1003], 'three')];
    await srv.conn(1); // a couple of failed attempts
    assert.equal(sent.length, 0, 'nothing sent before the login is accepted');
    accept = true;
    const res = await Promise.all(before);
    const live = srv.conns.at(-1);
    const order = live.msgs.filter((m) => m.cmd !== CMD.CONNECT);
    assert.deepEqual(order.map((m) => m.cmd), [3, 5, 11]);
    assert.deepEqual(order.map((m) => m.msgId), before.map((p) => p.msgId));
    assert.deepEqual(res.map((r) => r.cmd), [4, 6, 12]);
    // CONNECT came first on that connection
    assert.equal(live.msgs[0].cmd, CMD.CONNECT);
  });

  test('sent but unacked messages are re-sent with the same MsgId after a reconnect', async () => {
    let first = true;
    srv.onPublish = (m, conn) => {
      if (first) { first = false; conn.ws.terminate(); return; } // connection lost before the ack
      conn.send(P.encodeAck(P.ackCmdFor(m.cmd), m.msgId));
    };
    const c = makeClient();
    await c.connect();
    const p = c.sendMessage(1002, 'retry me');
    const r = await p;
    assert.equal(r.msgId, p.msgId);
    const c0 = srv.conns[0].msgs.find((m) => m.cmd === 3);
    const c1 = srv.conns[1].msgs.find((m) => m.cmd === 3);
    assert.equal(c0.msgId, c1.msgId);
    assert.deepEqual([...c0.payload], [...c1.payload]);
  });

  test('server DISCONNECT: the client closes and reconnects', async () => {
    const c = makeClient();
    const disc = record(c, 'disconnect');
    await c.connect();
    (await srv.conn(0)).send(P.encodeDisconnect());
    await srv.conn(1);
    await c.once('connectAck', 2000);
    assert.equal(disc.length, 1);
    assert.equal(c.state, 'live');
  });

  test('close() sends DISCONNECT, rejects pending, stays closed', async () => {
    srv.onPublish = () => {};
    const c = makeClient();
    await c.connect();
    const p = c.sendMessage(1002, 'pending');
    const conn = await srv.conn(0);
    await conn.next((m) => m.cmd === CMD.PUBLISH);
    c.close();
    await assert.rejects(p, (e) => e.code === 'closed');
    await conn.next((m) => m.cmd === CMD.DISCONNECT);
    await conn.closed;
    await sleep(150);
    assert.equal(srv.conns.length, 1);
    assert.equal(c.state, 'closed');
  });

  test('reconnect: false — a dropped connection ends the session', async () => {
    const c = makeClient({ reconnect: false });
    await c.connect();
    const closed = c.once('close', 2000);
    (await srv.conn(0)).ws.terminate();
    const d = await closed;
    assert.equal(d.willReconnect, false);
    assert.equal(c.state, 'closed');
    assert.equal(c.stopReason, 'disconnected');
  });

  test('connect() after a stop starts a new session', async () => {
    srv.login = () => 3;
    const c = makeClient({ password: 'wrong' });
    await assert.rejects(c.connect(), (e) => e.code === 'refused');
    srv.login = () => 0;
    await c.connect();
    assert.equal(c.state, 'live');
  });

  test('an unreachable server is retried until it appears', async () => {
    const port = srv.wss.address().port;
    await srv.stop();
    const c = makeClient({
      url: `ws://127.0.0.1:${port}/ws`, reconnect: { initialDelay: 30, maxDelay: 60 }, connectAttempts: Infinity,
    });
    const rec = record(c, 'reconnecting');
    const done = c.connect();
    await sleep(250);
    assert.ok(rec.length >= 2, `${rec.length} attempts`);
    const wss = new WebSocketServer({ host: '127.0.0.1', port });
    wss.on('connection', (ws) => ws.on('message', () => ws.send(P.encodeConnectAck(0))));
    await done;
    assert.equal(c.state, 'live');
    c.close();
    for (const x of wss.clients) x.terminate();
    await new Promise((r) => wss.close(r));
    srv = await new ScriptedServer().start(); // for afterEach
  });
});

describe('heartbeat and half-open connections', () => {
  test("the server's PINGs keep the session; when they stop, the client reconnects", async () => {
    srv.pingInterval = 60;
    const c = makeClient({ heartbeat: { interval: 60, timeout: 300 } });
    const errs = record(c, 'error');
    await c.connect();
    const conn = await srv.conn(0);
    // a few rounds of PING / PING_RESP
    await conn.next(() => (conn.pings || 0) >= 4, 10000); // checked at each PING_RESP
    assert.equal(srv.conns.length, 1, 'no reconnect while the PINGs come');
    srv.pingInterval = 0; // silence: the connection stays open, nothing arrives
    const t0 = Date.now();
    const c1 = await srv.conn(1, 10000);
    await c1.next((m) => m.cmd === CMD.CONNECT);
    // not sooner than interval + timeout after the last PING (sent before t0)
    const gone = Date.now();
    assert.ok(gone - conn.lastPingAt >= 360, `reconnected ${gone - conn.lastPingAt} ms after the last PING`);
    assert.ok(gone >= t0);
    assert.ok(errs.some((e) => e.error.code === 'heartbeat' && /no PING from the server in 360 ms/.test(e.error.message)));
    await c.once('connectAck', 5000).catch(() => {});
  });

  test('heartbeat: false waits for ever', async () => {
    const c = makeClient({ heartbeat: false });
    await c.connect();
    await sleep(300);
    assert.equal(srv.conns.length, 1);
    assert.equal(c.state, 'live');
  });

  test('half-open (a proxy stops forwarding): reconnect, the unacked message again with its MsgId, acked once',
    async () => {
      srv.pingInterval = 50;
      const proxy = await startProxy({ port: srv.wss.address().port });
      try {
        const c = makeClient({
          url: `ws://127.0.0.1:${proxy.port}/ws`, heartbeat: { interval: 50, timeout: 250 }, ackTimeout: 5000,
        });
        const sent = record(c, 'sent');
        const closes = record(c, 'close');
        await c.connect();
        await c.once('ping', 5000);
        assert.equal(proxy.freeze('both'), 1);
        const p = c.sendMessage(1002, 'through the outage');
        const r = await p; // after the reconnect, through a new connection of the proxy
        assert.equal(r.msgId, p.msgId);
        assert.equal(srv.conns.length, 2, 'one reconnect');
        assert.equal(srv.conns[0].msgs.filter((m) => m.cmd === CMD.PUBLISH).length, 0, 'the frozen copy never arrived');
        assert.deepEqual(srv.conns[1].msgs.filter((m) => m.cmd === CMD.PUBLISH).map((m) => m.msgId), [p.msgId]);
        assert.deepEqual(sent.map((x) => [x.msgId, x.resend]), [[p.msgId, false], [p.msgId, true]]);
        assert.equal(closes[0].code, 1006);
        assert.equal(closes[0].willReconnect, true);
      } finally {
        await proxy.close();
      }
    });
});

describe('the bounded outbox', () => {
  test('maxQueue: a send beyond it is refused with queue_full and an overflow event', async () => {
    srv.login = () => null; // never live: everything stays queued
    const c = makeClient({ maxQueue: 2 });
    const over = record(c, 'overflow');
    c.connect();
    const a = c.sendMessage(1002, 'one');
    const b = c.sendMessage(1002, 'two');
    const x = c.sendMessage(1002, 'three');
    await assert.rejects(x, (e) => e instanceof ImError && e.code === 'queue_full' && e.msgId === x.msgId);
    assert.deepEqual(over, [{ msgId: x.msgId, cmd: CMD.PUBLISH, size: 2, max: 2 }]);
    assert.deepEqual(c.pending().map((e) => e.msgId), [a.msgId, b.msgId]);
    // room again once one leaves
    assert.equal(c.cancel(a.msgId), true);
    await assert.rejects(a, (e) => e.code === 'cancelled');
    const y = c.sendMessage(1002, 'four');
    assert.deepEqual(c.pending().map((e) => e.msgId), [b.msgId, y.msgId]);
    c.close();
    await assert.rejects(b, (e) => e.code === 'closed');
    await assert.rejects(y, (e) => e.code === 'closed');
  });
});

describe('a wrong URL', () => {
  test('nobody listens: connect() rejects with unreachable after connectAttempts tries', async () => {
    const port = srv.wss.address().port;
    await srv.stop();
    try {
      const c = makeClient({ url: `ws://127.0.0.1:${port}/nowhere`, connectAttempts: 3 });
      const tries = record(c, 'connecting');
      const closes = record(c, 'close');
      const pending = c.sendMessage(1002, 'queued while connecting');
      const e = await c.connect().then(() => assert.fail('connected'), (x) => x);
      assert.ok(e instanceof ImError);
      assert.equal(e.code, 'unreachable');
      assert.equal(e.attempts, 3);
      assert.equal(e.url, `ws://127.0.0.1:${port}/nowhere`);
      assert.match(e.message, new RegExp(`cannot log in at ws://127\\.0\\.0\\.1:${port}/nowhere: 3 attempts failed; the last: the WebSocket did not open`));
      assert.equal(tries.length, 3);
      assert.equal(c.state, 'closed');
      assert.equal(c.stopReason, 'unreachable');
      assert.equal(closes.at(-1).willReconnect, false);
      await assert.rejects(pending, (x) => x.code === 'unreachable');
      await sleep(300); // several backoff periods: nothing more
      assert.equal(tries.length, 3);
    } finally {
      srv = await new ScriptedServer().start(); // for afterEach
    }
  });

  test('a path the server refuses (HTTP 404) ends the same way', async () => {
    const http = await import('node:http');
    const h = http.createServer((req, res) => res.writeHead(404).end('no such endpoint'));
    await new Promise((r) => h.listen(0, '127.0.0.1', r));
    try {
      const c = makeClient({ url: `ws://127.0.0.1:${h.address().port}/typo`, connectAttempts: 2 });
      await assert.rejects(c.connect(), (e) => e.code === 'unreachable' && e.attempts === 2);
    } finally {
      h.closeAllConnections();
      await new Promise((r) => h.close(r));
    }
  });

  test('the server keeps answering code 2: unreachable names CONNECT_ACK 2', async () => {
    srv.login = () => 2;
    const c = makeClient({ connectAttempts: 2 });
    await assert.rejects(c.connect(), (e) => e.code === 'unreachable' && /CONNECT_ACK 2 \(service_unavailable\)/.test(e.message));
    assert.equal(srv.conns.length, 2);
  });

  test('a URL the WebSocket constructor refuses: bad_url at once, no retry', async () => {
    const c = makeClient({ url: 'http//not a url' });
    const tries = record(c, 'connecting');
    await assert.rejects(c.connect(), (e) => e.code === 'bad_url' && e.message.includes('http//not a url'));
    assert.equal(tries.length, 1);
    assert.equal(c.stopReason, 'bad_url');
  });

  test('once a login succeeded, reconnects go on past connectAttempts (reconnect.maxAttempts bounds them)',
    async () => {
      const c = makeClient({ connectAttempts: 1, reconnect: { initialDelay: 10, maxDelay: 20, maxAttempts: 4 } });
      await c.connect();
      srv.login = (m, conn) => { conn.ws.terminate(); return null; };
      srv.conns[0].ws.terminate();
      const e = await c.once('close', 10000).then(function wait(d) {
        return d.willReconnect ? c.once('close', 10000).then(wait) : d;
      });
      assert.equal(e.stopReason, 'unreachable');
      assert.equal(srv.conns.length, 1 + 4);
    });

  test('reconnectNow() skips the backoff wait', async () => {
    const c = makeClient({ reconnect: { initialDelay: 60000, maxDelay: 60000, jitter: 0 } });
    await c.connect();
    srv.conns[0].ws.terminate();
    await c.once('reconnecting', 5000);
    assert.equal(c.state, 'reconnecting');
    await c.reconnectNow();
    assert.equal(c.state, 'live');
    assert.equal(srv.conns.length, 2);
  });
});
