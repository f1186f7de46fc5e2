// The webhook receiver (createWebhookReceiver, verifyWebhookRequest) against requests made by the
// real WebhookTransport and by hand: signatures and key rotation, stale and future timestamps,
// replays, oversized and malformed bodies, handler failures.
import assert from 'node:assert/strict';
import { createServer, request } from 'node:http';
import { after, before, describe, it } from 'node:test';

import { generateWebhookSecret, signWebhook } from '../../src/callbacks/index.js';
import { isConfigError } from '../../src/core/errors/config-error.js';
import { PermanentDeliveryError } from '../../src/core/errors/permanent-delivery-error.js';
import { testMessage } from '../../src/testkit/transport-conformance.js';
import {
  messageHeaders,
  verifyWebhookRequest,
  WebhookTransport,
  createWebhookReceiver,
} from '../../src/transports/webhook/index.js';
import { listen, startReceiver, type TestReceiver } from './webhook-helpers.js';

const OLD = generateWebhookSecret();
const NEW = generateWebhookSecret();

/** A POST by hand: status and JSON body of the answer. */
function post(
  url: string,
  headers: Record<string, string>,
  body: Buffer | string,
  method = 'POST',
): Promise<{ status: number; body: { error?: string; outcome?: string; message?: string } }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        resolve({ status: res.statusCode ?? 0, body: text ? (JSON.parse(text) as object) : {} });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** The headers and body the transport would send for `message`, signed with `secret` at `timestamp`. */
function signed(
  message = testMessage(),
  secret: string | string[] = OLD,
  timestamp: Date | number = new Date(),
): { headers: Record<string, string>; body: Buffer } {
  const body = message.payload;
  const headers = {
    ...messageHeaders(message, {}),
    ...signWebhook({ secret, id: message.id, body, timestamp }),
  };
  return { headers, body };
}

