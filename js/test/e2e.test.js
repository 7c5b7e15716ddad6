// End to end: the chat page in headless Chromium against the real server stack
// (redis, the dev user centre and nginx with ngx_im_module.so, started here by
// tools/im-devrun on free ports). Skipped only when Chromium or the built module is
// missing. Screenshots go to js/test-artifacts/, with the dev server's output.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { WebSocket } from 'ws';
import { ImClient } from '../src/imclient.js';
import {
  ARTIFACTS, chromiumMissing, diagnose, launch, openChat, openConv, sendText, shot, typeText, waitAcked,
  waitDelivered, waitIncoming,
} from '../testlib/browser.js';
import { startProxy } from '../testlib/tcp-proxy.js';

const JS_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const REPO = path.resolve(JS_DIR, '..');
const MODULE = process.env.IM_MODULE || path.join(REPO, 'build/nginx/objs/ngx_im_module.so');
const DEVRUN = process.env.IM_DEVRUN || path.join(REPO, 'tools/im-devrun');
const START_TIMEOUT = 60000;
// The server's PING every 2 s, answered within 5 s: the half-open test below notices a
// dead connection in seconds. Pages that are not told these settings keep the
// defaults (30 + 10 s), which more frequent PINGs satisfy.
const PING_INTERVAL = 2;
const PING_TIMEOUT = 5;
const NGINX_EXTRA = `im_ping_interval ${PING_INTERVAL}s; im_ping_timeout ${PING_TIMEOUT}s;`;
// A bound, not a window: the reconnect comes within interval + timeout of the last
// PING, plus the backoff; this much is waited at most for one step of that test.
const HALF_OPEN_WAIT = 90000;
const STOP_TIMEOUT = 20000;

const skip = chromiumMissing()
  || (fs.existsSync(MODULE) ? null : `server module not built: ${MODULE} is missing (build it first)`);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** n distinct free TCP ports on 127.0.0.1 (held open together, then released). */
async function freePorts(n) {
  const servers = [];
  try {
    for (let i = 0; i < n; i++) {
      const s = net.createServer();
      await new Promise((resolve, reject) => { s.once('error', reject); s.listen(0, '127.0.0.1', resolve); });
      servers.push(s);
    }
    return servers.map((s) => s.address().port);
  } finally {
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  }
}

function portOpen(port) {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    const done = (ok) => { s.destroy(); resolve(ok); };
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
    s.setTimeout(1000, () => done(false));
  });
}

// ------------------------------------------------------------------ the dev stack

const stack = { proc: null, dir: null, logFile: null, exited: null, ports: null };

function readLog() {
  try { return fs.readFileSync(stack.logFile, 'utf8'); } catch { return ''; }
}
function logTail(n = 60) { return readLog().split('\n').slice(-n).join('\n'); }

// im-devrun runs under a small bash watchdog: the watchdog passes SIGTERM on to it, and
// stops it by itself when this test process is gone (even if it was SIGKILLed), so the
// stack never outlives the test. Output goes to a file, not a pipe, so nothing in the
// stack can die of SIGPIPE when this process ends.
const WATCHDOG = `
trap '' INT
"$0" &
d=$!
trap 'kill -TERM $d 2>/dev/null' TERM HUP
while kill -0 "$IM_E2E_PARENT" 2>/dev/null && kill -0 $d 2>/dev/null; do sleep 0.3; done
kill -TERM $d 2>/dev/null
while kill -0 $d 2>/dev/null; do sleep 0.2; done
wait $d
rc=$?
# orphaned: nobody will copy the log or remove the run directory
if ! kill -0 "$IM_E2E_PARENT" 2>/dev/null && [ -z "$IM_E2E_KEEP" ]; then rm -rf "$IM_DEV_DIR"; fi
exit $rc
`;

