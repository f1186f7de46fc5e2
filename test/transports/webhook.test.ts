// The webhook transport against real local HTTP servers: the conformance suite with
// createWebhookReceiver as the consumer, and the transport's own behaviour (headers, URL template,
// status classification, Retry-After, outages, deadlines, concurrency, batches, options).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import type { Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { generateWebhookSecret, verifyWebhook } from '../../src/callbacks/index.js';
import { isConfigError } from '../../src/core/errors/config-error.js';
import { isPermanentDeliveryError } from '../../src/core/errors/permanent-delivery-error.js';
import { isTransportError } from '../../src/core/errors/transport-error.js';
import type { PublishOutcome } from '../../src/core/ports.js';
import { runTransportConformance, testMessage } from '../../src/testkit/transport-conformance.js';
import {
  createWebhookReceiver,
  batchWebhookId,
  decodeWebhookRequest,
  parseRetryAfter,
  WebhookTransport,
  type WebhookTransportOptions,
} from '../../src/transports/webhook/index.js';
import {
  closedPort,
  listen,
  REFUSE_HEADER,
  startReceiver,
  startScripted,
  type TestReceiver,
} from './webhook-helpers.js';

const SECRET = generateWebhookSecret();

function statuses(outcomes: PublishOutcome[]): string[] {
  return outcomes.map((o) => o.status);
}

function codeOf(outcome: PublishOutcome | undefined): string | undefined {
  if (outcome === undefined || outcome.status === 'ok') return undefined;
  return isTransportError(outcome.error) ? outcome.error.code : outcome.error.name;
}

function errorOf(outcome: PublishOutcome | undefined): Error {
  assert.ok(outcome && outcome.status !== 'ok', 'expected a failed outcome');
  return outcome.error;
}

let receiver: TestReceiver;
const opened: WebhookTransport[] = [];

function transport(options: Partial<WebhookTransportOptions> & { url?: string } = {}): WebhookTransport {
  const t = new WebhookTransport({ url: `${receiver.url}/hooks/{topic}`, secret: SECRET, ...options });
  opened.push(t);
  return t;
}

before(async () => {
  receiver = await startReceiver({ secret: SECRET, maxBodyBytes: 4 * 1024 * 1024 });
});
after(async () => {
  await Promise.all(opened.map((t) => t.close()));
  await receiver.close();
});

const LIMIT = 256 * 1024;

// concurrency 1 for the per-message run: the suite's first check ("publishes a batch and reports
// ok for each message, in order") expects 20 keyless messages to ARRIVE in array order, which the
// Transport contract does not promise for a transport without `ordering` (keyless messages are
// unordered); with POSTs side by side they arrive in any order. Reported for the suite to compare
// arrival order only for `ordering: true` transports. The default concurrency is tested below
// ("keeps at most `concurrency` POSTs in flight…"), and batch mode runs the suite with defaults.
for (const batch of [false, true]) {
  const tuning = { batch, maxBodyBytes: LIMIT, ...(batch ? {} : { concurrency: 1 }) };
  runTransportConformance(batch ? 'webhook (batch)' : 'webhook', {
    create: async () => transport(tuning),
    consume: async (_t, topics) => receiver.consumer(topics),
    proxy: {
      broker: () => ({ port: receiver.port }),
      createThrough: async ({ host, port }) =>
        transport({ url: `http://${host}:${port}/hooks/{topic}`, ...tuning }),
    },
    // The receiver remembers the message ids it handled and does not hand a copy on again.
    dedupes: true,
    // Per message only: in a batch, the endpoint's answer is every message's outcome, and the
    // limit bounds the batch's JSON, not the payload.
    ...(batch
      ? {}
      : {
          refusedMessage: (topic: string) => testMessage({ topic, headers: { [REFUSE_HEADER]: 'yes' } }),
          maxPayloadBytes: LIMIT,
        }),
  });
}

