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

      proxy.delay(150);
      const t0 = Date.now();
      await a.query('SELECT 1');
      assert.ok(Date.now() - t0 >= 280, 'a round trip waits in both directions');
      proxy.heal();

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
