import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Outbox, Relay, uuidv7 } from '../../src/core/index.js';
import { isConfigError } from '../../src/core/errors/config-error.js';
import { AdminServer, type AdminServerOptions } from '../../src/server/index.js';
import type {
  AcksResponse,
  DeadLetterDetail,
  DeadLettersResponse,
  HistoryResponse,
  ReadinessResponse,
  RelaysResponse,
  StatusResponse,
  TopicsResponse,
} from '../../src/server/index.js';
import { MemoryTransport } from '../../src/transports/memory/index.js';
import { createTestDb, inTransaction, type TestDb } from '../helpers/postgres.js';
import { waitUntil } from '../helpers/wait.js';
import { rawHttp } from '../helpers/raw-http.js';

/** Raw bytes to the admin server; its answer as UTF-8 (the JSON errors may hold any text). */
const rawRequest = (port: number, bytes: string, waitMs = 5000): Promise<string> =>
  rawHttp(port, bytes, waitMs, 'utf8');

const TOKEN = 'admin-test-token-0123456789abcdef';

interface Reply {
  status: number;
  headers: Headers;
  body: unknown;
  text: string;
}

async function call(base: string, path: string, init: RequestInit = {}): Promise<Reply> {
  const res = await fetch(`${base}${path}`, init);
  const text = await res.text();
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  return { status: res.status, headers: res.headers, body, text };
}