describe('webhook transport', () => {
  it('POSTs each message signed, with the mailroom-* headers, the content type and the headers as written', async () => {
    const server = await startScripted(() => ({ status: 204 }));
    const t = transport({ url: `${server.url}/in/{topic}?key={key}&type={type}` });
    try {
      const createdAt = new Date('2024-05-06T07:08:09.500Z');
      const message = testMessage({
        topic: 'orders/créées',
        key: 'k 1&2',
        type: 'order.created',
        createdAt,
        attempts: 3,
        headers: {
          traceparent: '00-abc-def-01',
          'X-Tenant': 'äöü ✓',
          'x-padded': '  a  ',
          'x-lines': 'a\nb',
          'mailroom-key': 'forged',
        },
      });
      assert.deepEqual(statuses(await t.publish([message])), ['ok']);
      const [got] = server.requests;
      assert.ok(got);
      assert.equal(got.method, 'POST');
      assert.equal(got.path, '/in/orders%2Fcr%C3%A9%C3%A9es?key=k%201%262&type=order.created');
      const h = got.headers;
      assert.equal(h['content-type'], 'application/json');
      assert.equal(h['webhook-id'], message.id);
      assert.equal(h['mailroom-id'], message.id);
      assert.equal(h['mailroom-topic'], encodeURIComponent('orders/créées'));
      assert.equal(
        h['mailroom-key'],
        'k%201%262',
        'the transport sets the key; a user header cannot forge it',
      );
      assert.equal(h['mailroom-type'], 'order.created');
      assert.equal(h['mailroom-attempt'], '3');
      assert.equal(h['mailroom-created-at'], '2024-05-06T07:08:09.500Z');
      assert.equal(h['traceparent'], '00-abc-def-01', 'a plain value goes as it is');
      assert.equal(h['mailroom-headers'], 'traceparent,X-Tenant,x-padded,x-lines');
      assert.equal(h['mailroom-headers-encoded'], 'x-tenant,x-padded,x-lines');
      assert.ok(got.body.equals(message.payload));
      // The signature verifies over the raw body with the shared secret.
      const verified = verifyWebhook({ secret: SECRET, headers: h, body: got.body });
      assert.equal(verified.id, message.id);
      // Decoding gives the message back exactly.
      const [decoded] = decodeWebhookRequest(h, got.body);
      assert.ok(decoded);
      assert.equal(decoded.topic, 'orders/créées');
      assert.equal(decoded.key, 'k 1&2');
      assert.equal(decoded.attempt, 3);
      assert.deepEqual(decoded.createdAt, createdAt);
      assert.deepEqual(decoded.headers, {
        traceparent: '00-abc-def-01',
        'X-Tenant': 'äöü ✓',
        'x-padded': '  a  ',
        'x-lines': 'a\nb',
      });
    } finally {
      await t.close();
      await server.close();
    }
  });

  it('signs with every secret during a key rotation', async () => {
    const older = generateWebhookSecret();
    const server = await startScripted(() => ({ status: 200 }));
    const t = transport({ url: `${server.url}/x`, secret: [SECRET, older] });
    try {
      assert.deepEqual(statuses(await t.publish([testMessage()])), ['ok']);
      const [got] = server.requests;
      assert.ok(got);
      assert.equal(String(got.headers['webhook-signature']).split(' ').length, 2);
      for (const secret of [SECRET, older]) verifyWebhook({ secret, headers: got.headers, body: got.body });
      assert.throws(
        () => verifyWebhook({ secret: generateWebhookSecret(), headers: got.headers, body: got.body }),
        (err: Error) => err.name === 'WebhookVerificationError',
      );
    } finally {
      await t.close();
      await server.close();
    }
  });

  it('classifies answers: 2xx ok, 4xx permanent except 408 and 429, 5xx and redirects retry', async () => {
    const byPath: Record<string, number> = {
      '/200': 200,
      '/201': 201,
      '/204': 204,
      '/400': 400,
      '/401': 401,
      '/404': 404,
      '/410': 410,
      '/413': 413,
      '/408': 408,
      '/429': 429,
      '/500': 500,
      '/502': 502,
      '/503': 503,
      '/504': 504,
      '/302': 302,
    };
    const server = await startScripted((r) => ({
      status: byPath[r.path] ?? 599,
      body: `said ${r.path}`,
      headers: r.path === '/302' ? { location: 'https://elsewhere.example/x' } : {},
    }));
    const t = transport({ url: `${server.url}/{topic}` });
    try {
      const paths = Object.keys(byPath);
      const outcomes = await t.publish(paths.map((p) => testMessage({ topic: p.slice(1) })));
      const got = Object.fromEntries(paths.map((p, i) => [p, outcomes[i]?.status]));
      assert.deepEqual(got, {
        '/200': 'ok',
        '/201': 'ok',
        '/204': 'ok',
        '/400': 'permanent',
        '/401': 'permanent',
        '/404': 'permanent',
        '/410': 'permanent',
        '/413': 'permanent',
        '/408': 'retry',
        '/429': 'retry',
        '/500': 'retry',
        '/502': 'retry',
        '/503': 'retry',
        '/504': 'retry',
        '/302': 'retry',
      });
      const notFound = errorOf(outcomes[paths.indexOf('/404')]);
      assert.ok(isPermanentDeliveryError(notFound));
      assert.match(notFound.message, /answered 404 Not Found: said \/404/);
      const redirect = outcomes[paths.indexOf('/302')];
      assert.equal(codeOf(redirect), 'redirect');
      assert.match(errorOf(redirect).message, /elsewhere\.example.*redirects are not followed/);
      assert.equal(codeOf(outcomes[paths.indexOf('/500')]), 'http_status');
      assert.equal(t.pausedUntil, undefined, 'no Retry-After, no pause');
    } finally {
      await t.close();
      await server.close();
    }
  });

  it('honours Retry-After on a 503 as an outage: unavailable, and nothing is sent until then', async () => {
    let down = true;
    const server = await startScripted(() =>
      down ? { status: 503, headers: { 'retry-after': '1' }, body: 'maintenance' } : { status: 200 },
    );
    const t = transport({ url: `${server.url}/in` });
    try {
      // One key: one POST after another, so the second finds the endpoint paused.
      const outcomes = await t.publish([
        testMessage({ key: 'k' }),
        testMessage({ key: 'k' }),
        testMessage({ key: 'k' }),
      ]);
      assert.deepEqual(statuses(outcomes), ['unavailable', 'unavailable', 'unavailable']);
      assert.equal(codeOf(outcomes[0]), 'endpoint_unavailable');
      // Later messages of the call were not even sent: the endpoint is down as a whole.
      assert.equal(server.requests.length, 1);
      assert.ok(t.pausedUntil, 'paused');
      down = false;
      const during = await t.publish([testMessage()]);
      assert.equal(codeOf(during[0]), 'endpoint_paused');
      assert.equal(server.requests.length, 1, 'nothing POSTed during the pause');
      await assert.rejects(
        t.probe(),
        (err: Error) => isTransportError(err) && err.code === 'endpoint_paused',
      );
      await new Promise((r) => setTimeout(r, 1100));
      await t.probe();
      assert.deepEqual(statuses(await t.publish([testMessage()])), ['ok']);
    } finally {
      await t.close();
      await server.close();
    }
  });

  it('honours Retry-After on a 429: that message retries, the endpoint pauses; an HTTP date counts too', async () => {
    const server = await startScripted(() => ({
      status: 429,
      headers: { 'retry-after': new Date(Date.now() + 30_000).toUTCString() },
    }));
    const t = transport({ url: `${server.url}/in`, maxRetryAfterMs: 5_000 });
    try {
      const [first, second] = await t.publish([testMessage({ key: 'a' }), testMessage({ key: 'b' })]);
      const statusesSeen = [first?.status, second?.status].sort();
      // One was sent and answered 429 (retry); whichever came second found the endpoint paused.
      assert.ok(statusesSeen.includes('retry'));
      const paused = t.pausedUntil;
      assert.ok(paused);
      assert.ok(paused.getTime() - Date.now() <= 5_000, 'capped by maxRetryAfterMs');
      assert.ok(paused.getTime() - Date.now() > 3_000);
    } finally {
      await t.close();
      await server.close();
    }
    assert.equal(parseRetryAfter('120', 0), 120_000);
    assert.equal(parseRetryAfter('Thu, 01 Jan 1970 00:00:10 GMT', 0), 10_000);
    assert.equal(parseRetryAfter('soon', 0), undefined);
    assert.equal(parseRetryAfter(undefined), undefined);
  });

  it('reports unavailable and throws from probe and start when nothing listens', async () => {
    const port = await closedPort();
    const t = transport({ url: `http://user:hunter2@127.0.0.1:${port}/in/{topic}` });
    const outcomes = await t.publish([testMessage(), testMessage({ key: 'k' })]);
    assert.deepEqual(statuses(outcomes), ['unavailable', 'unavailable']);
    assert.equal(codeOf(outcomes[0]), 'unreachable');
    assert.match(errorOf(outcomes[0]).message, /ECONNREFUSED/);
    assert.doesNotMatch(errorOf(outcomes[0]).message, /hunter2/);
    await assert.rejects(t.probe(), (err: Error) => {
      assert.ok(isTransportError(err));
      assert.equal(err.code, 'unreachable');
      assert.match(err.message, new RegExp(`127\\.0\\.0\\.1:${port}`));
      assert.doesNotMatch(err.message, /hunter2/);
      return true;
    });
    await assert.rejects(t.start(), (err: Error) => isTransportError(err) && err.code === 'unreachable');
    await t.close();
  });

  it('reports unavailable for a host name that does not resolve', async () => {
    const t = transport({ url: 'http://mailroom-no-such-host.invalid/in' });
    const [outcome] = await t.publish([testMessage()]);
    assert.equal(outcome?.status, 'unavailable');
    assert.match(errorOf(outcome).message, /ENOTFOUND|EAI_AGAIN/);
    await assert.rejects(t.probe(), (err: Error) => isTransportError(err) && err.code === 'unreachable');
    await t.close();
  });

  it('reports unavailable when the connection breaks before the answer', async () => {
    const server = await startScripted(() => 'reset');
    const t = transport({ url: `${server.url}/in` });
    try {
      const [outcome] = await t.publish([testMessage()]);
      assert.equal(outcome?.status, 'unavailable');
      assert.equal(codeOf(outcome), 'connection_lost');
    } finally {
      await t.close();
      await server.close();
    }
  });

  it('reports retry when an open connection does not answer within timeoutMs', async () => {
    const server = await startScripted(() => 'hang');
    const t = transport({ url: `${server.url}/in`, timeoutMs: 200 });
    try {
      const [outcome] = await t.publish([testMessage()]);
      assert.equal(outcome?.status, 'retry');
      assert.equal(codeOf(outcome), 'timeout');
      assert.match(errorOf(outcome).message, /timeoutMs \(200 ms\)/);
    } finally {
      await t.close();
      await server.close();
    }
  });

  it('stops at once when the signal aborts, reporting unavailable for what had no answer', async () => {
    const server = await startScripted(() => 'hang');
    const t = transport({ url: `${server.url}/in`, timeoutMs: 60_000 });
    try {
      const controller = new AbortController();
      const call = t.publish([testMessage({ key: 'k' }), testMessage({ key: 'k' })], {
        signal: controller.signal,
      });
      setTimeout(() => controller.abort(), 100);
      const outcomes = await call;
      assert.deepEqual(statuses(outcomes), ['unavailable', 'unavailable']);
      assert.equal(codeOf(outcomes[0]), 'publish_aborted');
      assert.match(errorOf(outcomes[0]).message, /before .* answered/);
      assert.match(errorOf(outcomes[1]).message, /before it was sent/);
    } finally {
      await t.close();
      await server.close();
    }
  });

  it('refuses, as permanent and without sending, payloads over maxBodyBytes and headers HTTP cannot carry', async () => {
    const server = await startScripted(() => ({ status: 200 }));
    const t = transport({
      url: `${server.url}/in`,
      maxBodyBytes: 1000,
      headers: { authorization: 'Bearer x' },
    });
    try {
      const cases = [
        testMessage({ payload: Buffer.alloc(1001) }),
        testMessage({ headers: { 'bad name': 'x' } }),
        testMessage({ headers: { 'x-a': '1', 'X-A': '2' } }),
        testMessage({ headers: { 'content-length': '5' } }),
        testMessage({ headers: { 'webhook-signature': 'v1,forged' } }),
        testMessage({ headers: { Authorization: 'Basic other' } }),
        testMessage({ contentType: 'text/plain; name=café' }),
        testMessage({ payload: Buffer.alloc(1000) }),
      ];
      const outcomes = await t.publish(cases);
      assert.deepEqual(statuses(outcomes), [
        'permanent',
        'permanent',
        'permanent',
        'permanent',
        'permanent',
        'permanent',
        'permanent',
        'ok',
      ]);
      assert.match(errorOf(outcomes[0]).message, /1001 bytes, over maxBodyBytes \(1000\)/);
      assert.match(errorOf(outcomes[1]).message, /"bad name".*not a legal HTTP header name/);
      assert.match(errorOf(outcomes[2]).message, /"X-A".*differs from header "x-a" only in case/);
      assert.match(errorOf(outcomes[3]).message, /"content-length"/);
      assert.match(errorOf(outcomes[4]).message, /"webhook-signature"/);
      assert.match(errorOf(outcomes[5]).message, /"Authorization".*headers option/);
      assert.match(errorOf(outcomes[6]).message, /"content-type".*not printable ASCII/);
      assert.equal(server.requests.length, 1, 'only the message that fits was sent');
      assert.equal(server.requests[0]?.headers.authorization, 'Bearer x');
    } finally {
      await t.close();
      await server.close();
    }
  });

  it('keeps at most `concurrency` POSTs in flight, and a key one at a time, on kept-alive connections', async () => {
    const server = await startScripted(() => ({ status: 200, delayMs: 20 }));
    const t = transport({ url: `${server.url}/in`, concurrency: 3 });
    try {
      assert.deepEqual(
        statuses(await t.publish(Array.from({ length: 24 }, () => testMessage()))),
        Array(24).fill('ok'),
      );
      assert.equal(server.maxInFlight, 3);
      assert.ok(server.connections <= 3, `${server.connections} connections for 24 POSTs`);
      const before = server.connections;
      const keyed = Array.from({ length: 10 }, (_, i) =>
        testMessage({ key: 'same', payload: Buffer.from(String(i)) }),
      );
      const start = server.requests.length;
      server.maxInFlight = 0;
      assert.deepEqual(statuses(await t.publish(keyed)), Array(10).fill('ok'));
      assert.equal(server.maxInFlight, 1, "a key's messages go one after another");
      assert.deepEqual(
        server.requests.slice(start).map((r) => r.body.toString()),
        keyed.map((m) => m.payload.toString()),
      );
      assert.equal(server.connections, before, 'the pool reused its connections');
    } finally {
      await t.close();
      await server.close();
    }
  });

  it("does not send a key's later messages after its earlier one failed in the same call", async () => {
    const server = await startScripted((r) => ({ status: r.body.toString() === '"fail"' ? 500 : 200 }));
    const t = transport({ url: `${server.url}/in` });
    try {
      const outcomes = await t.publish([
        testMessage({ key: 'a', payload: Buffer.from('"fail"') }),
        testMessage({ key: 'a', payload: Buffer.from('"next"') }),
        testMessage({ key: 'b', payload: Buffer.from('"other"') }),
      ]);
      assert.deepEqual(statuses(outcomes), ['retry', 'retry', 'ok']);
      assert.equal(codeOf(outcomes[1]), 'key_stopped');
      assert.deepEqual(server.requests.map((r) => r.body.toString()).sort(), ['"fail"', '"other"']);
    } finally {
      await t.close();
      await server.close();
    }
  });

  it('batch mode: one signed POST of a JSON array per URL run, whose answer is every outcome', async () => {
    let status = 200;
    const server = await startScripted(() => ({ status }));
    const t = transport({ url: `${server.url}/b/{topic}`, batch: true });
    try {
      const batch = [
        testMessage({ topic: 'x', key: 'k' }),
        testMessage({
          topic: 'x',
          payload: Buffer.from([0xff, 0x00, 0xfe]),
          contentType: 'application/octet-stream',
        }),
        testMessage({ topic: 'y', headers: { 'Odd Name': 'ünï' } }),
        testMessage({ topic: 'x' }),
      ];
      assert.deepEqual(statuses(await t.publish(batch)), ['ok', 'ok', 'ok', 'ok']);
      assert.deepEqual(
        server.requests.map((r) => [r.path, r.headers['mailroom-batch']]),
        [
          ['/b/x', '2'],
          ['/b/y', '1'],
          ['/b/x', '1'],
        ],
      );
      const [first] = server.requests;
      assert.ok(first);
      assert.equal(first.headers['webhook-id'], batchWebhookId([batch[0]!.id, batch[1]!.id]));
      verifyWebhook({ secret: SECRET, headers: first.headers, body: first.body });
      const decoded = decodeWebhookRequest(first.headers, first.body);
      assert.deepEqual(
        decoded.map((m) => m.id),
        [batch[0]!.id, batch[1]!.id],
      );
      assert.ok(decoded[1]?.body.equals(batch[1]!.payload), 'bytes that are not UTF-8 go as base64');
      const [, second] = server.requests;
      assert.deepEqual(decodeWebhookRequest(second!.headers, second!.body)[0]?.headers, {
        'Odd Name': 'ünï',
      });

      status = 422;
      const refused = await t.publish([testMessage({ topic: 'x' }), testMessage({ topic: 'x' })]);
      assert.deepEqual(statuses(refused), ['permanent', 'permanent']);
    } finally {
      await t.close();
      await server.close();
    }
  });

  it('probes a probeUrl with GET, expecting a 2xx', async () => {
    let health = 200;
    const server = await startScripted((r) => (r.path === '/health' ? { status: health } : { status: 200 }));
    const t = transport({ url: `${server.url}/in`, probeUrl: `${server.url}/health` });
    try {
      await t.start();
      assert.equal(server.requests.at(-1)?.method, 'GET');
      health = 503;
      await assert.rejects(t.probe(), (err: Error) => {
        assert.ok(isTransportError(err));
        assert.equal(err.code, 'probe_failed');
        assert.match(err.message, /answered 503/);
        return true;
      });
    } finally {
      await t.close();
      await server.close();
    }
  });

  it('speaks https with the CA given in tls, and reports a certificate it cannot verify as unreachable', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mailroom-webhook-tls-'));
    try {
      execFileSync(
        'openssl',
        [
          'req',
          '-x509',
          '-newkey',
          'rsa:2048',
          '-nodes',
          '-days',
          '1',
          '-subj',
          '/CN=localhost',
          '-addext',
          'subjectAltName=DNS:localhost,IP:127.0.0.1',
          '-keyout',
          join(dir, 'key.pem'),
          '-out',
          join(dir, 'cert.pem'),
        ],
        { stdio: 'ignore' },
      );
      const cert = readFileSync(join(dir, 'cert.pem'));
      const got: string[] = [];
      const receive = createWebhookReceiver({ secret: SECRET, handler: (m) => void got.push(m.id) });
      const server = await listen(
        createHttpsServer({ key: readFileSync(join(dir, 'key.pem')), cert }, receive) as unknown as Server,
      );
      const url = `https://127.0.0.1:${server.port}/hooks/{topic}`;
      const trusted = transport({ url, tls: { ca: cert } });
      const stranger = transport({ url });
      try {
        await trusted.start();
        const message = testMessage();
        assert.deepEqual(statuses(await trusted.publish([message])), ['ok']);
        assert.deepEqual(got, [message.id]);
        const [refused] = await stranger.publish([testMessage()]);
        assert.equal(refused?.status, 'unavailable');
        assert.equal(codeOf(refused), 'unreachable');
        assert.match(errorOf(refused).message, /certificate/i);
        await assert.rejects(
          stranger.probe(),
          (err: Error) => isTransportError(err) && err.code === 'unreachable',
        );
      } finally {
        await trusted.close();
        await stranger.close();
        await server.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('validates its options at construction, never showing the password', () => {
    const bad: Array<[Partial<WebhookTransportOptions>, RegExp]> = [
      [{ url: 'ftp://h/x' }, /scheme "ftp"/],
      [{ url: 'http://{topic}.example/x' }, /placeholder or brace in its host part/],
      [{ url: 'http://h/x/{topik}' }, /brace outside the placeholders/],
      [{ url: 'http://h/x#frag' }, /fragment/],
      [{ url: 'http://h/a b' }, /space/],
      [{ url: 'not a url' }, /space|not an absolute URL/],
      [{ url: 'http://u:hunter2@/x' }, /not a valid URL|no host/],
      [{ secret: 'short' }, /under the minimum/],
      [{ concurrency: 0 }, /concurrency must be an integer from 1 to 1024/],
      [{ probeUrl: 'http://other.example/health' }, /not on the endpoint/],
      [{ headers: { 'content-type': 'text/plain' } }, /may not set "content-type"/],
      [{ headers: { 'x-ok': 'a\nb' } }, /not a legal HTTP header/],
    ];
    for (const [options, pattern] of bad) {
      assert.throws(
        () => new WebhookTransport({ url: 'http://u:hunter2@h.example/x', secret: SECRET, ...options }),
        (err: Error) => {
          assert.ok(isConfigError(err), `${JSON.stringify(options)}: ${err.message}`);
          assert.match(err.message, pattern);
          assert.doesNotMatch(err.message, /hunter2/);
          return true;
        },
      );
    }
    assert.throws(
      () => new WebhookTransport({ url: 'http://h/x' } as WebhookTransportOptions),
      /secret is missing/,
    );
  });
});
