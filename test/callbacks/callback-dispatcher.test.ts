import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  CallbackDispatcher,
  generateWebhookSecret,
  type CallbackDispatcherOptions,
  type CallbackPayload,
} from '../../src/callbacks/index.js';
import { isConfigError } from '../../src/core/errors/index.js';
import type { Logger } from '../../src/core/logger.js';
import { waitUntil } from '../helpers/wait.js';
import { MemoryCallbackStore } from './memory-callback-store.js';
import { answer, startReceiver, unusedPort } from './receiver.js';

const SECRET = generateWebhookSecret();

/** Log lines, kept to check what they say and that the secret is never among them. */
function recordingLogger(): Logger & { lines: string[] } {
  const lines: string[] = [];
  const log = (level: string) => (message: string, fields?: Record<string, unknown>) => {
    lines.push(`${level} ${message} ${JSON.stringify(fields ?? {})}`);
  };
  return { lines, debug: log('debug'), info: log('info'), warn: log('warn'), error: log('error') };
}

/** Small delays everywhere, so that retries happen within milliseconds. */
function dispatcher(store: MemoryCallbackStore, options: Partial<CallbackDispatcherOptions> = {}) {
  return new CallbackDispatcher({
    store,
    secret: SECRET,
    pollIntervalMs: 20,
    timeoutMs: 2000,
    retry: { baseDelayMs: 10, maxDelayMs: 40 },
    ...options,
  });
}

/** Lets a running dispatcher go on a little: to see that nothing more happens. */
const settleTime = () => new Promise((resolve) => setTimeout(resolve, 150));