function post(
  base: string,
  path: string,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<Reply> {
  return call(base, path, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${TOKEN}`, ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
}

function errorCode(reply: Reply): string | undefined {
  return (reply.body as { error?: { code?: string } } | undefined)?.error?.code;
}

/** Enqueues messages in one transaction. */
async function enqueue(
  db: TestDb,
  messages: Array<{ topic: string; key?: string; payload?: unknown }>,
): Promise<void> {
  const outbox = new Outbox({ store: db.store });
  await inTransaction(db.pool, (client) =>
    outbox.enqueue(
      client,
      messages.map((m) => ({
        topic: m.topic,
        payload: m.payload ?? { n: 1 },
        ...(m.key ? { key: m.key } : {}),
      })),
    ),
  );
}

/** Turns every message in the outbox into a dead letter, through the store (as a relay would). */
async function killAll(db: TestDb, error = 'rejected by test'): Promise<string[]> {
  const batch = await db.store.claim({ owner: 'test', limit: 1000, leaseMs: 30_000 });
  await db.store.settle({
    leaseToken: batch.leaseToken,
    delivered: [],
    released: [],
    retry: [],
    dead: batch.messages.map((message) => ({ message, error })),
  });
  return batch.messages.map((m) => m.id);
}

const DASHBOARD = new Map([
  ['/', { contentType: 'text/html; charset=utf-8', body: '<!doctype html><title>t</title>' }],
  ['/assets/dashboard.js', { contentType: 'text/javascript; charset=utf-8', body: 'void 0;' }],
]);

describe('AdminServer', () => {
  const dbs: TestDb[] = [];
  const servers: AdminServer[] = [];
  const relays: Relay[] = [];
  let db: TestDb;
  async function fresh(): Promise<TestDb> {
    const made = await createTestDb('adm');
    dbs.push(made);
    return made;
  }
  async function serve(options: Partial<AdminServerOptions> = {}, store = db.store): Promise<string> {
    const server = new AdminServer({ port: 0, stores: [{ name: 'default', store }], ...options });
    servers.push(server);
    return (await server.start()).url;
  }

  before(async () => {
    db = await fresh();
  });
  after(async () => {
    await Promise.all(servers.map((s) => s.close()));
    await Promise.all(relays.map((r) => r.stop()));
    for (const made of dbs) await made.drop();
  });

  it('answers /healthz without touching the database, with the security headers', async () => {
    const base = await serve();
    const reply = await call(base, '/healthz');
    assert.equal(reply.status, 200);
    assert.deepEqual(reply.body, { status: 'ok' });
    assert.equal(reply.headers.get('content-type'), 'application/json; charset=utf-8');
    assert.equal(reply.headers.get('x-content-type-options'), 'nosniff');
    assert.equal(reply.headers.get('cache-control'), 'no-store');
  });

  it('reports the status and topics of a source, read-only without a token', async () => {
    const own = await fresh();
    await enqueue(own, [
      { topic: 'orders.created' },
      { topic: 'orders.created' },
      { topic: 'users.updated' },
    ]);
    const base = await serve({}, own.store);
    const reply = await call(base, '/api/status');
    assert.equal(reply.status, 200);
    const status = reply.body as StatusResponse;
    assert.equal(status.owner, null);
    assert.equal(status.mutations, false);
    assert.equal(status.transport.state, 'none');
    assert.equal(status.sources.length, 1);
    assert.equal(status.sources[0]?.name, 'default');
    assert.equal(status.sources[0]?.stats?.backlog, 3);
    assert.equal(status.sources[0]?.error, null);
    assert.ok(status.sources[0]?.acks, 'the PostgreSQL store counts acknowledgements');
    const topics = (await call(base, '/api/topics')).body as TopicsResponse;
    assert.deepEqual(topics.topics.map((t) => [t.topic, t.backlog]).sort(), [
      ['orders.created', 2],
      ['users.updated', 1],
    ]);
    assert.equal(topics.truncated, false);
    const ready = await call(base, '/readyz');
    assert.equal(ready.status, 200);
    assert.deepEqual(ready.body, {
      ready: true,
      checks: { database: { ok: true }, transport: { ok: true, state: 'none' } },
    });
  });

  it('lists dead letters, shows one, and replays them by id for the relay to deliver', async () => {
    const own = await fresh();
    await enqueue(own, [
      { topic: 'billing.charge', key: 'k1', payload: { amount: 5 } },
      { topic: 'billing.refund', payload: { amount: 7 } },
    ]);
    const dead = await killAll(own, 'nacked by the broker');
    const base = await serve({ token: TOKEN }, own.store);

    const list = (await call(base, '/api/dead-letters?limit=10')).body as DeadLettersResponse;
    assert.equal(list.count, 2);
    assert.deepEqual(list.items.map((i) => i.id).sort(), [...dead].sort());
    const charge = list.items.find((i) => i.topic === 'billing.charge');
    assert.equal(charge?.error, 'nacked by the broker');
    assert.equal(charge?.key, 'k1');
    assert.equal(charge?.preview, '{"amount":5}');
    assert.equal(charge?.size, 12);
    const byTopic = (await call(base, '/api/dead-letters?topic=billing.refund')).body as DeadLettersResponse;
    assert.equal(byTopic.count, 1);

    const detail = (await call(base, `/api/dead-letters/${charge?.id}`)).body as DeadLetterDetail;
    assert.deepEqual(detail.payload, { encoding: 'json', value: { amount: 5 } });
    assert.equal(typeof detail.headers, 'object');

    const unknown = await call(base, `/api/dead-letters/${uuidv7()}`);
    assert.equal(unknown.status, 404);
    assert.equal(errorCode(unknown), 'not_found');
    const notUuid = await call(base, '/api/dead-letters/12345');
    assert.equal(notUuid.status, 400);
    assert.equal(errorCode(notUuid), 'invalid_id');

    const transport = new MemoryTransport();
    const relay = new Relay({ store: own.store, transport, pollIntervalMs: 50 });
    relays.push(relay);
    await relay.start();
    const replay = await post(base, '/api/dead-letters/replay', { ids: [charge?.id] });
    assert.equal(replay.status, 200, replay.text);
    assert.deepEqual(replay.body, { replayed: 1, ids: [charge?.id] });
    const [delivered] = await transport.waitFor(1, 15_000);
    assert.equal(delivered?.id, charge?.id);
    await relay.stop();

    const purge = await post(base, '/api/dead-letters/purge', { topic: 'billing.refund' });
    assert.equal(purge.status, 200, purge.text);
    assert.equal((purge.body as { purged: number }).purged, 1);
    const after = (await call(base, '/api/dead-letters')).body as DeadLettersResponse;
    assert.equal(after.count, 0);
  });

  it('replays {"all":true}: every dead letter back into the outbox', async () => {
    const own = await fresh();
    await enqueue(own, [{ topic: 'a' }, { topic: 'b' }, { topic: 'c' }]);
    await killAll(own);
    const base = await serve({ token: TOKEN }, own.store);
    const reply = await post(base, '/api/dead-letters/replay', { all: true });
    assert.equal(reply.status, 200, reply.text);
    assert.equal((reply.body as { replayed: number }).replayed, 3);
    assert.equal(await own.count('outbox'), 3);
    assert.equal(await own.count('dead_letter'), 0);
  });

  it('needs the bearer token for POSTs, and refuses them all without a configured token', async () => {
    const own = await fresh();
    const readOnly = await serve({}, own.store);
    const disabled = await post(readOnly, '/api/dead-letters/purge', { all: true });
    assert.equal(disabled.status, 403);
    assert.equal(errorCode(disabled), 'mutations_disabled');
    assert.match((disabled.body as { error: { message: string } }).error.message, /MAILROOM_ADMIN_TOKEN/);

    const base = await serve({ token: TOKEN }, own.store);
    const missing = await call(base, '/api/dead-letters/purge', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: '{"all":true}',
    });
    assert.equal(missing.status, 401);
    assert.equal(errorCode(missing), 'unauthorized');
    assert.equal(missing.headers.get('www-authenticate'), 'Bearer realm="mailroom"');
    const wrong = await post(
      base,
      '/api/dead-letters/purge',
      { all: true },
      { Authorization: 'Bearer not-the-token-at-all' },
    );
    assert.equal(wrong.status, 401);
    assert.ok(!wrong.text.includes(TOKEN), 'the token is never echoed');
    const basic = await post(
      base,
      '/api/dead-letters/purge',
      { all: true },
      { Authorization: `Basic ${TOKEN}` },
    );
    assert.equal(basic.status, 401);
    const ok = await post(base, '/api/dead-letters/purge', { all: true });
    assert.equal(ok.status, 200);
    assert.deepEqual(ok.body, { purged: 0, ids: [] });
    assert.equal(((await call(base, '/api/status')).body as StatusResponse).mutations, true);
  });

  it('refuses cross-site requests and foreign Host names', async () => {
    const base = await serve({ token: TOKEN });
    const port = new URL(base).port;
    const foreign = await post(
      base,
      '/api/dead-letters/purge',
      { all: true },
      { Origin: 'https://evil.example' },
    );
    assert.equal(foreign.status, 403);
    assert.equal(errorCode(foreign), 'cross_site');
    const fetchSite = await post(
      base,
      '/api/dead-letters/purge',
      { all: true },
      { 'Sec-Fetch-Site': 'cross-site' },
    );
    assert.equal(fetchSite.status, 403);
    assert.equal(errorCode(fetchSite), 'cross_site');
    const sameOrigin = await post(base, '/api/dead-letters/purge', { all: true }, { Origin: base });
    assert.equal(sameOrigin.status, 200, sameOrigin.text);
    // Behind a proxy that terminates TLS the page is https:// on the same host.
    const tls = await post(
      base,
      '/api/dead-letters/purge',
      { all: true },
      { Origin: base.replace('http:', 'https:') },
    );
    assert.equal(tls.status, 200, tls.text);
    for (const origin of ['null', 'file://', `http://127.0.0.1:${Number(port) + 1}`, 'not a url']) {
      const other = await post(base, '/api/dead-letters/purge', { all: true }, { Origin: origin });
      assert.equal(errorCode(other), 'cross_site', origin);
    }
    const text = await call(base, '/api/dead-letters/purge', {
      method: 'POST',
      headers: { Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'text/plain' },
      body: '{"all":true}',
    });
    assert.equal(text.status, 415);
    // DNS rebinding: a page on evil.example resolved to 127.0.0.1 sends its own Host.
    const raw = await rawRequest(
      Number(port),
      `GET /api/status HTTP/1.1\r\nHost: evil.example:${port}\r\nConnection: close\r\n\r\n`,
    );
    assert.match(raw, /^HTTP\/1\.1 403/);
    assert.match(raw, /host_not_allowed/);
  });

  it('refuses to bind beyond loopback without a token, and then needs the token for /api', async () => {
    assert.throws(
      () => new AdminServer({ host: '0.0.0.0', port: 0, stores: [{ name: 'default', store: db.store }] }),
      (err: unknown) => isConfigError(err) && err.key === 'host',
    );
    assert.throws(
      () => new AdminServer({ port: 0, token: 'short', stores: [{ name: 'default', store: db.store }] }),
      (err: unknown) => isConfigError(err) && err.key === 'token' && !err.message.includes('short'),
    );
    const server = new AdminServer({
      host: '0.0.0.0',
      port: 0,
      token: TOKEN,
      stores: [{ name: 'default', store: db.store }],
    });
    servers.push(server);
    const { port } = await server.start();
    const base = `http://127.0.0.1:${port}`;
    assert.equal((await call(base, '/healthz')).status, 200);
    const open = await call(base, '/api/status');
    assert.equal(open.status, 401);
    const authed = await call(base, '/api/status', { headers: { Authorization: `Bearer ${TOKEN}` } });
    assert.equal(authed.status, 200);
  });

  it('answers every bad request with a typed 4xx and keeps serving', async () => {
    const base = await serve({ token: TOKEN, requestTimeoutMs: 1000 });
    const port = Number(new URL(base).port);
    const expect = async (reply: Promise<Reply>, status: number, code: string) => {
      const got = await reply;
      assert.equal(got.status, status, `${code}: ${got.text}`);
      assert.equal(errorCode(got), code, got.text);
      assert.equal(got.headers.get('content-type'), 'application/json; charset=utf-8');
    };
    await expect(post(base, '/api/dead-letters/replay', '{"ids": [1,'), 400, 'invalid_json');
    await expect(post(base, '/api/dead-letters/replay', ''), 400, 'invalid_json');
    await expect(post(base, '/api/dead-letters/replay', '[]'), 400, 'invalid_body');
    await expect(post(base, '/api/dead-letters/replay', 'null'), 400, 'invalid_body');
    await expect(post(base, '/api/dead-letters/replay', { all: true, force: true }), 400, 'unknown_field');
    await expect(post(base, '/api/dead-letters/replay', { all: false }), 400, 'invalid_body');
    await expect(post(base, '/api/dead-letters/replay', { all: true, topic: 't' }), 400, 'invalid_body');
    await expect(post(base, '/api/dead-letters/replay', { ids: ['../../etc/passwd'] }), 400, 'invalid_id');
    await expect(post(base, '/api/dead-letters/replay', { ids: [] }), 400, 'invalid_body');
    await expect(post(base, '/api/dead-letters/replay', { ids: 'x' }), 400, 'invalid_body');
    await expect(
      post(base, '/api/dead-letters/replay', { all: true, source: 'nope' }),
      400,
      'unknown_source',
    );
    await expect(post(base, '/api/dead-letters/replay', { __proto__: { all: true } }), 400, 'invalid_body');
    await expect(post(base, '/api/dead-letters/replay', 'x'.repeat(10 * 1024 * 1024)), 413, 'body_too_large');
    await expect(call(base, '/api/dead-letters/replay'), 405, 'method_not_allowed');
    const wrongMethod = await call(base, '/api/status', { method: 'DELETE' });
    assert.equal(wrongMethod.status, 405);
    assert.equal(wrongMethod.headers.get('allow'), 'GET, HEAD');
    await expect(call(base, '/', { method: 'POST' }), 405, 'method_not_allowed');
    await expect(call(base, '/api/nothing'), 404, 'not_found');
    await expect(call(base, '/api/dead-letters?limit=0'), 400, 'invalid_limit');
    await expect(call(base, '/api/dead-letters?limit=501'), 400, 'invalid_limit');
    await expect(call(base, '/api/dead-letters?limit=ten'), 400, 'invalid_limit');
    await expect(call(base, '/api/dead-letters?limit=1e3'), 400, 'invalid_limit');
    await expect(call(base, '/api/dead-letters?limit=5&limit=6'), 400, 'invalid_parameter');
    await expect(call(base, '/api/dead-letters?order=desc'), 400, 'unknown_parameter');
    await expect(call(base, '/api/topics?source=other'), 400, 'unknown_source');
    await expect(call(base, '/api/acks?state=lost'), 400, 'invalid_parameter');
    await expect(call(base, `/api/dead-letters/${'%zz'}`), 400, 'invalid_id');
    await expect(call(base, '/metrics'), 404, 'no_metrics');
    // Header injection: CR/LF in the query is data, never a header.
    const injected = await call(base, '/api/dead-letters?topic=a%0d%0aSet-Cookie:%20x=1');
    assert.equal(injected.status, 200);
    assert.equal(injected.headers.get('set-cookie'), null);
    // Path traversal, raw (fetch would normalise the dots away).
    for (const path of [
      '/assets/../api/status',
      '/assets/%2e%2e/%2e%2e/etc/passwd',
      '/assets/..%2fpackage.json',
      '/assets\\..\\x',
    ]) {
      const raw = await rawRequest(
        port,
        `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`,
      );
      assert.match(raw, /^HTTP\/1\.1 400/, path);
      assert.match(raw, /invalid_path/, path);
    }
    // Not HTTP at all.
    const garbage = await rawRequest(port, 'HELLO\x00\x01 nonsense\r\n\r\n');
    assert.match(garbage, /^HTTP\/1\.1 400/);
    // A body that never ends: 408 within the request timeout, not a hung connection.
    const slow = await rawRequest(
      port,
      `POST /api/dead-letters/replay HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${TOKEN}\r\n` +
        'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"all":',
      10_000,
    );
    assert.match(slow, /^HTTP\/1\.1 408/);
    assert.match(slow, /request_timeout/);
    assert.equal((await call(base, '/healthz')).status, 200, 'still serving');
  });

  it('serves the dashboard with its content security policy, and metrics from the registry', async () => {
    const base = await serve({
      dashboard: DASHBOARD,
      registry: { contentType: 'text/plain; version=0.0.4', metrics: async () => 'mailroom_up 1\n' },
    });
    const page = await call(base, '/');
    assert.equal(page.status, 200);
    assert.equal(page.headers.get('content-security-policy'), "default-src 'self'; frame-ancestors 'none'");
    assert.equal(page.headers.get('x-frame-options'), 'DENY');
    assert.equal(page.headers.get('referrer-policy'), 'no-referrer');
    const script = await call(base, '/assets/dashboard.js');
    assert.equal(script.status, 200);
    assert.equal(script.text, 'void 0;');
    assert.equal(script.headers.get('x-content-type-options'), 'nosniff');
    assert.equal((await call(base, '/assets/other.js')).status, 404);
    const metrics = await call(base, '/metrics');
    assert.equal(metrics.status, 200);
    assert.equal(metrics.headers.get('content-type'), 'text/plain; version=0.0.4');
    assert.equal(metrics.text, 'mailroom_up 1\n');
  });

  it('turns not ready during a transport outage and ready again after it, and keeps history', async () => {
    const own = await fresh();
    const transport = new MemoryTransport();
    const relay = new Relay({
      store: own.store,
      transport,
      pollIntervalMs: 50,
      probeMinDelayMs: 50,
      probeMaxDelayMs: 100,
    });
    relays.push(relay);
    await relay.start();
    const base = await serve({ relay, transport, historyIntervalMs: 100 }, own.store);
    const status = (await call(base, '/api/status')).body as StatusResponse;
    assert.equal(status.owner, relay.options.owner);
    assert.equal(status.wakeup, 'notify');
    assert.deepEqual([status.transport.name, status.transport.state], ['memory', 'up']);
    const rows = ((await call(base, '/api/relays')).body as RelaysResponse).relays;
    assert.equal(rows.length, 1);
    assert.equal(rows[0]?.owner, relay.options.owner);
    assert.equal(rows[0]?.alive, true);

    await enqueue(own, [{ topic: 'h.1' }, { topic: 'h.2' }]);
    await transport.waitFor(2);
    const history = (await waitUntil(async () => {
      const h = (await call(base, '/api/history')).body as HistoryResponse;
      return h.points.some((p) => p.delivered > 0) ? h : undefined;
    }, 'a history point with the deliveries')) as HistoryResponse;
    assert.equal(history.intervalMs, 100);
    const point = history.points.find((p) => p.delivered > 0);
    assert.equal(point?.source, 'default');
    assert.equal(typeof point?.latencyP50Ms, 'number');
    assert.ok((point?.latencyP95Ms ?? -1) >= (point?.latencyP50Ms ?? 0));

    transport.unavailable = true;
    await enqueue(own, [{ topic: 'during.outage' }]);
    const down = (await waitUntil(async () => {
      const r = await call(base, '/readyz');
      return r.status === 503 ? (r.body as ReadinessResponse) : undefined;
    }, 'readyz to answer 503 in the outage')) as ReadinessResponse;
    assert.equal(down.ready, false);
    assert.equal(down.checks.database.ok, true);
    assert.equal(down.checks.transport.state, 'unavailable');
    assert.equal(typeof down.checks.transport.since, 'string');
    assert.match(down.checks.transport.error ?? '', /./);
    transport.unavailable = false;
    await waitUntil(
      async () => (await call(base, '/readyz')).status === 200,
      'readyz to answer 200 after the outage',
    );
    await transport.waitFor(3);
    await relay.stop();
  });

  it('probes a transport given without a relay, and reports a database that does not answer', async () => {
    const transport = new MemoryTransport({ unavailable: true });
    const base = await serve({ transport, probeIntervalMs: 1 });
    const down = await call(base, '/readyz');
    assert.equal(down.status, 503);
    assert.equal((down.body as ReadinessResponse).checks.transport.state, 'unavailable');
    transport.unavailable = false;
    await waitUntil(async () => (await call(base, '/readyz')).status === 200, 'the probe to succeed');

    const silent = {
      ...db.store,
      name: 'silent',
      check: () => new Promise<void>(() => undefined),
      stats: () => new Promise<never>(() => undefined),
    };
    const slow = await serve({ storeTimeoutMs: 200 }, silent as unknown as typeof db.store);
    const ready = await call(slow, '/readyz');
    assert.equal(ready.status, 503);
    assert.match(
      (ready.body as ReadinessResponse).checks.database.error ?? '',
      /did not answer within 200 ms/,
    );
    const status = (await call(slow, '/api/status')).body as StatusResponse;
    assert.match(status.sources[0]?.error ?? '', /did not answer/);
    const topics = await call(slow, '/api/topics');
    assert.equal(topics.status, 503);
    assert.equal(errorCode(topics), 'store_timeout');
  });

  it('lists messages awaiting acknowledgement', async () => {
    const base = await serve();
    const reply = await call(base, '/api/acks?state=awaiting&limit=5');
    assert.equal(reply.status, 200, reply.text);
    assert.deepEqual(reply.body as AcksResponse, { items: [] });
    // A store without acknowledged delivery: the PostgreSQL store's methods, but not listAcks.
    const bare = new Proxy(db.store, {
      get: (target, prop, receiver) =>
        prop === 'listAcks' || prop === 'ackCounts'
          ? undefined
          : (Reflect.get(target, prop, receiver) as unknown),
    });
    const noAcks = await serve({}, bare);
    const missing = await call(noAcks, '/api/acks');
    assert.equal(missing.status, 404);
    assert.equal(errorCode(missing), 'no_acks');
  });

  it('needs ?source= with several sources and names them when it is wrong', async () => {
    const other = await fresh();
    const server = new AdminServer({
      port: 0,
      stores: [
        { name: 'tenant_a', store: db.store },
        { name: 'tenant_b', store: other.store },
      ],
    });
    servers.push(server);
    const { url } = await server.start();
    const status = (await call(url, '/api/status')).body as StatusResponse;
    assert.deepEqual(
      status.sources.map((s) => s.name),
      ['tenant_a', 'tenant_b'],
    );
    const missing = await call(url, '/api/topics');
    assert.equal(missing.status, 400);
    assert.equal(errorCode(missing), 'source_required');
    assert.match(missing.text, /tenant_a, tenant_b/);
    assert.equal((await call(url, '/api/topics?source=tenant_b')).status, 200);
    assert.throws(
      () =>
        new AdminServer({
          port: 0,
          stores: [
            { name: 'x', store: db.store },
            { name: 'x', store: other.store },
          ],
        }),
      (err: unknown) => isConfigError(err) && err.key === 'stores',
    );
  });
});
