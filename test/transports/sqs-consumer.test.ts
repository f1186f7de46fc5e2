// SqsConsumer. No SQS endpoint (nor LocalStack or ElasticMQ) runs on this machine or in this
// project's CI: the suite runs the real AWS SDK client against the fake SQS server of
// sqs-fake.ts (JSON protocol, visibility timeouts, receive counts, FIFO groups, redrive). With
// AWS_ENDPOINT_URL set (and credentials, AWS_REGION), it runs against that endpoint instead;
// tests that inject faults into the fake are skipped there.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';

import type { Message } from '@aws-sdk/client-sqs';
import type pg from 'pg';

import { isConfigError } from '../../src/core/errors/config-error.js';
import { PermanentDeliveryError } from '../../src/core/errors/permanent-delivery-error.js';
import { isTransportError } from '../../src/core/errors/transport-error.js';
import type { OutboxMessage, ReceivedMessage } from '../../src/core/types.js';
import { Inbox } from '../../src/inbox/inbox.js';
import type { PostgresTransactionHandle } from '../../src/stores/postgres/postgres-driver.js';
import { TcpProxy } from '../../src/testkit/tcp-proxy.js';
import { testMessage } from '../../src/testkit/transport-conformance.js';
import {
  decodeSqsMessage,
  SqsConsumer,
  SqsTransport,
  type ConsumerHandler,
  type SqsConsumerBaseOptions,
  type SqsConsumerOptions,
} from '../../src/transports/aws/index.js';
import { createTestDb, type TestDb } from '../helpers/postgres.js';
import { waitUntil } from '../helpers/wait.js';
import { FakeSqs } from './sqs-fake.js';

const realEndpoint = process.env['AWS_ENDPOINT_URL'] || undefined;
const fakeOnly = realEndpoint
  ? 'injects faults into the fake SQS; AWS_ENDPOINT_URL names a real endpoint'
  : false;

const sdk = await import('@aws-sdk/client-sqs');
let fake: FakeSqs | undefined;
let endpoint: string;
let admin: InstanceType<typeof sdk.SQSClient>;
let db: TestDb;
const created: string[] = [];
const savedEnv: Record<string, string | undefined> = {};

before(async () => {
  if (realEndpoint === undefined) {
    fake = await FakeSqs.start();
    endpoint = fake.url;
    const env = {
      AWS_ACCESS_KEY_ID: 'AKIDEXAMPLE',
      AWS_SECRET_ACCESS_KEY: 'fake-secret-for-tests',
      AWS_REGION: 'eu-west-1',
    };
    for (const [name, value] of Object.entries(env)) {
      savedEnv[name] = process.env[name];
      process.env[name] = value;
    }
  } else {
    endpoint = realEndpoint;
  }
  admin = new sdk.SQSClient({ endpoint });
  db = await createTestDb('mrsqs');
  await db.pool.query(
    `CREATE TABLE "${db.schema}".effects (id uuid NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())`,
  );
});

