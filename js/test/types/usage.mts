// Compiled (never run) by package.test.js with tsc --strict: the declarations as an
// ES module consumer sees them, through the package's own name and "exports".
import ImClientDefault, { ImClient, ImError, CMD, newMsgId } from 'ngx-im-client';
import { decodeServerMessage, encodePublish, type ServerMessage } from 'ngx-im-client/proto';

const c: ImClient = new ImClientDefault({
  url: 'ws://127.0.0.1:9095/ws',
  username: 'alice',
  password: 'alice-secret',
  uid: 1001,
  clientId: 1,
  heartbeat: { interval: 30000, timeout: 10000 },
  reconnect: { initialDelay: 500, maxAttempts: 10 },
  connectAttempts: 5,
  maxQueue: 100,
});

async function main(): Promise<void> {
  await c.connect();
  const p = c.sendMessage(1002, 'hi', { fields: { time: Date.now() } });
  const id: string = p.msgId;
  const r = await p;
  const ackCmd: 4 | 6 | 12 = r.cmd;
  c.on('message', (d) => { const text: unknown = d.payload; void text; const n: 3 = d.cmd; void n; });
  c.on('group', (d) => { const gid: number = d.gid; void gid; });
  c.on('ackTimeout', ({ msgId, timeout }) => { c.cancel(msgId); void timeout; });
  c.on('overflow', ({ size, max }) => { void (size + max); });
  c.on('receipt', ({ uid }) => { const u: number = uid; void u; });
  c.on('close', ({ willReconnect, stopReason }) => { void willReconnect; void stopReason; });
  const pend = c.pending();
  if (pend.length && pend[0].late) await c.reconnectNow();
  try {
    await c.sendGroupMessage(1, { type: 'image', url: 'x' });
  } catch (e) {
    if (e instanceof ImError && e.code === 'unreachable') console.log(e.attempts, e.lastFailure);
  }
  const m: ServerMessage = decodeServerMessage(encodePublish({ toUid: 1, msgId: newMsgId(), payload: 'x' }));
  if (m.cmd === CMD.RECEIPT) { const u: number = m.uid; void u; }
  void id; void ackCmd;

  // @ts-expect-error: url is required
  new ImClient({});
  // @ts-expect-error: no such event
  c.on('no-such-event', () => {});
  // @ts-expect-error: the state is one of a few strings
  const s: 'open' = c.state;
  void s;
  // @ts-expect-error: uids is an array
  c.sendPartGroupMessage(1, 1002, 'x');
}
void main;
