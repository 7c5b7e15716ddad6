// Helpers for driving the chat page (js/web) in Debian's headless Chromium with
// playwright-core. Used by page.test.js (miniature server) and e2e.test.js (real server).
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const CHROMIUM = process.env.IM_CHROMIUM || '/usr/bin/chromium';
export const CHROMIUM_ARGS = [
  '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--ignore-certificate-errors',
];
export const ARTIFACTS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../test-artifacts');
export const STEP_TIMEOUT = 15000;

export function chromiumMissing() {
  return fs.existsSync(CHROMIUM) ? null
    : `headless Chromium not found at ${CHROMIUM} (install it: apt-get install -y chromium)`;
}

let prefix = 'browser';

/** Launch Chromium; `name` prefixes this run's failure screenshots (old ones are removed). */
export async function launch(name = 'browser') {
  const { chromium } = await import('playwright-core');
  prefix = name;
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  for (const f of fs.readdirSync(ARTIFACTS)) {
    if (f.startsWith(`${prefix}-failure-`)) fs.rmSync(path.join(ARTIFACTS, f), { force: true });
  }
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, timeout: 30000 });
}

/**
 * A browser context with the chat page open and logged in.
 * opts: {base: page URL, user, password?, transport?: 'ws'|'wss', url?: server URL,
 *        expect?: 'live' | 'refused' (default 'live'), query?: '&name=value…' for the page,
 *        viewport?: {width, height}, mobile?: true}
 * Returns {ctx, page, errors} where errors collects uncaught page errors.
 */
export async function openChat(browser, opts) {
  const ctx = await browser.newContext({
    ignoreHTTPSErrors: true,
    viewport: opts.viewport || { width: 1000, height: 620 },
    ...(opts.mobile ? { isMobile: true, hasTouch: true, deviceScaleFactor: 2 } : {}),
  });
  ctx.setDefaultTimeout(STEP_TIMEOUT);
  const page = await ctx.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(`${opts.base}?user=${encodeURIComponent(opts.user)}${opts.query || ''}`);
  if (opts.transport) await page.check(`input[name=transport][value=${opts.transport}]`);
  if (opts.url) await page.fill('#url', opts.url);
  if (opts.password !== undefined) await page.fill('#password', opts.password);
  await page.click('#login-button');
  if ((opts.expect ?? 'live') === 'live') {
    await diagnose(page, `${opts.user} logging in`, async () => {
      await page.waitForSelector('#status[data-state=live]');
      await page.waitForSelector('#contacts button');
    });
  }
  return { ctx, page, errors };
}

let failures = 0;

/**
 * Run fn; if it throws, rethrow with what the page showed (status line, banner, the
 * page's client event log) and save a screenshot, so a failure against a server
 * under construction says what happened.
 */
export async function diagnose(page, what, fn) {
  try {
    return await fn();
  } catch (e) {
    let state = '';
    try {
      const s = await page.evaluate(() => ({
        url: location.href,
        status: document.querySelector('#status')?.textContent,
        banner: document.querySelector('#banner')?.textContent,
        server: document.querySelector('#url')?.value,
        events: (window.imEvents || []).slice(-25),
      }));
      state = `\n  page ${s.url}\n  server ${s.server}\n  status: ${s.status}\n  banner: ${s.banner}`
        + `\n  client events:\n    ${s.events.join('\n    ') || '(none)'}`;
      const file = `${prefix}-failure-${++failures}`;
      await shot(page, file);
      state += `\n  screenshot: test-artifacts/${file}.png`;
    } catch { /* page gone */ }
    e.message = `${what}: ${e.message.split('\n')[0]}${state}`;
    throw e;
  }
}

export async function openConv(page, key) {
  // on a phone-sized page the list of chats is behind the back button
  if (!(await page.isVisible(`#contacts button[data-conv="${key}"]`)) && (await page.isVisible('#back'))) {
    await page.click('#back');
  }
  await page.click(`#contacts button[data-conv="${key}"]`);
  await page.waitForSelector(`#contacts button.active[data-conv="${key}"]`, { state: 'attached' });
}

/** Send `text` in conversation `key` ('u:1002', 'g:1'); waits for ✓✓; returns the MsgId. */
export async function sendText(page, key, text) {
  return diagnose(page, `sending ${JSON.stringify(text)} to ${key}`, () => sendText0(page, key, text));
}

/** Type `text` in conversation `key` and send it; returns its MsgId once it shows. */
export async function typeText(page, key, text) {
  await openConv(page, key);
  await page.fill('#text', text);
  await page.press('#text', 'Enter');
  const out = page.locator('#messages .msg.out').filter({ hasText: text });
  await out.waitFor();
  return out.getAttribute('data-msgid');
}

/** The server took it: ✓ (acked), or ✓✓ when a recipient acked it too. */
const TAKEN = '[data-status=acked], [data-status=delivered]';

/** Wait until our message `text` shows the server's ack (within `timeout` ms). */
export async function waitAcked(page, text, timeout) {
  return diagnose(page, `waiting for the ack of ${JSON.stringify(text)}`, async () => {
    const out = page.locator('#messages .msg.out').filter({ hasText: text });
    await out.and(page.locator(TAKEN)).waitFor({ timeout });
  });
}

/** Wait until our message `text` shows ✓✓: a recipient acked it (RECEIPT). */
export async function waitDelivered(page, text, timeout) {
  return diagnose(page, `waiting for the receipt of ${JSON.stringify(text)}`, async () => {
    const out = page.locator('#messages .msg.out').filter({ hasText: text });
    await out.and(page.locator('[data-status=delivered]')).waitFor({ timeout });
    const tick = await out.locator('.tick').textContent();
    if (tick !== '✓✓') throw new Error(`delivered message shows tick ${JSON.stringify(tick)}`);
  });
}

async function sendText0(page, key, text) {
  await openConv(page, key);
  await page.fill('#text', text);
  await page.press('#text', 'Enter');
  const out = page.locator('#messages .msg.out').filter({ hasText: text });
  await out.and(page.locator(TAKEN)).waitFor();
  // status and tick read together: a receipt can re-render the message
  // between two separate reads (acked, then ✓✓)
  const [status, tick] = await out.evaluate(
    (el) => [el.getAttribute('data-status'), el.querySelector('.tick').textContent]);
  if (tick !== { acked: '✓', delivered: '✓✓' }[status]) {
    throw new Error(`a message ${status} shows tick ${JSON.stringify(tick)}`);
  }
  return out.getAttribute('data-msgid');
}

/** Wait until `text` arrived in conversation `key`; returns the message's MsgId. */
export async function waitIncoming(page, key, text) {
  return diagnose(page, `waiting for ${JSON.stringify(text)} in ${key}`, async () => {
    await openConv(page, key);
    const m = page.locator('#messages .msg.in').filter({ hasText: text });
    await m.waitFor();
    return m.getAttribute('data-msgid');
  });
}

export async function shot(page, name) {
  await page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`) });
}
