import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { generateWebhookSecret, signWebhook } from '../../src/callbacks/index.js';
import { ConfigError } from '../../src/index.js';
import type { PostgresStore } from '../../src/stores/postgres/index.js';
import { TccBarrier } from '../../src/tcc/barrier.js';
import { createTccHandler, handleTccRequest, type TccHandlerOptions } from '../../src/tcc/http-handler.js';
import { httpParticipant, httpParticipantFromDescriptor, phaseUrl } from '../../src/tcc/http-participant.js';
import {
  BranchRefusedError,
  BranchUnknownError,
  type BranchCall,
  type BranchPhase,
} from '../../src/tcc/participant.js';
import { unusedPort } from '../callbacks/receiver.js';
import { createTestDb, type TestDb } from '../helpers/postgres.js';
import { waitUntil } from '../helpers/wait.js';

type Tx = Parameters<PostgresStore['executor']>[0];

const NEW_SECRET = generateWebhookSecret();
const OLD_SECRET = generateWebhookSecret();
const newGid = () => `g-${randomBytes(6).toString('hex')}`;
const call = (gid: string, input: BranchCall['input'] = null, branch = 'stock') => ({
  gid,
  branch,
  phase: 'try' as const,
  input,
  attempt: 1,
  signal: new AbortController().signal,
});

