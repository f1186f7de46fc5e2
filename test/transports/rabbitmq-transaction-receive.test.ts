// Transacted receive on RabbitMqConsumer (issue 15) against the real broker (127.0.0.1:5672,
// override with MAILROOM_TEST_AMQP_URL): the handler's context.publish outputs and the input's
// acknowledgement are committed in one AMQP transaction. A verifying queue bound to the outputs
// counts them per input; the input queue's counts say whether inputs were acknowledged. The
// last test SIGKILLs a consumer process at the commit, before and after it is sent, restarts it,
// and checks no input is lost and no output is at the broker twice.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { execFile } from 'node:child_process';
import { createInterface } from 'node:readline';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';

import { isConfigError } from '../../src/core/errors/config-error.js';
import { isInvalidMessageError } from '../../src/core/errors/invalid-message-error.js';
import type { OutboxMessage, ReceivedMessage } from '../../src/core/types.js';
import { testMessage } from '../../src/testkit/transport-conformance.js';
import {
  RabbitMqConsumer,
  RabbitMqTransport,
  type ConsumerContext,
  type ConsumerInbox,
  type RabbitMqConsumerOptions,
} from '../../src/transports/rabbitmq/index.js';
import { waitUntil } from '../helpers/wait.js';
import { RABBITMQ_URL, TestBroker, uniqueName, type TestConsumer } from './rabbitmq-helpers.js';

const run = promisify(execFile);
const exchange = uniqueName('mailroom-test-txr');
let broker: TestBroker;
let sender: RabbitMqTransport;
const queues: string[] = [];

before(async () => {
  broker = await TestBroker.open();
  await broker.withChannel((ch) => ch.assertExchange(exchange, 'topic', { durable: true }));
  sender = new RabbitMqTransport({ url: RABBITMQ_URL, exchange });
});

after(async () => {
  await sender.close();
  for (const queue of queues) await broker.withChannel((ch) => ch.deleteQueue(queue)).catch(() => {});
  await broker.deleteExchange(exchange).catch(() => {});
  await broker.close();
});

/** A queue name of this test's own, deleted after the file (with its dead-letter queue). */
function queueName(prefix: string): string {
  const name = uniqueName(prefix);
  queues.push(name, `${name}.dead`);
  return name;
}

/** Sends inputs on `topic`, confirmed. */
async function send(messages: OutboxMessage[]): Promise<void> {
  const outcomes = await sender.publish(messages);
  assert.deepEqual(
    outcomes.map((o) => o.status),
    messages.map(() => 'ok'),
  );
}

function inputs(count: number, topic: string): OutboxMessage[] {
  return Array.from({ length: count }, (_, i) => testMessage({ topic, key: `k${i % 3}` }));
}

/** The output payloads a verifying consumer got: `{ input, n, … }`. */
function outputsOf(verify: TestConsumer): Array<{ input: string; n: number; attempt?: number }> {
  return verify.raw.map((m) => JSON.parse(m.content.toString()) as { input: string; n: number });
}

/** Ready and unacknowledged messages of a queue, as the broker counts them right now. */
async function queueCounts(queue: string): Promise<{ ready: number; unacked: number }> {
  const { stdout } = await run('rabbitmqctl', [
    '-q',
    'list_queues',
    '--no-table-headers',
    'name',
    'messages_ready',
    'messages_unacknowledged',
  ]);
  const found = stdout.split('\n').find((l) => l.split('\t')[0] === queue);
  if (!found) throw new Error(`queue ${queue} not found; rabbitmqctl listed:\n${stdout}`);
  const [, ready, unacked] = found.split('\t');
  return { ready: Number(ready), unacked: Number(unacked) };
}

function consumer(
  queue: string,
  topic: string,
  options: Partial<RabbitMqConsumerOptions<undefined>> & Pick<RabbitMqConsumerOptions<undefined>, 'handler'>,
): RabbitMqConsumer {
  return new RabbitMqConsumer({
    url: RABBITMQ_URL,
    exchange,
    queue,
    bindings: [topic],
    transacted: true,
    retry: { baseDelayMs: 10, maxDelayMs: 20 },
    ...options,
  });
}

