/**
 * Conformance checks about single messages on a healthy broker: a republished id, payloads at the
 * size limit, a message the broker refuses among good ones, and unusual header names and values.
 * Registered by `runTransportConformance`; see `TransportConformanceOptions` for the options they
 * use.
 *
 * @module
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { it } from 'node:test';

import { isPermanentDeliveryError } from '../core/errors/permanent-delivery-error.js';
import {
  assertAllOk,
  assertSameMessage,
  describeOutcome,
  receiveAll,
  testMessage,
  uniqueTopics,
} from './conformance-support.js';
import type { ConformanceConsumer, ConformanceContext, ReceivedMessage } from './transport-conformance.js';

/**
 * How long the duplicate check waits for a second copy a deduplicating broker must not deliver.
 * Not a speed bound: a copy arriving later than this goes unnoticed, nothing fails.
 */
const NO_COPY_WAIT_MS = 1000;

/**
 * The headers of the header check: names with dashes, dots, underscores and digits (lower case,
 * as HTTP folds case), and values a message may carry (`encodeMessage` refuses only NUL, CR and
 * LF): unicode, 4 KiB long, empty, with leading and trailing spaces, a tab, punctuation. Every
 * one must come back unchanged in `ReceivedMessage.headers`; a transport whose wire cannot carry
 * some of them as they are encodes them and its test's consumer decodes them.
 */
export const UNUSUAL_HEADERS: Readonly<Record<string, string>> = Object.freeze({
  'x-dash-name': 'plain',
  'x.dot.name': 'dotted',
  x_under_score: 'under',
  'x-1.2_3': 'mixed 1.2_3',
  'x-unicode': 'Grüße, 日本語, עברית, emoji 🚀👍🏽',
  'x-long': 'L'.repeat(4096),
  'x-empty': '',
  'x-spaces': '  leading and trailing  ',
  'x-tab': 'a\tb',
  'x-punctuation': 'a:b;c=d,e "quoted" \\back\\slash/ ?&%20+',
  'x-json': '{"a":[1,2],"b":"c"}',
});

