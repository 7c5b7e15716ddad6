// The chat page in headless Chromium against the miniature Node server
// (testlib/mini-server.js): checks the page itself, whether or not the real server
// is built. e2e.test.js runs the same kind of steps against the real nginx module.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { WebSocket } from 'ws';
import { ImClient } from '../src/imclient.js';
import { startMiniServer } from '../testlib/mini-server.js';
import { startProxy } from '../testlib/tcp-proxy.js';
import {
  chromiumMissing, diagnose, launch, openChat, openConv, sendText, waitIncoming, shot,
} from '../testlib/browser.js';

const skip = chromiumMissing();
let server;
let browser;
const pages = [];

before(async () => {
  if (skip) return;
  server = await startMiniServer();
  browser = await launch('page');
});

after(async () => {
  if (browser) await browser.close().catch(() => {});
  if (server) await server.stop();
});

async function chat(user, extra = {}) {
  const c = await openChat(browser, { base: server.url, user, ...extra });
  pages.push(c);
  return c;
}

test('chat page: login, 1:1 and group messages with ticks, offline delivery, kick and refusal banners',
  { timeout: 120000 }, async (t) => {
    if (skip) { t.skip(skip); return; }

    const alice = await chat('alice');
    const bob = await chat('bob');
    assert.equal(await alice.page.inputValue('#url'), server.wsUrl, 'default ws URL: same host and port, /ws');
    assert.match(await alice.page.textContent('#status'), /online \(ws\)/);
    assert.deepEqual(await alice.page.locator('#contacts button').evaluateAll((bs) => bs.map((b) => b.dataset.conv)),
      ['u:1002', 'u:1003', 'g:1']);

    const id = await sendText(alice.page, 'u:1002', 'hello bob');
    assert.match(id, /^[0-9a-f]{32}$/);
    assert.equal(await waitIncoming(bob.page, 'u:1001', 'hello bob'), id, 'same MsgId at both ends');
    await sendText(bob.page, 'u:1001', 'hi alice');
    await waitIncoming(alice.page, 'u:1002', 'hi alice');

    // a group message shows the sender's name and an unread count elsewhere
    await openConv(alice.page, 'u:1003');
    await sendText(bob.page, 'g:1', 'hello group');
    await alice.page.waitForSelector('#contacts button[data-conv="g:1"] .unread');
    await waitIncoming(alice.page, 'g:1', 'hello group');
    assert.equal(await alice.page.locator('#messages .msg.in .from').first().textContent(), 'bob');
    await shot(alice.page, 'page-alice');

    // bob leaves, alice writes, bob comes back and finds it
    await bob.ctx.close();
    await new Promise((r) => setTimeout(r, 300));
    await sendText(alice.page, 'u:1002', 'while you were away');
    const bob2 = await chat('bob');
    await waitIncoming(bob2.page, 'u:1001', 'while you were away');
    await shot(bob2.page, 'page-bob-offline');

    // a second login of alice kicks the first
    const alice2 = await chat('alice');
    await alice.page.waitForSelector('#banner[data-kind=logout]');
    assert.match(await alice.page.textContent('#banner'), /logged in elsewhere/);
    await shot(alice.page, 'page-alice-kicked');
    await new Promise((r) => setTimeout(r, 700));
    assert.equal(await alice.page.getAttribute('#status', 'data-state'), 'closed', 'no reconnect after LOGOUT');
    assert.equal(await alice2.page.getAttribute('#status', 'data-state'), 'live');

    // wrong password: code 3 banner, login form stays
    const bad = await chat('carol', { password: 'nope', expect: 'refused' });
    await bad.page.waitForSelector('#banner[data-kind=refused]');
    assert.match(await bad.page.textContent('#banner'), /code 3/);
    assert.equal(await bad.page.isVisible('#login'), true);
    await shot(bad.page, 'page-refused');

    for (const p of pages) assert.deepEqual(p.errors, [], 'no uncaught page errors');
  });

/** The <time> of the message with this MsgId: its data-sent-at and what it shows. */
async function timeOf(page, msgId) {
  const t = page.locator(`#messages .msg[data-msgid="${msgId}"] time`);
  return { sentAt: await t.getAttribute('data-sent-at'), text: await t.textContent(), title: await t.getAttribute('title') };
}