after(async () => {
  for (const url of created) await admin.send(new sdk.DeleteQueueCommand({ QueueUrl: url })).catch(() => {});
  admin.destroy();
  await fake?.close();
  await db.drop();
  for (const [name, value] of Object.entries(savedEnv)) {
    if (value === undefined) delete process.env[name];
    else process.env[name] = value;
  }
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface TestQueue {
  name: string;
  url: string;
  deadName: string;
  deadUrl: string;
}

/** A queue of the test's own and its dead-letter queue (`<name>-dead`), optionally with a redrive policy. */
async function makeQueue(options: { fifo?: boolean; maxReceiveCount?: number } = {}): Promise<TestQueue> {
  const base = `mailroom-test-${randomBytes(4).toString('hex')}`;
  const suffix = options.fifo ? '.fifo' : '';
  const fifoAttributes: Record<string, string> = options.fifo ? { FifoQueue: 'true' } : {};
  const deadName = `${base}-dead${suffix}`;
  const dead = await admin.send(
    new sdk.CreateQueueCommand({ QueueName: deadName, Attributes: fifoAttributes }),
  );
  created.push(dead.QueueUrl!);
  const attributes = { ...fifoAttributes };
  if (options.maxReceiveCount !== undefined) {
    const arn = await admin.send(
      new sdk.GetQueueAttributesCommand({ QueueUrl: dead.QueueUrl, AttributeNames: ['QueueArn'] }),
    );
    attributes['RedrivePolicy'] = JSON.stringify({
      deadLetterTargetArn: arn.Attributes?.['QueueArn'],
      maxReceiveCount: options.maxReceiveCount,
    });
  }
  const name = `${base}${suffix}`;
  const queue = await admin.send(new sdk.CreateQueueCommand({ QueueName: name, Attributes: attributes }));
  created.push(queue.QueueUrl!);
  return { name, url: queue.QueueUrl!, deadName, deadUrl: dead.QueueUrl! };
}

/** Publishes with the SQS transport, as the relay does. */
async function publish(queue: TestQueue, messages: OutboxMessage[]): Promise<OutboxMessage[]> {
  const transport = new SqsTransport({ url: `sqs:///${queue.name}`, endpoint });
  try {
    const outcomes = await transport.publish(messages);
    assert.deepEqual(
      outcomes.map((o) => (o.status === 'ok' ? 'ok' : `${o.status}: ${o.error.message}`)),
      messages.map(() => 'ok'),
    );
    return messages;
  } finally {
    await transport.close();
  }
}

/** Receives (and deletes) what `url` holds: `expected` messages, or until it stays empty for a second. */
async function drain(url: string, expected = Infinity): Promise<Message[]> {
  const out: Message[] = [];
  while (out.length < expected) {
    const answer = await admin.send(
      new sdk.ReceiveMessageCommand({
        QueueUrl: url,
        MaxNumberOfMessages: 10,
        WaitTimeSeconds: 1,
        MessageAttributeNames: ['All'],
        MessageSystemAttributeNames: ['ApproximateReceiveCount'],
      }),
    );
    const messages = answer.Messages ?? [];
    if (messages.length === 0) break;
    out.push(...messages);
    await admin.send(
      new sdk.DeleteMessageBatchCommand({
        QueueUrl: url,
        Entries: messages.map((m, i) => ({ Id: `d${i}`, ReceiptHandle: m.ReceiptHandle! })),
      }),
    );
  }
  return out;
}

/** Messages in `url`, visible or not. */
async function held(url: string): Promise<number> {
  const answer = await admin.send(
    new sdk.GetQueueAttributesCommand({
      QueueUrl: url,
      AttributeNames: ['ApproximateNumberOfMessages', 'ApproximateNumberOfMessagesNotVisible'],
    }),
  );
  const a = answer.Attributes ?? {};
  return (
    Number(a['ApproximateNumberOfMessages'] ?? 0) + Number(a['ApproximateNumberOfMessagesNotVisible'] ?? 0)
  );
}

/**
 * Nothing is left in `url`, visible or not. The fake counts exactly; a real endpoint's counts are
 * approximate and lag, so they are polled for a while there.
 */
async function assertEmpty(url: string): Promise<void> {
  if (fake) {
    assert.equal(await held(url), 0, `${url} still holds messages`);
    return;
  }
  await waitUntil(async () => (await held(url)) === 0, `${url} to be empty`, 120_000, 2000);
}

function consumerFor(
  queue: TestQueue,
  options: Partial<SqsConsumerBaseOptions> & { handler: ConsumerHandler<undefined> },
): SqsConsumer {
  return new SqsConsumer({ url: `sqs:///${queue.name}`, endpoint, ...options });
}

/** A consumer with the Inbox on PostgreSQL, writing one effect row per message. */
function inboxConsumer(queue: TestQueue, options: Partial<SqsConsumerBaseOptions> = {}) {
  const inbox = new Inbox({ store: db.store, consumer: `sqs-${queue.name}` });
  return new SqsConsumer<PostgresTransactionHandle>({
    url: `sqs:///${queue.name}`,
    endpoint,
    ...options,
    inbox,
    handler: async (m: ReceivedMessage, tx: PostgresTransactionHandle) => {
      await (tx as pg.PoolClient).query(`INSERT INTO "${db.schema}".effects (id) VALUES ($1)`, [m.id]);
    },
  });
}

function fastRetry(maxAttempts: number) {
  return { maxAttempts, baseDelayMs: 5, maxDelayMs: 20, jitter: 'none' as const };
}

function json(m: ReceivedMessage): { n?: number } {
  return m.payload as { n?: number };
}

describe('SqsConsumer', () => {
  it('receives what SqsTransport sent, decodes every field, and deletes each message after its handler', async () => {
    const queue = await makeQueue();
    const sent = await publish(queue, [
      testMessage({ key: 'k', type: 'order.created', headers: { trace: 'abc', 'mailroom-ack-to': 'acks' } }),
      testMessage({
        key: 'k',
        payload: Buffer.from([0xff, 0x00, 0x01]),
        contentType: 'application/octet-stream',
      }),
      testMessage({ key: 'k', payload: Buffer.alloc(0), contentType: 'text/plain' }),
      ...Array.from({ length: 22 }, () => testMessage({ key: 'k' })),
    ]);
    const handled: ReceivedMessage[] = [];
    const consumer = consumerFor(queue, {
      handler: async (m) => {
        handled.push(m);
      },
    });
    let events = 0;
    consumer.on('consumer:message:handled', () => events++);
    await consumer.start();
    assert.equal(consumer.connected, true);
    await waitUntil(() => events === sent.length, `${sent.length} messages handled`);
    await consumer.stop();
    assert.equal(consumer.running, false);
    const [first, binary, empty] = handled;
    assert.equal(first?.id, sent[0]?.id);
    assert.equal(first?.key, 'k');
    assert.equal(first?.type, 'order.created');
    assert.equal(first?.topic, 'mailroom.test');
    assert.deepEqual(first?.headers, { trace: 'abc' });
    assert.equal(first?.ackTo, 'acks');
    assert.deepEqual(first?.payload, JSON.parse(sent[0]!.payload.toString()));
    assert.equal(first?.createdAt?.toISOString(), sent[0]?.createdAt.toISOString());
    assert.deepEqual(binary?.body, Buffer.from([0xff, 0x00, 0x01]));
    assert.equal(empty?.body.length, 0);
    assert.equal(empty?.contentType, 'text/plain');
    if (fake) {
      // One key on a standard queue as the fake returns it: in order.
      assert.deepEqual(
        handled.map((m) => m.id),
        sent.map((m) => m.id),
      );
      const receives = fake.calls.filter(
        (c) => c.op === 'ReceiveMessage' && String(c.body['QueueUrl']).endsWith(queue.name),
      );
      for (const r of receives) {
        // prefetch defaults to 2 × concurrency (1): never more than 2 held.
        assert.ok(Number(r.body['MaxNumberOfMessages']) <= 2);
        assert.equal(r.body['WaitTimeSeconds'], 20);
        assert.deepEqual(r.body['MessageAttributeNames'], ['All']);
        assert.ok((r.body['MessageSystemAttributeNames'] as string[]).includes('ApproximateReceiveCount'));
      }
      const deletes = fake.calls.filter((c) => c.op === 'DeleteMessageBatch');
      assert.ok(deletes.every((d) => (d.body['Entries'] as unknown[]).length <= 10));
    } else {
      assert.deepEqual(handled.map((m) => m.id).sort(), sent.map((m) => m.id).sort());
    }
    await assertEmpty(queue.url);
  });

  it('with the Inbox on PostgreSQL, a copy of a message (same id, sent twice) has its effect once', async () => {
    const queue = await makeQueue();
    const message = testMessage();
    await publish(queue, [message, { ...message, attempts: 2 }]);
    const consumer = inboxConsumer(queue);
    let duplicates = 0;
    let handledCount = 0;
    consumer.on('consumer:message:duplicate', () => duplicates++);
    consumer.on('consumer:message:handled', () => handledCount++);
    await consumer.start();
    await waitUntil(() => duplicates === 1 && handledCount === 1, 'one run and one duplicate');
    await consumer.stop();
    const effects = await db.pool.query(`SELECT id::text FROM "${db.schema}".effects WHERE id = $1`, [
      message.id,
    ]);
    assert.equal(effects.rowCount, 1);
    await assertEmpty(queue.url);
  });

  it(
    'a delete that fails after the commit is reported; the copy SQS hands out again is a duplicate',
    { skip: fakeOnly },
    async () => {
      const queue = await makeQueue();
      const [message] = await publish(queue, [testMessage()]);
      fake!.refuseEntries('DeleteMessageBatch', 1);
      const consumer = inboxConsumer(queue, { visibilityTimeoutSeconds: 1 });
      const lost: Array<string | null> = [];
      let duplicates = 0;
      consumer.on('consumer:ack:lost', (e) => lost.push(e.id));
      consumer.on('consumer:message:duplicate', () => duplicates++);
      await consumer.start();
      try {
        await waitUntil(() => duplicates === 1, 'the copy handed out again, found a duplicate');
      } finally {
        await consumer.stop();
      }
      assert.deepEqual(lost, [message!.id]);
      const effects = await db.pool.query(`SELECT 1 FROM "${db.schema}".effects WHERE id = $1`, [
        message!.id,
      ]);
      assert.equal(effects.rowCount, 1);
      await assertEmpty(queue.url);
    },
  );

  it('keeps a message hidden while its handler runs past the visibility timeout; stopped mid-run, another consumer gets it', async () => {
    const queue = await makeQueue();
    const [message] = await publish(queue, [testMessage()]);
    let release: () => void = () => {};
    const blocked = new Promise<void>((resolve) => (release = resolve));
    const runsA: string[] = [];
    const a = consumerFor(queue, {
      visibilityTimeoutSeconds: 1,
      handler: async (m) => {
        runsA.push(m.id);
        await blocked;
      },
    });
    const runsB: string[] = [];
    const b = consumerFor(queue, {
      visibilityTimeoutSeconds: 1,
      handler: async (m) => {
        runsB.push(m.id);
      },
    });
    const lostA: Array<string | null> = [];
    a.on('consumer:ack:lost', (e) => lostA.push(e.id));
    await a.start();
    await waitUntil(() => runsA.length === 1, 'A runs the message');
    await b.start();
    try {
      // Two visibility timeouts: without the heartbeat B would get it.
      await sleep(2200);
      assert.deepEqual(runsB, [], 'held by A meanwhile');
      await a.stop({ timeoutMs: 50 });
      await waitUntil(() => runsB.length === 1, 'B gets the message once A stopped', 10_000);
      assert.deepEqual(runsB, [message!.id]);
      // A's handler ends after its stop: it deletes nothing (its acknowledgement is lost).
      release();
      await waitUntil(() => lostA.length === 1, "A's acknowledgement reported lost");
      assert.deepEqual(lostA, [message!.id]);
    } finally {
      release();
      await a.stop();
      await b.stop();
    }
  });

  it('stop() waits for a running handler, deletes its message, and makes the messages not started visible at once', async () => {
    const queue = await makeQueue();
    await publish(queue, [testMessage({ key: 'k' }), testMessage({ key: 'k' })]);
    let started = 0;
    let finished = 0;
    const consumer = consumerFor(queue, {
      handler: async () => {
        started++;
        await sleep(300);
        finished++;
      },
    });
    let stopped: { abandoned: number } | undefined;
    consumer.on('consumer:stopped', (e) => (stopped = e));
    await consumer.start();
    await waitUntil(() => started === 1, 'the first handler running');
    await consumer.stop();
    assert.equal(finished, 1, 'the running handler finished before stop() returned');
    assert.equal(started, 1);
    assert.equal(stopped?.abandoned, 1, 'the second (waiting behind its key) was left');
    // Visible again at once, not after the 30 s visibility timeout.
    const left = await drain(queue.url, 1);
    assert.equal(left.length, 1);
  });

  it('retries a failing handler with backoff, then dead-letters it (confirmed) and only then deletes it', async () => {
    const queue = await makeQueue();
    const [message] = await publish(queue, [testMessage({ headers: { trace: 't1' } })]);
    fake?.fail('SendMessage', { status: 400, type: 'AccessDenied' });
    let runs = 0;
    const consumer = consumerFor(queue, {
      retry: fastRetry(3),
      handler: async () => {
        runs++;
        throw new Error('cannot handle this');
      },
    });
    const retries: number[] = [];
    const deadErrors: string[] = [];
    let dead: { deadLetterQueue: string; failedAttempts: number } | undefined;
    consumer.on('consumer:message:retry', (e) => retries.push(e.failedAttempts));
    consumer.on('consumer:error', (e) => deadErrors.push(e.phase));
    consumer.on('consumer:message:dead', (e) => (dead = e));
    await consumer.start();
    try {
      await waitUntil(() => dead !== undefined, 'the dead letter');
    } finally {
      await consumer.stop();
    }
    assert.equal(runs, 3);
    assert.deepEqual(retries, [1, 2]);
    assert.equal(dead?.failedAttempts, 3);
    assert.match(dead?.deadLetterQueue ?? '', new RegExp(`${queue.deadName}$`));
    const [letter, ...more] = await drain(queue.deadUrl);
    assert.equal(more.length, 0);
    assert.equal(letter?.Body, message!.payload.toString());
    const attributes = letter?.MessageAttributes ?? {};
    assert.equal(attributes['mailroom-id']?.StringValue, message!.id);
    assert.equal(attributes['mailroom-headers']?.StringValue, JSON.stringify({ trace: 't1' }));
    const why = JSON.parse(attributes['mailroom-dead']?.StringValue ?? '{}') as Record<string, unknown>;
    assert.equal(why['reason'], 'handler_failed');
    assert.equal(why['error'], 'cannot handle this');
    assert.equal(why['failedAttempts'], 3);
    assert.equal(why['queue'], queue.name);
    assert.equal(why['topic'], 'mailroom.test');
    if (fake) {
      assert.deepEqual(deadErrors, ['dead-letter'], 'the refused SendMessage was reported and tried again');
      const ops = fake.calls
        .filter(
          (c) =>
            (c.op === 'SendMessage' && c.body['QueueUrl'] === queue.deadUrl) ||
            (c.op === 'DeleteMessageBatch' && c.body['QueueUrl'] === queue.url),
        )
        .map((c) => c.op);
      assert.deepEqual(
        ops,
        ['SendMessage', 'SendMessage', 'DeleteMessageBatch'],
        'deleted only after the confirmed send',
      );
    }
    await assertEmpty(queue.url);
  });

  it('dead-letters a PermanentDeliveryError and an undecodable message at once', async () => {
    const queue = await makeQueue();
    const [message] = await publish(queue, [testMessage()]);
    await admin.send(new sdk.SendMessageCommand({ QueueUrl: queue.url, MessageBody: 'hello, no id' }));
    let runs = 0;
    const consumer = consumerFor(queue, {
      handler: async () => {
        runs++;
        throw new PermanentDeliveryError('never valid');
      },
    });
    const dead: Array<{ reason: string; id: string | null }> = [];
    consumer.on('consumer:message:dead', (e) => dead.push({ reason: e.reason, id: e.id }));
    await consumer.start();
    try {
      await waitUntil(() => dead.length === 2, 'two dead letters');
    } finally {
      await consumer.stop();
    }
    assert.equal(runs, 1);
    assert.deepEqual(
      dead.sort((x, y) => x.reason.localeCompare(y.reason)),
      [
        { reason: 'handler_failed', id: message!.id },
        { reason: 'malformed', id: null },
      ],
    );
    const letters = await drain(queue.deadUrl, 2);
    const malformed = letters.find((l) => l.Body === 'hello, no id');
    const why = JSON.parse(malformed?.MessageAttributes?.['mailroom-dead']?.StringValue ?? '{}') as Record<
      string,
      string
    >;
    assert.match(why['error'] ?? '', /no mailroom-id message attribute/);
  });

  it('counts ApproximateReceiveCount − 1 as failed runs: a message received as often as maxAttempts is dead at once', async () => {
    const queue = await makeQueue();
    await publish(queue, [testMessage()]);
    // Received once elsewhere and never deleted (a consumer that died): made visible again.
    const first = await admin.send(
      new sdk.ReceiveMessageCommand({ QueueUrl: queue.url, WaitTimeSeconds: 5, MaxNumberOfMessages: 1 }),
    );
    await admin.send(
      new sdk.ChangeMessageVisibilityCommand({
        QueueUrl: queue.url,
        ReceiptHandle: first.Messages![0]!.ReceiptHandle!,
        VisibilityTimeout: 0,
      }),
    );
    let runs = 0;
    const consumer = consumerFor(queue, {
      retry: fastRetry(1),
      handler: async () => {
        runs++;
      },
    });
    let dead: { failedAttempts: number } | undefined;
    consumer.on('consumer:message:dead', (e) => (dead = e));
    await consumer.start();
    try {
      await waitUntil(() => dead !== undefined, 'the dead letter');
    } finally {
      await consumer.stop();
    }
    assert.equal(runs, 0);
    assert.equal(dead?.failedAttempts, 1);
  });

  it("leaves dead letters to the queue's redrive policy: visible again, moved by SQS after maxReceiveCount", async () => {
    const queue = await makeQueue({ maxReceiveCount: 3 });
    const [message] = await publish(queue, [testMessage()]);
    let runs = 0;
    const consumer = consumerFor(queue, {
      retry: fastRetry(2),
      handler: async () => {
        runs++;
        throw new Error('fails');
      },
    });
    const dead: string[] = [];
    consumer.on('consumer:message:dead', (e) => dead.push(e.deadLetterQueue));
    await consumer.start();
    try {
      await waitUntil(
        async () => (await held(queue.url)) === 0,
        'SQS moved the message',
        fake ? 20_000 : 120_000,
      );
    } finally {
      await consumer.stop();
    }
    assert.equal(runs, 2, 'run maxAttempts times only, not again on the receives that follow');
    assert.ok(dead.length >= 1);
    assert.match(dead[0] ?? '', new RegExp(`^arn:aws:sqs:.*:${queue.deadName}$`));
    const [letter] = await drain(queue.deadUrl, 1);
    assert.equal(letter?.MessageAttributes?.['mailroom-id']?.StringValue, message!.id);
  });

  it('sends dead letters to a deadLetterQueueUrl named, even when the queue has a redrive policy', async () => {
    const queue = await makeQueue({ maxReceiveCount: 5 });
    const other = await makeQueue();
    const [message] = await publish(queue, [testMessage()]);
    const consumer = consumerFor(queue, {
      deadLetterQueueUrl: `sqs:///${other.name}`,
      handler: async () => {
        throw new PermanentDeliveryError('no');
      },
    });
    let dead: string | undefined;
    consumer.on('consumer:message:dead', (e) => (dead = e.deadLetterQueue));
    await consumer.start();
    try {
      await waitUntil(() => dead !== undefined, 'the dead letter');
    } finally {
      await consumer.stop();
    }
    assert.match(dead ?? '', new RegExp(`${other.name}$`));
    const [letter] = await drain(other.url, 1);
    assert.equal(letter?.MessageAttributes?.['mailroom-id']?.StringValue, message!.id);
    await assertEmpty(queue.url);
  });

  it('serial per key: a key runs one at a time, in order; other keys run alongside up to concurrency', async () => {
    const queue = await makeQueue();
    const sent = await publish(queue, [
      ...Array.from({ length: 4 }, (_, i) =>
        testMessage({ key: 'a', payload: Buffer.from(JSON.stringify({ n: i })) }),
      ),
      ...Array.from({ length: 4 }, (_, i) =>
        testMessage({ key: 'b', payload: Buffer.from(JSON.stringify({ n: i })) }),
      ),
    ]);
    const running = new Map<string, number>();
    let overlapSameKey = false;
    let maxTogether = 0;
    let together = 0;
    const order: Record<string, number[]> = { a: [], b: [] };
    const consumer = consumerFor(queue, {
      concurrency: 2,
      prefetch: 8,
      handler: async (m) => {
        const key = m.key!;
        if ((running.get(key) ?? 0) > 0) overlapSameKey = true;
        running.set(key, (running.get(key) ?? 0) + 1);
        together++;
        maxTogether = Math.max(maxTogether, together);
        order[key]!.push(json(m).n!);
        await sleep(60);
        together--;
        running.set(key, (running.get(key) ?? 0) - 1);
      },
    });
    let handled = 0;
    consumer.on('consumer:message:handled', () => handled++);
    await consumer.start();
    try {
      await waitUntil(() => handled === sent.length, 'all handled');
    } finally {
      await consumer.stop();
    }
    assert.equal(overlapSameKey, false);
    assert.equal(maxTogether, 2, 'keys a and b ran alongside');
    if (fake) {
      assert.deepEqual(order['a'], [0, 1, 2, 3]);
      assert.deepEqual(order['b'], [0, 1, 2, 3]);
    }
  });

  it('on a FIFO queue, keeps each key in order (the key is the MessageGroupId)', async () => {
    const queue = await makeQueue({ fifo: true });
    const sent = await publish(
      queue,
      Array.from({ length: 9 }, (_, i) =>
        testMessage({ key: `k${i % 3}`, payload: Buffer.from(JSON.stringify({ n: Math.floor(i / 3) })) }),
      ),
    );
    const order: Record<string, number[]> = {};
    const consumer = consumerFor(queue, {
      concurrency: 3,
      handler: async (m) => {
        (order[m.key!] ??= []).push(json(m).n!);
      },
    });
    let handled = 0;
    consumer.on('consumer:message:handled', () => handled++);
    await consumer.start();
    try {
      await waitUntil(() => handled === sent.length, 'all handled');
    } finally {
      await consumer.stop();
    }
    assert.deepEqual(order, { k0: [0, 1, 2], k1: [0, 1, 2], k2: [0, 1, 2] });
  });

  it(
    'an outage (connection cut and refused) is not a message failure: it receives again and loses nothing',
    {
      skip:
        realEndpoint && !realEndpoint.startsWith('http://') ? 'needs an http:// endpoint to proxy' : false,
    },
    async () => {
      const queue = await makeQueue();
      const target = new URL(endpoint);
      const proxy = await TcpProxy.start({
        targetHost: target.hostname,
        targetPort: Number(target.port || 80),
      });
      const handled = new Set<string>();
      const consumer = new SqsConsumer({
        url: `sqs:///${queue.name}`,
        endpoint: `http://127.0.0.1:${proxy.port}`,
        reconnectDelayMs: 50,
        maxReconnectDelayMs: 200,
        handler: async () => {},
      });
      // Handled and deleted: a delete cut by the outage would leave its message for later.
      consumer.on('consumer:message:handled', (e) => handled.add(e.message.id));
      let lost = 0;
      let reconnected = 0;
      let dead = 0;
      consumer.on('consumer:connection:lost', () => lost++);
      consumer.on('consumer:reconnected', () => reconnected++);
      consumer.on('consumer:message:dead', () => dead++);
      try {
        await consumer.start();
        const before = await publish(queue, [testMessage(), testMessage()]);
        await waitUntil(() => before.every((m) => handled.has(m.id)), 'the first messages');
        proxy.refuse();
        proxy.cut();
        await waitUntil(() => lost === 1, 'the loss noticed');
        const during = await publish(queue, [testMessage(), testMessage(), testMessage()]);
        await sleep(300);
        proxy.heal();
        await waitUntil(() => reconnected === 1, 'receiving again');
        await waitUntil(() => during.every((m) => handled.has(m.id)), 'the messages sent during the outage');
        assert.equal(dead, 0);
      } finally {
        await consumer.stop();
        await proxy.close();
      }
      await assertEmpty(queue.url);
    },
  );

  it('throttling and 5xx answers are outages, never dead letters', { skip: fakeOnly }, async () => {
    const queue = await makeQueue();
    const sent = await publish(queue, [testMessage()]);
    // As many as the SDK's own 3 attempts, twice: two receives fail.
    fake!.fail('ReceiveMessage', { status: 400, type: 'ThrottlingException' }, 3);
    fake!.fail('ReceiveMessage', { status: 503, type: 'ServiceUnavailable' }, 3);
    const handled: string[] = [];
    const consumer = consumerFor(queue, {
      reconnectDelayMs: 20,
      maxReconnectDelayMs: 100,
      handler: async (m) => {
        handled.push(m.id);
      },
    });
    let lost = 0;
    let dead = 0;
    consumer.on('consumer:connection:lost', () => lost++);
    consumer.on('consumer:message:dead', () => dead++);
    await consumer.start();
    try {
      await waitUntil(() => handled.length === 1, 'the message handled after the outage');
    } finally {
      await consumer.stop();
    }
    assert.ok(lost >= 1);
    assert.equal(dead, 0);
    assert.deepEqual(handled, [sent[0]!.id]);
  });

  it('start() throws a TransportError naming the redacted URL: unreachable, missing queue, missing dead-letter queue, no redrive policy', async () => {
    const unreachable = new SqsConsumer({
      url: 'sqs://eu-west-1/orders',
      endpoint: 'http://127.0.0.1:1',
      connectTimeoutMs: 3000,
      handler: async () => {},
    });
    await assert.rejects(
      unreachable.start(),
      (err: unknown) =>
        isTransportError(err) && err.code === 'unreachable' && err.message.includes('sqs://eu-west-1/orders'),
    );
    await unreachable.stop();
    const missing = new SqsConsumer({
      url: 'sqs:///mailroom-no-such-queue',
      endpoint,
      handler: async () => {},
    });
    await assert.rejects(
      missing.start(),
      (err: unknown) => isTransportError(err) && err.code === 'destination_missing',
    );
    await missing.stop();
    const queue = await makeQueue();
    const noDead = consumerFor(queue, {
      deadLetterQueueUrl: 'sqs:///mailroom-no-such-dead-queue',
      handler: async () => {},
    });
    await assert.rejects(
      noDead.start(),
      (err: unknown) =>
        isTransportError(err) && err.code === 'destination_missing' && /no-such-dead-queue/.test(err.message),
    );
    await noDead.stop();
    const noRedrive = consumerFor(queue, { deadLetters: 'redrive', handler: async () => {} });
    await assert.rejects(
      noRedrive.start(),
      (err: unknown) => isTransportError(err) && err.code === 'redrive_missing',
    );
    await noRedrive.stop();
  });

  it('refuses bad options with a ConfigError naming the option', () => {
    const handler = async () => {};
    const cases: Array<[Partial<SqsConsumerOptions>, string, RegExp]> = [
      [{ url: 'sqs://eu-west-1/mailroom-{topic}' }, 'url', /has '\{topic\}'/],
      [{ url: 'https://user:pw@sqs.eu-west-1.amazonaws.com/1/q' }, 'url', /not a queue URL/],
      [
        { url: 'sqs://eu-west-1/q', deadLetterQueueUrl: 'sqs://eu-west-1/q' },
        'deadLetterQueueUrl',
        /must differ/,
      ],
      [
        { url: 'sqs://eu-west-1/q.fifo', deadLetterQueueUrl: 'sqs://eu-west-1/d' },
        'deadLetterQueueUrl',
        /same type/,
      ],
      [
        { url: 'sqs://eu-west-1/q', deadLetters: 'redrive', deadLetterQueueUrl: 'sqs://eu-west-1/d' },
        'deadLetterQueueUrl',
        /not used with deadLetters: 'redrive'/,
      ],
      [{ url: 'sqs://eu-west-1/q', waitTimeSeconds: 21 }, 'waitTimeSeconds', /from 1 to 20/],
      [{ url: 'sqs://eu-west-1/q', concurrency: 4, prefetch: 2 }, 'prefetch', /prefetch/],
    ];
    for (const [options, key, pattern] of cases) {
      assert.throws(
        () => new SqsConsumer({ handler, ...options } as SqsConsumerOptions),
        (err: unknown) =>
          isConfigError(err) && err.key === key && pattern.test(err.message) && !err.message.includes(':pw@'),
        JSON.stringify(options),
      );
    }
    assert.throws(
      () => new SqsConsumer({ url: 'sqs://eu-west-1/q' } as SqsConsumerOptions),
      (err: unknown) => isConfigError(err) && err.key === 'handler',
    );
    const c = new SqsConsumer({
      url: 'https://sqs.eu-west-1.amazonaws.com/123456789012/orders.fifo',
      handler,
    });
    assert.equal(c.queue, 'orders.fifo');
  });

  it('decodes foreign attributes as headers and refuses malformed mailroom attributes', () => {
    const id = testMessage().id;
    const ok = decodeSqsMessage(
      {
        MessageId: 'x',
        Body: '{"a":1}',
        Attributes: { ApproximateReceiveCount: '3' },
        MessageAttributes: {
          'mailroom-id': { DataType: 'String', StringValue: id },
          'content-type': { DataType: 'String', StringValue: 'application/json' },
          tenant: { DataType: 'String', StringValue: 't1' },
        },
      },
      'orders',
    );
    assert.ok(ok.ok);
    assert.equal(ok.failedBefore, 2);
    assert.equal(ok.message.topic, 'orders', 'no topic attribute: the queue name');
    assert.deepEqual(ok.message.headers, { tenant: 't1' });
    assert.deepEqual(ok.message.payload, { a: 1 });
    const bad = (attributes: Record<string, string>, body = 'x') =>
      decodeSqsMessage(
        {
          MessageId: 'x',
          Body: body,
          MessageAttributes: Object.fromEntries(
            Object.entries({ 'mailroom-id': id, ...attributes }).map(([k, v]) => [
              k,
              { DataType: 'String', StringValue: v },
            ]),
          ),
        },
        'orders',
      );
    for (const [attributes, pattern] of [
      [{ 'mailroom-id': 'not-a-uuid' }, /is not a UUID/],
      [{ 'mailroom-headers': '["x"]' }, /not a JSON object of strings/],
      [{ 'mailroom-body-encoding': 'gzip' }, /expected base64 or empty/],
      [{ 'content-type': 'application/json' }, /body is not JSON/],
    ] as const) {
      const decoded = bad(attributes);
      assert.ok(!decoded.ok && pattern.test(decoded.error.message), `${JSON.stringify(attributes)}`);
    }
  });
});
