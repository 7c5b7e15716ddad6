// A TCP proxy on 127.0.0.1 for tests of dead connections: it forwards bytes both ways
// until freeze() is called, then holds the connections that are open at that moment
// without forwarding anything (or only the server's side, 'down') and without closing
// them: to both ends the connection looks alive and silent, a half-open connection.
// Connections opened after a freeze are forwarded normally.
import net from 'node:net';

export async function startProxy({ port: targetPort, host = '127.0.0.1' }) {
  const pairs = new Set();
  const server = net.createServer((client) => {
    const upstream = net.connect({ host, port: targetPort });
    const pair = { client, upstream, frozen: null };
    pairs.add(pair);
    // Not pipe(): a pipe resumes its source on 'drain', and a frozen side must stay paused.
    client.on('data', (d) => upstream.write(d));
    upstream.on('data', (d) => client.write(d));
    const end = () => {
      // A frozen connection passes nothing on, not even its end.
      if (pair.frozen) return;
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    for (const s of [client, upstream]) {
      s.on('error', () => {});
      s.on('close', end);
    }
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  return {
    port: server.address().port,
    /** Connections open now (both ends connected). */
    get open() { return [...pairs].filter((p) => !p.frozen).length; },
    /**
     * Stop forwarding on every connection open now. direction 'both' (nothing passes)
     * or 'down' (the server's bytes stop, the client's still reach the server).
     * Returns how many connections were frozen.
     */
    freeze(direction = 'both') {
      let n = 0;
      for (const p of pairs) {
        if (p.frozen) continue;
        p.frozen = direction;
        p.upstream.pause();
        if (direction === 'both') p.client.pause();
        n++;
      }
      return n;
    },
    async close() {
      for (const p of pairs) { p.client.destroy(); p.upstream.destroy(); }
      pairs.clear();
      await new Promise((r) => server.close(r));
    },
  };
}