export function registerMessageChecks(context: ConformanceContext): void {
  const { options, timeoutMs } = context;
  const consume = options.consume;

  it('takes a republish of the same id (a publish again after a lost confirm): both ok, and one copy or two arrive as the broker dedupes or not', async () => {
    const topics = uniqueTopics(1);
    const topic = topics[0] as string;
    await context.withTransport(topics, async (transport, consumer) => {
      const first = testMessage({ topic, key: 'dup-key' });
      assertAllOk(await transport.publish([first]), 1);
      const again = { ...first, attempts: 2 };
      const next = testMessage({ topic, key: 'dup-key' });
      assertAllOk(await transport.publish([again, next]), 2);
      if (!consumer) return;
      if (options.dedupes === true) {
        const received = await consumer.take(2, timeoutMs);
        assert.deepEqual(
          received.map((m) => m.id).sort(),
          [first.id, next.id].sort(),
          'a deduplicating broker (dedupes: true) delivers the republished message once, then the next',
        );
        const extra = await consumer.take(3, NO_COPY_WAIT_MS).then(
          (all) => all[2],
          () => undefined,
        );
        assert.equal(
          extra,
          undefined,
          `a third message arrived: ${extra?.id} (dedupes: true says it should not)`,
        );
      } else {
        const received = await consumer.take(3, timeoutMs);
        const copies = received.filter((m) => m.id === first.id);
        assert.equal(
          copies.length,
          2,
          'both copies of the republished id must arrive when the broker does not dedupe (if it does, ' +
            'pass dedupes: true)',
        );
        for (const copy of copies) assertSameMessage(copy, first);
        assert.ok(
          received.some((m) => m.id === next.id),
          'the message after the republish was not received',
        );
      }
    });
  });

  it('delivers a payload of exactly maxPayloadBytes intact and reports one a byte larger permanent, failing only that message', async (t) => {
    const limit = options.maxPayloadBytes;
    if (limit === undefined) {
      t.skip('no maxPayloadBytes given: the transport has no payload limit to test');
      return;
    }
    const topics = uniqueTopics(1);
    const topic = topics[0] as string;
    await context.withTransport(topics, async (transport, consumer) => {
      const atLimit = testMessage({
        topic,
        payload: randomBytes(limit),
        contentType: 'application/octet-stream',
      });
      const over = testMessage({
        topic,
        payload: randomBytes(limit + 1),
        contentType: 'application/octet-stream',
      });
      const small = testMessage({ topic });
      const outcomes = await transport.publish([atLimit, over, small]);
      assert.equal(outcomes.length, 3);
      assert.equal(
        outcomes[0]?.status,
        'ok',
        `a payload of exactly ${limit} bytes (the limit) must be published: ${describeOutcome(outcomes[0])}`,
      );
      const failed = outcomes[1];
      assert.ok(
        failed?.status === 'permanent' && isPermanentDeliveryError(failed.error),
        `a payload of ${limit + 1} bytes (one over the limit) must report permanent with a ` +
          `PermanentDeliveryError, got ${describeOutcome(failed)}`,
      );
      assert.equal(
        outcomes[2]?.status,
        'ok',
        `the message after the oversized one: ${describeOutcome(outcomes[2])}`,
      );
      if (consumer) {
        const received = await receiveAll(consumer, [atLimit, small], timeoutMs, 'reported ok');
        assertSameMessage(received.get(atLimit.id) as ReceivedMessage, atLimit);
        assertSameMessage(received.get(small.id) as ReceivedMessage, small);
      }
    });
  });

  it('fails only the message the broker refuses (permanent or retry), and publishes the others of its batch', async (t) => {
    const refused = options.refusedMessage;
    if (refused === undefined) {
      t.skip('no refusedMessage given: no message this broker refuses on its own is known');
      return;
    }
    const topics = uniqueTopics(2);
    const [topic, refusedTopic] = topics as [string, string];
    await context.withTransport([topic], async (transport, consumer) => {
      const before = [testMessage({ topic, key: 'a' }), testMessage({ topic, key: 'b' })];
      const bad = refused(refusedTopic);
      const after = [testMessage({ topic, key: 'c' }), testMessage({ topic })];
      const outcomes = await transport.publish([...before, bad, ...after]);
      assert.equal(outcomes.length, 5);
      const failed = outcomes[2];
      assert.ok(
        failed?.status === 'permanent' || failed?.status === 'retry',
        `the refused message must report permanent or retry (a message failure, not an outage), got ${describeOutcome(failed)}`,
      );
      if (failed.status === 'permanent') {
        assert.ok(
          isPermanentDeliveryError(failed.error),
          `permanent without a PermanentDeliveryError: ${failed.error.name}`,
        );
      }
      for (const i of [0, 1, 3, 4]) {
        assert.equal(
          outcomes[i]?.status,
          'ok',
          `message ${i} of the batch (not the refused one): ${describeOutcome(outcomes[i])}`,
        );
      }
      if (consumer)
        await receiveAll(consumer, [...before, ...after], timeoutMs, 'reported ok beside the refused one');
    });
  });

  it('delivers header names with dashes, dots and underscores, and unicode, long, empty and spaced values unchanged', async (t) => {
    if (!consume) {
      t.skip('no consumer given: headers cannot be read back');
      return;
    }
    const topics = uniqueTopics(1);
    const topic = topics[0] as string;
    await context.withTransport(topics, async (transport, consumer) => {
      const sent = testMessage({ topic, key: 'headers', headers: { ...UNUSUAL_HEADERS } });
      // Each header alone as well: one the transport mangles is then named by its own failure.
      const single = Object.entries(UNUSUAL_HEADERS).map(([name, value]) =>
        testMessage({ topic, headers: { [name]: value } }),
      );
      const batch = [sent, ...single];
      assertAllOk(await transport.publish(batch), batch.length);
      const received = await receiveAll(
        consumer as ConformanceConsumer,
        batch,
        timeoutMs,
        'with unusual headers',
      );
      const wrong: string[] = [];
      for (const message of batch) {
        const got = received.get(message.id);
        for (const [name, value] of Object.entries(message.headers)) {
          const value2 = got?.headers[name];
          if (value2 !== value) {
            wrong.push(
              `${JSON.stringify(name)}: sent ${JSON.stringify(value.length > 60 ? `${value.slice(0, 60)}… (${value.length})` : value)}, ` +
                `got ${value2 === undefined ? 'nothing' : JSON.stringify(value2.length > 60 ? `${value2.slice(0, 60)}… (${value2.length})` : value2)}`,
            );
          }
        }
      }
      assert.deepEqual([...new Set(wrong)], [], 'headers that did not arrive unchanged');
      assertSameMessage(received.get(sent.id) as ReceivedMessage, sent);
    });
  });
}
