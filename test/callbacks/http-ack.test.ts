import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import {
  createServer,
  request as httpRequest,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import {
  createAckHandler,
  generateWebhookSecret,
  sendHttpAck,
  signWebhook,
  type AckHandler,
  type AckHandlerOptions,
} from '../../src/callbacks/index.js';
import { isConfigError, isPermanentDeliveryError, isTransportError } from '../../src/core/errors/index.js';
import type { AckOutcome, AckPort } from '../../src/core/ports.js';
import type { AckReceipt } from '../../src/core/types.js';
import { unusedPort } from './receiver.js';

const SECRET = generateWebhookSecret();

/** applyAck in memory: the first receipt of an id acknowledges it, later ones are duplicates. */
class FakeAckStore implements Pick<AckPort, 'applyAck'> {
  readonly calls: AckReceipt[] = [];
  readonly acked = new Set<string>();
  fail: Error | undefined;
  delayMs = 0;

  async applyAck(receipt: AckReceipt): Promise<AckOutcome> {
    this.calls.push(receipt);
    if (this.delayMs > 0) await new Promise((resolve) => setTimeout(resolve, this.delayMs));
    if (this.fail) throw this.fail;
    if (this.acked.has(receipt.id)) return 'duplicate';
    this.acked.add(receipt.id);
    return 'acknowledged';
  }
}

interface Answer {
  status: number;
  headers: Headers;
  body: { outcome?: string; error?: string; message?: string };
  text: string;
}

/** A real server with the handler mounted at /ack, as an application would mount it. */
async function serve(handler: AckHandler | ((req: IncomingMessage, res: ServerResponse) => void)) {
  const server: Server = createServer((req, res) => {
    if (req.url === '/ack') return handler(req, res);
    res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/ack`;
  return {
    url,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

describe('HTTP acknowledgements', () => {
  const store = new FakeAckStore();
  const errors: string[] = [];
  const logger = {
    debug() {},
    info() {},
    warn() {},
    error: (message: string, fields?: Record<string, unknown>) =>
      errors.push(`${message} ${JSON.stringify(fields)}`),
  };
  let server: Awaited<ReturnType<typeof serve>>;

  before(async () => {
    server = await serve(createAckHandler({ store, secret: SECRET, maxBodyBytes: 1024, logger }));
  });
  after(async () => {
    await server.close();
  });

  async function post(
    body: string,
    options: {
      headers?: Record<string, string>;
      secret?: string;
      timestamp?: number;
      id?: string;
      method?: string;
    } = {},
  ): Promise<Answer> {
    const signed = signWebhook({
      secret: options.secret ?? SECRET,
      id: options.id ?? randomUUID(),
      body,
      ...(options.timestamp === undefined ? {} : { timestamp: options.timestamp }),
    });
    const method = options.method ?? 'POST';
    const response = await fetch(server.url, {
      method,
      headers: { 'content-type': 'application/json', ...signed, ...options.headers },
      ...(method === 'GET' ? {} : { body }),
    });
    const text = await response.text();
    return { status: response.status, headers: response.headers, body: text ? JSON.parse(text) : {}, text };
  }

  it('answers 200 with the outcome applyAck gave, and passes id, consumer and result on', async () => {
    const id = randomUUID();
    const first = await post(JSON.stringify({ id, consumer: 'billing', result: { invoice: 'F-7' } }));
    assert.equal(first.status, 200);
    assert.deepEqual(first.body, { outcome: 'acknowledged' });
    assert.deepEqual(store.calls.at(-1), { id, consumer: 'billing', result: { invoice: 'F-7' } });
    const again = await post(JSON.stringify({ id, consumer: 'billing' }));
    assert.deepEqual([again.status, again.body], [200, { outcome: 'duplicate' }]);
    assert.equal(Object.hasOwn(store.calls.at(-1) ?? {}, 'result'), false);
  });

  it('answers a replayed request duplicate without a second store call', async () => {
    const body = JSON.stringify({ id: randomUUID(), consumer: 'billing' });
    const headers = {
      'content-type': 'application/json',
      ...signWebhook({ secret: SECRET, id: 'replay-1', body }),
    };
    const first = await fetch(server.url, { method: 'POST', headers, body });
    assert.deepEqual(await first.json(), { outcome: 'acknowledged' });
    const calls = store.calls.length;
    const replay = await fetch(server.url, { method: 'POST', headers, body });
    assert.equal(replay.status, 200);
    assert.deepEqual(await replay.json(), { outcome: 'duplicate' });
    assert.equal(store.calls.length, calls);
  });

  it('answers concurrent copies of one request with one store call', async () => {
    store.delayMs = 100;
    try {
      const body = JSON.stringify({ id: randomUUID(), consumer: 'billing' });
      const headers = {
        'content-type': 'application/json',
        ...signWebhook({ secret: SECRET, id: 'burst-1', body }),
      };
      const calls = store.calls.length;
      const answers = await Promise.all(
        [1, 2, 3].map(async () => (await fetch(server.url, { method: 'POST', headers, body })).json()),
      );
      assert.deepEqual(answers.map((a) => (a as { outcome: string }).outcome).sort(), [
        'acknowledged',
        'duplicate',
        'duplicate',
      ]);
      assert.equal(store.calls.length, calls + 1);
    } finally {
      store.delayMs = 0;
    }
  });

  it('answers 400 naming the field and its value', async () => {
    const cases: Array<[string, RegExp]> = [
      ['{"id": ', /not JSON/],
      ['[1,2]', /must be a JSON object/],
      [JSON.stringify({ consumer: 'billing' }), /field id must be .* UUID.*got undefined/],
      [JSON.stringify({ id: 'order-17', consumer: 'billing' }), /field id must be .*got "order-17"/],
      [JSON.stringify({ id: randomUUID() }), /field consumer must be .*got undefined/],
      [JSON.stringify({ id: randomUUID(), consumer: 42 }), /field consumer must be .*got 42/],
      [
        JSON.stringify({ id: randomUUID(), consumer: 'x'.repeat(256) }),
        /field consumer must be .*1 to 255 bytes/,
      ],
      [JSON.stringify({ id: randomUUID(), consumer: 'billing', reslt: 1 }), /unknown field "reslt"/],
    ];
    const calls = store.calls.length;
    for (const [body, message] of cases) {
      const answer = await post(body);
      assert.equal(answer.status, 400, body);
      assert.equal(answer.body.error, 'bad_request');
      assert.match(answer.body.message ?? '', message);
    }
    assert.equal(store.calls.length, calls);
  });

  it('answers 401 for a missing or bad signature and a timestamp outside the tolerance', async () => {
    const body = JSON.stringify({ id: randomUUID(), consumer: 'billing' });
    const calls = store.calls.length;
    const unsigned = await fetch(server.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body,
    });
    assert.equal(unsigned.status, 401);
    assert.equal(((await unsigned.json()) as { error: string }).error, 'missing_header');
    const otherSecret = await post(body, { secret: generateWebhookSecret() });
    assert.deepEqual([otherSecret.status, otherSecret.body.error], [401, 'bad_signature']);
    const stale = await post(body, { timestamp: Math.floor(Date.now() / 1000) - 301 });
    assert.deepEqual([stale.status, stale.body.error], [401, 'timestamp_too_old']);
    const ahead = await post(body, { timestamp: Math.floor(Date.now() / 1000) + 400 });
    assert.deepEqual([ahead.status, ahead.body.error], [401, 'timestamp_in_future']);
    const tampered = await post(body, {
      headers: signWebhook({ secret: SECRET, id: 'x', body: body.replace('billing', 'mallory') }),
    });
    assert.deepEqual([tampered.status, tampered.body.error], [401, 'bad_signature']);
    assert.equal(store.calls.length, calls);
  });

  it('answers 405 to anything but POST, 415 to a body that is not JSON', async () => {
    const get = await post('', { method: 'GET' });
    assert.equal(get.status, 405);
    assert.equal(get.headers.get('allow'), 'POST');
    const text = await post('id=1', { headers: { 'content-type': 'text/plain' } });
    assert.deepEqual([text.status, text.body.error], [415, 'unsupported_media_type']);
    const vendorJson = await post(JSON.stringify({ id: randomUUID(), consumer: 'b' }), {
      headers: { 'content-type': 'application/vnd.acme+json; charset=utf-8' },
    });
    assert.equal(vendorJson.status, 200);
  });

  it('answers 413 to a body over maxBodyBytes, declared or streamed', async () => {
    const big = JSON.stringify({ id: randomUUID(), consumer: 'billing', result: 'x'.repeat(2000) });
    const declared = await post(big);
    assert.deepEqual([declared.status, declared.body.error], [413, 'too_large']);
    // Chunked, without a content-length: the handler counts while it reads.
    const streamed = await new Promise<number>((resolve, reject) => {
      const req = httpRequest(server.url, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          ...signWebhook({ secret: SECRET, id: 'big', body: big }),
        },
      });
      req.on('response', (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', reject);
      for (let i = 0; i < big.length; i += 500) req.write(big.slice(i, i + 500));
      req.end();
    });
    assert.equal(streamed, 413);
  });

  it('answers 500 with a generic body when the store fails, and logs the error', async () => {
    store.fail = new Error('connection terminated unexpectedly');
    try {
      const id = randomUUID();
      const answer = await post(JSON.stringify({ id, consumer: 'billing' }), { id: 'fails-once' });
      assert.equal(answer.status, 500);
      assert.equal(answer.body.error, 'internal');
      assert.ok(!answer.text.includes('connection terminated'), answer.text);
      assert.ok(
        errors.some((line) => line.includes('connection terminated unexpectedly') && line.includes(id)),
      );
      // A failed request is not remembered: sent again, it reaches the store.
      store.fail = undefined;
      const again = await post(JSON.stringify({ id, consumer: 'billing' }), { id: 'fails-once' });
      assert.deepEqual(again.body, { outcome: 'acknowledged' });
    } finally {
      store.fail = undefined;
    }
  });

  it('sendHttpAck signs what the handler verifies and returns the outcome', async () => {
    const id = randomUUID();
    assert.equal(
      await sendHttpAck({ url: server.url, secret: SECRET, id, consumer: 'billing', result: [1, 2] }),
      'acknowledged',
    );
    assert.deepEqual(store.calls.at(-1), { id, consumer: 'billing', result: [1, 2] });
    assert.equal(
      await sendHttpAck({ url: server.url, secret: SECRET, id, consumer: 'billing' }),
      'duplicate',
    );
  });

  it('sendHttpAck throws a permanent error for a refusal and a transport error for an outage', async () => {
    const id = randomUUID();
    await assert.rejects(
      sendHttpAck({ url: server.url, secret: generateWebhookSecret(), id, consumer: 'billing' }),
      (err: unknown) => isPermanentDeliveryError(err) && /answered 401/.test((err as Error).message),
    );
    store.fail = new Error('down');
    try {
      await assert.rejects(
        sendHttpAck({ url: server.url, secret: SECRET, id, consumer: 'billing' }),
        (err: unknown) => isTransportError(err) && /answered 500/.test((err as Error).message),
      );
    } finally {
      store.fail = undefined;
    }
    const port = await unusedPort();
    await assert.rejects(
      sendHttpAck({ url: `http://127.0.0.1:${port}/ack?token=t0p`, secret: SECRET, id, consumer: 'billing' }),
      (err: unknown) => isTransportError(err) && !(err as Error).message.includes('t0p'),
    );
    await assert.rejects(
      sendHttpAck({ url: server.url, secret: SECRET, id: 'not-a-uuid', consumer: 'billing' }),
      (err: unknown) => isConfigError(err) && err.key === 'id',
    );
  });
});

