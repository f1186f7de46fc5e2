/**
 * Messages and assertions the transport conformance checks share: test messages, unique topics,
 * outcome checks, and reading back a set of ids from a consumer that may also hold copies and
 * messages the suite did not ask for.
 *
 * @module
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';

import type { PublishOutcome, Transport } from '../core/ports.js';
import type { OutboxMessage } from '../core/types.js';
import { uuidv7 } from '../core/uuid.js';
import type { ConformanceConsumer, ReceivedMessage } from './transport-conformance.js';

let seq = 0;

/** An {@link OutboxMessage} as a store would hand it to a transport, with overridable fields. */
export function testMessage(overrides: Partial<OutboxMessage> = {}): OutboxMessage {
  seq++;
  return {
    seq: String(seq),
    id: uuidv7(),
    topic: 'mailroom.test',
    key: null,
    type: null,
    payload: Buffer.from(JSON.stringify({ n: seq })),
    contentType: 'application/json',
    headers: {},
    createdAt: new Date(),
    attempts: 1,
    ...overrides,
  };
}

/** Topic names unique to one test, so parallel test files and reruns never see each other's messages. */
export function uniqueTopics(count: number): string[] {
  const run = randomBytes(4).toString('hex');
  return Array.from({ length: count }, (_, i) => `conformance.${run}.t${i}`);
}

export function describeOutcome(outcome: PublishOutcome | undefined): string {
  if (outcome === undefined) return 'no outcome';
  return outcome.status === 'ok' ? 'ok' : `${outcome.status} (${outcome.error.message})`;
}

export function assertAllOk(outcomes: PublishOutcome[], count: number): void {
  assert.equal(outcomes.length, count, `expected ${count} outcomes, got ${outcomes.length}`);
  outcomes.forEach((outcome, i) => {
    assert.equal(outcome.status, 'ok', `message ${i} was not confirmed: ${describeOutcome(outcome)}`);
  });
}

/** Each outcome is `ok` or `unavailable` with an Error: what a lost or closed connection may leave. */
export function assertOkOrUnavailable(outcomes: PublishOutcome[], count: number, when: string): void {
  assert.equal(outcomes.length, count, `expected ${count} outcomes ${when}, got ${outcomes.length}`);
  outcomes.forEach((outcome, i) => {
    assert.ok(
      outcome.status === 'ok' || outcome.status === 'unavailable',
      `message ${i} ${when}: expected ok or unavailable (an outage says nothing about the message, ` +
        `so it must not spend an attempt), got ${describeOutcome(outcome)}`,
    );
    if (outcome.status === 'unavailable') {
      assert.ok(outcome.error instanceof Error, `message ${i} ${when}: unavailable without an Error`);
    }
  });
}

export function assertSameMessage(received: ReceivedMessage, sent: OutboxMessage): void {
  assert.equal(received.id, sent.id);
  assert.equal(received.topic, sent.topic, `topic of ${sent.id}`);
  assert.equal(received.key, sent.key, `key of ${sent.id}`);
  assert.ok(
    Buffer.from(received.payload).equals(sent.payload),
    sent.payload.length > 1024
      ? `payload of ${sent.id} differs: sent ${sent.payload.length} bytes, got ${received.payload.length}`
      : `payload of ${sent.id} differs: sent ${sent.payload.toString('hex')}, got ${Buffer.from(received.payload).toString('hex')}`,
  );
  for (const [name, value] of Object.entries(sent.headers)) {
    assert.equal(received.headers[name], value, `header ${JSON.stringify(name)} of ${sent.id}`);
  }
  if (received.type !== undefined) assert.equal(received.type, sent.type, `type of ${sent.id}`);
  if (received.contentType !== undefined) {
    assert.equal(received.contentType, sent.contentType, `content type of ${sent.id}`);
  }
}

/**
 * Reads from `consumer` until every message of `wanted` arrived at least once, and returns the
 * first copy of each. Copies and other messages (ones reported `unavailable` that the broker had
 * after all) may come in between: the count asked of `take` grows by what is still missing, so a
 * message that never arrives ends in `take`'s timeout, reported with the ids still missing.
 */
export async function receiveAll(
  consumer: ConformanceConsumer,
  wanted: readonly OutboxMessage[],
  timeoutMs: number,
  what: string,
): Promise<Map<string, ReceivedMessage>> {
  const ids = new Set(wanted.map((m) => m.id));
  let count = ids.size;
  let seen = new Map<string, ReceivedMessage>();
  for (;;) {
    let received: ReceivedMessage[];
    try {
      received = await consumer.take(count, timeoutMs);
    } catch (err) {
      // Name what is missing: read the messages that did arrive (the largest count `take` answers).
      const arrived = await largestTake(consumer, count);
      const got = new Set(arrived.map((m) => m.id));
      const missing = [...ids].filter((id) => !got.has(id));
      assert.fail(
        `${missing.length} of the ${ids.size} messages ${what} never reached the consumer within ` +
          `${timeoutMs} ms (e.g. ${missing.slice(0, 3).join(', ')}): ${err instanceof Error ? err.message : String(err)}`,
      );
    }
    seen = new Map();
    for (const message of received) if (!seen.has(message.id)) seen.set(message.id, message);
    const missing = [...ids].filter((id) => !seen.has(id)).length;
    if (missing === 0) return seen;
    count = received.length + missing;
  }
}

/** What the consumer holds now: `take` of the largest count under `upTo` it answers at once. */
async function largestTake(consumer: ConformanceConsumer, upTo: number): Promise<ReceivedMessage[]> {
  let best: ReceivedMessage[] = [];
  let lo = 0;
  let hi = upTo;
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    const got = await consumer.take(mid, 50).catch(() => undefined);
    if (got) {
      best = got;
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return best;
}

/** `promise`'s value, or an assertion failure naming `what` when it takes longer than `ms`. */
export async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new assert.AssertionError({ message: `${what}: no answer within ${ms} ms` })),
      ms,
    );
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Resolves after `ms`. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Calls `probe()` as the relay does while a transport is unavailable (each try bounded by a
 * signal, a short pause between tries) until it resolves; fails after `timeoutMs` with the last
 * error. Returns the number of tries.
 */
export async function probeUntilReady(
  transport: Transport,
  timeoutMs: number,
  what: string,
): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  let tries = 0;
  let last: unknown;
  while (Date.now() < deadline) {
    tries++;
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), Math.max(100, Math.min(3000, deadline - Date.now())));
    try {
      await transport.probe({ signal: abort.signal });
      return tries;
    } catch (err) {
      last = err;
    } finally {
      clearTimeout(timer);
    }
    await sleep(100);
  }
  assert.fail(
    `${what}: probe() did not succeed within ${timeoutMs} ms (${tries} tries); last error: ` +
      (last instanceof Error ? last.message : String(last)),
  );
}

/** A loopback port nothing listens on (it was free a moment ago): connecting to it is refused. */
export async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
