// Chat page for the ngx_im dev server: plain DOM, no build step.
// The library is served by the dev nginx from js/src/ at /js/; history.js keeps the
// conversations in IndexedDB across reloads.
import { ImClient, newMsgId } from '/js/imclient.js';
import { openHistory } from './history.js';

const USERS = [
  { name: 'alice', password: 'alice-secret', uid: 1001 },
  { name: 'bob', password: 'bob-secret', uid: 1002 },
  { name: 'carol', password: 'carol-secret', uid: 1003 },
];
const GROUPS = [{ gid: 1, name: 'group 1' }];
const CLIENT_ID_PC = 1; // one session per (uid, ClientId): a second page kicks the first

const $ = (sel) => document.querySelector(sel);
const params = new URLSearchParams(location.search);

/*
 * Client settings from the query string, in seconds as in the server's directives:
 * ping_interval and ping_timeout must match im_ping_interval and im_ping_timeout
 * (the client reconnects when no PING came for their sum); attempts is how many
 * tries a login gets before the page says the server cannot be reached.
 */
function seconds(name, dflt) {
  const v = Number(params.get(name));
  return params.has(name) && Number.isFinite(v) && v > 0 ? v * 1000 : dflt;
}
const SETTINGS = {
  heartbeat: { interval: seconds('ping_interval', 30000), timeout: seconds('ping_timeout', 10000) },
  ackTimeout: seconds('ack_timeout', 10000),
  connectAttempts: Math.max(1, Number(params.get('attempts')) || 5),
};

// ------------------------------------------------------------------ state

let client = null;
let me = null;          // entry of USERS
let history = null;     // openHistory(me.uid)
let current = null;     // key of the open conversation
const convs = new Map(); // key -> {key, title, kind: 'user'|'group', id, messages: [], unread}
const byMsgId = new Map(); // msgId -> message record (both directions)

// Events of the client, for the devtools console, tests and failure reports.
const events = [];
window.imEvents = events;   // short strings
window.imLog = [];          // {type, detail} of the events tests count

// ------------------------------------------------------------------ login form

function defaultUrl(transport) {
  const override = params.get(transport);
  if (override) return override;
  const host = location.hostname || '127.0.0.1';
  const h = host.includes(':') ? `[${host}]` : host;
  // The dev nginx serves this page on the ws port (http) and on the wss port (https).
  if (transport === 'ws') {
    return location.protocol === 'http:' && location.port ? `ws://${location.host}/ws` : `ws://${h}:9095/ws`;
  }
  return location.protocol === 'https:' ? `wss://${location.host}/wss` : `wss://${h}:8443/wss`;
}

function transport() { return document.querySelector('input[name=transport]:checked').value; }

function initLogin() {
  const sel = $('#user');
  for (const u of USERS) sel.add(new Option(`${u.name} (${u.uid})`, u.name));
  sel.value = USERS.some((u) => u.name === params.get('user')) ? params.get('user') : 'alice';
  const fillPassword = () => { $('#password').value = USERS.find((u) => u.name === sel.value).password; };
  sel.addEventListener('change', fillPassword);
  fillPassword();
  const t = params.get('transport') || (location.protocol === 'https:' ? 'wss' : 'ws');
  document.querySelector(`input[name=transport][value=${t === 'wss' ? 'wss' : 'ws'}]`).checked = true;
  $('#url').value = defaultUrl(transport());
  for (const r of document.querySelectorAll('input[name=transport]')) {
    r.addEventListener('change', () => { $('#url').value = defaultUrl(transport()); });
  }
  $('#login').addEventListener('submit', (e) => { e.preventDefault(); login(); });
  $('#cancel-button').addEventListener('click', () => backToLogin('Stopped. Check the server address and log in again.'));
  $('#logout').addEventListener('click', () => logout());
  $('#composer').addEventListener('submit', (e) => { e.preventDefault(); send(); });
  $('#back').addEventListener('click', () => { document.body.classList.remove('in-conv'); });
}

// ------------------------------------------------------------------ banner / status

/** The banner: a kind (for styles and tests), a text, and buttons [{id, label, run}]. */
function banner(kind, text, actions = []) {
  const b = $('#banner');
  b.hidden = !text;
  b.dataset.kind = kind || '';
  const span = document.createElement('span');
  span.className = 'text';
  span.textContent = text || '';
  b.replaceChildren(span);
  for (const a of actions) {
    const button = document.createElement('button');
    button.type = 'button';
    button.id = a.id;
    button.textContent = a.label;
    button.addEventListener('click', a.run);
    b.append(button);
  }
}

