/**
 * The bar every Mailroom consumer must pass, whatever its broker, as a `node:test` suite: the
 * shape of {@link MessageConsumer} (handler and inbox, acknowledgement only after the inbox
 * committed, retries then dead letters, serial per key, stop and start). A consumer's test file
 * calls {@link runConsumerConformance} with a factory for its consumer and for the transport that
 * publishes where it reads.
 *
 * The suite brings its own inbox, a model of a transactional one kept in memory: a handler's
 * effects and the message id commit together when the handler returns, and not at all when it
 * throws. What is checked is how the consumer uses the inbox port and its broker (the database
 * inboxes are checked by {@link runReceivingConformance}).
 *
 * @module
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { PermanentDeliveryError } from '../core/errors/permanent-delivery-error.js';
import { isTransportError } from '../core/errors/transport-error.js';
import type { Transport } from '../core/ports.js';
import type { OutboxMessage, ReceivedMessage } from '../core/types.js';
import type {
  ConsumerContext,
  ConsumerHandler,
  ConsumerInbox,
  ConsumerRetryOptions,
  MessageConsumer,
} from '../consumer/consumer.js';
import { assertAllOk, sleep, testMessage, uniqueTopics, within } from './conformance-support.js';

/** The options every consumer takes, as the suite passes them to {@link ConsumerConformanceOptions.createConsumer}. */
export interface ConformanceConsumerOptions {
  handler: ConsumerHandler<unknown>;
  inbox?: ConsumerInbox<unknown>;
  concurrency?: number;
  serialByKey?: boolean;
  retry?: ConsumerRetryOptions;
  stopTimeoutMs?: number;
}

/** What the consumer events the suite listens to look like (every core-driven consumer emits them). */
interface ConsumerEventSource {
  on(event: 'consumer:message:dead', listener: (event: { id: string | null }) => void): unknown;
  on(event: 'consumer:message:duplicate', listener: (event: { message: ReceivedMessage }) => void): unknown;
}

export interface ConsumerConformanceOptions {
  /**
   * Returns a new, not yet started transport that publishes where the consumers made by
   * {@link createConsumer} read (the relay's transport for the same broker).
   */
  createTransport: () => Promise<Transport>;
  /**
   * Returns a new, not yet started consumer of `topic` (what the relay's transport publishes
   * for it) with these options added to the broker's own. Called more than once per topic: a
   * second consumer must pick up what the first left unacknowledged (same queue, stream group,
   * durable, session or subscription), within {@link redeliveryTimeoutMs}.
   *
   * The suite starts the consumer before it publishes, so a consumer that sets up what it reads
   * at `start()` (a queue, a group from `$`) receives everything.
   */
  createConsumer: (topic: string, options: ConformanceConsumerOptions) => Promise<MessageConsumer>;
  /**
   * Returns a consumer whose broker cannot be reached: its `start()` must reject with a
   * TransportError. Omit it to skip that check.
   */
  createUnreachable?: (topic: string, options: ConformanceConsumerOptions) => Promise<MessageConsumer>;
  /** Upper bound for a delivery to arrive. @default 10000 */
  timeoutMs?: number;
  /**
   * How long the broker may take to hand an unacknowledged message to another consumer once
   * the first stopped (RabbitMQ and STOMP at once; JetStream after its ack wait; Redis after its
   * claim idle time; SQS after the visibility timeout). @default 10000
   */
  redeliveryTimeoutMs?: number;
}

/** The in-memory transactional inbox: ids and effects commit together, or neither does. */
class ModelInbox implements ConsumerInbox<ModelTx> {
  readonly consumer = 'conformance';
  readonly processed = new Set<string>();
  readonly effects: string[] = [];
  /** Called with each transaction about to commit; rejecting aborts it. */
  beforeCommit: ((tx: ModelTx) => Promise<void>) | undefined;

