// Compiled (never run) by package.test.js with tsc --strict: the declarations as a
// CommonJS consumer sees them (require() resolves to dist/cjs/ through "exports").
import client = require('ngx-im-client');
import proto = require('ngx-im-client/proto');

const c = new client.ImClient({ url: 'ws://127.0.0.1:9095/ws', heartbeat: false });
const p: Promise<{ msgId: string; cmd: 4 | 6 | 12 }> = c.sendMessage(1002, 'hi');
const bytes: Uint8Array = proto.encodePing();
const e = new client.ImError('queue_full', 'full');
// @ts-expect-error: not an error code
new client.ImError('nope', 'x');
void p; void bytes; void e;