function status(state, text) {
  const s = $('#status');
  s.dataset.state = state;
  s.textContent = text;
}

// ------------------------------------------------------------------ session

let logins = 0; // the latest login() wins over one still opening the history

async function login() {
  const token = ++logins;
  const name = $('#user').value;
  me = USERS.find((u) => u.name === name);
  const password = $('#password').value;
  const url = $('#url').value.trim();
  if (client) client.close();
  client = null;
  banner(null, '');
  resetConversations();
  connecting(true);
  status('connecting', `connecting to ${url}…`);
  const h = await openHistory(me.uid);
  if (token !== logins) return; // another login meanwhile
  history = h;
  for (const r of await h.load()) addRecord(r);

  const c = new ImClient({
    url, username: me.name, password, uid: me.uid, clientId: CLIENT_ID_PC, ...SETTINGS,
  });
  client = c;
  window.imClient = c; // handy from the devtools console
  const mine = (fn) => (d) => { if (client === c) fn(d); };
  events.length = 0;
  window.imLog.length = 0;
  for (const type of ['connecting', 'connectAck', 'close', 'reconnecting', 'logout', 'invalid', 'error',
    'disconnect', 'ackTimeout', 'overflow', 'duplicate', 'sent', 'receipt']) {
    c.on(type, mine((d) => {
      const { error, ...rest } = d || {};
      window.imLog.push({ type, detail: rest, error: error && (error.code || error.message) });
      if (window.imLog.length > 1000) window.imLog.shift();
      events.push(`${new Date().toISOString().slice(11, 23)} ${type} ${JSON.stringify(rest)}${error ? ` ${error.message || error.type || error}` : ''}`);
      if (events.length > 80) events.shift();
    }));
  }

  c.on('connectAck', mine(({ code, text }) => {
    if (code === 0) {
      status('live', `online (${transportOf(url)})`);
      banner(null, '');
      connecting(false);
      showChat(true);
    } else if (code === 2) {
      status('reconnecting', 'service unavailable, retrying…');
      banner('unavailable', `Login failed (code 2): ${text}. Retrying…`, exits());
    } else {
      status('closed', 'offline');
      banner('refused', `Login refused (code ${code}): ${text}.`);
      showChat(false);
    }
  }));
  c.on('reconnecting', mine(({ delay }) => {
    if (!$('#chat').hidden) {
      status('reconnecting', 'connection lost, reconnecting…');
      banner('reconnecting', `Connection lost. Trying again in ${Math.ceil(delay / 1000)} s…`, exits());
    }
  }));
  c.on('close', mine(({ willReconnect }) => {
    if (willReconnect) status('reconnecting', 'connection lost, reconnecting…');
    else if (c.stopReason !== 'refused') status('closed', 'offline');
  }));
  c.on('logout', mine(() => {
    status('closed', 'offline');
    banner('logout', `Logged out: ${me.name} logged in elsewhere. This page will not reconnect.`);
    $('#composer button').disabled = true;
    $('#text').disabled = true;
  }));
  c.on('message', mine((d) => receive('user', d)));
  c.on('group', mine((d) => receive('group', d)));
  c.on('partGroup', mine((d) => receive('group', d)));
  c.on('sent', mine(({ msgId }) => setStatus(msgId, 'sent')));
  c.on('receipt', mine(({ msgId }) => setStatus(msgId, 'delivered')));
  c.on('ackTimeout', mine(({ msgId }) => markLate(msgId)));
  c.on('invalid', mine(({ cmd, msgId }) => { if (!msgId) console.warn('server: invalid packet for cmd', cmd); }));

  // What an earlier page sent but never saw acknowledged goes again, same MsgId and
  // payload: the recipients recognise a repeat by its MsgId.
  for (const m of byMsgId.values()) if (m.dir === 'out' && (m.status === 'queued' || m.status === 'sent')) publish(m);

  c.connect().then(() => {}, mine((e) => {
    connecting(false);
    if (e.code === 'unreachable' || e.code === 'bad_url') {
      status('closed', 'offline');
      banner('unreachable', `${e.message}.`, [
        { id: 'retry', label: 'Try again', run: () => retry() },
        { id: 'change-server', label: 'Change server', run: () => backToLogin('') },
      ]);
    }
  }));
}

/** The way out of a connection that does not come back: retry now, or leave. */
function exits() {
  return [
    { id: 'retry', label: 'Retry now', run: () => retry() },
    { id: 'leave', label: $('#chat').hidden ? 'Cancel' : 'Log out', run: () => backToLogin('') },
  ];
}

