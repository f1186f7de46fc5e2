// WebhookConsumer against the real WebhookTransport (and the Relay with a PostgreSQL outbox): an
// inbox on PostgreSQL makes effects happen once across duplicates and retries; the 2xx comes only
// after the inbox committed; failures, refusals, overload, per-key serial, batches, and stop.
import assert from 'node:assert/strict';
import { createServer, request, type IncomingMessage } from 'node:http';
import { after, afterEach, before, describe, it } from 'node:test';

import { generateWebhookSecret, signWebhook } from '../../src/callbacks/index.js';
import { Outbox, Relay, type MessageInput } from '../../src/core/index.js';
import { isConfigError } from '../../src/core/errors/config-error.js';
import { PermanentDeliveryError } from '../../src/core/errors/permanent-delivery-error.js';
import { isTransportError } from '../../src/core/errors/transport-error.js';
import type { OutboxMessage, ReceivedMessage } from '../../src/core/types.js';
import { Inbox } from '../../src/inbox/index.js';
import { TcpProxy } from '../../src/testkit/tcp-proxy.js';
import { testMessage, uniqueTopics } from '../../src/testkit/transport-conformance.js';
import {
  messageHeaders,
  WebhookConsumer,
  WebhookStatusError,
  WebhookTransport,
  type WebhookConsumerBaseOptions,
  type WebhookConsumerOptions,
  type WebhookTransportOptions,
} from '../../src/transports/webhook/index.js';
import { createTestDb, inTransaction, type TestDb } from '../helpers/postgres.js';
import { waitUntil } from '../helpers/wait.js';
import { listen, type TestServer } from './webhook-helpers.js';

const SECRET = generateWebhookSecret();
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A promise to open by hand: a handler waits on it. */
function gate(): { wait: Promise<void>; open: () => void } {
  let open: () => void = () => {};
  const wait = new Promise<void>((resolve) => (open = resolve));
  return { wait, open };
}

type Tx = { query(sql: string, params?: unknown[]): Promise<unknown> };