describe('Mounting the ack handler', () => {
  it('takes a raw body a body parser already read (express.raw), and refuses a consumed one', async () => {
    const store = new FakeAckStore();
    const acks = createAckHandler({ store, secret: SECRET });
    // What express.raw() does: read the body into req.body, then call the route.
    const server = await serve((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        if (req.headers['x-parser'] === 'raw')
          (req as IncomingMessage & { body?: Buffer }).body = Buffer.concat(chunks);
        acks(req, res);
      });
    });
    try {
      const body = JSON.stringify({ id: randomUUID(), consumer: 'billing' });
      const headers = {
        'content-type': 'application/json',
        ...signWebhook({ secret: SECRET, id: randomUUID(), body }),
      };
      const raw = await fetch(server.url, {
        method: 'POST',
        headers: { ...headers, 'x-parser': 'raw' },
        body,
      });
      assert.deepEqual([raw.status, await raw.json()], [200, { outcome: 'acknowledged' }]);
      const consumed = await fetch(server.url, { method: 'POST', headers, body });
      assert.equal(consumed.status, 500);
      assert.match(
        ((await consumed.json()) as { message: string }).message,
        /mount the handler before express\.json/,
      );
    } finally {
      await server.close();
    }
  });

  it('refuses bad options with a ConfigError', () => {
    const store = new FakeAckStore();
    assert.throws(
      () => createAckHandler({ store, secret: 'short' }),
      (err: unknown) => isConfigError(err) && err.key === 'secret',
    );
    assert.throws(
      () => createAckHandler({ store, secret: SECRET, maxBody: 1 } as AckHandlerOptions),
      (err: unknown) => isConfigError(err) && /unknown createAckHandler option "maxBody"/.test(err.message),
    );
  });
});
