// The chat page in headless Chromium against the miniature Node server
// (testlib/mini-server.js): checks the page itself, whether or not the real server
// is built. e2e.test.js runs the same kind of steps against the real nginx module.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startMiniServer } from '../testlib/mini-server.js';
import { chromiumMissing, launch, openChat, openConv, sendText, waitIncoming, shot } from '../testlib/browser.js';

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