describe('CallbackDispatcher', () => {
  it('POSTs a callback once, signed, as JSON, and marks it delivered on a 2xx', async () => {
    const receiver = await startReceiver(SECRET, (_n, _req, res) => answer(res, 204));
    const store = new MemoryCallbackStore();
    const logger = recordingLogger();
    const callback = store.add({
      url: receiver.url,
      event: 'acknowledged',
      topic: 'payment.requested',
      // A detail cannot override the ids.
      detail: { consumer: 'billing', result: { invoice: 'F-1' }, id: 'spoofed' },
    });
    const d = dispatcher(store, { logger });
    try {
      d.start();
      await waitUntil(() => store.get(callback.id).state === 'delivered', 'the callback delivered');
      await settleTime();
    } finally {
      await d.stop();
      await receiver.close();
    }
    assert.equal(receiver.received.length, 1);
    const [request] = receiver.received;
    assert.ok(request);
    assert.equal(request.method, 'POST');
    assert.equal(request.path, '/hooks');
    assert.equal(request.verified, true);
    assert.equal(request.headers['webhook-id'], callback.id);
    assert.equal(request.headers['content-type'], 'application/json');
    assert.equal(request.headers['user-agent'], 'mailroom');
    assert.ok(Math.abs(Number(request.headers['webhook-timestamp']) - Date.now() / 1000) < 10);
    const payload = JSON.parse(request.body) as CallbackPayload;
    assert.deepEqual(payload, {
      type: 'message.acknowledged',
      timestamp: callback.occurredAt.toISOString(),
      data: {
        id: callback.messageId,
        topic: 'payment.requested',
        event: 'acknowledged',
        consumer: 'billing',
        result: { invoice: 'F-1' },
      },
    });
    assert.equal(store.get(callback.id).attempts, 1);
    assert.deepEqual(
      store.settlements.map((s) => s.delivered),
      [[callback.id]],
    );
    assert.ok(!logger.lines.join('\n').includes(SECRET.slice(6)), 'the secret appears in a log line');
  });

  it('retries a 500 with the same webhook-id and a new signature, then delivers on the 200', async () => {
    const receiver = await startReceiver(SECRET, (n, _req, res) =>
      n === 1 ? answer(res, 500, 'database down') : answer(res, 200, 'ok'),
    );
    const store = new MemoryCallbackStore();
    const callback = store.add({ url: receiver.url });
    const retries: Array<{ error: string; delayMs: number }> = [];
    const d = dispatcher(store);
    d.on('callback:retry', ({ error, delayMs }) => retries.push({ error, delayMs }));
    try {
      d.start();
      await waitUntil(() => store.get(callback.id).state === 'delivered', 'the callback delivered');
    } finally {
      await d.stop();
      await receiver.close();
    }
    assert.equal(receiver.received.length, 2);
    assert.deepEqual(
      receiver.received.map((r) => r.headers['webhook-id']),
      [callback.id, callback.id],
    );
    assert.ok(receiver.received.every((r) => r.verified === true));
    assert.equal(
      receiver.received[0]?.body,
      receiver.received[1]?.body,
      'the body is the same on every attempt',
    );
    assert.equal(store.get(callback.id).attempts, 2);
    assert.equal(retries.length, 1);
    assert.match(
      retries[0]?.error ?? '',
      new RegExp(`POST ${receiver.url} answered 500 Internal Server Error: database down`),
    );
    assert.ok(
      (retries[0]?.delayMs ?? -1) >= 0 && (retries[0]?.delayMs ?? 99) <= 10,
      'first delay within the base',
    );
    assert.match(store.get(callback.id).lastError ?? '', /answered 500/);
  });

  it('makes a callback dead at once on a 404, without retrying', async () => {
    const receiver = await startReceiver(SECRET, (_n, _req, res) => answer(res, 404, 'no such hook'));
    const store = new MemoryCallbackStore();
    const callback = store.add({ url: receiver.url });
    const d = dispatcher(store);
    try {
      d.start();
      await waitUntil(() => store.get(callback.id).state === 'dead', 'the callback dead');
      await settleTime();
    } finally {
      await d.stop();
      await receiver.close();
    }
    assert.equal(receiver.received.length, 1);
    const error = store.get(callback.id).lastError ?? '';
    assert.match(error, new RegExp(`POST ${receiver.url} answered 404 Not Found: no such hook`));
    assert.match(error, /not retried/);
  });

  it('retries 408, 429 (no sooner than its Retry-After, up to maxDelayMs) and 503 like a 5xx', async () => {
    const statuses = [408, 429, 503];
    const receiver = await startReceiver(SECRET, (n, _req, res) => {
      const status = statuses[n - 1];
      if (status === 429) answer(res, 429, '', { 'retry-after': '1' });
      else answer(res, status ?? 200);
    });
    const store = new MemoryCallbackStore();
    const callback = store.add({ url: receiver.url });
    const delays: number[] = [];
    const d = dispatcher(store);
    d.on('callback:retry', ({ delayMs }) => delays.push(delayMs));
    try {
      d.start();
      await waitUntil(() => store.get(callback.id).state === 'delivered', 'the callback delivered');
    } finally {
      await d.stop();
      await receiver.close();
    }
    assert.equal(receiver.received.length, 4);
    assert.deepEqual(
      store.settlements.map((s) => s.retry.length),
      [1, 1, 1, 0],
    );
    // The 429's Retry-After (1 s) wins over the backoff (at most 20 ms on attempt 2), up to
    // retry.maxDelayMs (40 ms).
    assert.equal(delays[1], 40);
  });

  it('retries a POST that times out', async () => {
    const receiver = await startReceiver(SECRET, (n, _req, res) => {
      // The first answer comes after the deadline (the close at the end ends it if need be).
      if (n === 1) setTimeout(() => answer(res, 200), 600).unref();
      else answer(res, 200);
    });
    const store = new MemoryCallbackStore();
    const callback = store.add({ url: receiver.url });
    const d = dispatcher(store, { timeoutMs: 150 });
    try {
      d.start();
      await waitUntil(() => store.get(callback.id).state === 'delivered', 'the callback delivered');
    } finally {
      await d.stop();
      await receiver.close();
    }
    assert.equal(receiver.received.length, 2);
    assert.equal(store.settlements[0]?.retry[0]?.error, `POST ${receiver.url} timed out after 150 ms`);
  });

  it('retries an unreachable receiver until maxAttempts, then makes it dead, with the URL redacted', async () => {
    const port = await unusedPort();
    const store = new MemoryCallbackStore();
    const callback = store.add({ url: `http://user:hunter2@127.0.0.1:${port}/hooks?token=abc123&x=1` });
    const d = dispatcher(store, { maxAttempts: 3 });
    try {
      d.start();
      await waitUntil(() => store.get(callback.id).state === 'dead', 'the callback dead');
    } finally {
      await d.stop();
    }
    const stored = store.get(callback.id);
    assert.equal(stored.attempts, 3);
    assert.deepEqual(
      store.settlements.map((s) => [s.retry.length, s.dead.length]),
      [
        [1, 0],
        [1, 0],
        [0, 1],
      ],
    );
    const error = stored.lastError ?? '';
    assert.match(
      error,
      /^gave up after 3 attempts: POST http:\/\/user:\*\*\*@127\.0\.0\.1:\d+\/hooks\?token=\*\*\*&x=1 failed: /,
    );
    assert.match(error, /ECONNREFUSED/);
    assert.ok(!error.includes('hunter2') && !error.includes('abc123'), error);
  });

  it('sends credentials in the URL as Basic authorization, not in the request line', async () => {
    const receiver = await startReceiver(SECRET, (_n, _req, res) => answer(res, 200));
    const store = new MemoryCallbackStore();
    const callback = store.add({ url: receiver.url.replace('http://', 'http://hook:s%40cret@') });
    const d = dispatcher(store);
    try {
      d.start();
      await waitUntil(() => store.get(callback.id).state === 'delivered', 'the callback delivered');
    } finally {
      await d.stop();
      await receiver.close();
    }
    assert.equal(
      receiver.received[0]?.headers.authorization,
      `Basic ${Buffer.from('hook:s@cret').toString('base64')}`,
    );
  });

  it('does not follow a redirect: the attempt failed, and says so', async () => {
    const receiver = await startReceiver(SECRET, (_n, request, res) =>
      request.path === '/hooks'
        ? answer(res, 302, '', { location: '/elsewhere?secret=zzz' })
        : answer(res, 200),
    );
    const store = new MemoryCallbackStore();
    const callback = store.add({ url: receiver.url });
    const d = dispatcher(store, { maxAttempts: 2 });
    try {
      d.start();
      await waitUntil(() => store.get(callback.id).state === 'dead', 'the callback dead');
    } finally {
      await d.stop();
      await receiver.close();
    }
    assert.deepEqual(
      receiver.received.map((r) => r.path),
      ['/hooks', '/hooks'],
    );
    const error = store.get(callback.id).lastError ?? '';
    assert.match(
      error,
      new RegExp(
        `answered 302 Found to http://127\\.0\\.0\\.1:${receiver.port}/elsewhere\\?secret=\\*\\*\\*: redirects are not followed`,
      ),
    );
  });

  it('keeps running when claims and settles fail, and reports them', async () => {
    const receiver = await startReceiver(SECRET, (_n, _req, res) => answer(res, 200));
    const store = new MemoryCallbackStore();
    store.failClaims = 2;
    store.failSettles = 1;
    const callback = store.add({ url: receiver.url });
    const errors: string[] = [];
    const d = dispatcher(store);
    d.on('callback:error', ({ phase }) => errors.push(phase));
    try {
      d.start();
      await waitUntil(() => store.get(callback.id).state === 'delivered', 'the callback delivered');
      assert.ok(d.running);
    } finally {
      await d.stop();
      await receiver.close();
    }
    assert.deepEqual(errors, ['claim', 'claim', 'settle']);
    assert.equal(receiver.received.length, 1, 'the settle was retried, not the POST');
  });

  it('POSTs at most `concurrency` callbacks at once', async () => {
    let open = 0;
    let most = 0;
    const receiver = await startReceiver(SECRET, (_n, _req, res) => {
      open++;
      most = Math.max(most, open);
      setTimeout(() => {
        open--;
        answer(res, 200);
      }, 30).unref();
    });
    const store = new MemoryCallbackStore();
    const callbacks = Array.from({ length: 9 }, () => store.add({ url: receiver.url }));
    const d = dispatcher(store, { concurrency: 3, batchSize: 10 });
    try {
      d.start();
      await waitUntil(
        () => callbacks.every((c) => store.get(c.id).state === 'delivered'),
        'every callback delivered',
      );
    } finally {
      await d.stop();
      await receiver.close();
    }
    assert.equal(receiver.received.length, 9);
    assert.ok(most <= 3, `${most} POSTs at once`);
    assert.ok(store.settlements.every((s) => s.delivered.length <= 3));
  });

  it('stop() waits for the POSTs in flight and their settle', async () => {
    const receiver = await startReceiver(SECRET, (_n, _req, res) => {
      setTimeout(() => answer(res, 200), 300).unref();
    });
    const store = new MemoryCallbackStore();
    const callback = store.add({ url: receiver.url });
    const d = dispatcher(store);
    try {
      d.start();
      await waitUntil(() => receiver.received.length === 1, 'the POST received');
      assert.equal(d.inFlight, 1);
      await d.stop();
      assert.equal(d.running, false);
      // Settled before stop() returned, not after.
      assert.equal(store.get(callback.id).state, 'delivered');
      assert.throws(() => d.start(), /stopped/);
    } finally {
      await d.stop();
      await receiver.close();
    }
  });

  it('stop() aborts POSTs still waiting at its deadline and settles them as due again', async () => {
    const receiver = await startReceiver(SECRET, () => {
      // Never answers; the receiver's close ends the connection.
    });
    const store = new MemoryCallbackStore();
    const callback = store.add({ url: receiver.url });
    const d = dispatcher(store, { shutdownTimeoutMs: 100, timeoutMs: 5000 });
    try {
      d.start();
      await waitUntil(() => receiver.received.length === 1, 'the POST received');
      await d.stop();
    } finally {
      await receiver.close();
    }
    const stored = store.get(callback.id);
    assert.equal(stored.state, 'pending');
    assert.equal(stored.lease, null);
    assert.deepEqual(
      store.settlements.at(-1)?.retry.map((r) => r.delayMs),
      [0],
    );
    assert.match(stored.lastError ?? '', /dispatcher stopped/);
  });

  it('stops when its signal aborts', async () => {
    const store = new MemoryCallbackStore();
    const abort = new AbortController();
    const d = dispatcher(store, { signal: abort.signal });
    d.start();
    assert.equal(d.running, true);
    abort.abort();
    await waitUntil(() => !d.running, 'the dispatcher stopped');
    await d.stop();
  });

  it('wakes for a callback that comes due, without waiting for the poll', async () => {
    const receiver = await startReceiver(SECRET, (_n, _req, res) => answer(res, 200));
    const store = new MemoryCallbackStore();
    const d = dispatcher(store, { pollIntervalMs: 60_000 });
    try {
      d.start();
      await settleTime();
      const callback = store.add({ url: receiver.url });
      d.wake();
      await waitUntil(() => store.get(callback.id).state === 'delivered', 'the callback delivered', 2000);
      // A retry due in 50 ms: the idle wait asks the store when the next one is due.
      const later = store.add({ url: receiver.url, delayMs: 50 });
      d.wake();
      await waitUntil(
        () => store.get(later.id).state === 'delivered',
        'the delayed callback delivered',
        2000,
      );
    } finally {
      await d.stop();
      await receiver.close();
    }
  });

  it('refuses a short secret, an unknown option and a lease no longer than the timeout', () => {
    const store = new MemoryCallbackStore();
    assert.throws(
      () => new CallbackDispatcher({ store, secret: 'too-short' }),
      (err: unknown) =>
        isConfigError(err) &&
        err.key === 'secret' &&
        /under the minimum of 16/.test(err.message) &&
        !err.message.includes('too-short'),
    );
    assert.throws(
      () => new CallbackDispatcher({ store, secret: SECRET, timeout: 5 } as CallbackDispatcherOptions),
      (err: unknown) => isConfigError(err) && /unknown CallbackDispatcher option "timeout"/.test(err.message),
    );
    assert.throws(
      () => new CallbackDispatcher({ store, secret: SECRET, timeoutMs: 20_000, leaseMs: 20_000 }),
      (err: unknown) => isConfigError(err) && err.key === 'leaseMs',
    );
    assert.throws(
      () => new CallbackDispatcher({ store, secret: SECRET, retry: { baseDelayMs: 5000, maxDelayMs: 10 } }),
      (err: unknown) => isConfigError(err) && err.key === 'retry.maxDelayMs',
    );
    const d = new CallbackDispatcher({ store, secret: SECRET });
    assert.equal(d.options.leaseMs, 30_000);
    assert.equal(d.options.maxAttempts, 10);
    assert.equal(d.options.timeoutMs, 10_000);
    assert.ok(!JSON.stringify(d.options).includes(SECRET.slice(6)));
  });
});