function retry() {
  if (!client) return;
  banner('connecting', 'Connecting…');
  if ($('#chat').hidden) connecting(true);
  status('connecting', `connecting to ${client.url}…`);
  client.reconnectNow().catch(() => {});
}

function backToLogin(text) {
  logins++;
  if (client) client.close();
  client = null;
  connecting(false);
  status('idle', 'offline');
  showChat(false);
  banner(text ? 'stopped' : null, text);
  $('#url').focus();
}

function logout() {
  backToLogin('');
}

function connecting(on) {
  $('#login-button').disabled = on;
  $('#cancel-button').hidden = !on;
}

function transportOf(url) { return url.startsWith('wss:') ? 'wss' : 'ws'; }

function showChat(on) {
  $('#chat').hidden = !on;
  $('#login').hidden = on;
  $('#logout').hidden = !on;
  $('#whoami').textContent = on ? `${me.name} (${me.uid})` : '';
  $('#text').disabled = !on;
  $('#composer button').disabled = !on;
  if (on) render();
}

// ------------------------------------------------------------------ conversations

function resetConversations() {
  convs.clear();
  byMsgId.clear();
  current = null;
  document.body.classList.remove('in-conv');
}

function conv(kind, id) {
  const key = `${kind === 'group' ? 'g' : 'u'}:${id}`;
  if (!convs.has(key)) {
    let title;
    if (kind === 'group') title = (GROUPS.find((g) => g.gid === id) || { name: `group ${id}` }).name;
    else if (id === 0) title = 'system';
    else {
      const u = USERS.find((x) => x.uid === id);
      title = u ? `${u.name} (${u.uid})` : `uid ${id}`;
    }
    convs.set(key, { key, kind, id, title, messages: [], unread: 0 });
  }
  return convs.get(key);
}

function ensureContacts() {
  for (const u of USERS) if (u.uid !== me.uid) conv('user', u.uid);
  for (const g of GROUPS) conv('group', g.gid);
  if (!current) current = convs.keys().next().value;
}

function renderContacts() {
  ensureContacts();
  const ul = $('#contacts');
  ul.replaceChildren();
  for (const c of convs.values()) {
    const li = document.createElement('li');
    const b = document.createElement('button');
    b.type = 'button';
    b.dataset.conv = c.key;
    b.className = c.key === current ? 'active' : '';
    b.textContent = c.title;
    if (c.unread) {
      const n = document.createElement('span');
      n.className = 'unread';
      n.textContent = c.unread;
      b.append(' ', n);
    }
    b.addEventListener('click', () => {
      current = c.key;
      document.body.classList.add('in-conv'); // phone: the conversation replaces the list
      render();
      $('#text').focus();
    });
    li.append(b);
    ul.append(li);
  }
}

// One tick: the server took it (PUB_ACK). Two: a recipient acked it (RECEIPT, when
// the server has im_receipts on). Statuses only move forward, in this order.
const TICKS = { queued: '…', sent: '○', acked: '✓', delivered: '✓✓', failed: '✗' };
const TICK_TITLE = {
  queued: 'not sent yet', sent: 'sent, waiting for the server', acked: 'the server has it',
  delivered: 'the recipient has it', failed: 'not delivered',
};
const RANK = { queued: 0, sent: 1, acked: 2, delivered: 3, failed: 4 };

