// StompConsumer against RabbitMQ's STOMP plugin and ActiveMQ: acknowledgement after the handler,
// retries then dead letters, malformed deliveries, an inbox's duplicates, and transacted receive,
// also under SIGKILL of the consumer's process (test/fixtures/stomp-transacted-consumer.ts).
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { after, describe, it } from 'node:test';

import { isConfigError } from '../../src/core/errors/config-error.js';
import { testMessage, uniqueTopics } from '../../src/testkit/transport-conformance.js';
import { StompConsumer, StompTransport, type ConsumerInbox } from '../../src/transports/stomp/index.js';
import type { ReceivedMessage } from '../../src/core/types.js';
import { BROKERS, connectTo, deleteRabbitQueues, subscribe, type TestBroker } from './stomp-helpers.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const QUIET_MS = 700;

const rabbitQueues = new Set<string>();
after(async () => {
  await deleteRabbitQueues(rabbitQueues);
});

/** Topics of the test's own; their `/queue/` destinations (and `.dead` ones) are removed afterwards. */
function topicsFor(broker: TestBroker, count: number): string[] {
  const topics = uniqueTopics(count);
  if (broker.name === 'rabbitmq') for (const t of topics) rabbitQueues.add(t).add(`${t}.dead`);
  return topics;
}

