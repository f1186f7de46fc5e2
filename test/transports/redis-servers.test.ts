// The Redis Streams transport against redis-server processes of the test's own, for what must
// not be done to the shared server at 6379: a primary with a replica (WAIT, then the replica
// gone), a transport pointed at a replica (READONLY), a server out of memory (OOM).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { isTransportError } from '../../src/core/errors/transport-error.js';
import type { PublishOutcome } from '../../src/core/ports.js';
import { testMessage } from '../../src/testkit/transport-conformance.js';
import { RedisStreamsTransport } from '../../src/transports/redis/index.js';
import { waitUntil } from '../helpers/wait.js';
import { startOwnServer, testClient, type OwnServer } from './redis-helpers.js';

function statuses(outcomes: PublishOutcome[]): string[] {
  return outcomes.map((o) => o.status);
}

function failure(outcome: PublishOutcome | undefined): { code: string; message: string } {
  assert.ok(outcome && outcome.status !== 'ok', `expected a failed outcome, got ${outcome?.status}`);
  return {
    code: isTransportError(outcome.error) ? outcome.error.code : outcome.error.name,
    message: outcome.error.message,
  };
}

describe('redis streams transport with a replica', () => {
  let primary: OwnServer;
  let replica: OwnServer | undefined;

  before(async () => {
    primary = await startOwnServer();
    replica = await startOwnServer(['--replicaof', '127.0.0.1', String(primary.port)]);
    const client = await testClient(replica.url);
    try {
      await waitUntil(
        async () => /master_link_status:up/.test(await client.info('replication')),
        'the replica to sync with the primary',
        20_000,
        50,
      );
    } finally {
      await client.quit();
    }
  });

  after(async () => {
    await replica?.stop();
    await primary?.stop();
  });

  it('reports ok once WAIT saw the replicas, and unavailable (the entries kept on the primary) once they are gone; the probe says why', async () => {
    const t = new RedisStreamsTransport({ url: primary.url, waitReplicas: { count: 1, timeoutMs: 300 } });
    const client = await testClient(primary.url);
    try {
      await t.probe();
      const batch = [testMessage({ topic: 'orders', key: 'k' }), testMessage({ topic: 'orders', key: 'k' })];
      assert.deepEqual(statuses(await t.publish(batch)), ['ok', 'ok']);
      const replicaClient = await testClient((replica as OwnServer).url);
      try {
        assert.equal(await replicaClient.xlen('orders'), 2, 'the replica has the entries');
      } finally {
        await replicaClient.quit();
      }

      await (replica as OwnServer).stop();
      replica = undefined;
      await waitUntil(
        async () => /connected_slaves:0/.test(await client.info('replication')),
        'the primary to see the replica gone',
        20_000,
        50,
      );
      const later = [testMessage({ topic: 'orders', key: 'k' }), testMessage({ topic: 'orders', key: 'k' })];
      const outcomes = await t.publish(later);
      assert.deepEqual(statuses(outcomes), ['unavailable', 'unavailable']);
      const { code, message } = failure(outcomes[0]);
      assert.equal(code, 'replicas_not_confirmed');
      assert.match(
        message,
        /only 0 of the 1 replicas asked for \(waitReplicas\.count\) acknowledged it within 300 ms/,
      );
      assert.equal(await client.xlen('orders'), 4, 'the entries are on the primary all the same');
      await assert.rejects(
        t.probe(),
        (err: unknown) =>
          isTransportError(err) &&
          err.code === 'replicas_missing' &&
          /has 0 replicas connected, fewer than waitReplicas\.count \(1\)/.test(err.message),
      );
    } finally {
      await client.quit();
      await t.close();
    }
  });
});

describe('redis streams transport on a server that takes no writes', () => {
  let primary: OwnServer;
  let replica: OwnServer;

  before(async () => {
    primary = await startOwnServer();
    replica = await startOwnServer(['--replicaof', '127.0.0.1', String(primary.port)]);
  });

  after(async () => {
    await replica?.stop();
    await primary?.stop();
  });

  it('reports unavailable on a replica (READONLY), and its probe says to use the primary', async () => {
    const t = new RedisStreamsTransport({ url: replica.url });
    try {
      const outcomes = await t.publish([testMessage({ topic: 'orders' })]);
      assert.deepEqual(statuses(outcomes), ['unavailable']);
      const { code, message } = failure(outcomes[0]);
      assert.equal(code, 'server_refusing');
      assert.match(message, /READONLY/);
      await assert.rejects(
        t.probe(),
        (err: unknown) =>
          isTransportError(err) &&
          err.code === 'read_only' &&
          /is a replica, which refuses writes/.test(err.message),
      );
    } finally {
      await t.close();
    }
  });

  it('works for a user with the ACL the docs give, and reports XADD on a key outside it as retry (NOPERM)', async () => {
    const admin = await testClient(primary.url);
    await admin.call(
      'ACL',
      'SETUSER',
      'relay',
      'on',
      '>s3cret',
      '~mailroom:*',
      ...['+hello', '+auth', '+select', '+info', '+client', '+ping', '+role', '+xadd', '+wait'],
    );
    const url = `redis://relay:s3cret@127.0.0.1:${primary.port}`;
    const allowed = new RedisStreamsTransport({ url, stream: 'mailroom:{topic}' });
    const elsewhere = new RedisStreamsTransport({ url, stream: 'other:{topic}' });
    const waiting = new RedisStreamsTransport({
      url,
      stream: 'mailroom:{topic}',
      waitReplicas: { count: 1, timeoutMs: 2000 },
    });
    try {
      await allowed.probe();
      assert.deepEqual(statuses(await allowed.publish([testMessage({ topic: 'orders' })])), ['ok']);
      assert.deepEqual(
        statuses(await waiting.publish([testMessage({ topic: 'orders' })])),
        ['ok'],
        'WAIT allowed',
      );
      const outcomes = await elsewhere.publish([testMessage({ topic: 'orders' })]);
      assert.deepEqual(statuses(outcomes), ['retry']);
      const { code, message } = failure(outcomes[0]);
      assert.equal(code, 'refused');
      assert.match(message, /NOPERM/);
    } finally {
      await allowed.close();
      await elsewhere.close();
      await waiting.close();
      await admin.quit();
    }
  });

  it('reports unavailable while the server is out of memory (OOM), and ok again once it has room', async () => {
    const t = new RedisStreamsTransport({ url: primary.url });
    const admin = await testClient(primary.url);
    try {
      await admin.config('SET', 'maxmemory-policy', 'noeviction');
      await admin.config('SET', 'maxmemory', '1');
      const outcomes = await t.publish([testMessage({ topic: 'orders' }), testMessage({ topic: 'orders' })]);
      assert.deepEqual(statuses(outcomes), ['unavailable', 'unavailable']);
      const { code, message } = failure(outcomes[0]);
      assert.equal(code, 'server_refusing');
      assert.match(message, /OOM/);
      await admin.config('SET', 'maxmemory', '0');
      assert.deepEqual(statuses(await t.publish([testMessage({ topic: 'orders' })])), ['ok']);
    } finally {
      await admin.config('SET', 'maxmemory', '0').catch(() => {});
      await admin.quit();
      await t.close();
    }
  });
});
