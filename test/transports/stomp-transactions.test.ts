// Broker transactions on the STOMP transport (BEGIN, SENDs with `transaction`, COMMIT/ABORT with
// receipts), on RabbitMQ's STOMP plugin and on ActiveMQ. A subscriber of the test's own on the
// real broker checks what became visible; TcpProxy cuts the connection between publish and commit.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';

import { isPermanentDeliveryError } from '../../src/core/errors/permanent-delivery-error.js';
import { isTransportError } from '../../src/core/errors/transport-error.js';
import { TcpProxy } from '../../src/testkit/tcp-proxy.js';
import { testMessage, uniqueTopics } from '../../src/testkit/transport-conformance.js';
import { StompTransport } from '../../src/transports/stomp/index.js';
import { BROKERS, deleteRabbitQueues, subscribe, uniqueName, type TestBroker } from './stomp-helpers.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** How long "nothing arrived" is watched for. */
const QUIET_MS = 700;

const rabbitQueues = new Set<string>();
after(async () => {
  await deleteRabbitQueues(rabbitQueues);
});

function topicsFor(broker: TestBroker, count: number): string[] {
  const topics = uniqueTopics(count);
  if (broker.name === 'rabbitmq') for (const topic of topics) rabbitQueues.add(topic);
  return topics;
}

/** A transport through a proxy of its own, to cut or silence its connections. */
async function proxied(broker: TestBroker): Promise<{ transport: StompTransport; proxy: TcpProxy }> {
  const proxy = await TcpProxy.start({ targetPort: Number(new URL(broker.url).port) });
  const url = new URL(broker.url);
  url.port = String(proxy.port);
  return { transport: new StompTransport({ url: url.toString(), receiptTimeoutMs: 5000 }), proxy };
}

