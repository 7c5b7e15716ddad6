// Chat page for the ngx_im dev server: plain DOM, no build step.
// The library is served by the dev nginx from js/src/ at /js/.
import { ImClient, newMsgId } from '/js/imclient.js';

const USERS = [
  { name: 'alice', password: 'alice-secret', uid: 1001 },
  { name: 'bob', password: 'bob-secret', uid: 1002 },
  { name: 'carol', password: 'carol-secret', uid: 1003 },
];
const GROUPS = [{ gid: 1, name: 'group 1' }];
const CLIENT_ID_PC = 1; // one session per (uid, ClientId): a second page kicks the first

const $ = (sel) => document.querySelector(sel);
const params = new URLSearchParams(location.search);

// ------------------------------------------------------------------ state

let client = null;
let me = null;          // entry of USERS
let current = null;     // key of the open conversation
const convs = new Map(); // key -> {key, title, kind: 'user'|'group', id, messages: [], unread}
const byMsgId = new Map(); // msgId of our own messages -> message record

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
  $('#logout').addEventListener('click', () => logout());
  $('#composer').addEventListener('submit', (e) => { e.preventDefault(); send(); });
}

// ------------------------------------------------------------------ banner / status

function banner(kind, text) {
  const b = $('#banner');
  b.hidden = !text;
  b.dataset.kind = kind || '';
  b.textContent = text || '';
}

function status(state, text) {
  const s = $('#status');
  s.dataset.state = state;
  s.textContent = text;
}

// ------------------------------------------------------------------ session

function login() {
  const name = $('#user').value;
  me = USERS.find((u) => u.name === name);
  const password = $('#password').value;
  const url = $('#url').value.trim();
  if (client) client.close();
  banner(null, '');
  resetConversations();
  $('#login-button').disabled = true;
  status('connecting', `connecting to ${url}…`);

  const c = new ImClient({
    url, username: me.name, password, uid: me.uid, clientId: CLIENT_ID_PC, ackTimeout: 30000,
  });
  client = c;
  window.imClient = c; // handy from the devtools console
  const mine = (fn) => (d) => { if (client === c) fn(d); };
  // A short event log for the devtools console and for tests' failure reports.
  const events = [];
  window.imEvents = events;
  for (const type of ['connecting', 'connectAck', 'close', 'reconnecting', 'logout', 'invalid', 'error', 'disconnect']) {
    c.on(type, (d) => {
      const { error, ...rest } = d || {};
      events.push(`${new Date().toISOString().slice(11, 23)} ${type} ${JSON.stringify(rest)}${error ? ` ${error.message || error.type || error}` : ''}`);
      if (events.length > 50) events.shift();
    });
  }

  c.on('connectAck', mine(({ code, text }) => {
    if (code === 0) {
      status('live', `online (${transportOf(url)})`);
      banner(null, '');
      showChat(true);
    } else if (code === 2) {
      status('reconnecting', 'service unavailable, retrying…');
      banner('unavailable', `Login failed (code 2): ${text}. Retrying…`);
    } else {
      status('closed', 'offline');
      banner('refused', `Login refused (code ${code}): ${text}.`);
      showChat(false);
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
  c.on('invalid', mine(({ cmd, msgId }) => { if (!msgId) console.warn('server: invalid packet for cmd', cmd); }));

  c.connect().catch(() => {}).finally(() => { $('#login-button').disabled = false; });
}

function logout() {
  if (client) client.close();
  client = null;
  status('idle', 'offline');
  banner(null, '');
  showChat(false);
}

function transportOf(url) { return url.startsWith('wss:') ? 'wss' : 'ws'; }

function showChat(on) {
  $('#chat').hidden = !on;
  $('#login').hidden = on;
  $('#logout').hidden = !on;
  $('#whoami').textContent = on ? `${me.name} (${me.uid})` : '';
  $('#text').disabled = !on;
  $('#composer button').disabled = !on;
  if (on) {
    render();
    $('#text').focus();
  }
}

// ------------------------------------------------------------------ conversations

function resetConversations() {
  convs.clear();
  byMsgId.clear();
  current = null;
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
    b.addEventListener('click', () => { current = c.key; render(); $('#text').focus(); });
    li.append(b);
    ul.append(li);
  }
}

const TICKS = { queued: '…', sent: '✓', acked: '✓✓', failed: '✗' };
const TICK_TITLE = { queued: 'not sent yet', sent: 'sent to the server', acked: 'accepted by the server', failed: 'not delivered' };

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
    meta.textContent = m.time.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    if (m.dir === 'out') {
      const t = document.createElement('span');
      t.className = 'tick';
      t.textContent = TICKS[m.status];
      t.title = m.error || TICK_TITLE[m.status];
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

function receive(kind, d) {
  const from = d.json && d.payload && Number.isInteger(Number(d.payload.from)) ? Number(d.payload.from) : 0;
  const c = kind === 'group' ? conv('group', d.gid) : conv('user', from);
  c.messages.push({ msgId: d.msgId, dir: 'in', from, text: textOf(d), time: new Date() });
  if (c.key !== current) c.unread++;
  render();
}

function setStatus(msgId, st, error) {
  const m = byMsgId.get(msgId);
  if (!m) return;
  // ack before 'sent' cannot happen, but never go backwards
  if (m.status === 'acked' || m.status === 'failed') return;
  m.status = st;
  if (error) m.error = error;
  renderMessages();
}

function send() {
  const input = $('#text');
  const text = input.value.trim();
  const c = convs.get(current);
  if (!text || !c || !client) return;
  input.value = '';
  // Record the message first: for a live session 'sent' fires inside the send call.
  const msgId = newMsgId();
  const m = { msgId, dir: 'out', from: me.uid, text, time: new Date(), status: 'queued' };
  byMsgId.set(msgId, m);
  c.messages.push(m);
  renderMessages();
  const p = c.kind === 'group' ? client.sendGroupMessage(c.id, text, { msgId })
    : client.sendMessage(c.id, text, { msgId });
  p.then(() => setStatus(p.msgId, 'acked'),
    (e) => setStatus(p.msgId, 'failed', `${e.code || 'error'}: ${e.message}`));
}

initLogin();
if (params.get('autologin') === '1') login();
