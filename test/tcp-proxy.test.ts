import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import pg from 'pg';
import { TcpProxy } from '../src/testkit/tcp-proxy.js';

function client(port: number, extra: pg.ClientConfig = {}) {
  const c = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: 'test', ...extra });
  c.on('error', () => undefined);
  return c;
}

describe('TCP fault proxy', () => {
  it('forwards, delays, cuts, black-holes and refuses PostgreSQL connections', async () => {
    const proxy = await TcpProxy.start({ targetPort: 5432 });
    try {
      const a = client(proxy.port);
      await a.connect();
      assert.equal((await a.query('SELECT 1 AS n')).rows[0].n, 1);

      // Delayed 150 ms each way, a round trip outlasts a 200 ms query timeout. This compares two
      // timers of this process, not a stopwatch: the query's timer starts before the proxy's
      // first one and is due 200 ms later; the proxy's second one starts only after the first
      // fired (150 ms) and is due 150 ms after that. Load can delay both, never reorder them.
      const slow = client(proxy.port, { query_timeout: 200 });
      await slow.connect();
      proxy.delay(150);
      await assert.rejects(slow.query('SELECT 1'), /timeout/i, 'a round trip waits in both directions');
      assert.equal((await a.query('SELECT 3 AS n')).rows[0].n, 3, 'delayed, not dropped');
      proxy.heal();
      await slow.end().catch(() => undefined);

      proxy.cut();
      await assert.rejects(a.query('SELECT 1'));
      assert.equal(proxy.openConnections, 0);

      const b = client(proxy.port, { query_timeout: 300 });
      await b.connect();
      proxy.blackhole();
      await assert.rejects(b.query('SELECT 1'), /timeout/i);
      proxy.heal();
      await b.end().catch(() => undefined);

      proxy.refuse();
      await assert.rejects(client(proxy.port).connect());
      proxy.heal();
      const c = client(proxy.port);
      await c.connect();
      assert.equal((await c.query('SELECT 2 AS n')).rows[0].n, 2);
      await c.end();
    } finally {
      await proxy.close();
    }
  });
});