describe('webhook receiver', () => {
  let receiver: TestReceiver;
  const transports: WebhookTransport[] = [];
  before(async () => {
    receiver = await startReceiver({ secret: [NEW, OLD], maxBodyBytes: 1024, toleranceSec: 60 });
  });
  after(async () => {
    await Promise.all(transports.map((t) => t.close()));
    await receiver.close();
  });

  function transport(secret: string | string[]): WebhookTransport {
    const t = new WebhookTransport({ url: `${receiver.url}/in/{topic}`, secret });
    transports.push(t);
    return t;
  }

  it('accepts a signature made with any of its secrets, and refuses one made with neither (401)', async () => {
    for (const secret of [OLD, NEW, [NEW, OLD]]) {
      const message = testMessage({ topic: 'rotation' });
      const [outcome] = await transport(secret).publish([message]);
      assert.equal(outcome?.status, 'ok', `signed with ${Array.isArray(secret) ? 'both' : 'one'}`);
      assert.ok(receiver.received.some((r) => r.message.id === message.id));
    }
    const stranger = testMessage({ topic: 'rotation' });
    const [refused] = await transport(generateWebhookSecret()).publish([stranger]);
    assert.equal(refused?.status, 'permanent', '401 is a 4xx: the message is dead-lettered, not retried');
    assert.match(refused.status === 'permanent' ? refused.error.message : '', /401.*bad_signature/);
    assert.ok(!receiver.received.some((r) => r.message.id === stranger.id));
  });

  it('refuses a changed body, a stale and a future timestamp (401), without calling the handler', async () => {
    const before = receiver.received.length;
    const tampered = signed();
    const bad = await post(receiver.url, tampered.headers, Buffer.from('{"n":"changed"}'));
    assert.equal(bad.status, 401);
    assert.equal(bad.body.error, 'bad_signature');

    const stale = signed(testMessage(), OLD, Math.floor(Date.now() / 1000) - 120);
    const old = await post(receiver.url, stale.headers, stale.body);
    assert.equal(old.status, 401);
    assert.equal(old.body.error, 'timestamp_too_old');
    assert.match(old.body.message ?? '', /beyond the tolerance of 60 s/);

    const ahead = signed(testMessage(), OLD, Math.floor(Date.now() / 1000) + 120);
    const future = await post(receiver.url, ahead.headers, ahead.body);
    assert.equal(future.status, 401);
    assert.equal(future.body.error, 'timestamp_in_future');

    const { headers, body } = signed();
    delete headers['webhook-signature'];
    const missing = await post(receiver.url, headers, body);
    assert.equal(missing.status, 401);
    assert.equal(missing.body.error, 'missing_header');
    assert.equal(receiver.received.length, before);
  });

  it('answers a replayed request 200 duplicate without calling the handler again', async () => {
    const message = testMessage({ topic: 'replay' });
    const { headers, body } = signed(message);
    const first = await post(receiver.url, headers, body);
    assert.deepEqual([first.status, first.body.outcome], [200, 'processed']);
    const again = await post(receiver.url, headers, body);
    assert.deepEqual([again.status, again.body.outcome], [200, 'duplicate']);
    // Concurrent copies: one handler call.
    const twin = testMessage({ topic: 'replay' });
    const twinRequest = signed(twin);
    const answers = await Promise.all(
      [1, 2, 3].map(() => post(receiver.url, twinRequest.headers, twinRequest.body)),
    );
    assert.deepEqual(
      answers.map((a) => a.status),
      [200, 200, 200],
    );
    assert.equal(receiver.received.filter((r) => r.message.id === message.id).length, 1);
    assert.equal(receiver.received.filter((r) => r.message.id === twin.id).length, 1);
  });

  it('answers 413 to a body over maxBodyBytes, whether declared or streamed', async () => {
    const big = testMessage({ payload: Buffer.alloc(2000, 0x61), contentType: 'text/plain' });
    const { headers, body } = signed(big);
    const declared = await post(receiver.url, headers, body);
    assert.equal(declared.status, 413);
    assert.equal(declared.body.error, 'too_large');
    const chunked = await post(receiver.url, { ...headers, 'transfer-encoding': 'chunked' }, body);
    assert.equal(chunked.status, 413);
  });

  it('answers 400 to a signed request that is not a Mailroom message, and 405 to a GET', async () => {
    const message = testMessage();
    const { headers, body } = signed(message);
    const noTopic = { ...headers };
    delete noTopic['mailroom-topic'];
    const a = await post(receiver.url, noTopic, body);
    assert.deepEqual([a.status, a.body.error], [400, 'malformed']);
    assert.match(a.body.message ?? '', /no mailroom-topic header/);

    // The message id must be the signed webhook-id.
    const other = { ...headers, 'mailroom-id': testMessage().id };
    const b = await post(receiver.url, other, body);
    assert.equal(b.status, 400);
    assert.match(b.body.message ?? '', /differs from webhook-id/);

    const batchBody = Buffer.from('{"not":"an array"}');
    const batch = {
      ...signWebhook({ secret: OLD, id: 'batch_x', body: batchBody }),
      'mailroom-batch': '1',
    };
    const c = await post(receiver.url, batch, batchBody);
    assert.equal(c.status, 400);
    assert.match(c.body.message ?? '', /must be a JSON array/);

    const d = await post(receiver.url, {}, '', 'GET');
    assert.equal(d.status, 405);
  });

  it('answers 500 when the handler throws, so the transport retries, and 422 for a PermanentDeliveryError', async () => {
    const flaky = testMessage({ topic: 'flaky' });
    let calls = 0;
    receiver.fail = (m) => m.id === flaky.id && ++calls === 1;
    try {
      const t = transport(OLD);
      const [first] = await t.publish([flaky]);
      assert.equal(first?.status, 'retry');
      assert.match(first.status === 'retry' ? first.error.message : '', /answered 500/);
      const [second] = await t.publish([{ ...flaky, attempts: 2 }]);
      assert.equal(second?.status, 'ok');
      const got = receiver.received.filter((r) => r.message.id === flaky.id);
      assert.equal(got.length, 1);
      assert.equal(got[0]?.message.attempt, 2);
    } finally {
      receiver.fail = () => false;
    }

    // A JSON message whose body is not JSON: a handler reading `payload` refuses it for good.
    const receive = createWebhookReceiver({
      secret: OLD,
      handler: (message) => {
        void message.payload;
      },
    });
    const server = await listen(createServer(receive));
    try {
      const notJson = testMessage({ payload: Buffer.from('not json') });
      const { headers, body } = signed(notJson);
      const answer = await post(server.url, headers, body);
      assert.equal(answer.status, 422);
      assert.match(answer.body.message ?? '', /not JSON/);
    } finally {
      await server.close();
    }
  });

  it('verifyWebhookRequest: verifies and decodes for any framework, throwing typed errors', () => {
    const message = testMessage({ key: 'k', headers: { 'X-Trace': 'ä b ' } });
    const { headers, body } = signed(message, NEW);
    const fetchHeaders = new Headers(headers);
    const verified = verifyWebhookRequest({ secret: [OLD, NEW], headers: fetchHeaders, body });
    assert.equal(verified.webhookId, message.id);
    assert.equal(verified.messages.length, 1);
    const [m] = verified.messages;
    assert.equal(m?.key, 'k');
    assert.deepEqual(m?.headers, { 'X-Trace': 'ä b ' });
    assert.deepEqual(m?.payload, JSON.parse(message.payload.toString()));
    assert.throws(
      () => verifyWebhookRequest({ secret: OLD, headers, body }),
      (err: Error) => err.name === 'WebhookVerificationError',
    );
    assert.throws(
      () =>
        verifyWebhookRequest({
          secret: NEW,
          headers,
          body,
          now: Math.floor(Date.now() / 1000) + 301,
        }),
      (err: Error & { code?: string }) => err.code === 'timestamp_too_old',
    );
    const unsigned = { ...headers };
    delete unsigned['mailroom-id'];
    assert.throws(
      () => verifyWebhookRequest({ secret: NEW, headers: unsigned, body }),
      (err: Error) => err instanceof PermanentDeliveryError && /no mailroom-id header/.test(err.message),
    );
  });

  it('validates its options', () => {
    assert.throws(
      () => createWebhookReceiver({ secret: 'short', handler: () => undefined }),
      (err: Error) => isConfigError(err) && /under the minimum/.test(err.message),
    );
    assert.throws(
      () => createWebhookReceiver({ secret: OLD } as never),
      (err: Error) => isConfigError(err) && /handler is missing/.test(err.message),
    );
    assert.throws(
      () => createWebhookReceiver({ secret: OLD, handler: () => undefined, maxBodyBytes: 10 }),
      (err: Error) => isConfigError(err) && /maxBodyBytes/.test(err.message),
    );
  });
});