/** The sender's time: today as 14:05, another day with its date. */
function timeText(ms) {
  const d = new Date(ms);
  const today = new Date().toDateString() === d.toDateString();
  return today ? d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })
    : d.toLocaleString([], { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
}

function renderMessages() {
  const c = convs.get(current);
  $('#peer').textContent = c ? c.title : '';
  const ol = $('#messages');
  ol.replaceChildren();
  if (!c) return;
  for (const m of c.messages) {
    const li = document.createElement('li');
    li.className = `msg ${m.dir}`;
    li.dataset.msgid = m.msgId;
    if (m.dir === 'out') li.dataset.status = m.status;
    if (m.late && m.status === 'sent') li.dataset.late = '1';
    if (c.kind === 'group' && m.dir === 'in') {
      const who = document.createElement('span');
      who.className = 'from';
      who.textContent = nameOf(m.from);
      li.append(who);
    }
    const body = document.createElement('span');
    body.className = 'text';
    body.textContent = m.text;
    li.append(body);
    const meta = document.createElement('span');
    meta.className = 'meta';
    const time = document.createElement('time');
    const at = m.sentAt ?? m.recvAt;
    time.dateTime = new Date(at).toISOString();
    time.dataset.sentAt = m.sentAt ?? '';
    time.textContent = timeText(at);
    time.title = m.sentAt !== undefined ? `sent ${new Date(m.sentAt).toLocaleString()} (sender's clock)`
      : `received ${new Date(m.recvAt).toLocaleString()} (no send time in the message)`;
    meta.append(time);
    if (m.dir === 'out') {
      const t = document.createElement('span');
      t.className = 'tick';
      t.textContent = TICKS[m.status];
      t.title = m.error || (li.dataset.late ? 'no answer yet: sent again after a reconnect' : TICK_TITLE[m.status]);
      meta.append(' ', t);
    }
    li.append(meta);
    ol.append(li);
  }
  ol.scrollTop = ol.scrollHeight;
}

function render() {
  const c = convs.get(current);
  if (c) c.unread = 0;
  renderContacts();
  renderMessages();
}

function nameOf(uid) {
  const u = USERS.find((x) => x.uid === uid);
  return u ? u.name : uid === 0 ? 'system' : `uid ${uid}`;
}

function textOf(d) {
  if (!d.json) return `[${d.raw.length} bytes] ${new TextDecoder().decode(d.raw)}`;
  const p = d.payload;
  if (p && p.content && p.content.type === 'text') return String(p.content.text);
  if (p && p.content) return `[${p.content.type}] ${JSON.stringify(p.content)}`;
  return JSON.stringify(p);
}

/** A record into its conversation (from the history or just now). */
function addRecord(r) {
  const c = convs.get(r.conv) || conv(r.conv.startsWith('g:') ? 'group' : 'user', Number(r.conv.slice(2)));
  c.messages.push(r);
  byMsgId.set(r.msgId, r);
  return c;
}

function receive(kind, d) {
  // A message an earlier page already showed (its record is in the history) comes
  // again when it was not acknowledged then: once is enough.
  if (byMsgId.has(d.msgId)) return;
  const p = d.json && d.payload && typeof d.payload === 'object' ? d.payload : {};
  const from = Number.isInteger(Number(p.from)) ? Number(p.from) : 0;
  const c = kind === 'group' ? conv('group', d.gid) : conv('user', from);
  const r = { msgId: d.msgId, conv: c.key, dir: 'in', from, text: textOf(d), recvAt: Date.now() };
  if (Number.isFinite(p.time)) r.sentAt = p.time;
  addRecord(r);
  history.put(r);
  if (c.key !== current) c.unread++;
  render();
}

function setStatus(msgId, st, error) {
  const m = byMsgId.get(msgId);
  if (!m || m.dir !== 'out') return;
  // never backwards: a receipt may come before the PUB_ACK
  if (RANK[st] <= RANK[m.status] || m.status === 'failed') return;
  m.status = st;
  if (st !== 'sent') delete m.late;
  if (error) m.error = error;
  history.put(m);
  renderMessages();
}

function markLate(msgId) {
  const m = byMsgId.get(msgId);
  if (!m) return;
  m.late = true;
  renderMessages();
}

const FINAL = new Set(['invalid', 'queue_full', 'payload_too_large', 'bad_argument', 'cancelled']);

/** Hand a message record to the client; its promise settles the tick. */
function publish(m) {
  const c = convs.get(m.conv);
  const opts = { msgId: m.msgId, fields: { time: m.sentAt } };
  const p = c.kind === 'group' ? client.sendGroupMessage(c.id, m.text, opts) : client.sendMessage(c.id, m.text, opts);
  p.then(() => setStatus(m.msgId, 'acked'),
    (e) => {
      // Refused for good: a cross. Ended with the session (closed, logout, unreachable):
      // it stays as it was and goes again at the next login.
      if (FINAL.has(e.code)) setStatus(m.msgId, 'failed', `${e.code || 'error'}: ${e.message}`);
    });
}

function send() {
  const input = $('#text');
  const text = input.value.trim();
  const c = convs.get(current);
  if (!text || !c || !client) return;
  input.value = '';
  // Record the message first: for a live session 'sent' fires inside the send call.
  const m = { msgId: newMsgId(), conv: c.key, dir: 'out', from: me.uid, text, sentAt: Date.now(), status: 'queued' };
  addRecord(m);
  history.put(m);
  renderMessages();
  publish(m);
}

initLogin();
if (params.get('autologin') === '1') login();