describe('RabbitMQ transacted receive', () => {
  it('commits the outputs with the acknowledgement of their input', async () => {
    const topic = `in.${uniqueName('a')}`;
    const queue = queueName('mailroom-test-txr-a');
    const verify = await broker.consume(exchange, [`out.${topic}.#`]);
    const c = consumer(queue, topic, {
      concurrency: 3,
      handler: async (message, _tx, context) => {
        const input = message.id;
        await context.publish?.([
          { topic: `out.${topic}.first`, key: message.key, payload: { input, n: 0 } },
        ]);
        await context.publish?.([
          { topic: `out.${topic}.second`, key: message.key, payload: { input, n: 1 } },
        ]);
      },
    });
    try {
      await c.start();
      const sent = inputs(12, topic);
      await send(sent);
      await verify.take(24, 15_000);
      await c.stop();
      const counts = new Map<string, number>();
      for (const o of outputsOf(verify))
        counts.set(`${o.input}/${o.n}`, (counts.get(`${o.input}/${o.n}`) ?? 0) + 1);
      for (const m of sent) {
        assert.equal(counts.get(`${m.id}/0`), 1);
        assert.equal(counts.get(`${m.id}/1`), 1);
      }
      assert.deepEqual(await queueCounts(queue), { ready: 0, unacked: 0 }, 'every input acknowledged');
    } finally {
      await c.stop();
      await verify.close();
    }
  });

  it('sends nothing of a run that throws, and retries it', async () => {
    const topic = `in.${uniqueName('b')}`;
    const queue = queueName('mailroom-test-txr-b');
    const verify = await broker.consume(exchange, [`out.${topic}`]);
    const attempts = new Map<string, number>();
    const c = consumer(queue, topic, {
      handler: async (message, _tx, context) => {
        const attempt = (attempts.get(message.id) ?? 0) + 1;
        attempts.set(message.id, attempt);
        await context.publish?.([{ topic: `out.${topic}`, payload: { input: message.id, n: 0, attempt } }]);
        if (attempt === 1) throw new Error('first run fails after publishing');
      },
    });
    try {
      await c.start();
      const sent = inputs(4, topic);
      await send(sent);
      await verify.take(4, 15_000);
      await c.stop();
      const outputs = outputsOf(verify);
      assert.equal(outputs.length, 4, 'one output per input');
      assert.ok(
        outputs.every((o) => o.attempt === 2),
        'only the successful run published',
      );
      assert.deepEqual(await queueCounts(queue), { ready: 0, unacked: 0 });
    } finally {
      await c.stop();
      await verify.close();
    }
  });

  it('reports an unroutable output and commits the rest', async () => {
    const topic = `in.${uniqueName('c')}`;
    const queue = queueName('mailroom-test-txr-c');
    const verify = await broker.consume(exchange, [`out.${topic}`]);
    const c = consumer(queue, topic, {
      handler: async (message, _tx, context) => {
        await context.publish?.([
          { topic: `out.${topic}`, payload: { input: message.id, n: 0 } },
          { topic: `nobody.${topic}`, payload: { input: message.id, n: 1 } },
        ]);
      },
    });
    const returned: Array<{ id: string; output: OutboxMessage }> = [];
    c.on('consumer:output:returned', (e) => returned.push(e));
    try {
      await c.start();
      const [input] = inputs(1, topic) as [OutboxMessage];
      await send([input]);
      await verify.take(1, 15_000);
      await waitUntil(() => returned.length === 1, 'the returned output to be reported');
      assert.equal(returned[0]?.id, input.id);
      assert.equal(returned[0]?.output.topic, `nobody.${topic}`);
      await c.stop();
      assert.deepEqual(await queueCounts(queue), { ready: 0, unacked: 0 }, 'the input was acknowledged');
    } finally {
      await c.stop();
      await verify.close();
    }
  });

  it('works through an inbox, and a duplicate is acknowledged without outputs', async () => {
    const topic = `in.${uniqueName('d')}`;
    const queue = queueName('mailroom-test-txr-d');
    const verify = await broker.consume(exchange, [`out.${topic}`]);
    const processed = new Set<string>();
    const inbox: ConsumerInbox<string> = {
      consumer: 'test',
      async handle<T>(
        message: ReceivedMessage,
        handler: (tx: string, context: ConsumerContext) => Promise<T>,
      ) {
        if (processed.has(message.id)) return { status: 'duplicate' as const };
        const value = await handler('the-tx', { message, ack: () => {} });
        processed.add(message.id);
        return { status: 'processed' as const, value };
      },
    };
    let duplicates = 0;
    const c = new RabbitMqConsumer<string>({
      url: RABBITMQ_URL,
      exchange,
      queue,
      bindings: [topic],
      transacted: true,
      inbox,
      handler: async (message, tx, context) => {
        assert.equal(tx, 'the-tx');
        await context.publish?.([{ topic: `out.${topic}`, payload: { input: message.id, n: 0 } }]);
      },
    });
    c.on('consumer:message:duplicate', () => duplicates++);
    try {
      await c.start();
      const [input] = inputs(1, topic) as [OutboxMessage];
      await send([input, { ...input }]); // the same id twice
      await waitUntil(() => duplicates === 1, 'the copy to be dropped');
      await c.stop();
      assert.equal(outputsOf(verify).length, 1);
      assert.deepEqual(await queueCounts(queue), { ready: 0, unacked: 0 });
    } finally {
      await c.stop();
      await verify.close();
    }
  });

  it('refuses bad outputs inside the handler, context.publish after the run, and has no publish untransacted', async () => {
    const topic = `in.${uniqueName('e')}`;
    const queue = queueName('mailroom-test-txr-e');
    const errors: unknown[] = [];
    let kept: ConsumerContext | undefined;
    const c = consumer(queue, topic, {
      retry: { maxAttempts: 1 },
      handler: async (_message, _tx, context) => {
        kept = context;
        try {
          await context.publish?.([{ topic: 'out.x', payload: 1, delayMs: 100 }]);
        } catch (err) {
          errors.push(err);
        }
      },
    });
    let handled = 0;
    c.on('consumer:message:handled', () => handled++);
    const plainContexts: ConsumerContext[] = [];
    const plain = new RabbitMqConsumer({
      url: RABBITMQ_URL,
      exchange,
      queue: queueName('mailroom-test-txr-e2'),
      bindings: [`${topic}.plain`],
      handler: async (_m, _tx, context) => {
        plainContexts.push(context);
      },
    });
    try {
      await c.start();
      await send(inputs(1, topic));
      await waitUntil(() => handled === 1, 'the input to be handled');
      assert.ok(isInvalidMessageError(errors[0]), String(errors[0]));
      await assert.rejects(
        kept?.publish?.([{ topic: 'out.x', payload: 1 }]) ?? Promise.resolve(),
        (err: unknown) => isConfigError(err),
      );
      assert.equal(typeof kept?.publish, 'function');
      await plain.start();
      await send(inputs(1, `${topic}.plain`));
      await waitUntil(() => plainContexts.length === 1, 'the untransacted consumer to handle its input');
      assert.equal(plainContexts[0]?.publish, undefined);
    } finally {
      await c.stop();
      await plain.stop();
    }
  });

  it('loses no input and leaves no output twice when the consumer process is SIGKILLed at its commits', async () => {
    const topic = `in.${uniqueName('kill')}`;
    const queue = queueName('mailroom-test-txr-kill');
    const verifyQueue = queueName('mailroom-test-txr-verify');
    // A durable queue of the test's own, read only once everything has settled.
    await broker.withChannel(async (ch) => {
      await ch.assertQueue(verifyQueue, { durable: true });
      await ch.bindQueue(verifyQueue, exchange, 'out.*');
    });
    const total = 300;
    const sent = inputs(total, topic);
    // The consumer declares its queue; bind it before sending.
    await broker.withChannel(async (ch) => {
      await ch.assertQueue(queue, { durable: true });
      await ch.bindQueue(queue, exchange, topic);
    });
    await send(sent);

    const env = { AMQP_URL: RABBITMQ_URL, EXCHANGE: exchange, QUEUE: queue, BINDINGS: topic, OUTPUTS: '2' };
    // Kill at the commit before and after it is sent, at several points, once from outside
    // while it runs, then let the last process finish the queue.
    const plan = ['before:2', 'after:3', 'before:9', 'after:12', 'external', 'before:20', 'none'];
    const kills: string[] = [];
    let handledLines = 0;
    for (const step of plan) {
      const child = startFixture({ ...env, KILL_AT: step === 'external' ? 'none:0' : step });
      try {
        const lines = readLines(child);
        let started = false;
        lines.on('line', (l: string) => {
          if (l === 'started') started = true;
          if (l.startsWith('handled ')) handledLines++;
          if (l.startsWith('kill ')) kills.push(l);
        });
        if (step === 'none') {
          await waitUntil(
            async () => (await queueCounts(verifyQueue)).ready >= 2 * total,
            'every output',
            40_000,
          );
          child.kill('SIGTERM');
        } else if (step === 'external') {
          await waitUntil(() => started, 'the fixture to start', 20_000);
          await new Promise((resolve) => setTimeout(resolve, 150));
          kills.push('kill external');
          child.kill('SIGKILL');
        }
        await exited(child, 20_000);
      } finally {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      }
    }
    // Settle: nothing more may arrive, and the inputs are all acknowledged.
    await new Promise((resolve) => setTimeout(resolve, 500));
    assert.deepEqual(await queueCounts(queue), { ready: 0, unacked: 0 }, 'no input left');
    assert.deepEqual(await queueCounts(`${queue}.dead`), { ready: 0, unacked: 0 }, 'no dead letter');

    const outputs: Array<{ input: string; n: number }> = [];
    await broker.withChannel(async (ch) => {
      for (;;) {
        const m = await ch.get(verifyQueue, { noAck: true });
        if (m === false) break;
        outputs.push(JSON.parse(m.content.toString()) as { input: string; n: number });
      }
    });
    const counts = new Map<string, number>();
    for (const o of outputs) counts.set(`${o.input}/${o.n}`, (counts.get(`${o.input}/${o.n}`) ?? 0) + 1);
    const missing = sent.flatMap((m) =>
      [0, 1].filter((n) => !counts.has(`${m.id}/${n}`)).map((n) => `${m.id}/${n}`),
    );
    const twice = [...counts].filter(([, count]) => count > 1).map(([k]) => k);
    console.log(
      `transacted receive under SIGKILL: ${total} inputs, ${kills.length} kills (${kills.join(', ')}), ` +
        `${handledLines} handled lines, ${outputs.length} outputs, missing ${missing.length}, duplicated ${twice.length}`,
    );
    assert.ok(kills.length >= 6, `expected every planned kill, got ${kills.join(', ')}`);
    assert.deepEqual(missing, [], 'no input lost');
    assert.deepEqual(twice, [], 'no output twice at the broker');
    assert.equal(outputs.length, 2 * total);
  });
});

function startFixture(env: Record<string, string>): ChildProcess {
  return spawn(process.execPath, ['--import', 'tsx', 'test/fixtures/rabbitmq-transacted-consumer.ts'], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
}

function readLines(child: ChildProcess): ReturnType<typeof createInterface> {
  if (child.stdout === null) throw new Error('the fixture has no stdout');
  return createInterface({ input: child.stdout });
}

async function exited(child: ChildProcess, timeoutMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`the fixture did not exit within ${timeoutMs} ms`)),
      timeoutMs,
    );
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}
