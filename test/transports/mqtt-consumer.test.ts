// MqttConsumer against the local Mosquitto (MQTT 5) and PostgreSQL: effects are rows written with
// the inbox transaction, so "exactly one effect" is a count in the database. Each test has topics
// and a group of its own; the persistent sessions the consumers leave are ended afterwards.
import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it } from 'node:test';

import mqtt from 'mqtt';
import type pg from 'pg';

import { isConfigError } from '../../src/core/errors/config-error.js';
import { PermanentDeliveryError } from '../../src/core/errors/permanent-delivery-error.js';
import { isTransportError } from '../../src/core/errors/transport-error.js';
import { Outbox, Relay } from '../../src/core/index.js';
import type { OutboxMessage, ReceivedMessage } from '../../src/core/types.js';
import { Inbox } from '../../src/inbox/inbox.js';
import type { PostgresTransactionHandle } from '../../src/stores/postgres/postgres-driver.js';
import { TcpProxy } from '../../src/testkit/tcp-proxy.js';
import { testMessage, uniqueTopics } from '../../src/testkit/transport-conformance.js';
import {
  MqttConsumer,
  MqttTransport,
  type MqttConsumerEvents,
  type MqttConsumerOptions,
} from '../../src/transports/mqtt/index.js';
import { createTestDb, inTransaction, type TestDb } from '../helpers/postgres.js';
import { afterCommit, PgInbox } from '../helpers/pg-inbox.js';
import { waitUntil } from '../helpers/wait.js';
import { endSession, freePort, mapped, MQTT_URL, subscribe } from './mqtt-helpers.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
/** Long enough for a redelivery the broker owes to arrive. */
const QUIET_MS = 400;

let db: TestDb;

before(async () => {
  db = await createTestDb('mqttcons');
  await db.pool.query(`
    CREATE TABLE "${db.schema}".effects (id uuid NOT NULL, key text, at timestamptz NOT NULL DEFAULT clock_timestamp());
    CREATE TABLE "${db.schema}".test_inbox (consumer text NOT NULL, id uuid NOT NULL, PRIMARY KEY (consumer, id));
  `);
});

/** Client identifiers whose persistent sessions are ended after the tests. */
const sessions = new Set<string>();

after(async () => {
  for (const clientId of sessions) await endSession(MQTT_URL, clientId);
  await db.drop();
});

beforeEach(async () => {
  await db.pool.query(`TRUNCATE "${db.schema}".effects, "${db.schema}".test_inbox`);
});

function writeEffect(tx: pg.PoolClient, message: ReceivedMessage): Promise<unknown> {
  return tx.query(`INSERT INTO "${db.schema}".effects (id, key) VALUES ($1, $2)`, [message.id, message.key]);
}

async function effects(): Promise<string[]> {
  const res = await db.pool.query<{ id: string }>(`SELECT id::text FROM "${db.schema}".effects ORDER BY at`);
  return res.rows.map((r) => r.id);
}

/** A group name of this test's own. */
function uniqueGroup(): string {
  return `g${process.pid}${Math.random().toString(16).slice(2, 8)}`;
}

/** A consumer whose session is ended after the tests. */
function consumer<Tx = undefined>(options: MqttConsumerOptions<Tx>): MqttConsumer<Tx> {
  const c = new MqttConsumer<Tx>(options);
  if (options.url === MQTT_URL) sessions.add(c.clientId);
  return c;
}

async function publish(messages: OutboxMessage[], options: { qos?: 1 | 2 } = {}): Promise<void> {
  const transport = new MqttTransport({ url: MQTT_URL, ...options });
  try {
    const outcomes = await transport.publish(messages);
    assert.deepEqual(
      outcomes.map((o) => o.status),
      messages.map(() => 'ok'),
    );
  } finally {
    await transport.close();
  }
}

function messagesFor(topic: string, count: number, key: string | null = null): OutboxMessage[] {
  return Array.from({ length: count }, (_, i) =>
    testMessage({ topic, key, payload: Buffer.from(JSON.stringify({ i })) }),
  );
}

function fastRetry(maxAttempts: number) {
  return { maxAttempts, baseDelayMs: 5, maxDelayMs: 20, jitter: 'none' as const };
}