for (const broker of BROKERS) {
  describe(`stomp broker transactions on ${broker.name}`, () => {
    it('commit delivers every message published in the transaction, none before the commit', async () => {
      const [a, b] = topicsFor(broker, 2) as [string, string];
      const subscriber = await subscribe(broker.url, [`/queue/${a}`, `/queue/${b}`]);
      const transport = new StompTransport({ url: broker.url });
      try {
        const tx = await transport.begin();
        const messages = [
          ...Array.from({ length: 10 }, () => testMessage({ topic: a, key: 'order-1' })),
          ...Array.from({ length: 5 }, () => testMessage({ topic: b })),
        ];
        await tx.publish(messages.slice(0, 10));
        await tx.publish(messages.slice(10));
        await sleep(QUIET_MS);
        assert.equal(subscriber.frames.length, 0, 'nothing is visible before the commit');
        await tx.commit();
        const frames = await subscriber.waitFor(messages.length, 10_000);
        assert.deepEqual(
          new Set(frames.map((f) => f.headers['mailroom-id'])),
          new Set(messages.map((m) => m.id)),
        );
        const ofA = frames
          .filter((f) => f.headers['mailroom-topic'] === a)
          .map((f) => f.headers['mailroom-id']);
        assert.deepEqual(
          ofA,
          messages.slice(0, 10).map((m) => m.id),
          'in publish order',
        );
        await assert.rejects(
          tx.commit(),
          (err: unknown) => isTransportError(err) && err.code === 'transaction_closed',
        );
      } finally {
        await subscriber.close();
        await transport.close();
      }
    });

    it('rollback delivers none, and transaction(fn) rolls back when fn throws', async () => {
      const [topic] = topicsFor(broker, 1) as [string];
      const subscriber = await subscribe(broker.url, [`/queue/${topic}`]);
      const transport = new StompTransport({ url: broker.url });
      try {
        const tx = await transport.begin();
        await tx.publish([testMessage({ topic }), testMessage({ topic })]);
        await tx.rollback();
        await tx.rollback(); // idempotent
        await assert.rejects(
          transport.transaction(async (t) => {
            await t.publish([{ topic, payload: { n: 1 } }]);
            throw new Error('handler failed');
          }),
          /handler failed/,
        );
        const value = await transport.transaction(async (t) => {
          await t.publish([{ topic, payload: { n: 2 } }]);
          return 'done';
        });
        assert.equal(value, 'done');
        const [only] = await subscriber.waitFor(1, 10_000);
        await sleep(QUIET_MS);
        assert.equal(subscriber.frames.length, 1, 'only the committed message arrived');
        assert.deepEqual(JSON.parse(only?.body.toString() ?? ''), { n: 2 });
      } finally {
        await subscriber.close();
        await transport.close();
      }
    });

    it('a connection cut between publish and commit leaves nothing visible', async () => {
      const [topic] = topicsFor(broker, 1) as [string];
      const subscriber = await subscribe(broker.url, [`/queue/${topic}`]);
      const { transport, proxy } = await proxied(broker);
      try {
        const tx = await transport.begin();
        await tx.publish(Array.from({ length: 20 }, () => testMessage({ topic })));
        await sleep(100); // the SENDs reach the broker
        proxy.cut();
        await sleep(100);
        await assert.rejects(
          tx.commit(),
          (err: unknown) => isTransportError(err) && err.code === 'connection_lost',
        );
        await tx.rollback();
        await sleep(QUIET_MS);
        assert.equal(subscriber.frames.length, 0, 'the broker discarded the transaction with its connection');
        // The transport still works: a new transaction on a new connection commits.
        await transport.transaction((t) => t.publish([testMessage({ topic })]));
        await subscriber.waitFor(1, 10_000);
      } finally {
        await subscriber.close();
        await transport.close();
        await proxy.close();
      }
    });

    it('reports commit_unknown when the connection is lost after COMMIT was sent', async () => {
      const [topic] = topicsFor(broker, 1) as [string];
      const subscriber = await subscribe(broker.url, [`/queue/${topic}`]);
      const { transport, proxy } = await proxied(broker);
      try {
        const tx = await transport.begin();
        await tx.publish([testMessage({ topic })]);
        await sleep(100);
        proxy.blackhole(); // COMMIT leaves the client but never reaches the broker
        const committing = tx.commit();
        await sleep(200);
        proxy.cut();
        await assert.rejects(
          committing,
          (err: unknown) => isTransportError(err) && err.code === 'commit_unknown',
        );
        await sleep(QUIET_MS);
        assert.equal(subscriber.frames.length, 0, 'this COMMIT never arrived, so nothing was committed');
      } finally {
        proxy.heal();
        await subscriber.close();
        await transport.close();
        await proxy.close();
      }
    });

    it('refuses a message over maxMessageBytes in publish, before sending anything', async () => {
      const [topic] = topicsFor(broker, 1) as [string];
      const transport = new StompTransport({ url: broker.url, maxMessageBytes: 8 });
      try {
        await assert.rejects(
          transport.transaction((tx) => tx.publish([testMessage({ topic, payload: Buffer.alloc(9) })])),
          (err: unknown) => isPermanentDeliveryError(err),
        );
      } finally {
        await transport.close();
      }
    });
  });
}

describe('stomp broker transactions on rabbitmq, refused', () => {
  it('a COMMIT RabbitMQ refuses (a SEND to a missing exchange) is a retry, not an outage', async () => {
    // RabbitMQ's adapter keeps a transaction's frames and performs them at COMMIT, so the missing
    // exchange is found then; its ERROR names no receipt.
    const broker = BROKERS[0] as TestBroker;
    const transport = new StompTransport({
      url: broker.url,
      destination: `/exchange/${uniqueName('missing')}/{topic}`,
    });
    try {
      const tx = await transport.begin();
      await tx.publish([testMessage()]);
      const error = await tx.commit().then(
        () => undefined,
        (err: unknown) => err as Error,
      );
      assert.ok(error, 'the commit is refused');
      assert.equal(isTransportError(error), false, `a refusal, not an outage: ${error.message}`);
      assert.equal(isPermanentDeliveryError(error), false);
      assert.match(error.message, /refused COMMIT of transaction/);
    } finally {
      await transport.close();
    }
  });
});
