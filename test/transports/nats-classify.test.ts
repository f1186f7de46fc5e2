// How publishBatch classifies what the NATS client reports, with a stand-in session: the cases a
// single local server cannot produce on demand (a stream without a leader, JetStream out of
// service, a stream lookup that hangs). The real server's answers are in nats.test.ts.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { isPermanentDeliveryError } from '../../src/core/errors/permanent-delivery-error.js';
import { isTransportError } from '../../src/core/errors/transport-error.js';
import { testMessage } from '../../src/testkit/transport-conformance.js';
import { resolveNatsOptions } from '../../src/transports/nats/nats-options.js';
import { publishBatch } from '../../src/transports/nats/nats-publish.js';
import type { NatsSession } from '../../src/transports/nats/nats-session.js';

const options = resolveNatsOptions({ url: 'nats://127.0.0.1:4222', subjectPrefix: 'p' });

/** Errors shaped as @nats-io/nats-core and @nats-io/jetstream make them. */
function noResponders(subject: string): Error {
  const cause = Object.assign(new Error(`no responders: '${subject}'`), { name: 'NoRespondersError' });
  const request = Object.assign(new Error(cause.message, { cause }), { name: 'RequestError' });
  return Object.assign(new Error('jetstream is not enabled', { cause: request }), {
    name: 'JetStreamNotEnabled',
  });
}

function apiError(code: number, status: number, description: string): Error {
  return Object.assign(new Error(description), { name: 'JetStreamApiError', code, status });
}

function fakeSession(
  publish: (subject: string) => Promise<unknown>,
  names: (subject: string) => Promise<string[] | null>,
): { session: NatsSession; lookups: string[] } {
  const lookups: string[] = [];
  const session = {
    nc: { isClosed: () => false },
    js: { publish: (subject: string) => publish(subject) },
    jsm: {
      streams: {
        names: (subject: string) => ({
          next: () => {
            lookups.push(subject);
            return names(subject);
          },
        }),
      },
    },
    maxPayload: 1024 * 1024,
    ended: new AbortController().signal,
  } as unknown as NatsSession;
  return { session, lookups };
}

describe('nats publish classification', () => {
  it('reports no responders as permanent when no stream captures the subject, unavailable when one does', async () => {
    const { session, lookups } = fakeSession(
      (subject) =>
        subject === 'p.ok'
          ? Promise.resolve({ stream: 'S', seq: 1, duplicate: false })
          : Promise.reject(noResponders(subject)),
      (subject) => Promise.resolve(subject === 'p.leaderless' ? ['ORDERS'] : null),
    );
    const batch = [
      testMessage({ topic: 'ok' }),
      testMessage({ topic: 'missing' }),
      testMessage({ topic: 'leaderless' }),
      testMessage({ topic: 'missing' }),
    ];
    const { outcomes, unanswered } = await publishBatch(session, batch, options, undefined);
    assert.deepEqual(
      outcomes.map((o) => o.status),
      ['ok', 'permanent', 'unavailable', 'permanent'],
    );
    assert.equal(unanswered, false);
    assert.ok(outcomes[1]?.status === 'permanent' && isPermanentDeliveryError(outcomes[1].error));
    const leaderless = outcomes[2];
    assert.ok(leaderless?.status === 'unavailable' && isTransportError(leaderless.error));
    assert.equal(leaderless.error.code, 'stream_unavailable');
    assert.match(leaderless.error.message, /stream "ORDERS".*subject "p\.leaderless"/);
    assert.deepEqual(lookups.sort(), ['p.leaderless', 'p.missing'], 'one lookup per subject and batch');
  });

  it('reports unavailable when the stream lookup fails, and answers at once when the signal aborts during it', async () => {
    const failing = fakeSession(
      (subject) => Promise.reject(noResponders(subject)),
      () => Promise.reject(new Error('timeout')),
    );
    const [failed] = (await publishBatch(failing.session, [testMessage({ topic: 'x' })], options, undefined))
      .outcomes;
    assert.ok(failed?.status === 'unavailable' && isTransportError(failed.error));
    assert.equal(failed.error.code, 'no_responders');

    const hanging = fakeSession(
      (subject) => Promise.reject(noResponders(subject)),
      () => new Promise<never>(() => undefined),
    );
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 50);
    const started = performance.now();
    const [aborted] = (
      await publishBatch(hanging.session, [testMessage({ topic: 'x' })], options, controller.signal)
    ).outcomes;
    assert.ok(performance.now() - started < 2000, 'resolved soon after the abort');
    assert.equal(aborted?.status, 'unavailable');
  });

  it('maps JetStream API errors: max_msg_size permanent, JetStream out of service unavailable, the rest retry', async () => {
    const errors: Record<string, Error> = {
      'p.big': apiError(10054, 400, 'message size exceeds maximum allowed'),
      'p.cluster': apiError(10008, 503, 'JetStream system temporarily unavailable'),
      'p.full': apiError(10077, 503, 'maximum messages exceeded'),
      'p.other': apiError(10999, 500, 'something else'),
      'p.timeout': Object.assign(new Error('timeout'), { name: 'TimeoutError' }),
    };
    const { session } = fakeSession(
      (subject) => Promise.reject(errors[subject] as Error),
      () => Promise.resolve(null),
    );
    const batch = ['big', 'cluster', 'full', 'other', 'timeout'].map((topic) => testMessage({ topic }));
    const { outcomes, unanswered } = await publishBatch(session, batch, options, undefined);
    assert.deepEqual(
      outcomes.map((o) => o.status),
      ['permanent', 'unavailable', 'retry', 'retry', 'unavailable'],
    );
    assert.equal(unanswered, true, 'a PubAck timeout drops the connection');
    const timeout = outcomes[4];
    assert.ok(timeout?.status === 'unavailable' && isTransportError(timeout.error));
    assert.equal(timeout.error.code, 'ack_timeout');
  });
});