describe('TCC over HTTP: httpParticipant against createTccHandler', () => {
  let db: TestDb;
  let server: Server;
  let base: string;
  const errors: string[] = [];
  /** Releases the slow endpoint's try. */
  let releaseSlow: () => void = () => undefined;

  const effects = (gid: string, phase: BranchPhase) =>
    db.pool
      .query(`SELECT count(*)::int AS n FROM "${db.schema}".effects WHERE gid = $1 AND phase = $2`, [
        gid,
        phase,
      ])
      .then((r) => Number(r.rows[0].n));

  before(async () => {
    db = await createTestDb('tcc_http');
    await db.pool.query(`CREATE TABLE "${db.schema}".effects (gid text, branch text, phase text, note text)`);
    const barrier = new TccBarrier({ store: db.store });
    const logger = {
      debug() {},
      info() {},
      warn() {},
      error: (message: string, fields?: Record<string, unknown>) =>
        errors.push(`${message} ${JSON.stringify(fields)}`),
    };
    const effect = (phase: BranchPhase) => async (tx: Tx, c: BranchCall) => {
      const input = (c.input ?? {}) as { refuse?: string; fail?: string; qty?: number };
      if (input.refuse) throw new BranchRefusedError(input.refuse);
      await db.store
        .executor(tx)
        .execute(`INSERT INTO "${db.schema}".effects VALUES ($1, $2, $3, $4)`, [
          c.gid,
          c.branch,
          phase,
          c.attempt,
        ]);
      if (input.fail) throw new Error(input.fail);
      return phase === 'try' || phase === 'action' ? { reserved: input.qty ?? 0 } : undefined;
    };
    const tcc: TccHandlerOptions<Tx> = {
      barrier,
      logger,
      try: effect('try'),
      confirm: effect('confirm'),
      cancel: effect('cancel'),
    };
    const routes: Record<string, ReturnType<typeof createTccHandler>> = {
      open: createTccHandler(tcc),
      signed: createTccHandler({ ...tcc, secret: [NEW_SECRET, OLD_SECRET] }),
      newonly: createTccHandler({ ...tcc, secret: NEW_SECRET }),
      saga: createTccHandler({
        barrier,
        logger,
        branch: 'charge',
        action: effect('action'),
        compensate: effect('compensate'),
      }),
      slow: createTccHandler({
        ...tcc,
        try: async (tx, c) => {
          await new Promise<void>((resolve) => (releaseSlow = resolve));
          return effect('try')(tx, c);
        },
      }),
    };
    server = createServer((req, res) => {
      const route = (req.url ?? '').split('/')[1] ?? '';
      const handler = routes[route];
      if (handler) return handler(req, res);
      res.writeHead(404).end();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  after(async () => {
    releaseSlow();
    // A handler still running after its client left holds a pool client until it commits.
    await waitUntil(() => db.pool.idleCount === db.pool.totalCount, 'the handlers to finish');
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await db.drop();
  });

  it('runs try then confirm, hands back the try result, and answers a repeated try without running it', async () => {
    const p = httpParticipant({ url: `${base}/open/tcc` });
    const gid = newGid();
    assert.deepEqual(await p.try(call(gid, { qty: 2 })), { reserved: 2 });
    assert.equal(
      await p.try({ ...call(gid, { qty: 2 }), attempt: 2 }),
      undefined,
      'a duplicate has no result',
    );
    assert.equal(await p.confirm({ ...call(gid), phase: 'confirm' }), undefined);
    assert.equal(await p.confirm({ ...call(gid), phase: 'confirm', attempt: 2 }), undefined);
    assert.equal(await effects(gid, 'try'), 1);
    assert.equal(await effects(gid, 'confirm'), 1);
  });

  it('turns a business refusal into a 409 and a BranchRefusedError with the participant’s reason', async () => {
    const p = httpParticipant({ url: `${base}/open/tcc` });
    const gid = newGid();
    await assert.rejects(p.try(call(gid, { refuse: 'only 1 of A-1 left' })), (err: unknown) => {
      assert.ok(err instanceof BranchRefusedError, String(err));
      assert.match(err.message, /answered 409: only 1 of A-1 left/);
      assert.equal(err.details.status, 409);
      return true;
    });
    // The refused try left nothing: the coordinator's cancel is a null compensation.
    await p.cancel({ ...call(gid), phase: 'cancel' });
    assert.equal(await effects(gid, 'cancel'), 0);
  });

  it('refuses a try that arrives after its cancel (409, nothing reserved)', async () => {
    const p = httpParticipant({ url: `${base}/open/tcc` });
    const gid = newGid();
    await p.cancel({ ...call(gid), phase: 'cancel' });
    await assert.rejects(p.try(call(gid, { qty: 1 })), (err: unknown) => {
      assert.ok(err instanceof BranchRefusedError);
      assert.match(err.message, /409: .*already cancelled/);
      return true;
    });
    assert.equal(await effects(gid, 'try'), 0);
  });

  it('answers a failing handler 500 without its internals; the client sees an unknown outcome', async () => {
    const p = httpParticipant({ url: `${base}/open/tcc` });
    const gid = newGid();
    errors.length = 0;
    await assert.rejects(p.try(call(gid, { fail: 'password=hunter2 at db.internal' })), (err: unknown) => {
      assert.ok(err instanceof BranchUnknownError, String(err));
      assert.match(err.message, /answered 500/);
      assert.doesNotMatch(err.message, /hunter2/);
      return true;
    });
    assert.equal(await effects(gid, 'try'), 0, 'the failed try rolled back');
    assert.ok(
      errors.some((e) => e.includes('hunter2')),
      'the cause goes to the participant’s logger',
    );
    // The barrier row rolled back too: a retried try runs.
    assert.deepEqual(await p.try({ ...call(gid, { qty: 3 }), attempt: 2 }), { reserved: 3 });
  });

  it('treats a 4xx for a confirm or a compensation as unknown (retried), not refused', async () => {
    const saga = httpParticipant({ url: `${base}/saga/{phase}` });
    const gid = newGid();
    // This endpoint has no confirm handler: 404.
    await assert.rejects(saga.confirm({ ...call(gid, null, 'charge'), phase: 'confirm' }), (err: unknown) => {
      assert.ok(err instanceof BranchUnknownError, String(err));
      assert.match(err.message, /answered 404: this participant has no confirm handler.*retry/);
      return true;
    });
    // And it serves branch 'charge' only.
    await assert.rejects(saga.action(call(gid, null, 'stock')), /404: this endpoint serves branch "charge"/);
    assert.deepEqual(await saga.action({ ...call(gid, { qty: 1 }, 'charge'), phase: 'action' }), {
      reserved: 1,
    });
    await saga.compensate({ ...call(gid, null, 'charge'), phase: 'compensate' });
    await saga.compensate({ ...call(gid, null, 'charge'), phase: 'compensate', attempt: 2 });
    assert.equal(await effects(gid, 'compensate'), 1);
  });

  it('gives up on a call past timeoutMs as unknown; the cancel that follows undoes the try that finished later', async () => {
    const p = httpParticipant({ url: `${base}/slow/tcc`, timeoutMs: 300 });
    const gid = newGid();
    await assert.rejects(p.try(call(gid, { qty: 1 })), (err: unknown) => {
      assert.ok(err instanceof BranchUnknownError, String(err));
      assert.match(err.message, /got no answer within 300 ms; its outcome is unknown/);
      return true;
    });
    releaseSlow();
    await waitUntil(
      async () => (await effects(gid, 'try')) === 1,
      'the slow try to commit after the client gave up',
    );
    // What the coordinator does next (cancel) undoes it; a retried try would be a duplicate.
    await p.cancel({ ...call(gid), phase: 'cancel' });
    assert.equal(await effects(gid, 'cancel'), 1);
  });

  it('reports a connection error as unknown, naming the url and phase', async () => {
    const p = httpParticipant({ url: `http://127.0.0.1:${await unusedPort()}/tcc` });
    await assert.rejects(p.cancel({ ...call(newGid()), phase: 'cancel' }), (err: unknown) => {
      assert.ok(err instanceof BranchUnknownError);
      assert.match(
        err.message,
        /cancel of branch "stock" .* at http:\/\/127\.0\.0\.1:\d+\/tcc\/cancel failed: .*ECONNREFUSED/,
      );
      return true;
    });
  });

  it('signs calls with the secret; a wrong secret refuses the try and blocks the confirm, saying to check it', async () => {
    const good = httpParticipant({ url: `${base}/signed/tcc`, secret: NEW_SECRET });
    const gid = newGid();
    assert.deepEqual(await good.try(call(gid, { qty: 1 })), { reserved: 1 });

    const wrongSecret = generateWebhookSecret();
    const wrong = httpParticipant({ url: `${base}/signed/tcc`, secret: wrongSecret });
    await assert.rejects(wrong.try(call(newGid())), (err: unknown) => {
      assert.ok(err instanceof BranchRefusedError, String(err));
      assert.match(err.message, /answered 401: .*check the secret/);
      assert.ok(!err.message.includes(wrongSecret) && !err.message.includes(wrongSecret.slice(6)));
      return true;
    });
    await assert.rejects(wrong.confirm({ ...call(gid), phase: 'confirm' }), (err: unknown) => {
      assert.ok(err instanceof BranchUnknownError, String(err));
      assert.match(err.message, /401: .*check the secret.*retry/);
      return true;
    });
    assert.equal(await effects(gid, 'confirm'), 0);
    await good.confirm({ ...call(gid), phase: 'confirm' });
    assert.equal(await effects(gid, 'confirm'), 1);

    const unsigned = httpParticipant({ url: `${base}/signed/tcc` });
    await assert.rejects(unsigned.try(call(newGid())), /401: the webhook-id header is missing/);
  });

  it('accepts either secret during a key rotation, and refuses the retired one afterwards', async () => {
    for (const secret of [OLD_SECRET, NEW_SECRET, [NEW_SECRET, OLD_SECRET]]) {
      const p = httpParticipant({ url: `${base}/signed/tcc`, secret });
      assert.deepEqual(await p.try(call(newGid(), { qty: 5 })), { reserved: 5 });
    }
    const rotated = httpParticipant({ url: `${base}/newonly/tcc`, secret: [NEW_SECRET, OLD_SECRET] });
    assert.deepEqual(await rotated.try(call(newGid(), { qty: 6 })), { reserved: 6 });
    const retired = httpParticipant({ url: `${base}/newonly/tcc`, secret: OLD_SECRET });
    await assert.rejects(retired.try(call(newGid())), /401: none of the 1 v1 signature\(s\)/);
  });

  it('refuses a stale signature, an oversized body, malformed JSON, bad fields and other methods', async () => {
    const post = (path: string, body: string, headers: Record<string, string> = {}) =>
      fetch(`${base}${path}`, {
        method: 'POST',
        body,
        headers: { 'content-type': 'application/json', ...headers },
      }).then(async (r) => ({
        status: r.status,
        body: (await r.json()) as { error?: string; status?: string },
      }));
    const gid = newGid();
    const valid = JSON.stringify({ gid, branch: 'stock', phase: 'try', input: null, attempt: 1 });

    const stale = signWebhook({
      secret: NEW_SECRET,
      id: 'x1',
      body: valid,
      timestamp: Math.floor(Date.now() / 1000) - 3600,
    });
    const staleAnswer = await post('/signed/tcc/try', valid, stale);
    assert.equal(staleAnswer.status, 401);
    assert.match(staleAnswer.body.error ?? '', /in the past, beyond the tolerance/);

    const big = JSON.stringify({ gid, branch: 'stock', phase: 'try', input: 'x'.repeat(70_000), attempt: 1 });
    assert.equal((await post('/open/tcc/try', big)).status, 413);
    await assert.rejects(
      httpParticipant({ url: `${base}/open/tcc` }).try(call(gid, 'x'.repeat(70_000))),
      /answered 413/,
    );

    const notJson = await post('/open/tcc/try', '{"gid": ');
    assert.equal(notJson.status, 400);
    assert.match(notJson.body.error ?? '', /the body is not JSON/);
    const noGid = await post('/open/tcc/try', JSON.stringify({ branch: 'stock', phase: 'try' }));
    assert.equal(noGid.status, 400);
    assert.match(noGid.body.error ?? '', /field gid must be/);
    const badPhase = await post('/open/tcc/try', JSON.stringify({ gid, branch: 'stock', phase: 'commit' }));
    assert.match(badPhase.body.error ?? '', /field phase must be one of/);
    const mismatch = await post('/open/tcc/confirm', valid);
    assert.equal(mismatch.status, 400);
    assert.match(mismatch.body.error ?? '', /URL names phase "confirm" and the body phase "try"/);
    const wrongMethod = await fetch(`${base}/open/tcc/try`);
    assert.equal(wrongMethod.status, 405);
    assert.equal(wrongMethod.headers.get('allow'), 'POST');
    await wrongMethod.body?.cancel();
    assert.equal(await effects(gid, 'try'), 0, 'none of these ran anything');

    const ok = await post('/open/tcc/try', valid);
    assert.deepEqual(ok, { status: 200, body: { status: 'done', result: { reserved: 0 } } });
  });
});

describe('httpParticipant on its own', () => {
  /** A fetch that answers `status` with `body` and records the requests. */
  function fakeFetch(status: number, body: string) {
    const requests: { url: string; init: RequestInit }[] = [];
    const fn = (async (url: string, init: RequestInit) => {
      requests.push({ url, init });
      return new Response(body === '' ? null : body, { status });
    }) as unknown as typeof fetch;
    return { fn, requests };
  }

  it('maps statuses: 4xx refuses a try, 408, 429, 5xx and 3xx leave it unknown, confirms are never refused', async () => {
    const cases: [number, 'refused' | 'unknown'][] = [
      [400, 'refused'],
      [401, 'refused'],
      [409, 'refused'],
      [422, 'refused'],
      [408, 'unknown'],
      [429, 'unknown'],
      [500, 'unknown'],
      [503, 'unknown'],
      [302, 'unknown'],
    ];
    for (const [status, expected] of cases) {
      const { fn } = fakeFetch(status, JSON.stringify({ error: 'nope' }));
      const p = httpParticipant({ url: 'http://participant.test/tcc', fetch: fn });
      await assert.rejects(
        p.try(call('g')),
        expected === 'refused' ? BranchRefusedError : BranchUnknownError,
        `${status}`,
      );
      await assert.rejects(
        p.action({ ...call('g'), phase: 'action' }),
        expected === 'refused' ? BranchRefusedError : BranchUnknownError,
      );
      for (const phase of ['confirm', 'cancel', 'compensate'] as const) {
        await assert.rejects(p[phase]({ ...call('g'), phase }), BranchUnknownError, `${phase} ${status}`);
      }
    }
  });

  it('treats a 2xx whose body is not a JSON object as unknown, and an empty one as done', async () => {
    for (const body of ['not json', '[1]', '"text"']) {
      const p = httpParticipant({ url: 'http://participant.test/tcc', fetch: fakeFetch(200, body).fn });
      await assert.rejects(p.try(call('g')), /not a JSON object.*outcome is unknown/);
    }
    const empty = httpParticipant({ url: 'http://participant.test/tcc', fetch: fakeFetch(204, '').fn });
    assert.equal(await empty.confirm({ ...call('g'), phase: 'confirm' }), undefined);
  });

  it('sends the wire format: POST to the phase URL, JSON body, signature headers, extra headers', async () => {
    const { fn, requests } = fakeFetch(200, '{"result":{"ok":true}}');
    const secret = generateWebhookSecret();
    const p = httpParticipant({
      url: 'http://participant.test/tcc/{phase}/v1?tenant=a',
      fetch: fn,
      secret,
      headers: { authorization: 'Bearer gateway' },
    });
    assert.deepEqual(await p.try({ ...call('g-1', { sku: 'A' }), attempt: 3 }), { ok: true });
    const [request] = requests;
    assert.ok(request);
    assert.equal(request.url, 'http://participant.test/tcc/try/v1?tenant=a');
    assert.equal(request.init.method, 'POST');
    assert.deepEqual(JSON.parse(String(request.init.body)), {
      gid: 'g-1',
      branch: 'stock',
      phase: 'try',
      input: { sku: 'A' },
      attempt: 3,
    });
    const headers = request.init.headers as Record<string, string>;
    assert.equal(headers['content-type'], 'application/json');
    assert.equal(headers.authorization, 'Bearer gateway');
    assert.match(headers['webhook-signature'] ?? '', /^v1,[A-Za-z0-9+/]+=*$/);
    assert.match(headers['webhook-id'] ?? '', /^[0-9a-f-]{36}$/);

    assert.equal(phaseUrl('http://h/tcc/', 'cancel'), 'http://h/tcc/cancel');
    assert.equal(phaseUrl('http://h/tcc?x=1', 'confirm'), 'http://h/tcc/confirm?x=1');
  });

  it('describes itself for recovery, and is rebuilt from that description', async () => {
    const { fn, requests } = fakeFetch(200, '');
    const p = httpParticipant({ url: 'http://participant.test/tcc', timeoutMs: 2500 });
    assert.deepEqual(p.descriptor, { kind: 'http', url: 'http://participant.test/tcc', timeoutMs: 2500 });
    const again = httpParticipantFromDescriptor(p.descriptor, { secret: undefined, fetch: fn });
    assert.deepEqual(again.descriptor, p.descriptor);
    await again.cancel({ ...call('g'), phase: 'cancel' });
    assert.equal(requests[0]?.url, 'http://participant.test/tcc/cancel');
    assert.throws(
      () => httpParticipantFromDescriptor({ kind: 'local' }),
      /needs a descriptor \{ kind: 'http'/,
    );
  });

  it('refuses bad options with errors that name them, never showing a secret', () => {
    assert.throws(
      () => httpParticipant({ url: 'ftp://h/tcc' }),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        assert.equal(err.key, 'url');
        assert.match(err.message, /http:\/\/ or https:\/\/ URL, got "ftp:\/\/h\/tcc"/);
        return true;
      },
    );
    assert.throws(
      () => httpParticipant({ url: 'http://user:pw@h:99999/tcc' }),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        assert.doesNotMatch(err.message, /pw@/);
        return true;
      },
    );
    assert.throws(
      () => httpParticipant({ url: 'http://h/tcc', timeoutMs: 5 }),
      /timeoutMs must be an integer from 100/,
    );
    assert.throws(
      () => httpParticipant({ url: 'http://h/tcc', headers: { 'Content-Type': 'text/plain' } }),
      /must not set Content-Type/,
    );
    assert.throws(
      () => httpParticipant({ url: 'http://h/tcc', secret: 'short' }),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        assert.doesNotMatch(err.message, /short/);
        return true;
      },
    );
  });
});

describe('handleTccRequest with a framework-parsed body', () => {
  let db: TestDb;
  before(async () => {
    db = await createTestDb('tcc_hreq');
  });
  after(async () => {
    await db.drop();
  });

  it('takes a parsed body without a secret, and answers 500 (logging why) with one', async () => {
    const barrier = new TccBarrier({ store: db.store });
    const logged: string[] = [];
    const logger = {
      debug() {},
      info() {},
      warn() {},
      error: (m: string, f?: object) => logged.push(`${m} ${JSON.stringify(f)}`),
    };
    const options = { barrier, logger, try: async () => ({ ok: 1 }) };
    const body = { gid: newGid(), branch: 'b', phase: 'try', input: null, attempt: 1 };
    assert.deepEqual(await handleTccRequest(options, { method: 'POST', headers: {}, body }), {
      status: 200,
      body: { status: 'done', result: { ok: 1 } },
    });
    const signed = { ...options, secret: generateWebhookSecret() };
    const answer = await handleTccRequest(signed, { method: 'POST', headers: {}, body });
    assert.equal(answer.status, 500);
    assert.doesNotMatch(answer.body.error ?? '', /raw/);
    assert.ok(logged.some((l) => /give it the raw body/.test(l)));
    assert.throws(() => createTccHandler({ barrier }), /no phase handler/);
  });
});