/** Resolves once `predicate` holds, checking every 20 ms; rejects after `timeoutMs`. */
async function until(predicate: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

async function publishTo(broker: TestBroker, topic: string, count: number, key: string | null = null) {
  const transport = new StompTransport({ url: broker.url });
  try {
    const messages = Array.from({ length: count }, (_, i) =>
      testMessage({ topic, key, payload: Buffer.from(JSON.stringify({ i })) }),
    );
    const outcomes = await transport.publish(messages);
    assert.ok(outcomes.every((o) => o.status === 'ok'));
    return messages;
  } finally {
    await transport.close();
  }
}

/** Nothing is left on `destination`: a subscriber sees no message for a while. */
async function assertEmpty(broker: TestBroker, destination: string): Promise<void> {
  const subscriber = await subscribe(broker.url, [destination]);
  await sleep(QUIET_MS);
  await subscriber.close();
  assert.equal(
    subscriber.frames.length,
    0,
    `${destination} still holds ${subscriber.frames.length} messages`,
  );
}

function fastRetry(maxAttempts: number) {
  return { maxAttempts, baseDelayMs: 5, maxDelayMs: 20, jitter: 'none' as const };
}

for (const broker of BROKERS) {
  describe(`stomp consumer on ${broker.name}`, () => {
    it('handles each message and acknowledges it after the handler: nothing is left to redeliver', async () => {
      const [topic] = topicsFor(broker, 1) as [string];
      const sent = await publishTo(broker, topic, 5, 'k');
      const handled: string[] = [];
      const consumer = new StompConsumer({
        url: broker.url,
        destination: `/queue/${topic}`,
        handler: async (message) => {
          handled.push(message.id);
        },
      });
      await consumer.start();
      await until(() => handled.length >= 5, 10_000, 'five messages handled');
      await consumer.stop();
      assert.deepEqual(
        handled,
        sent.map((m) => m.id),
        'a key keeps its order',
      );
      assert.equal(consumer.running, false);
      await assertEmpty(broker, `/queue/${topic}`);
    });

    it('retries a failing handler, then dead-letters the message with why, and acknowledges it', async () => {
      const [topic] = topicsFor(broker, 1) as [string];
      const dead = await subscribe(broker.url, [`/queue/${topic}.dead`]);
      const [message] = await publishTo(broker, topic, 1);
      let runs = 0;
      const consumer = new StompConsumer({
        url: broker.url,
        destination: `/queue/${topic}`,
        retry: fastRetry(3),
        handler: async () => {
          runs++;
          throw new Error('cannot handle this\nat all');
        },
      });
      const retries: number[] = [];
      consumer.on('consumer:message:retry', (e) => retries.push(e.failedAttempts));
      try {
        await consumer.start();
        const [letter] = await dead.waitFor(1, 10_000);
        const h = letter?.headers ?? {};
        assert.equal(runs, 3);
        assert.deepEqual(retries, [1, 2]);
        assert.equal(h['mailroom-id'], message?.id);
        assert.equal(h['mailroom-topic'], topic);
        assert.equal(h['mailroom-error'], 'cannot handle this\nat all');
        assert.equal(h['mailroom-failed-attempts'], '3');
        assert.equal(h['mailroom-dead-reason'], 'handler_failed');
        assert.equal(h['mailroom-dead-queue'], `/queue/${topic}`);
        assert.equal(h['mailroom-dead-topic'], topic);
        assert.ok(letter?.body.equals(message?.payload ?? Buffer.alloc(0)));
      } finally {
        await consumer.stop();
        await dead.close();
      }
      await assertEmpty(broker, `/queue/${topic}`);
    });

    it('dead-letters a delivery without a mailroom-id at once, as malformed', async () => {
      const [topic] = topicsFor(broker, 1) as [string];
      const dead = await subscribe(broker.url, [`/queue/${topic}.dead`]);
      const raw = await connectTo(broker.url);
      await raw.request(
        'SEND',
        [
          ['destination', `/queue/${topic}`],
          ['persistent', 'true'],
        ],
        Buffer.from('hello'),
      ).answered;
      await raw.close(new Error('done'));
      let runs = 0;
      const consumer = new StompConsumer({
        url: broker.url,
        destination: `/queue/${topic}`,
        handler: async () => {
          runs++;
        },
      });
      try {
        await consumer.start();
        const [letter] = await dead.waitFor(1, 10_000);
        assert.equal(letter?.headers['mailroom-dead-reason'], 'malformed');
        assert.match(letter?.headers['mailroom-error'] ?? '', /no mailroom-id header/);
        assert.equal(runs, 0);
      } finally {
        await consumer.stop();
        await dead.close();
      }
    });

    it('with an inbox, acknowledges a copy already processed without running the handler', async () => {
      const [topic] = topicsFor(broker, 1) as [string];
      const message = testMessage({ topic });
      const transport = new StompTransport({ url: broker.url });
      await transport.publish([message, { ...message, attempts: 2 }]);
      await transport.close();
      const processed = new Set<string>();
      const inbox: ConsumerInbox<undefined> = {
        consumer: 'test',
        handle: async (m, handler) => {
          if (processed.has(m.id)) return { status: 'duplicate' };
          const value = await handler(undefined, { message: m, ack: () => {} });
          processed.add(m.id);
          return { status: 'processed', value };
        },
      };
      const runs: ReceivedMessage[] = [];
      let duplicates = 0;
      const consumer = new StompConsumer({
        url: broker.url,
        destination: `/queue/${topic}`,
        inbox,
        handler: async (m: ReceivedMessage) => {
          runs.push(m);
        },
      });
      consumer.on('consumer:message:duplicate', () => duplicates++);
      await consumer.start();
      await until(() => duplicates === 1, 10_000, 'the copy');
      await consumer.stop();
      assert.equal(runs.length, 1);
      assert.equal(runs[0]?.id, message.id);
      assert.deepEqual(runs[0]?.payload, JSON.parse(message.payload.toString()));
      await assertEmpty(broker, `/queue/${topic}`);
    });

    it('transacted receive: a failed run leaves no output; the run that succeeds commits its outputs with the ack', async () => {
      const [input, output] = topicsFor(broker, 2) as [string, string];
      const outputs = await subscribe(broker.url, [`/queue/${output}`]);
      const sent = await publishTo(broker, input, 3);
      const failedOnce = new Set<string>();
      const consumer = new StompConsumer({
        url: broker.url,
        destination: `/queue/${input}`,
        transacted: true,
        retry: fastRetry(3),
        handler: async (message, _tx, context) => {
          await context.publish!([{ topic: output, payload: { input: message.id } }]);
          if (!failedOnce.has(message.id)) {
            failedOnce.add(message.id);
            throw new Error('first run fails after publishing');
          }
        },
      });
      let handled = 0;
      consumer.on('consumer:message:handled', () => handled++);
      try {
        await consumer.start();
        await until(() => handled === 3, 10_000, 'three messages handled');
        await sleep(QUIET_MS);
        const inputs = outputs.frames.map((f) => (JSON.parse(f.body.toString()) as { input: string }).input);
        assert.deepEqual(
          inputs.sort(),
          sent.map((m) => m.id).sort(),
          'one output per input, none from the failed runs',
        );
      } finally {
        await consumer.stop();
        await outputs.close();
      }
      await assertEmpty(broker, `/queue/${input}`);
    });

    it('transacted receive under SIGKILL of the consumer loses no input and duplicates no output at the broker', async (t) => {
      const [input, output] = topicsFor(broker, 2) as [string, string];
      const outputs = await subscribe(broker.url, [`/queue/${output}`]);
      const count = 200;
      const sent = await publishTo(broker, input, count);
      const env = { ...process.env, STOMP_URL: broker.url, IN: `/queue/${input}`, OUT: output };
      const kills = 3;
      /** Outputs at the broker when each kill landed. */
      const progress: number[] = [];
      let child: ChildProcess | undefined;
      try {
        for (let run = 0; run <= kills; run++) {
          child = await startConsumer(env);
          if (run < kills) {
            // Kill it in the middle of its work (ActiveMQ's persistent commits take longer).
            await sleep(100 + Math.random() * 150);
          } else {
            await until(() => outputs.frames.length >= 2 * count, 30_000, `${2 * count} outputs`);
            await sleep(QUIET_MS); // a duplicate would arrive now
          }
          await kill(child);
          child = undefined;
          progress.push(outputs.frames.length);
        }
        t.diagnostic(
          `outputs at the broker when each consumer was killed: ${progress.join(', ')} of ${2 * count}`,
        );
        assert.ok(
          progress.slice(0, kills).some((n) => n > 0 && n < 2 * count),
          'at least one kill landed while inputs were left: the run must exercise a crash mid-stream',
        );
        const seen = new Map<string, number>();
        for (const frame of outputs.frames) {
          const { input: id, n } = JSON.parse(frame.body.toString()) as { input: string; n: number };
          seen.set(`${id}/${n}`, (seen.get(`${id}/${n}`) ?? 0) + 1);
        }
        const duplicated = [...seen].filter(([, times]) => times > 1);
        assert.deepEqual(duplicated, [], 'no output reached the broker twice');
        for (const message of sent) {
          for (const n of [0, 1])
            assert.equal(seen.get(`${message.id}/${n}`), 1, `output ${n} of ${message.id}`);
        }
        assert.equal(outputs.frames.length, 2 * count);
      } finally {
        if (child) await kill(child);
        await outputs.close();
      }
      await assertEmpty(broker, `/queue/${input}`);
    });
  });
}

describe('stomp consumer options', () => {
  it('refuses transacted receive with an inbox, and a dead-letter destination equal to the destination', () => {
    const inbox: ConsumerInbox<undefined> = { consumer: 'x', handle: async () => ({ status: 'duplicate' }) };
    assert.throws(
      () =>
        new StompConsumer({
          url: 'stomp://guest:guest@localhost',
          destination: '/queue/a',
          inbox,
          transacted: true,
          handler: async () => {},
        }),
      (err: unknown) => isConfigError(err) && /cannot be used with an inbox/.test(err.message),
    );
    assert.throws(
      () =>
        new StompConsumer({
          url: 'stomp://guest:guest@localhost',
          destination: '/queue/a',
          deadLetterDestination: '/queue/a',
          handler: async () => {},
        }),
      (err: unknown) => isConfigError(err) && /must differ/.test(err.message),
    );
    assert.throws(
      () =>
        new StompConsumer({
          url: 'stomp://guest:guest@localhost',
          destination: 'a',
          handler: async () => {},
        }),
      (err: unknown) => isConfigError(err) && err.key === 'destination',
    );
  });
});

/** Starts the fixture and resolves once it is subscribed. */
async function startConsumer(env: NodeJS.ProcessEnv): Promise<ChildProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'test/fixtures/stomp-transacted-consumer.ts'], {
    env,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  await new Promise<void>((resolve, reject) => {
    let out = '';
    child.stdout?.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      if (out.includes('started\n')) resolve();
    });
    child.once('exit', (code, signal) => reject(new Error(`the consumer exited early (${code ?? signal})`)));
  });
  return child;
}

async function kill(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGKILL');
  await exited;
}