/** Counts an event's emissions. */
function counter<K extends keyof MqttConsumerEvents>(
  c: MqttConsumer<never> | MqttConsumer<pg.PoolClient> | MqttConsumer,
  event: K,
) {
  const seen: Array<MqttConsumerEvents[K]> = [];
  (c as MqttConsumer).on(event, (payload) => seen.push(payload));
  return seen;
}

/** A consumer of `group` started, left quiet for a while, stopped: how many messages it got. */
async function leftOver(topic: string, group: string, instance = 'a', qos: 1 | 2 = 1): Promise<number> {
  let runs = 0;
  const c = consumer({ url: MQTT_URL, topic, group, instance, qos, handler: async () => void runs++ });
  await c.start();
  await sleep(QUIET_MS);
  await c.stop();
  return runs;
}

describe('MqttConsumer', () => {
  it('runs the handler once per message id with an inbox, in key order, and acknowledges each: nothing comes back', async () => {
    const [topic] = uniqueTopics(1) as [string];
    const group = uniqueGroup();
    const c = consumer<pg.PoolClient>({
      url: MQTT_URL,
      topic,
      group,
      instance: 'a',
      inbox: new PgInbox(db, group),
      handler: async (m: ReceivedMessage, tx: pg.PoolClient) => void (await writeEffect(tx, m)),
    });
    const handled = counter(c, 'consumer:message:handled');
    const duplicates = counter(c, 'consumer:message:duplicate');
    await c.start();
    assert.equal(c.filter, `$share/${group}/${mapped(topic)}`);
    const sent = messagesFor(topic, 5, 'k');
    // The third message twice, as after a relay crash between the PUBACK and the settle.
    await publish([...sent.slice(0, 3), { ...sent[2]!, attempts: 2 }, ...sent.slice(3)]);
    await waitUntil(() => handled.length === 5 && duplicates.length === 1, 'five handled, one duplicate');
    await c.stop();
    assert.deepEqual(
      await effects(),
      sent.map((m) => m.id),
      'one effect per id, in the key order',
    );
    assert.deepEqual(
      handled.map((e) => e.message.payload),
      sent.map((_, i) => ({ i })),
    );
    assert.equal(await leftOver(topic, group), 0, 'every message was acknowledged');
  });

  it('withholds the PUBACK of a message whose handler never finished: the session gets it again after a reconnect', async () => {
    const [topic] = uniqueTopics(1) as [string];
    const group = uniqueGroup();
    const [message] = messagesFor(topic, 1) as [OutboxMessage];
    let release: (err: Error) => void = () => {};
    const blocked = new Promise<never>((_, reject) => (release = reject));
    const first = consumer<pg.PoolClient>({
      url: MQTT_URL,
      topic,
      group,
      instance: 'a',
      inbox: new PgInbox(db, group),
      handler: async () => blocked,
    });
    const started = new Promise<void>((resolve) => first.once('consumer:started', () => resolve()));
    const stopped = counter(first, 'consumer:stopped');
    await first.start();
    await started;
    let running = false;
    const probe = consumer<pg.PoolClient>({
      url: MQTT_URL,
      topic,
      group,
      instance: 'probe',
      shared: false,
      handler: async () => void (running = true),
    });
    await probe.start();
    await publish([message]);
    await waitUntil(() => running, 'the message to be out');
    await probe.stop();
    await sleep(100); // the handler of `first` is blocked in its inbox transaction now
    await first.stop({ timeoutMs: 50 });
    assert.deepEqual(stopped, [{ abandoned: 1 }]);

    const second = consumer<pg.PoolClient>({
      url: MQTT_URL,
      topic,
      group,
      instance: 'a',
      inbox: new PgInbox(db, group),
      handler: async (m: ReceivedMessage, tx: pg.PoolClient) => void (await writeEffect(tx, m)),
    });
    const handled = counter(second, 'consumer:message:handled');
    await second.start();
    // The first run's transaction ends (rolled back) only now: the copy waits for it at the inbox.
    release(new Error('the process died'));
    await waitUntil(() => handled.length === 1, 'the redelivered message handled');
    await second.stop();
    assert.deepEqual(await effects(), [message.id]);
    assert.equal(await leftOver(topic, group), 0);
  });

  it('a crash after the inbox commit and before the PUBACK: the copy sent again is a duplicate, the effect stays one', async () => {
    const [topic] = uniqueTopics(1) as [string];
    const group = uniqueGroup();
    const [message] = messagesFor(topic, 1) as [OutboxMessage];
    let committed = false;
    let resume: () => void = () => {};
    const held = new Promise<void>((resolve) => (resume = resolve));
    const first = consumer<pg.PoolClient>({
      url: MQTT_URL,
      topic,
      group,
      instance: 'a',
      // The PUBACK would follow this hook; the consumer is stopped meanwhile, as by a crash.
      inbox: afterCommit(new PgInbox(db, group), async () => {
        committed = true;
        await held;
      }),
      handler: async (m: ReceivedMessage, tx: pg.PoolClient) => void (await writeEffect(tx, m)),
    });
    const lost = counter(first, 'consumer:ack:lost');
    await first.start();
    await publish([message]);
    await waitUntil(() => committed, 'the inbox commit');
    await first.stop({ timeoutMs: 0 });

    const second = consumer<pg.PoolClient>({
      url: MQTT_URL,
      topic,
      group,
      instance: 'a',
      inbox: new PgInbox(db, group),
      handler: async (m: ReceivedMessage, tx: pg.PoolClient) => void (await writeEffect(tx, m)),
    });
    const duplicates = counter(second, 'consumer:message:duplicate');
    await second.start();
    await waitUntil(() => duplicates.length === 1, 'the copy, found a duplicate');
    await second.stop();
    assert.deepEqual(await effects(), [message.id]);
    resume();
    await waitUntil(() => lost.length === 1, 'the first PUBACK reported lost');
    assert.equal(lost[0]!.id, message.id);
    assert.equal(await leftOver(topic, group), 0);
  });

  it('retries a failing handler with backoff, then publishes a dead letter saying why, and acknowledges after its PUBACK', async () => {
    const [topic] = uniqueTopics(1) as [string];
    const group = uniqueGroup();
    const dead = await subscribe(MQTT_URL, [`${mapped(topic)}/dead`]);
    const [message] = messagesFor(topic, 1, 'k1') as [OutboxMessage];
    let runs = 0;
    const c = consumer({
      url: MQTT_URL,
      topic,
      group,
      instance: 'a',
      retry: fastRetry(3),
      handler: async () => {
        runs++;
        throw new Error('cannot handle this\tat all');
      },
    });
    const retries = counter(c, 'consumer:message:retry');
    const deadEvents = counter(c, 'consumer:message:dead');
    try {
      await c.start();
      await publish([message]);
      const [letter] = await dead.take(1, 10_000);
      const p = letter!.userProperties;
      assert.equal(runs, 3);
      assert.deepEqual(
        retries.map((e) => e.failedAttempts),
        [1, 2],
      );
      assert.equal(p['mailroom-id'], message.id);
      assert.equal(p['mailroom-topic'], topic);
      assert.equal(p['mailroom-key'], 'k1');
      assert.equal(p['mailroom-error'], 'cannot handle this\tat all', 'escaped on the wire, restored');
      assert.equal(p['mailroom-failed-attempts'], '3');
      assert.equal(p['mailroom-dead-reason'], 'handler_failed');
      assert.equal(p['mailroom-dead-queue'], c.filter);
      assert.equal(p['mailroom-dead-topic'], topic);
      assert.equal(letter!.contentType, 'application/json');
      assert.ok(letter!.payload.equals(message.payload));
      await waitUntil(() => deadEvents.length === 1, 'the dead event');
      assert.equal(deadEvents[0]!.deadLetterTopic, `${mapped(topic)}/dead`);
    } finally {
      await c.stop();
      await dead.close();
    }
    assert.equal(await leftOver(topic, group), 0, 'acknowledged once dead-lettered');
  });

  it('dead-letters a PermanentDeliveryError at once, and a delivery without a mailroom-id as malformed', async () => {
    const [topic] = uniqueTopics(1) as [string];
    const group = uniqueGroup();
    const dead = await subscribe(MQTT_URL, [`${mapped(topic)}/dead`]);
    const [message] = messagesFor(topic, 1) as [OutboxMessage];
    let runs = 0;
    const c = consumer({
      url: MQTT_URL,
      topic,
      group,
      instance: 'a',
      handler: async () => {
        runs++;
        throw new PermanentDeliveryError('no such order');
      },
    });
    const raw = await mqtt.connectAsync(MQTT_URL, { protocolVersion: 5, reconnectPeriod: 0 });
    try {
      await c.start();
      await publish([message]);
      await raw.publishAsync(mapped(topic), 'hello', { qos: 1 });
      const letters = await dead.take(2, 10_000);
      const byReason = new Map(letters.map((l) => [l.userProperties['mailroom-dead-reason'], l]));
      assert.equal(byReason.get('handler_failed')?.userProperties['mailroom-failed-attempts'], '1');
      assert.equal(byReason.get('handler_failed')?.userProperties['mailroom-error'], 'no such order');
      assert.match(byReason.get('malformed')?.userProperties['mailroom-error'] ?? '', /no mailroom-id/);
      assert.equal(byReason.get('malformed')?.payload.toString(), 'hello');
      assert.equal(runs, 1);
    } finally {
      await raw.endAsync(true);
      await c.stop();
      await dead.close();
    }
    assert.equal(await leftOver(topic, group), 0);
  });

  it('keeps a message unacknowledged while nobody subscribes to the dead-letter topic (the broker would drop it)', async () => {
    const [topic] = uniqueTopics(1) as [string];
    const group = uniqueGroup();
    const [message] = messagesFor(topic, 1) as [OutboxMessage];
    const c = consumer({
      url: MQTT_URL,
      topic,
      group,
      instance: 'a',
      retry: fastRetry(1),
      handler: async () => {
        throw new Error('fails');
      },
    });
    const errors = counter(c, 'consumer:error');
    const deadEvents = counter(c, 'consumer:message:dead');
    let dead: Awaited<ReturnType<typeof subscribe>> | undefined;
    try {
      await c.start();
      await publish([message]);
      await waitUntil(() => errors.length >= 1, 'a failed dead letter');
      assert.equal(errors[0]!.phase, 'dead-letter');
      assert.match(errors[0]!.error.message, /nobody subscribes to it.*0x10/);
      assert.equal(deadEvents.length, 0);
      dead = await subscribe(MQTT_URL, [`${mapped(topic)}/dead`]);
      const [letter] = await dead.take(1, 10_000);
      assert.equal(letter!.id, message.id);
      await waitUntil(() => deadEvents.length === 1, 'the dead event');
    } finally {
      await c.stop();
      await dead?.close();
    }
  });

  it('runs a key serially and in order, different keys in parallel up to concurrency', async () => {
    const [topic] = uniqueTopics(1) as [string];
    const group = uniqueGroup();
    const keys = ['a', 'b', 'c', 'd'];
    const sent = keys.flatMap((key) => messagesFor(topic, 4, key));
    const running = new Map<string, number>();
    let now = 0;
    let peak = 0;
    const order = new Map<string, string[]>();
    const c = consumer({
      url: MQTT_URL,
      topic,
      group,
      instance: 'a',
      concurrency: 3,
      handler: async (m) => {
        const key = m.key ?? '';
        assert.equal(running.get(key) ?? 0, 0, `two messages of key ${key} at once`);
        running.set(key, 1);
        peak = Math.max(peak, ++now);
        await sleep(20);
        order.set(key, [...(order.get(key) ?? []), m.id]);
        now--;
        running.set(key, 0);
      },
    });
    const handled = counter(c, 'consumer:message:handled');
    await c.start();
    await publish(sent);
    await waitUntil(() => handled.length === sent.length, 'every message handled');
    await c.stop();
    for (const key of keys) {
      assert.deepEqual(
        order.get(key),
        sent.filter((m) => m.key === key).map((m) => m.id),
        `key ${key} in order`,
      );
    }
    assert.equal(peak, 3, 'three keys at once, no more');
  });

  it('hands over at most prefetch messages before their acknowledgement (the MQTT 5 Receive Maximum)', async () => {
    const [topic] = uniqueTopics(1) as [string];
    const group = uniqueGroup();
    let release: () => void = () => {};
    const blocked = new Promise<void>((resolve) => (release = resolve));
    let runs = 0;
    const c = consumer({
      url: MQTT_URL,
      topic,
      group,
      instance: 'a',
      concurrency: 1,
      prefetch: 3,
      handler: async () => {
        runs++;
        await blocked;
      },
    });
    const stopped = counter(c, 'consumer:stopped');
    await c.start();
    await publish(messagesFor(topic, 6, 'k'));
    await sleep(QUIET_MS);
    await c.stop({ timeoutMs: 0 });
    release();
    assert.equal(runs, 1);
    assert.deepEqual(
      stopped,
      [{ abandoned: 3 }],
      'one running, two waiting behind it, three left at the broker',
    );
    assert.equal(await leftOver(topic, group), 6, 'none was acknowledged');
  });

  it('shares the work between the instances of a group through $share, and every group gets every message', async () => {
    const [topic] = uniqueTopics(1) as [string];
    const group = uniqueGroup();
    const other = uniqueGroup();
    const seen = new Map<string, string[]>();
    const make = (g: string, instance: string) =>
      consumer({
        url: MQTT_URL,
        topic,
        group: g,
        instance,
        concurrency: 4,
        handler: async (m) =>
          void seen.set(`${g}/${instance}`, [...(seen.get(`${g}/${instance}`) ?? []), m.id]),
      });
    const all = [make(group, 'a'), make(group, 'b'), make(other, 'a')];
    for (const c of all) await c.start();
    const sent = messagesFor(topic, 20);
    await publish(sent);
    const total = () => [...seen.values()].reduce((n, ids) => n + ids.length, 0);
    await waitUntil(() => total() === 40, 'each message once per group');
    await sleep(QUIET_MS);
    for (const c of all) await c.stop();
    const a = seen.get(`${group}/a`) ?? [];
    const b = seen.get(`${group}/b`) ?? [];
    assert.ok(a.length > 0 && b.length > 0, `both instances worked (${a.length} and ${b.length})`);
    assert.deepEqual(
      [...a, ...b].sort(),
      sent.map((m) => m.id).sort(),
      'each message to one instance of the group',
    );
    assert.deepEqual([...(seen.get(`${other}/a`) ?? [])].sort(), sent.map((m) => m.id).sort());
    assert.equal(total(), 40);
  });

  it("keeps a stopped instance's share of a shared subscription in its session until that instance returns", async () => {
    const [topic] = uniqueTopics(1) as [string];
    const group = uniqueGroup();
    const seen = { a: [] as string[], b: [] as string[] };
    const make = (instance: 'a' | 'b') =>
      consumer({
        url: MQTT_URL,
        topic,
        group,
        instance,
        handler: async (m) => void seen[instance].push(m.id),
      });
    const a = make('a');
    const b = make('b');
    await a.start();
    await b.start();
    await b.stop(); // its session, and its membership of the share, stay at the broker
    const sent = messagesFor(topic, 10);
    await publish(sent);
    await sleep(QUIET_MS);
    const whileAway = seen.a.length;
    assert.ok(whileAway < sent.length, `the running instance got ${whileAway} of ${sent.length}`);
    const back = make('b');
    await back.start();
    await waitUntil(
      () => seen.a.length + seen.b.length === sent.length,
      'the rest, at the returning instance',
    );
    await back.stop();
    await a.stop();
    assert.equal(seen.b.length, sent.length - whileAway);
    assert.deepEqual([...seen.a, ...seen.b].sort(), sent.map((m) => m.id).sort());
  });

  it('two consumers with one client id take the session from each other with a growing pause, and say so', async () => {
    const [topic] = uniqueTopics(1) as [string];
    const group = uniqueGroup();
    const warnings: string[] = [];
    const logger = { debug() {}, info() {}, warn: (text: string) => void warnings.push(text), error() {} };
    const make = () =>
      consumer({
        url: MQTT_URL,
        topic,
        group,
        instance: 'same',
        maxReconnectDelayMs: 300,
        logger,
        handler: async () => {},
      });
    const first = make();
    const second = make();
    const lost = counter(first, 'consumer:connection:lost');
    await first.start();
    await second.start();
    await sleep(1000);
    await Promise.all([first.stop(), second.stop()]);
    assert.ok(lost.length >= 1 && lost.length <= 6, `the first lost its session ${lost.length} times in 1 s`);
    assert.ok(
      warnings.some((w) => /another connection with the same client id/.test(w)),
      warnings.join('\n'),
    );
  });

  it('reconnects after the connection is cut and loses nothing; the inbox absorbs the copies', async () => {
    const [topic] = uniqueTopics(1) as [string];
    const group = uniqueGroup();
    const proxy = await TcpProxy.start({ targetPort: Number(new URL(MQTT_URL).port || 1883) });
    const sent = messagesFor(topic, 30);
    const c = new MqttConsumer<pg.PoolClient>({
      url: `mqtt://127.0.0.1:${proxy.port}`,
      topic,
      group,
      instance: 'a',
      concurrency: 4,
      inbox: new PgInbox(db, group),
      handler: async (m: ReceivedMessage, tx: pg.PoolClient) => {
        await writeEffect(tx, m);
        await sleep(10);
      },
    });
    sessions.add(c.clientId);
    const reconnected = counter(c, 'consumer:reconnected');
    const handled = counter(c, 'consumer:message:handled');
    try {
      await c.start();
      await publish(sent);
      await waitUntil(() => handled.length >= 5, 'some handled');
      proxy.cut();
      await waitUntil(() => reconnected.length >= 1, 'the reconnect');
      await waitUntil(async () => (await effects()).length === sent.length, 'every effect');
      assert.ok(c.connected);
    } finally {
      await c.stop();
      await proxy.close();
    }
    assert.deepEqual((await effects()).sort(), sent.map((m) => m.id).sort(), 'each effect once');
    assert.equal(await leftOver(topic, group), 0);
  });

  it('subscribes at QoS 2: the PUBREC waits for the handler too, and a finished exchange is not redelivered', async () => {
    const [topic] = uniqueTopics(1) as [string];
    const group = uniqueGroup();
    const sent = messagesFor(topic, 3);
    let release: () => void = () => {};
    const blocked = new Promise<void>((resolve) => (release = resolve));
    const first = consumer({
      url: MQTT_URL,
      topic,
      group,
      instance: 'a',
      qos: 2,
      handler: async () => blocked,
    });
    await first.start();
    await publish(sent, { qos: 2 });
    await sleep(200);
    await first.stop({ timeoutMs: 0 });
    release();
    const got: string[] = [];
    const second = consumer({
      url: MQTT_URL,
      topic,
      group,
      instance: 'a',
      qos: 2,
      handler: async (m) => void got.push(m.id),
    });
    await second.start();
    await waitUntil(() => got.length === 3, 'the three messages again');
    await sleep(200); // PUBREL, PUBCOMP
    await second.stop();
    assert.deepEqual(got.sort(), sent.map((m) => m.id).sort());
    assert.equal(await leftOver(topic, group, 'a', 2), 0);
  });

  it('stop() waits for a running handler within its deadline and acknowledges it', async () => {
    const [topic] = uniqueTopics(1) as [string];
    const group = uniqueGroup();
    let started = false;
    let finished = false;
    const c = consumer({
      url: MQTT_URL,
      topic,
      group,
      instance: 'a',
      handler: async () => {
        started = true;
        await sleep(300);
        finished = true;
      },
    });
    const stopped = counter(c, 'consumer:stopped');
    await c.start();
    await publish(messagesFor(topic, 1));
    await waitUntil(() => started, 'the handler to start');
    await c.stop({ timeoutMs: 5000 });
    assert.equal(finished, true);
    assert.deepEqual(stopped, [{ abandoned: 0 }]);
    assert.equal(await leftOver(topic, group), 0);
  });

  it('start() on an unreachable broker throws a TransportError naming the URL without its password', async () => {
    const port = await freePort();
    const c = new MqttConsumer({
      url: `mqtt://user:s3cret@127.0.0.1:${port}`,
      topic: 'a.b',
      group: 'g',
      handler: async () => {},
    });
    await assert.rejects(c.start(), (err: unknown) => {
      assert.ok(isTransportError(err));
      assert.equal(err.code, 'unreachable');
      assert.match(err.message, new RegExp(`mqtt://user:\\*\\*\\*@127\\.0\\.0\\.1:${port}`));
      assert.doesNotMatch(err.message, /s3cret/);
      return true;
    });
    assert.equal(c.running, false);
  });

  it('refuses bad options with a ConfigError naming the option', () => {
    const base = { url: MQTT_URL, topic: 'order.created', group: 'billing', handler: async () => {} };
    const refused = (options: Record<string, unknown>, key: string, pattern: RegExp) =>
      assert.throws(
        () => new MqttConsumer({ ...base, ...options } as MqttConsumerOptions),
        (err: unknown) => isConfigError(err) && err.key === key && pattern.test(err.message),
      );
    refused({ group: undefined }, 'group', /needs a group \(or a clientId\)/);
    refused({ group: 'a/b' }, 'group', /without '\/'/);
    refused({ qos: 0 }, 'qos', /1 or 2/);
    refused({ deadLetterTopic: 'order/created' }, 'deadLetterTopic', /must differ/);
    refused({ deadLetterTopic: 'order/#' }, 'deadLetterTopic', /wildcard/);
    refused({ group: undefined, clientId: 'x', shared: true }, 'shared', /needs a group/);
    refused({ topicTemplate: 'shop/' }, 'topicTemplate', /exactly once/);
    refused({ url: 'http://x:pw@host' }, 'url', /scheme "http"/);
    refused({ handler: undefined }, 'handler', /missing/);
    refused({ concurrency: 4, prefetch: 2 }, 'prefetch', /prefetch/);
    const c = new MqttConsumer({ ...base, instance: 'pod-0', prefix: 'shop/' });
    assert.equal(c.clientId, 'mailroom-billing-pod-0');
    assert.equal(c.filter, '$share/billing/shop/order/created');
    assert.equal(c.deadLetterTopic, 'shop/order/created/dead');
    const { group: _group, ...groupless } = base;
    const plain = new MqttConsumer({ ...groupless, clientId: 'me' });
    assert.equal(plain.filter, 'order/created');
  });

  it('end to end: outbox → Relay → MqttTransport → MqttConsumer with the Inbox on PostgreSQL, each key in order, each effect once', async () => {
    const [topic] = uniqueTopics(1) as [string];
    const group = uniqueGroup();
    const transport = new MqttTransport({ url: MQTT_URL, prefix: 'shop/' });
    const relay = new Relay({ store: db.store, transport, batchSize: 20, pollIntervalMs: 50 });
    const outbox = new Outbox({ store: db.store });
    const c = consumer<PostgresTransactionHandle>({
      url: MQTT_URL,
      topic,
      prefix: 'shop/',
      group,
      instance: 'a',
      concurrency: 4,
      inbox: new Inbox({ store: db.store, consumer: group }),
      handler: async (m: ReceivedMessage, tx: PostgresTransactionHandle) =>
        void (await writeEffect(tx as pg.PoolClient, m)),
    });
    const keys = ['k0', 'k1', 'k2', 'k3'];
    await c.start();
    await relay.start();
    try {
      const ids = await inTransaction(db.pool, (client) =>
        outbox.enqueue(
          client,
          Array.from({ length: 40 }, (_, n) => ({ topic, key: keys[n % 4]!, payload: { n } })),
        ),
      );
      await waitUntil(async () => (await effects()).length === ids.length, 'every effect');
      const rows = await db.pool.query<{ id: string; key: string }>(
        `SELECT id::text, key FROM "${db.schema}".effects ORDER BY at`,
      );
      for (const key of keys) {
        assert.deepEqual(
          rows.rows.filter((r) => r.key === key).map((r) => r.id),
          ids.filter((_, n) => keys[n % 4] === key),
          `key ${key} in the order written`,
        );
      }
      assert.equal(new Set(rows.rows.map((r) => r.id)).size, ids.length);
    } finally {
      await relay.stop();
      await transport.close();
      await c.stop();
    }
  });
});