  async handle<T>(
    message: ReceivedMessage,
    handler: (tx: ModelTx, context: ConsumerContext) => Promise<T>,
  ): Promise<{ status: 'processed'; value: T } | { status: 'duplicate' }> {
    if (this.processed.has(message.id)) return { status: 'duplicate' };
    const tx: ModelTx = { id: message.id, effects: [] };
    const context: ConsumerContext = {
      message,
      ack: () => {
        throw new Error('the conformance inbox takes no acknowledgements');
      },
    };
    const value = await handler(tx, context);
    await this.beforeCommit?.(tx);
    // A copy handled at the same time committed first: this transaction's unique key fails.
    if (this.processed.has(message.id)) throw new Error(`duplicate key: message ${message.id}`);
    this.processed.add(message.id);
    this.effects.push(...tx.effects);
    return { status: 'processed', value };
  }
}

interface ModelTx {
  id: string;
  effects: string[];
}

/** Resolves once `predicate` holds, checking every 10 ms; rejects after `timeoutMs`. */
async function until(predicate: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(10);
  }
}

function onEvents(consumer: MessageConsumer): ConsumerEventSource | undefined {
  const source = consumer as unknown as Partial<ConsumerEventSource>;
  return typeof source.on === 'function' ? (source as ConsumerEventSource) : undefined;
}

/**
 * Registers the conformance suite for one consumer under `describe(name)`.
 *
 * @example
 * ```ts
 * runConsumerConformance('rabbitmq', {
 *   createTransport: async () => new RabbitMqTransport({ url, exchange }),
 *   createConsumer: async (topic, options) =>
 *     new RabbitMqConsumer({ url, exchange, queue: `q.${topic}`, bindings: [topic], ...options }),
 * });
 * ```
 */
