// A miniature IM server in Node for tests of the chat page when the real one is not
// needed: serves js/web at / and js/src at /js/ like the dev nginx, and speaks the
// protocol on /ws with the example users, group 1, offline storage and the kick
// login policy, and PINGs every pingInterval ms like im_ping_interval. Not a reference
// implementation: just enough for the page.
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { WebSocketServer } from 'ws';
import * as P from '../src/improto.js';

const { CMD } = P;
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const TYPES = { '.html': 'text/html', '.js': 'application/javascript', '.css': 'text/css' };
export const USERS = { alice: ['alice-secret', 1001], bob: ['bob-secret', 1002], carol: ['carol-secret', 1003] };
const GROUPS = { 1: [1001, 1002, 1003] };

export async function startMiniServer({ port = 0, pingInterval = 1000 } = {}) {
  const sessions = new Map(); // uid -> Map(clientId -> session)
  const inbox = new Map();    // uid -> Map(msgId -> frame), in order: offline and unacked
  const log = [];

  const httpServer = http.createServer((req, res) => {
    const u = new URL(req.url, 'http://x');
    let file = u.pathname.startsWith('/js/')
      ? path.join(ROOT, 'src', u.pathname.slice(4))
      : path.join(ROOT, 'web', u.pathname === '/' ? 'index.html' : u.pathname.slice(1));
    file = path.normalize(file);
    if (!file.startsWith(ROOT) || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
      res.writeHead(404).end('not found');
      return;
    }
    res.writeHead(200, { 'content-type': TYPES[path.extname(file)] || 'application/octet-stream' });
    fs.createReadStream(file).pipe(res);
  });
  const wss = new WebSocketServer({ server: httpServer, path: '/ws' });

  const box = (uid) => { if (!inbox.has(uid)) inbox.set(uid, new Map()); return inbox.get(uid); };
  const deliver = (uid, msgId, frame) => {
    box(uid).set(msgId, frame);
    for (const s of (sessions.get(uid) || new Map()).values()) s.ws.send(frame);
  };

  wss.on('connection', (ws) => {
    const s = { ws, uid: null, clientId: 0, pingTimer: null };
    // PING pingInterval after the login and after each PING_RESP, as the server does.
    const schedulePing = () => {
      clearTimeout(s.pingTimer);
      s.pingTimer = setTimeout(() => { if (ws.readyState === 1) ws.send(P.encodePing()); }, pingInterval);
    };
    ws.on('message', (data, isBinary) => {
      if (!isBinary) { ws.close(1003); return; }
      let m;
      try { m = P.decodeClientMessage(new Uint8Array(data)); } catch (e) {
        ws.send(P.encodeInvalid(e.cmd ?? 0));
        ws.close();
        return;
      }
      log.push({ uid: s.uid, cmd: m.cmd, msgId: m.msgId });
      if (s.uid === null) {
        if (m.cmd !== CMD.CONNECT) { ws.close(); return; }
        const u = USERS[m.username];
        if (!u || u[0] !== m.password) { ws.send(P.encodeConnectAck(3)); return; }
        s.uid = u[1];
        s.clientId = m.clientId ?? 0;
        if (!sessions.has(s.uid)) sessions.set(s.uid, new Map());
        const old = sessions.get(s.uid).get(s.clientId);
        if (old) old.ws.send(P.encodeLogout());
        sessions.get(s.uid).set(s.clientId, s);
        ws.send(P.encodeConnectAck(0));
        for (const frame of box(s.uid).values()) ws.send(frame);
        schedulePing();
        return;
      }
      switch (m.cmd) {
        case CMD.PUBLISH:
          deliver(m.toUid, m.msgId, P.encodePush({ msgId: m.msgId, payload: m.payload }));
          ws.send(P.encodeAck(CMD.PUB_ACK, m.msgId));
          break;
        case CMD.GROUP_PUBLISH:
        case CMD.GROUP_PART_PUBLISH: {
          const members = GROUPS[m.gid] || [];
          if (!members.includes(s.uid)) { ws.send(P.encodeInvalid(m.cmd, m.msgId)); break; }
          const to = m.cmd === CMD.GROUP_PUBLISH ? members : [...new Set(m.uids)].filter((x) => members.includes(x));
          const frame = m.cmd === CMD.GROUP_PUBLISH ? P.encodeGroupPublish(m) : P.encodeGroupPartPublish(m);
          for (const uid of to) if (uid !== s.uid) deliver(uid, m.msgId, frame);
          ws.send(P.encodeAck(P.ackCmdFor(m.cmd), m.msgId));
          break;
        }
        case CMD.PUB_ACK:
        case CMD.GROUP_PUB_ACK:
        case CMD.GROUP_PART_PUB_ACK:
          box(s.uid).delete(m.msgId);
          break;
        case CMD.PING:
          ws.send(P.encodePingResp());
          break;
        case CMD.PING_RESP:
          schedulePing();
          break;
        case CMD.DISCONNECT:
          ws.close();
          break;
        default:
          break;
      }
    });
    ws.on('close', () => {
      clearTimeout(s.pingTimer);
      const m = s.uid !== null && sessions.get(s.uid);
      if (m && m.get(s.clientId) === s) m.delete(s.clientId);
    });
  });

  await new Promise((r) => httpServer.listen(port, '127.0.0.1', r));
  const actual = httpServer.address().port;
  return {
    port: actual,
    url: `http://127.0.0.1:${actual}/`,
    wsUrl: `ws://127.0.0.1:${actual}/ws`,
    log,
    async stop() {
      for (const c of wss.clients) c.terminate();
      await new Promise((r) => wss.close(r));
      httpServer.closeAllConnections?.();
      await new Promise((r) => httpServer.close(r));
    },
  };
}

// `node test/lib/mini-server.js [port]` runs it by hand.
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const s = await startMiniServer({ port: Number(process.argv[2] || 0) });
  console.log(`mini IM server: ${s.url} (ws ${s.wsUrl})`);
}