test("chat page: conversations survive a reload (IndexedDB) and show the sender's time",
  { timeout: 120000 }, async (t) => {
    if (skip) { t.skip(skip); return; }
    const alice = await chat('alice');
    const bob = await chat('bob');
    const id1 = await sendText(alice.page, 'u:1002', 'kept across reloads');
    await waitIncoming(bob.page, 'u:1001', 'kept across reloads');
    const id2 = await sendText(bob.page, 'u:1001', 'me too');
    await waitIncoming(alice.page, 'u:1002', 'me too');

    // the sender's time travels in the payload ("time", ms): both ends show the same
    const out = await timeOf(alice.page, id1);
    const inn = await timeOf(bob.page, id1);
    assert.match(out.sentAt, /^\d{13}$/);
    assert.equal(inn.sentAt, out.sentAt);
    assert.match(inn.title, /sender's clock/);

    // a sender whose clock says 2 January 2030, 10:20 local time: the recipient shows that
    const when = new Date(2030, 0, 2, 10, 20).getTime();
    const carol = new ImClient({
      url: server.wsUrl, username: 'carol', password: 'carol-secret', uid: 1003, clientId: 2, WebSocket,
    });
    try {
      await carol.connect();
      await carol.sendMessage(1002, 'from the future', { fields: { time: when } });
    } finally {
      carol.close();
    }
    const id3 = await waitIncoming(bob.page, 'u:1003', 'from the future');
    const fut = await timeOf(bob.page, id3);
    assert.equal(fut.sentAt, String(when));
    assert.match(fut.text, /10:20/);
    assert.match(fut.text, /2/, 'another day shows its date');

    // reload: after the login the conversations are back, with their MsgIds, ticks and times
    await bob.page.reload();
    await diagnose(bob.page, 'logging in again after the reload', async () => {
      await bob.page.click('#login-button');
      await bob.page.waitForSelector('#status[data-state=live]');
    });
    await openConv(bob.page, 'u:1001');
    const msgs = await bob.page.locator('#messages .msg').evaluateAll((els) => els.map((e) => [
      e.className, e.dataset.msgid, e.dataset.status || '', e.querySelector('time').dataset.sentAt]));
    assert.deepEqual(msgs, [
      ['msg in', id1, '', out.sentAt],
      ['msg out', id2, 'acked', (await timeOf(alice.page, id2)).sentAt],
    ]);
    await openConv(bob.page, 'u:1003');
    assert.equal((await timeOf(bob.page, id3)).sentAt, String(when));
    // new messages still come, once
    await sendText(alice.page, 'u:1002', 'after your reload');
    await waitIncoming(bob.page, 'u:1001', 'after your reload');
    assert.equal(await bob.page.locator(`#messages .msg[data-msgid="${id1}"]`).count(), 1);
    await shot(bob.page, 'page-bob-reloaded');
    for (const p of [alice, bob]) assert.deepEqual(p.errors, []);
    await alice.ctx.close();
    await bob.ctx.close();
  });

test('chat page on a phone-sized screen (375 x 667)', { timeout: 120000 }, async (t) => {
  if (skip) { t.skip(skip); return; }
  const phone = await chat('carol', { viewport: { width: 375, height: 667 }, mobile: true });
  const bob = await chat('bob');
  const page = phone.page;
  const fits = () => page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth);
  assert.equal(await fits(), true, 'the chat list fits the width');
  assert.equal(await page.isVisible('#conversation'), false, 'the list of chats first');
  await sendText(page, 'u:1002', 'from my phone');
  assert.equal(await page.isVisible('#contacts'), false, 'the conversation replaces the list');
  await sendText(bob.page, 'u:1003', 'a long answer '.repeat(12).trim());
  await waitIncoming(page, 'u:1002', 'a long answer');
  assert.equal(await fits(), true, 'the conversation fits the width');
  const box = await page.locator('#composer').boundingBox();
  assert.ok(box.y >= 0 && box.y + box.height <= 667 && box.x >= 0 && box.x + box.width <= 375,
    `the composer is on screen: ${JSON.stringify(box)}`);
  const msg = await page.locator('#messages .msg.in').last().boundingBox();
  assert.ok(msg.x + msg.width <= 375, 'a long message wraps');
  await shot(page, 'page-phone');
  await page.click('#back');
  assert.equal(await page.isVisible('#contacts'), true, 'back to the list');
  await shot(page, 'page-phone-list');
  assert.deepEqual(phone.errors, []);
  await phone.ctx.close();
  await bob.ctx.close();
});

test('chat page: a way out of a failed connection', { timeout: 120000 }, async (t) => {
  if (skip) { t.skip(skip); return; }
  // a server address where nobody listens: after `attempts` tries a clear message,
  // "Change server" goes back to the form, and the right address logs in
  const proxy = await startProxy({ port: server.port });
  const deadPort = proxy.port;
  await proxy.close();
  const bad = await chat('alice', { url: `ws://127.0.0.1:${deadPort}/ws`, query: '&attempts=2', expect: 'none' });
  const page = bad.page;
  await diagnose(page, 'waiting for the unreachable banner', () => page.waitForSelector('#banner[data-kind=unreachable]'));
  assert.match(await page.textContent('#banner .text'),
    new RegExp(`cannot log in at ws://127\\.0\\.0\\.1:${deadPort}/ws: 2 attempts failed`));
  assert.equal(await page.getAttribute('#status', 'data-state'), 'closed');
  await shot(page, 'page-unreachable');
  await page.click('#change-server');
  assert.equal(await page.isVisible('#login'), true);
  assert.equal(await page.isEnabled('#login-button'), true);
  assert.equal(await page.evaluate(() => document.activeElement.id), 'url');
  await page.fill('#url', server.wsUrl);
  await page.click('#login-button');
  await page.waitForSelector('#status[data-state=live]');

  // a live session whose server goes away: the banner offers "Retry now" and "Log out"
  const p2 = await startProxy({ port: server.port });
  const lost = await chat('bob', { url: `ws://127.0.0.1:${p2.port}/ws`, query: '&attempts=2' });
  await sendText(lost.page, 'u:1001', 'before the server went away');
  await p2.close(); // the connection drops and nobody listens there any more
  await diagnose(lost.page, 'waiting for the reconnecting banner',
    () => lost.page.waitForSelector('#banner[data-kind=reconnecting] #retry'));
  assert.match(await lost.page.textContent('#banner .text'), /Connection lost/);
  assert.equal(await lost.page.isVisible('#leave'), true);
  await shot(lost.page, 'page-reconnecting');
  await lost.page.click('#retry'); // tries at once; nobody there: the banner comes back
  await lost.page.waitForSelector('#banner #leave');
  await lost.page.click('#leave');
  assert.equal(await lost.page.isVisible('#login'), true, 'back at the login form');
  assert.equal(await lost.page.getAttribute('#status', 'data-state'), 'idle');
  assert.equal(await lost.page.isVisible('#banner'), false);
  for (const p of [bad, lost]) assert.deepEqual(p.errors, []);
  await bad.ctx.close();
  await lost.ctx.close();
});