export function runConsumerConformance(name: string, options: ConsumerConformanceOptions): void {
  const timeoutMs = options.timeoutMs ?? 10_000;
  const redeliveryTimeoutMs = options.redeliveryTimeoutMs ?? 10_000;
  /** Fast retries: the checks wait for them. */
  const retry: ConsumerRetryOptions = { maxAttempts: 3, baseDelayMs: 20, maxDelayMs: 100 };

  async function publish(messages: OutboxMessage[]): Promise<void> {
    const transport = await options.createTransport();
    try {
      await transport.start();
      assertAllOk(await transport.publish(messages), messages.length);
    } finally {
      await transport.close();
    }
  }

  /** Runs `body` with a started consumer, stopped afterwards whatever happens. */
  async function withConsumer<T>(
    topic: string,
    consumerOptions: ConformanceConsumerOptions,
    body: (consumer: MessageConsumer) => Promise<T>,
  ): Promise<T> {
    const consumer = await options.createConsumer(topic, consumerOptions);
    try {
      await within(consumer.start(), timeoutMs, `${name} consumer start()`);
      return await body(consumer);
    } finally {
      await consumer.stop({ timeoutMs: 2000 });
    }
  }

  describe(`${name} consumer conformance`, () => {
    it('runs the handler for each message with its id, topic, key, type, headers and payload, and acknowledges it', async () => {
      const [topic] = uniqueTopics(1) as [string];
      const seen: ReceivedMessage[] = [];
      const sent = [
        testMessage({ topic, key: 'order-1', type: 'order.created', headers: { 'x-tenant': 'äöü' } }),
        testMessage({ topic, key: null, payload: Buffer.from('{"n":2}') }),
        testMessage({
          topic,
          key: 'order-2',
          headers: { traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' },
        }),
      ];
      const handler: ConsumerHandler<unknown> = async (message) => {
        seen.push(message);
      };
      await withConsumer(topic, { handler }, async () => {
        await publish(sent);
        await until(() => seen.length >= sent.length, timeoutMs, `${sent.length} messages`);
      });
      for (const m of sent) {
        const got = seen.find((r) => r.id === m.id);
        assert.ok(got, `message ${m.id} was not handled`);
        assert.equal(got.topic, m.topic);
        assert.equal(got.key, m.key);
        if (m.type !== null) assert.equal(got.type, m.type);
        assert.deepEqual(Buffer.from(got.body), Buffer.from(m.payload));
        for (const [header, value] of Object.entries(m.headers))
          assert.equal(got.headers[header], value, `header ${header} of ${m.id}`);
      }
      // Acknowledged: a consumer of the same source started afterwards gets none of them again.
      const again: string[] = [];
      await withConsumer(topic, { handler: async (m) => void again.push(m.id) }, () => sleep(1000));
      assert.deepEqual(again, [], 'messages handled and acknowledged came back');
    });

    it('with an inbox, has the effect of a message published twice once, and acknowledges the copy', async () => {
      const [topic] = uniqueTopics(1) as [string];
      const inbox = new ModelInbox();
      const message = testMessage({ topic, key: 'k' });
      let duplicates = 0;
      await withConsumer(
        topic,
        {
          inbox: inbox as ConsumerInbox<unknown>,
          handler: async (m, tx) => void (tx as ModelTx).effects.push(m.id),
        },
        async (consumer) => {
          const events = onEvents(consumer);
          events?.on('consumer:message:duplicate', () => duplicates++);
          await publish([message]);
          await until(() => inbox.effects.length === 1, timeoutMs, 'the first copy');
          await publish([message]);
          if (events) await until(() => duplicates === 1, timeoutMs, 'the second copy, as a duplicate');
          else await sleep(1000);
        },
      );
      assert.deepEqual(inbox.effects, [message.id]);
    });

    it('retries a handler that fails, and handles the message once it succeeds', async () => {
      const [topic] = uniqueTopics(1) as [string];
      const message = testMessage({ topic, key: 'k' });
      const attempts: number[] = [];
      let handled = false;
      await withConsumer(
        topic,
        {
          retry,
          handler: async (m) => {
            attempts.push(m.attempt);
            if (attempts.length < 3) throw new Error(`failure ${attempts.length}`);
            handled = true;
          },
        },
        async () => {
          await publish([message]);
          await until(() => handled, timeoutMs, 'the third run');
        },
      );
      assert.equal(attempts.length, 3, `runs: ${attempts.join(', ')}`);
    });

    it('dead-letters a message after retry.maxAttempts failures and a PermanentDeliveryError at once, without holding up the others', async () => {
      const [topic] = uniqueTopics(1) as [string];
      const failing = testMessage({ topic, key: 'a' });
      const permanent = testMessage({ topic, key: 'b' });
      const fine = testMessage({ topic, key: 'c' });
      const runs = new Map<string, number>();
      const dead: Array<string | null> = [];
      const handler: ConsumerHandler<unknown> = async (m) => {
        runs.set(m.id, (runs.get(m.id) ?? 0) + 1);
        if (m.id === failing.id) throw new Error('this handler always fails');
        if (m.id === permanent.id) throw new PermanentDeliveryError('this message can never be handled');
      };
      await withConsumer(topic, { handler, retry, concurrency: 3 }, async (consumer) => {
        const events = onEvents(consumer);
        events?.on('consumer:message:dead', (e) => dead.push(e.id));
        await publish([failing, permanent, fine]);
        await until(() => runs.get(fine.id) === 1, timeoutMs, 'the message that succeeds');
        if (events) await until(() => dead.length === 2, timeoutMs, 'two dead letters');
        else await until(() => (runs.get(failing.id) ?? 0) >= 3, timeoutMs, 'the last attempt');
      });
      assert.equal(runs.get(failing.id), retry.maxAttempts, 'runs of the failing message');
      assert.equal(runs.get(permanent.id), 1, 'runs of the permanently failing message');
      if (dead.length > 0) assert.deepEqual(new Set(dead), new Set([failing.id, permanent.id]));
      // Dead-lettered, so acknowledged: not handled again by a consumer started afterwards.
      const again: string[] = [];
      await withConsumer(topic, { handler: async (m) => void again.push(m.id) }, () => sleep(1000));
      assert.deepEqual(again, [], 'dead-lettered messages came back');
    });

    it('runs the messages of one key one at a time and in order, and different keys in parallel', async () => {
      const [topic] = uniqueTopics(1) as [string];
      const keys = ['k1', 'k2', 'k3'];
      const sent = keys.flatMap((key) =>
        Array.from({ length: 4 }, (_, i) => testMessage({ topic, key, payload: Buffer.from(String(i)) })),
      );
      const order = new Map<string, string[]>();
      const running = new Map<string, number>();
      let overlapSameKey = 0;
      let atOnce = 0;
      let maxAtOnce = 0;
      let done = 0;
      const handler: ConsumerHandler<unknown> = async (m) => {
        const key = m.key as string;
        running.set(key, (running.get(key) ?? 0) + 1);
        if ((running.get(key) ?? 0) > 1) overlapSameKey++;
        maxAtOnce = Math.max(maxAtOnce, ++atOnce);
        await sleep(30);
        order.set(key, [...(order.get(key) ?? []), Buffer.from(m.body).toString()]);
        atOnce--;
        running.set(key, (running.get(key) ?? 1) - 1);
        done++;
      };
      await withConsumer(topic, { handler, concurrency: 3 }, async () => {
        await publish(sent);
        await until(() => done >= sent.length, timeoutMs, `${sent.length} messages`);
      });
      assert.equal(overlapSameKey, 0, 'two messages of one key ran at once');
      for (const key of keys) assert.deepEqual(order.get(key), ['0', '1', '2', '3'], `order of key ${key}`);
      assert.ok(maxAtOnce > 1, `different keys never ran in parallel (at most ${maxAtOnce} at once)`);
    });

    it('does not acknowledge a message whose inbox transaction did not commit: stopped mid-way, another consumer handles it, once', async () => {
      const [topic] = uniqueTopics(1) as [string];
      const inbox = new ModelInbox();
      const message = testMessage({ topic, key: 'k' });
      let reachedCommit = false;
      let failCommit: (err: Error) => void = () => {};
      // The first run's commit waits, then fails, as when the process dies before COMMIT.
      inbox.beforeCommit = () =>
        new Promise<void>((_, reject) => {
          reachedCommit = true;
          failCommit = reject;
        });
      const handler: ConsumerHandler<unknown> = async (m, tx) => void (tx as ModelTx).effects.push(m.id);
      const first = await options.createConsumer(topic, {
        inbox: inbox as ConsumerInbox<unknown>,
        handler,
        stopTimeoutMs: 200,
      });
      try {
        await within(first.start(), timeoutMs, `${name} consumer start()`);
        await publish([message]);
        await until(() => reachedCommit, timeoutMs, 'the handler to reach its commit');
        await first.stop({ timeoutMs: 200 });
      } finally {
        failCommit(new Error('the process died before COMMIT'));
        await first.stop({ timeoutMs: 200 });
      }
      assert.deepEqual(inbox.effects, [], 'nothing committed yet');
      inbox.beforeCommit = undefined;
      await withConsumer(topic, { inbox: inbox as ConsumerInbox<unknown>, handler }, () =>
        until(
          () => inbox.effects.length > 0,
          redeliveryTimeoutMs + timeoutMs,
          'the unacknowledged message to be delivered to the next consumer',
        ),
      );
      assert.deepEqual(inbox.effects, [message.id]);
    });

    it('waits in stop() for a running handler to finish, within its deadline', async () => {
      const [topic] = uniqueTopics(1) as [string];
      let started = false;
      let finished = false;
      const handler: ConsumerHandler<unknown> = async () => {
        started = true;
        await sleep(300);
        finished = true;
      };
      const consumer = await options.createConsumer(topic, { handler });
      try {
        await within(consumer.start(), timeoutMs, `${name} consumer start()`);
        await publish([testMessage({ topic })]);
        await until(() => started, timeoutMs, 'the handler to start');
        await within(consumer.stop({ timeoutMs: 5000 }), 6000, 'stop()');
        assert.ok(finished, 'stop() returned before the running handler finished');
        assert.equal(consumer.running, false);
      } finally {
        await consumer.stop();
      }
    });

    it(
      'rejects start() with a TransportError when its broker cannot be reached',
      { skip: options.createUnreachable ? false : 'no createUnreachable given' },
      async () => {
        const [topic] = uniqueTopics(1) as [string];
        const consumer = await (options.createUnreachable as NonNullable<typeof options.createUnreachable>)(
          topic,
          {
            handler: async () => {},
          },
        );
        try {
          await within(
            assert.rejects(consumer.start(), (err: unknown) => {
              assert.ok(
                isTransportError(err),
                `start() must reject with a TransportError, got ${String(err)}`,
              );
              return true;
            }),
            timeoutMs + 5000,
            'start() against an unreachable broker',
          );
        } finally {
          await consumer.stop();
        }
      },
    );
  });
}