async function startStack() {
  const [ws, wss, tcp, redis, uc] = await freePorts(5);
  stack.ports = { ws, wss, tcp, redis, uc };
  stack.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'im-e2e-'));
  stack.logFile = path.join(stack.dir, 'devrun.log');
  const env = {
    ...process.env,
    IM_DEV_WS_PORT: String(ws),
    IM_DEV_WSS_PORT: String(wss),
    IM_DEV_TCP_PORT: String(tcp),
    IM_DEV_REDIS_PORT: String(redis),
    IM_DEV_UC_PORT: String(uc),
    IM_DEV_DIR: stack.dir,
    IM_MODULE: MODULE,
    IM_E2E_PARENT: String(process.pid),
    // im-devrun runs $IM_NGINX; this wrapper adds NGINX_EXTRA to its configuration
    IM_NGINX: path.join(JS_DIR, 'testlib/nginx-extra.sh'),
    IM_E2E_NGINX: process.env.IM_NGINX || '/usr/sbin/nginx',
    IM_E2E_NGINX_EXTRA: NGINX_EXTRA,
  };
  const out = fs.openSync(stack.logFile, 'a');
  // Its own process group, so that a last-resort kill reaches the watchdog and im-devrun.
  const p = spawn('bash', ['-c', WATCHDOG, DEVRUN], { cwd: JS_DIR, env, stdio: ['ignore', out, out], detached: true });
  fs.closeSync(out);
  stack.proc = p;
  stack.exited = new Promise((resolve) => p.once('exit', (code, signal) => resolve({ code, signal })));
  p.once('error', (e) => fs.appendFileSync(stack.logFile, `\nspawn error: ${e.message}\n`));
  // If this process is stopped before the after hook runs, stop the stack anyway.
  const onExit = () => { try { if (p.exitCode === null) process.kill(p.pid, 'SIGTERM'); } catch { /* gone */ } };
  process.once('exit', onExit);
  for (const [sig, n] of [['SIGINT', 2], ['SIGTERM', 15], ['SIGHUP', 1]]) {
    process.once(sig, () => { onExit(); process.exit(128 + n); });
  }

  const deadline = Date.now() + START_TIMEOUT;
  let exited = null;
  stack.exited.then((x) => { exited = x; });
  for (const port of [ws, wss]) {
    while (!(await portOpen(port))) {
      if (exited) throw new Error(`tools/im-devrun exited (${JSON.stringify(exited)}) before port ${port} opened:\n${logTail()}`);
      if (Date.now() > deadline) throw new Error(`port ${port} not open after ${START_TIMEOUT} ms:\n${logTail()}`);
      await sleep(100);
    }
  }
  // The banner is printed once every service answers.
  while (!/dev server is up/.test(readLog()) && !exited && Date.now() < deadline) await sleep(100);
}

function killPidFile(file) {
  try {
    const pid = Number(fs.readFileSync(file, 'utf8').trim());
    if (pid > 1) process.kill(pid, 'SIGKILL');
  } catch { /* gone already */ }
}

async function stopStack() {
  const p = stack.proc;
  if (!p) return;
  if (p.exitCode === null && p.signalCode === null) {
    try { process.kill(p.pid, 'SIGTERM'); } catch { /* gone */ }
    const r = await Promise.race([stack.exited, sleep(STOP_TIMEOUT).then(() => null)]);
    if (!r) {
      try { process.kill(-p.pid, 'SIGKILL'); } catch { /* gone */ }
      // im-devrun starts each service in its own session: kill those by their pid files
      killPidFile(path.join(stack.dir, 'nginx.pid'));
      killPidFile(path.join(stack.dir, 'redis.pid'));
    }
  }
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  fs.writeFileSync(path.join(ARTIFACTS, 'e2e-devrun.log'), readLog());
  if (!process.env.IM_E2E_KEEP) fs.rmSync(stack.dir, { recursive: true, force: true });
}

// ------------------------------------------------------------------ tests

let browser = null;
const sessions = [];

before(async () => {
  if (skip) return;
  await startStack();
  browser = await launch('e2e');
}, { timeout: START_TIMEOUT + 40000 });