describe('WebhookConsumer', () => {
  let db: TestDb;
  let consumerSeq = 0;
  const cleanups: Array<() => Promise<void>> = [];

  before(async () => {
    db = await createTestDb('wh_consumer');
    await db.pool.query(
      `CREATE TABLE "${db.schema}".effects (seq bigserial, message_id uuid NOT NULL, key text, n int)`,
    );
  });
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });
  after(async () => {
    await db.drop();
  });

  /** Effect rows of these ids, in commit order. */
  async function effects(
    ids: readonly string[],
  ): Promise<Array<{ id: string; key: string | null; n: number }>> {
    const { rows } = await db.pool.query<{ id: string; key: string | null; n: number }>(
      `SELECT message_id::text AS id, key, n FROM "${db.schema}".effects WHERE message_id = ANY($1) ORDER BY seq`,
      [ids],
    );
    return rows;
  }

  /** The effect of a message: a row in the inbox transaction. */
  async function record(tx: Tx, message: ReceivedMessage): Promise<void> {
    const n = (message.payload as { n?: number }).n ?? null;
    await tx.query(`INSERT INTO "${db.schema}".effects (message_id, key, n) VALUES ($1, $2, $3)`, [
      message.id,
      message.key,
      n,
    ]);
  }

  interface Bed {
    consumer: WebhookConsumer<unknown>;
    calls: ReceivedMessage[];
    events: Record<string, unknown[]>;
    /** A new started-on-use transport to the consumer's server (each its own pause state). */
    transport(options?: Partial<WebhookTransportOptions>): WebhookTransport;
  }

  /**
   * A started consumer with an inbox on PostgreSQL and its own server. `around` runs inside the
   * inbox transaction around the effect: `before` and `after` it (throw to roll it back).
   */
  async function bed(
    options: Partial<WebhookConsumerBaseOptions> = {},
    around: {
      before?: (m: ReceivedMessage) => Promise<void> | void;
      after?: (m: ReceivedMessage) => Promise<void> | void;
    } = {},
  ): Promise<Bed> {
    const calls: ReceivedMessage[] = [];
    const inbox = new Inbox({ store: db.store, consumer: `webhook-consumer-${++consumerSeq}` });
    const consumer = new WebhookConsumer({
      secret: SECRET,
      inbox,
      handler: async (message: ReceivedMessage, tx: unknown) => {
        calls.push(message);
        await around.before?.(message);
        await record(tx as Tx, message);
        await around.after?.(message);
      },
      listen: { port: 0 },
      ...options,
    });
    const events: Record<string, unknown[]> = {};
    for (const name of [
      'consumer:message:handled',
      'consumer:message:duplicate',
      'consumer:message:failed',
      'consumer:message:dead',
      'consumer:request:refused',
      'consumer:stopped',
      'consumer:inbox:pruned',
    ] as const) {
      events[name] = [];
      consumer.on(name, (e: unknown) => events[name]?.push(e));
    }
    await consumer.start();
    cleanups.push(() => consumer.stop({ timeoutMs: 2000 }));
    return {
      consumer,
      calls,
      events,
      transport(extra = {}) {
        const url = consumer.address?.url;
        assert.ok(url, 'the consumer listens');
        const t = new WebhookTransport({ url: `${url}/hooks/{topic}`, secret: SECRET, ...extra });
        cleanups.push(() => t.close());
        return t;
      },
    };
  }

  function message(overrides: Partial<OutboxMessage> = {}, n = 0): OutboxMessage {
    return testMessage({ payload: Buffer.from(JSON.stringify({ n })), ...overrides });
  }

  it('handles a message once however often it is sent: copies, also concurrent ones, are answered 2xx without running the handler', async () => {
    const b = await bed();
    const t = b.transport();
    const m = message({ topic: 'copies' });
    assert.equal((await t.publish([m]))[0]?.status, 'ok');
    assert.equal((await t.publish([{ ...m, attempts: 2 }]))[0]?.status, 'ok');
    const copies = await Promise.all([t.publish([m]), b.transport().publish([m])]);
    assert.deepEqual(
      copies.map((c) => c[0]?.status),
      ['ok', 'ok'],
    );
    assert.equal((await effects([m.id])).length, 1, 'one effect');
    assert.equal(b.events['consumer:message:handled']?.length, 1);
    assert.equal(b.events['consumer:message:duplicate']?.length, 3);
    await waitUntil(() => b.events['consumer:inbox:pruned']?.length, 'the inbox pruned at start');
  });

  it('answers 2xx only once the inbox transaction committed', async () => {
    const hold = gate();
    let entered = false;
    const b = await bed({}, { after: () => ((entered = true), hold.wait) });
    const m = message({ topic: 'commit-first' });
    let settled = false;
    const publishing = b
      .transport()
      .publish([m])
      .finally(() => (settled = true));
    await waitUntil(() => entered, 'the handler wrote its effect');
    await sleep(150);
    assert.equal(settled, false, 'no answer while the transaction is open');
    assert.equal((await effects([m.id])).length, 0, 'the effect is not committed yet');
    hold.open();
    assert.equal((await publishing)[0]?.status, 'ok');
    assert.equal((await effects([m.id])).length, 1, 'committed before the 2xx arrived');
  });

  it('a connection cut after the commit but before the answer arrived: the sender resends, and the copy is answered duplicate', async () => {
    const b = await bed();
    const proxy = await TcpProxy.start({ targetPort: b.consumer.address?.port as number });
    cleanups.push(() => proxy.close());
    const m = message({ topic: 'cut' });
    // Emitted once the inbox transaction committed, before the answer is written.
    const off = b.consumer.on('consumer:message:handled', () => proxy.cut());
    const viaProxy = () => {
      const t = new WebhookTransport({ url: `http://127.0.0.1:${proxy.port}/hooks/{topic}`, secret: SECRET });
      cleanups.push(() => t.close());
      return t;
    };
    const [lost] = await viaProxy().publish([m]);
    off();
    assert.equal(lost?.status, 'unavailable', 'no answer: the sender keeps the message');
    assert.equal((await effects([m.id])).length, 1, 'committed all the same');
    assert.equal((await viaProxy().publish([{ ...m, attempts: 2 }]))[0]?.status, 'ok');
    assert.equal((await effects([m.id])).length, 1, 'one effect');
    assert.equal(b.events['consumer:message:duplicate']?.length, 1);
  });

  it('rolls back a handler that throws after writing its effect, answers 500, and processes the resent message once', async () => {
    let failures = 0;
    const b = await bed(
      {},
      {
        after: () => {
          if (failures++ === 0) throw new Error('the handler fails after its INSERT');
        },
      },
    );
    const t = b.transport();
    const m = message({ topic: 'rollback' });
    const [first] = await t.publish([m]);
    assert.equal(first?.status, 'retry', 'a 500 is retried by the sender');
    assert.match(first?.status === 'retry' ? first.error.message : '', /answered 500/);
    assert.equal((await effects([m.id])).length, 0, 'the effect was rolled back with the inbox record');
    assert.equal((b.events['consumer:message:failed']?.[0] as { status: number }).status, 500);
    const [second] = await t.publish([{ ...m, attempts: 2 }]);
    assert.equal(second?.status, 'ok');
    assert.equal((await effects([m.id])).length, 1);
    assert.equal((b.events['consumer:message:handled']?.[0] as { attempt: number }).attempt, 2);
  });

  it('with the relay and a PostgreSQL outbox: each effect once and in key order, though answers are lost (sender timeouts) and handlers fail once', async () => {
    const slowOnce = new Set<string>();
    const failOnce = new Set<string>();
    const b = await bed(
      { keyWaitMs: 5000 },
      {
        before: async (m) => {
          if (slowOnce.delete(m.id)) await sleep(700); // past the sender's timeout: the 2xx is lost
          if (failOnce.delete(m.id)) throw new Error('fails once');
        },
      },
    );
    const outbox = new Outbox({ store: db.store });
    const transport = b.transport({ timeoutMs: 300 });
    const relay = new Relay({
      store: db.store,
      transport,
      pollIntervalMs: 50,
      probeMinDelayMs: 50,
      probeMaxDelayMs: 200,
      retry: { baseDelayMs: 50, maxDelayMs: 200 },
    });
    const [topic] = uniqueTopics(1);
    const inputs: MessageInput[] = Array.from({ length: 24 }, (_, n) => ({
      topic: topic as string,
      key: `k${n % 4}`,
      payload: { n },
    }));
    const ids = await inTransaction(db.pool, async (client) => {
      const out = await outbox.enqueue(client, inputs);
      return Array.isArray(out) ? out : [out];
    });
    for (const i of [1, 6, 11]) slowOnce.add(ids[i] as string);
    for (const i of [2, 7, 16]) failOnce.add(ids[i] as string);
    await relay.start();
    try {
      await waitUntil(async () => (await db.count('outbox')) === 0, 'the relay settled every message');
    } finally {
      await relay.stop();
    }
    const rows = await effects(ids);
    assert.equal(rows.length, 24, 'one effect per message');
    assert.equal(new Set(rows.map((r) => r.id)).size, 24);
    for (const key of ['k0', 'k1', 'k2', 'k3']) {
      const ns = rows.filter((r) => r.key === key).map((r) => r.n);
      assert.deepEqual(
        ns,
        [...ns].sort((x, y) => x - y),
        `key ${key} in order`,
      );
    }
    assert.ok(
      (b.events['consumer:message:duplicate']?.length ?? 0) >= 1,
      'a lost answer came back as a copy',
    );
    assert.equal((b.events['consumer:message:failed']?.length ?? 0) >= 3, true);
    assert.equal(await db.count('dead_letter'), 0);
  });

  it('answers a PermanentDeliveryError 422, so the relay dead-letters the message at once, and a malformed request 400', async () => {
    const b = await bed(
      {},
      {
        before: (m) => {
          if ((m.payload as { refuse?: boolean }).refuse) throw new PermanentDeliveryError('order unknown');
        },
      },
    );
    const outbox = new Outbox({ store: db.store });
    const relay = new Relay({ store: db.store, transport: b.transport(), pollIntervalMs: 50 });
    const [topic] = uniqueTopics(1);
    const ids = await inTransaction(db.pool, async (client) => {
      const out = await outbox.enqueue(client, [
        { topic: topic as string, payload: { refuse: true } },
        { topic: topic as string, payload: { n: 1 } },
      ]);
      return Array.isArray(out) ? out : [out];
    });
    await relay.start();
    try {
      await waitUntil(async () => (await db.count('outbox')) === 0, 'both settled');
    } finally {
      await relay.stop();
    }
    const { rows } = await db.pool.query<{ id: string; attempts: number; last_error: string }>(
      `SELECT id::text, attempts, last_error FROM "${db.schema}".dead_letter WHERE id = $1`,
      [ids[0]],
    );
    assert.equal(rows.length, 1, 'dead-lettered by the sender');
    assert.equal(rows[0]?.attempts, 1, 'at once, no retries');
    assert.match(rows[0]?.last_error ?? '', /422/);
    assert.deepEqual(
      (await effects(ids as string[])).map((r) => r.id),
      [ids[1]],
    );
    const dead = b.events['consumer:message:dead'] as Array<{ id: string; status: number }>;
    assert.deepEqual(
      dead.map((d) => [d.id, d.status]),
      [[ids[0], 422]],
    );
    await db.pool.query(`DELETE FROM "${db.schema}".dead_letter`);

    // Signed, but not a Mailroom message (no mailroom-id / mailroom-topic): 400.
    const body = Buffer.from('{}');
    const id = message().id;
    const answer = await post(
      `${b.consumer.address?.url}/hooks/x`,
      signWebhook({ secret: SECRET, id, body }),
      body,
    );
    assert.equal(answer.status, 400);
    const last = (b.events['consumer:message:dead'] as Array<{ reason: string; status: number }>).at(-1);
    assert.deepEqual([last?.reason, last?.status], ['malformed', 400]);
    assert.equal(b.calls.length, 2, 'the handler never saw the malformed request');
  });

  it('refuses bad signatures, stale timestamps and oversized bodies before any handler runs', async () => {
    const b = await bed({ maxBodyBytes: 1024, toleranceSec: 60 });
    const [wrong] = await new WebhookTransport({
      url: `${b.consumer.address?.url}/hooks/{topic}`,
      secret: generateWebhookSecret(),
    }).publish([message({ topic: 'bad-signature' })]);
    assert.equal(wrong?.status, 'permanent');
    assert.match(wrong?.status === 'permanent' ? wrong.error.message : '', /401/);

    const m = message({ topic: 'stale' });
    const stale = await post(
      `${b.consumer.address?.url}/hooks/stale`,
      {
        ...messageHeaders(m, {}),
        ...signWebhook({
          secret: SECRET,
          id: m.id,
          body: m.payload,
          timestamp: new Date(Date.now() - 3_600_000),
        }),
      },
      m.payload,
    );
    assert.equal(stale.status, 401);
    assert.equal(stale.body.error, 'timestamp_too_old');
    const future = await post(
      `${b.consumer.address?.url}/hooks/stale`,
      {
        ...messageHeaders(m, {}),
        ...signWebhook({
          secret: SECRET,
          id: m.id,
          body: m.payload,
          timestamp: new Date(Date.now() + 3_600_000),
        }),
      },
      m.payload,
    );
    assert.equal(future.status, 401);

    const big = message({ topic: 'big', payload: Buffer.alloc(4096, 0x61), contentType: 'text/plain' });
    const [tooLarge] = await b.transport().publish([big]);
    assert.equal(tooLarge?.status, 'permanent');
    assert.match(tooLarge?.status === 'permanent' ? tooLarge.error.message : '', /413/);

    assert.equal(b.calls.length, 0, 'the handler never ran');
    assert.deepEqual(
      (b.events['consumer:request:refused'] as Array<{ status: number }>).map((e) => e.status),
      [401, 401, 401, 413],
    );
    assert.equal((await effects([m.id, big.id])).length, 0);
  });

  it('serial per key: a key never runs twice at once and keeps arrival order, other keys run meanwhile; a key busy past keyWaitMs is answered 503 with Retry-After', async () => {
    const holds = new Map<string, ReturnType<typeof gate>>();
    const running = new Map<string, number>();
    let overlap = false;
    const b = await bed(
      { concurrency: 4, keyWaitMs: 400 },
      {
        before: async (m) => {
          const key = m.key ?? '';
          running.set(key, (running.get(key) ?? 0) + 1);
          if ((running.get(key) ?? 0) > 1) overlap = true;
          await holds.get(m.id)?.wait;
          running.set(key, (running.get(key) ?? 1) - 1);
        },
      },
    );
    const a = message({ topic: 'serial', key: 'k' }, 1);
    const second = message({ topic: 'serial', key: 'k' }, 2);
    const other = message({ topic: 'serial', key: 'other' }, 3);
    holds.set(a.id, gate());
    const pa = b.transport().publish([a]);
    await waitUntil(() => b.calls.some((c) => c.id === a.id), 'a runs');
    const pSecond = b.transport().publish([second]);
    assert.equal((await b.transport().publish([other]))[0]?.status, 'ok', 'another key runs while k is busy');
    await sleep(100);
    assert.ok(!b.calls.some((c) => c.id === second.id), 'the second of k waits for the first');
    holds.get(a.id)?.open();
    assert.equal((await pa)[0]?.status, 'ok');
    assert.equal((await pSecond)[0]?.status, 'ok');
    assert.deepEqual(
      (await effects([a.id, second.id])).map((r) => r.n),
      [1, 2],
    );
    assert.equal(overlap, false);

    // Held past keyWaitMs: the waiting request is answered 503 + Retry-After (an outage for the
    // sender: no attempt spent) and runs when sent again.
    const c = message({ topic: 'serial', key: 'k' }, 4);
    const d = message({ topic: 'serial', key: 'k' }, 5);
    holds.set(c.id, gate());
    const pc = b.transport().publish([c]);
    await waitUntil(() => b.calls.some((x) => x.id === c.id), 'c runs');
    const td = b.transport();
    const [busy] = await td.publish([d]);
    assert.equal(busy?.status, 'unavailable');
    assert.ok(td.pausedUntil, 'the sender pauses for the Retry-After');
    assert.ok(!b.calls.some((x) => x.id === d.id), 'd never ran');
    holds.get(c.id)?.open();
    assert.equal((await pc)[0]?.status, 'ok');
    assert.equal((await b.transport().publish([d]))[0]?.status, 'ok');
    assert.deepEqual(
      (await effects([c.id, d.id])).map((r) => r.n),
      [4, 5],
    );
    assert.ok(
      (b.events['consumer:request:refused'] as Array<{ code: string }>).some((e) => e.code === 'key_busy'),
    );
  });

  it('answers 503 with Retry-After beyond concurrency: the sender counts an outage and spends no attempt', async () => {
    const hold = gate();
    const b = await bed({ concurrency: 2 }, { before: () => hold.wait });
    const first = [message({ topic: 'busy' }), message({ topic: 'busy' })];
    const pending = first.map((m) => b.transport().publish([m]));
    await waitUntil(() => b.consumer.inFlight === 2, 'two requests in flight');
    const t = b.transport();
    const [third] = await t.publish([message({ topic: 'busy' })]);
    assert.equal(third?.status, 'unavailable');
    assert.match(third?.status === 'unavailable' ? third.error.message : '', /503/);
    assert.ok(t.pausedUntil);
    assert.equal(b.calls.length, 2);
    hold.open();
    for (const p of pending) assert.equal((await p)[0]?.status, 'ok');
  });

  it('batch mode: the answer is every message outcome; a refused message dead-letters the batch after the others ran once, a failure retries it all', async () => {
    let failN2 = true;
    const b = await bed(
      {},
      {
        before: (m) => {
          const p = m.payload as { refuse?: boolean; n?: number };
          if (p.refuse) throw new PermanentDeliveryError('refused by the handler');
          if (p.n === 12 && failN2) {
            failN2 = false;
            throw new Error('fails once');
          }
        },
      },
    );
    const t = b.transport({ batch: true });
    const m1 = message({ topic: 'batch', key: 'a' }, 1);
    const m2 = message({ topic: 'batch', key: 'b', payload: Buffer.from('{"refuse":true}') });
    const m3 = message({ topic: 'batch', key: 'c' }, 3);
    const outcomes = await t.publish([m1, m2, m3]);
    assert.deepEqual(
      outcomes.map((o) => o.status),
      ['permanent', 'permanent', 'permanent'],
    );
    assert.match(outcomes[0]?.status === 'permanent' ? outcomes[0].error.message : '', /422/);
    assert.deepEqual(
      (await effects([m1.id, m2.id, m3.id])).map((r) => r.id),
      [m1.id, m3.id],
      'the others ran, once',
    );

    const n = [11, 12, 13].map((i) => message({ topic: 'batch', key: `n${i}` }, i));
    const failed = await t.publish(n);
    assert.deepEqual(
      failed.map((o) => o.status),
      ['retry', 'retry', 'retry'],
    );
    assert.deepEqual(
      (await effects(n.map((x) => x.id))).map((r) => r.n),
      [11],
      'stopped at the failure',
    );
    const again = await t.publish(n.map((x) => ({ ...x, attempts: 2 })));
    assert.deepEqual(
      again.map((o) => o.status),
      ['ok', 'ok', 'ok'],
    );
    assert.deepEqual(
      (await effects(n.map((x) => x.id))).map((r) => r.n),
      [11, 12, 13],
      'each once',
    );
    assert.equal(b.events['consumer:message:duplicate']?.length, 1, 'the one that ran before is a duplicate');
  });

  it('stop() refuses new requests and drains running handlers; past its deadline the answer is 503 and the resent copy a duplicate', async () => {
    let hold = gate();
    const b = await bed({}, { before: () => hold.wait });
    const m = message({ topic: 'drain' });
    const pm = b.transport().publish([m]);
    await waitUntil(() => b.calls.length === 1, 'the handler runs');
    const late = b.transport();
    const stopping = b.consumer.stop({ timeoutMs: 5000 });
    assert.equal(b.consumer.running, false);
    const [refused] = await late.publish([message({ topic: 'drain' })]);
    assert.equal(refused?.status, 'unavailable', 'no new request is taken while stopping');
    assert.equal(b.calls.length, 1);
    hold.open();
    assert.equal((await pm)[0]?.status, 'ok', 'the running request is answered');
    await stopping;
    assert.deepEqual(b.events['consumer:stopped'], [{ abandoned: 0 }]);
    assert.equal((await effects([m.id])).length, 1);

    // Past the deadline: answered 503 (not acknowledged); the handler commits later; the copy
    // sent after a restart is a duplicate.
    hold = gate();
    await b.consumer.start();
    const m2 = message({ topic: 'drain' });
    const pm2 = b.transport().publish([m2]);
    await waitUntil(() => b.calls.some((c) => c.id === m2.id), 'the handler runs');
    await b.consumer.stop({ timeoutMs: 100 });
    assert.equal((await pm2)[0]?.status, 'unavailable', 'answered 503 at the deadline');
    assert.deepEqual(b.events['consumer:stopped']?.at(-1), { abandoned: 1 });
    hold.open();
    await waitUntil(async () => (await effects([m2.id])).length === 1, 'the late handler commits');
    await b.consumer.start();
    assert.equal((await b.transport().publish([m2]))[0]?.status, 'ok');
    assert.equal((await effects([m2.id])).length, 1);
    assert.equal(b.events['consumer:message:duplicate']?.length, 1);
  });

  it('mounts in an application server (handler, and handle with a body read already) and answers 503 before start()', async () => {
    const inbox = new Inbox({ store: db.store, consumer: `webhook-consumer-${++consumerSeq}` });
    const consumer = new WebhookConsumer({
      secret: [generateWebhookSecret(), SECRET],
      inbox,
      handler: (message: ReceivedMessage, tx: unknown) => record(tx as Tx, message),
    });
    cleanups.push(() => consumer.stop());
    const server: TestServer = await listen(
      createServer((req, res) => {
        if (req.url?.startsWith('/raw/')) {
          // As express.raw() or a Fastify buffer parser would: the body is read first.
          void readAll(req).then((body) => consumer.handle(req, res, body));
          return;
        }
        if (req.url?.startsWith('/hooks/')) return consumer.handler(req, res);
        res.writeHead(404).end();
      }),
    );
    cleanups.push(() => server.close());
    const to = (path: string) => {
      const t = new WebhookTransport({ url: `${server.url}${path}`, secret: SECRET });
      cleanups.push(() => t.close());
      return t;
    };
    const early = message({ topic: 'mounted' });
    const [notStarted] = await to('/hooks/{topic}').publish([early]);
    assert.equal(notStarted?.status, 'unavailable');
    assert.match(notStarted?.status === 'unavailable' ? notStarted.error.message : '', /503/);
    await consumer.start();
    assert.equal(consumer.address, undefined, 'no server of its own');
    const a = message({ topic: 'mounted' });
    const r = message({ topic: 'mounted' });
    assert.equal((await to('/hooks/{topic}').publish([a]))[0]?.status, 'ok');
    assert.equal((await to('/raw/{topic}').publish([r]))[0]?.status, 'ok');
    assert.equal((await effects([early.id, a.id, r.id])).length, 2);
    // Stopped, in a server that still runs: 503 with Retry-After, not handled.
    await consumer.stop();
    const m = message({ topic: 'mounted' });
    const answer = await post(
      `${server.url}/hooks/mounted`,
      { ...messageHeaders(m, {}), ...signWebhook({ secret: SECRET, id: m.id, body: m.payload }) },
      m.payload,
    );
    assert.deepEqual([answer.status, answer.body.error, answer.retryAfter], [503, 'stopping', '1']);
    assert.equal((await effects([m.id])).length, 0);
  });

  it('a WebhookStatusError picks the status: 429 with Retry-After is retried after a pause, 409 dead-lettered', async () => {
    const b = await bed(
      {},
      {
        before: (m) => {
          const { status } = m.payload as { status: number };
          throw new WebhookStatusError(
            status,
            `status ${status}`,
            status === 429 ? { retryAfterSec: 2 } : {},
          );
        },
      },
    );
    const t = b.transport();
    const [slow] = await t.publish([message({ topic: 'status', payload: Buffer.from('{"status":429}') })]);
    assert.equal(slow?.status, 'retry');
    assert.ok((t.pausedUntil?.getTime() ?? 0) > Date.now() + 1000, 'paused for the Retry-After');
    const [conflict] = await b
      .transport()
      .publish([message({ topic: 'status', payload: Buffer.from('{"status":409}') })]);
    assert.equal(conflict?.status, 'permanent');
    assert.deepEqual(
      (b.events['consumer:message:dead'] as Array<{ status: number }>).map((e) => e.status),
      [409],
    );
    assert.throws(() => new WebhookStatusError(200, 'no'), isConfigError);
  });

  it('validates its options, and start() reports a port in use as a TransportError', async () => {
    const handler = async () => {};
    const bad: Array<[string, unknown]> = [
      ['secret', { handler }],
      ['secret', { secret: 'short', handler }],
      ['handler', { secret: SECRET }],
      ['concurrency', { secret: SECRET, handler, concurrency: 0 }],
      ['listen.port', { secret: SECRET, handler, listen: { port: 70_000 } }],
      ['keyWaitMs', { secret: SECRET, handler, keyWaitMs: -1 }],
      ['prefetch', { secret: SECRET, handler, prefetch: 4 }],
    ];
    for (const [key, options] of bad) {
      assert.throws(
        () => new WebhookConsumer(options as WebhookConsumerOptions),
        (err: unknown) => isConfigError(err) && err.key === key,
        key,
      );
    }
    const b = await bed();
    const port = b.consumer.address?.port as number;
    const clash = new WebhookConsumer({ secret: SECRET, handler, listen: { port } });
    await assert.rejects(
      clash.start(),
      (err: unknown) =>
        isTransportError(err) && err.code === 'listen_failed' && err.message.includes(`127.0.0.1:${port}`),
    );
    assert.equal(clash.running, false);
    await clash.stop();
  });
});

function readAll(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

/** A POST by hand: status and JSON body of the answer. */
function post(
  url: string,
  headers: Record<string, string>,
  body: Buffer,
): Promise<{ status: number; body: { error?: string; outcome?: string }; retryAfter?: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'POST', headers: { ...headers, connection: 'close' } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        const retryAfter = res.headers['retry-after'];
        resolve({
          status: res.statusCode ?? 0,
          body: text ? (JSON.parse(text) as object) : {},
          ...(retryAfter === undefined ? {} : { retryAfter }),
        });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}