after(async () => {
  if (browser) await browser.close().catch(() => {});
  await stopStack();
}, { timeout: STOP_TIMEOUT + 10000 });

async function chat(user, base, extra = {}) {
  const s = await openChat(browser, { base, user, ...extra });
  sessions.push(s);
  return s;
}

test('e2e against the real server (ws, wss, offline delivery, kick)', { timeout: 240000 }, async (t) => {
  if (skip) { t.skip(skip); return; }
  const { ws, wss } = stack.ports;
  const httpBase = `http://127.0.0.1:${ws}/`;
  const httpsBase = `https://127.0.0.1:${wss}/`;
  const stamp = Date.now().toString(36);

  await t.test('ws: alice and bob exchange messages both ways', async () => {
    const alice = await chat('alice', httpBase);
    const bob = await chat('bob', httpBase);
    assert.equal(await alice.page.inputValue('#url'), `ws://127.0.0.1:${ws}/ws`);
    assert.match(await alice.page.textContent('#status'), /online \(ws\)/);
    const id = await sendText(alice.page, 'u:1002', `ws hello bob ${stamp}`);
    assert.equal(await waitIncoming(bob.page, 'u:1001', `ws hello bob ${stamp}`), id, 'same MsgId at both ends');
    await sendText(bob.page, 'u:1001', `ws hi alice ${stamp}`);
    await waitIncoming(alice.page, 'u:1002', `ws hi alice ${stamp}`);
    await sendText(alice.page, 'g:1', `ws hello group ${stamp}`);
    await waitIncoming(bob.page, 'g:1', `ws hello group ${stamp}`);
    await shot(alice.page, 'e2e-1-ws-alice');
    await shot(bob.page, 'e2e-1-ws-bob');
    await alice.ctx.close();
    await bob.ctx.close();
  });

  await t.test('wss: the page over https, alice and bob exchange messages both ways', async () => {
    const alice = await chat('alice', httpsBase);
    const bob = await chat('bob', httpsBase);
    assert.equal(await alice.page.inputValue('#url'), `wss://127.0.0.1:${wss}/wss`);
    assert.match(await alice.page.textContent('#status'), /online \(wss\)/);
    await sendText(alice.page, 'u:1002', `wss hello bob ${stamp}`);
    await waitIncoming(bob.page, 'u:1001', `wss hello bob ${stamp}`);
    await sendText(bob.page, 'u:1001', `wss hi alice ${stamp}`);
    await waitIncoming(alice.page, 'u:1002', `wss hi alice ${stamp}`);
    await sendText(bob.page, 'g:1', `wss hello group ${stamp}`);
    await waitIncoming(alice.page, 'g:1', `wss hello group ${stamp}`);
    await shot(alice.page, 'e2e-2-wss-alice');
    await shot(bob.page, 'e2e-2-wss-bob');
    await alice.ctx.close();
    await bob.ctx.close();
  });

  await t.test('receipts: one tick while carol is away, two once her page has acked (ws and wss senders)',
    async () => {
      const alice = await chat('alice', httpBase);
      const bob = await chat('bob', httpsBase);
      const textA = `for carol over ws ${stamp}`;
      const textB = `for carol over wss ${stamp}`;
      const idA = await sendText(alice.page, 'u:1003', textA);
      const idB = await sendText(bob.page, 'u:1003', textB);
      // nobody has acked them: no RECEIPT can exist yet, whatever the timing
      for (const [page, id] of [[alice.page, idA], [bob.page, idB]]) {
        const m = page.locator(`#messages .msg[data-msgid="${id}"]`);
        assert.equal(await m.getAttribute('data-status'), 'acked');
        assert.equal(await m.locator('.tick').textContent(), '✓');
      }
      const carol = await chat('carol', httpBase);
      await waitIncoming(carol.page, 'u:1001', textA);
      await waitIncoming(carol.page, 'u:1002', textB);
      await waitDelivered(alice.page, textA);
      await waitDelivered(bob.page, textB);
      await shot(alice.page, 'e2e-3-receipt-alice');
      await alice.ctx.close();
      await bob.ctx.close();
      await carol.ctx.close();
    });

  await t.test('half-open: carol behind a proxy that stops forwarding; her page notices the missing PINGs, '
    + 'reconnects, and the message sent meanwhile reaches bob once, with its MsgId', async () => {
    const conf = fs.readFileSync(path.join(stack.dir, 'nginx.e2e.conf'), 'utf8');
    assert.ok(conf.includes(NGINX_EXTRA), 'nginx runs with the short PING settings');
    const proxy = await startProxy({ port: ws });
    try {
      const bob = await chat('bob', httpBase);
      const carol = await chat('carol', httpBase, {
        url: `ws://127.0.0.1:${proxy.port}/ws`,
        query: `&ping_interval=${PING_INTERVAL}&ping_timeout=${PING_TIMEOUT}`,
      });
      await sendText(carol.page, 'u:1002', `through the proxy ${stamp}`);
      await waitIncoming(bob.page, 'u:1003', `through the proxy ${stamp}`);
      const log = (page) => page.evaluate(() => window.imLog);
      const reconnects = async () => (await log(carol.page)).filter((e) => e.type === 'connectAck').length;
      assert.equal(await reconnects(), 1);

      // 1. nothing passes either way: the message waits at carol's, ✓ without ✓✓
      assert.equal(proxy.freeze('both'), 1);
      const textA = `sent into a dead connection ${stamp}`;
      const idA = await typeText(carol.page, 'u:1002', textA);
      await waitAcked(carol.page, textA, HALF_OPEN_WAIT);
      assert.equal(await waitIncoming(bob.page, 'u:1003', textA), idA, 'the same MsgId at bob');
      let events = await log(carol.page);
      assert.ok(events.some((e) => e.type === 'error' && e.error === 'heartbeat'),
        'the client noticed the missing PINGs');
      assert.ok(events.some((e) => e.type === 'close' && e.detail.code === 1006 && e.detail.willReconnect));
      assert.deepEqual(events.filter((e) => e.type === 'sent' && e.detail.msgId === idA).map((e) => e.detail.resend),
        [false, true], 'written twice: into the dead connection, then after the reconnect');
      assert.equal(await reconnects(), 2);
      assert.equal(await bob.page.locator(`#messages .msg[data-msgid="${idA}"]`).count(), 1);

      // 2. carol's bytes still reach the server, its answers do not: the message is
      //    delivered, its PUB_ACK is lost, carol sends it again after the reconnect;
      //    the server delivers the repeat too (it does not dedupe publishes), bob's
      //    client recognises the MsgId and shows it once.
      assert.equal(proxy.freeze('down'), 1);
      const textB = `answer lost ${stamp}`;
      const idB = await typeText(carol.page, 'u:1002', textB);
      assert.equal(await waitIncoming(bob.page, 'u:1003', textB), idB);
      await waitAcked(carol.page, textB, HALF_OPEN_WAIT);
      events = await log(carol.page);
      assert.deepEqual(events.filter((e) => e.type === 'sent' && e.detail.msgId === idB).map((e) => e.detail.resend),
        [false, true]);
      assert.equal(await reconnects(), 3);
      await diagnose(bob.page, 'waiting for the repeat of B at bob', () => bob.page.waitForFunction(
        (id) => window.imLog.some((e) => e.type === 'duplicate' && e.detail.msgId === id), idB,
        { timeout: HALF_OPEN_WAIT }));
      await openConv(bob.page, 'u:1003');
      assert.equal(await bob.page.locator(`#messages .msg[data-msgid="${idB}"]`).count(), 1, 'shown once');
      assert.equal(await bob.page.locator(`#messages .msg[data-msgid="${idA}"]`).count(), 1, 'shown once');
      await shot(carol.page, 'e2e-6-half-open-carol');
      await shot(bob.page, 'e2e-6-half-open-bob');
      await carol.ctx.close();
      await bob.ctx.close();
    } finally {
      await proxy.close();
    }
  });

  // alice stays on the page from here to the end
  const alice = await chat('alice', httpBase);

  await t.test('offline: bob closes the page, alice sends, bob logs in again and receives it', async () => {
    const bob = await chat('bob', httpBase);
    await bob.ctx.close();
    await sleep(500); // let the server see the socket close
    const id = await sendText(alice.page, 'u:1002', `while you were away ${stamp}`);
    const bob2 = await chat('bob', httpBase);
    assert.equal(await waitIncoming(bob2.page, 'u:1001', `while you were away ${stamp}`), id);
    await shot(bob2.page, 'e2e-3-offline-bob');
    await bob2.ctx.close();
  });

  await t.test('kick: a second login of alice shows "logged in elsewhere" on the first', async () => {
    await openConv(alice.page, 'u:1002');
    const alice2 = await chat('alice', httpBase);
    await diagnose(alice.page, 'waiting for the LOGOUT banner',
      () => alice.page.waitForSelector('#banner[data-kind=logout]'));
    assert.match(await alice.page.textContent('#banner'), /logged in elsewhere/);
    await shot(alice.page, 'e2e-4-kicked-alice');
    await sleep(1500);
    assert.equal(await alice.page.getAttribute('#status', 'data-state'), 'closed', 'the kicked page does not reconnect');
    assert.equal(await alice2.page.getAttribute('#status', 'data-state'), 'live', 'the new login stays');
    await sendText(alice2.page, 'u:1003', `still here ${stamp}`);
  });

  await t.test('the library from Node (ws and wss): part-group, refusal of a non-member, PING', async () => {
    // ClientId 2 ("app"), so these sessions do not kick the pages' sessions (ClientId 1).
    class InsecureWS extends WebSocket {
      constructor(url) { super(url, { rejectUnauthorized: false }); }
    }
    const mk = (user, password, uid, url) => new ImClient({
      url, username: user, password, uid, clientId: 2, WebSocket: InsecureWS, ackTimeout: 10000,
    });
    const bob = mk('bob', 'bob-secret', 1002, `ws://127.0.0.1:${ws}/ws`);
    const carol = mk('carol', 'carol-secret', 1003, `wss://127.0.0.1:${wss}/wss`);
    try {
      const got = new Promise((resolve) => carol.on('partGroup', (d) => {
        if (d.json && d.payload.content.text === `part ${stamp}`) resolve(d);
      }));
      await Promise.all([bob.connect(), carol.connect()]);
      const r = await bob.sendPartGroupMessage(1, [1003], `part ${stamp}`);
      assert.equal(r.cmd, 12);
      const d = await Promise.race([got, sleep(10000).then(() => assert.fail('carol got no part-group push'))]);
      assert.equal(d.msgId, r.msgId);
      assert.equal(d.gid, 1);
      assert.deepEqual(d.uids, [1003]);
      assert.equal(d.payload.from, 1002);
      await assert.rejects(carol.sendGroupMessage(424242, 'not a member'),
        (e) => e.code === 'invalid' && e.cmd === 5);
      assert.equal(carol.state, 'live', 'a refusal leaves the session up');
      await bob.ping(5000);
      await carol.ping(5000);
    } finally {
      bob.close();
      carol.close();
    }
  });

  await t.test('refused: a wrong password shows code 3', async () => {
    const bad = await chat('carol', httpBase, { password: 'wrong-password', expect: 'refused' });
    await diagnose(bad.page, 'waiting for the refusal banner',
      () => bad.page.waitForSelector('#banner[data-kind=refused]'));
    assert.match(await bad.page.textContent('#banner'), /code 3/);
    await shot(bad.page, 'e2e-5-refused');
  });

  for (const s of sessions) assert.deepEqual(s.errors, [], 'no uncaught page errors');
  const bad = readLog().split('\n').filter((l) => /\[(alert|emerg|crit)\]|exited on signal/.test(l));
  assert.deepEqual(bad, [], 'no [alert]/[emerg]/[crit] and no crashed worker in the server log');
});
