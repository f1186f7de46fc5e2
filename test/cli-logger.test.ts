import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { createCliLogger } from '../src/cli/cli-logger.js';
import { RelayActivityLog, relayLogger } from '../src/cli/relay-activity.js';
import { Outbox, PermanentDeliveryError, Relay } from '../src/core/index.js';
import { DETAIL_LOG_EVENTS, LOG_EVENTS, logFields, serializeError } from '../src/core/log-fields.js';
import { withLogFields } from '../src/core/logger.js';
import { isSecretName, redactSecrets } from '../src/core/redact.js';
import { MemoryTransport } from '../src/transports/memory/index.js';
import ts from 'typescript';
import { createTestDb, inTransaction } from './helpers/postgres.js';
import { waitUntil } from './helpers/wait.js';

type Line = Record<string, unknown> & { time: string; level: string; msg: string };

/** A CLI logger writing into an array, as a log shipper reading stderr would see it. */
function capture(options: { level?: 'debug' | 'info' | 'warn' | 'error'; json?: boolean } = {}) {
  const raw: string[] = [];
  const logger = createCliLogger({ json: true, ...options, stream: { write: (s: string) => raw.push(s) } });
  return {
    logger,
    raw,
    text: () => raw.join(''),
    lines: () => raw.map((s) => JSON.parse(s) as Line),
  };
}

describe('CLI logger', () => {
  it('writes one JSON object per line with time, level, msg, component and event first', () => {
    const log = capture();
    log.logger.info('relay started', { event: 'relay_started', owner: 'h:1:x', batchSize: 100, ok: true });
    assert.equal(log.raw.length, 1);
    assert.ok(log.raw[0]?.endsWith('}\n') && !log.raw[0].slice(0, -1).includes('\n'), 'one line');
    const [line] = log.lines();
    assert.deepEqual(Object.keys(line ?? {}), [
      'time',
      'level',
      'msg',
      'component',
      'event',
      'owner',
      'batchSize',
      'ok',
    ]);
    assert.match(String(line?.time), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    assert.equal(line?.level, 'info');
    assert.equal(line?.component, 'cli', 'the default component');
    assert.equal(line?.batchSize, 100, 'numbers stay numbers');
  });

  it("keeps the call's component, and withLogFields adds fields the call can override", () => {
    const log = capture();
    const relay = withLogFields(log.logger, { component: 'relay', source: 'orders' });
    relay.warn('x', { source: 'billing' });
    const [line] = log.lines();
    assert.equal(line?.component, 'relay');
    assert.equal(line?.source, 'billing');
  });

  it('writes errors as name, code, message and cause, without a stack at info', () => {
    const log = capture();
    const cause = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5672'), { code: 'ECONNREFUSED' });
    log.logger.warn('transport unavailable', {
      event: 'transport_unavailable',
      error: new PermanentDeliveryError('broker refused', { cause }),
    });
    log.logger.warn('claim failed', { error: 'a string given as the error' });
    const [first, second] = log.lines();
    assert.deepEqual(first?.error, {
      name: 'PermanentDeliveryError',
      code: 'delivery_permanent',
      message: 'broker refused',
      cause: { name: 'Error', code: 'ECONNREFUSED', message: 'connect ECONNREFUSED 127.0.0.1:5672' },
    });
    assert.deepEqual(
      second?.error,
      { name: 'Error', message: 'a string given as the error' },
      'always an object',
    );
    assert.doesNotMatch(log.text(), /\bat .*\.ts:\d+/, 'no stack frames at info');
  });

  it('writes stacks when the level is debug', () => {
    const log = capture({ level: 'debug' });
    log.logger.debug('detail', { error: new Error('boom') });
    const error = log.lines()[0]?.error as { stack?: string };
    assert.match(String(error.stack), /boom\n\s+at /);
  });

  it('masks secret fields, URL credentials anywhere, and errors quoting them', () => {
    const log = capture();
    log.logger.error('cannot connect to postgres://app:hunter2@db:5432/orders', {
      url: 'amqp://guest:s3cret@127.0.0.1:5672/vh',
      token: 'tok-123456',
      apiKey: 'k-9876',
      headers: { Authorization: 'Bearer abcdefghijkl', 'x-trace': 'keep' },
      dsn: 'host=db user=app password=pw-42 dbname=x',
      error: new Error('publish failed', {
        cause: new Error('socket to amqps://svc:p%40ss@mq.internal:5671 closed'),
      }),
      nothing: null,
    });
    const text = log.text();
    for (const secret of ['hunter2', 's3cret', 'tok-123456', 'k-9876', 'abcdefghijkl', 'pw-42', 'p%40ss']) {
      assert.ok(!text.includes(secret), `${secret} is not in ${text}`);
    }
    const [line] = log.lines();
    assert.equal(line?.msg, 'cannot connect to postgres://app:***@db:5432/orders');
    assert.equal(line?.url, 'amqp://guest:***@127.0.0.1:5672/vh');
    assert.equal(line?.token, '***');
    assert.deepEqual(line?.headers, { Authorization: '***', 'x-trace': 'keep' });
    assert.equal(line?.dsn, 'host=db user=app password=*** dbname=x');
    assert.equal(
      (line?.error as { cause: { message: string } }).cause.message,
      'socket to amqps://svc:***@mq.internal:5671 closed',
    );
    assert.equal(line?.nothing, null);
  });

  it('masks secrets in text lines too', () => {
    const log = capture({ json: false });
    log.logger.warn('lost amqp://u:pw1@h', { password: 'pw2', error: new Error('to redis://:pw3@r:6379') });
    const text = log.text();
    assert.match(text, /^\d\d:\d\d:\d\d\.\d{3} WARN {2}\[cli\] lost amqp:\/\/u:\*\*\*@h/);
    assert.match(text, /error="Error: to redis:\/\/:\*\*\*@r:6379"/);
    for (const secret of ['pw1', 'pw2', 'pw3']) assert.ok(!text.includes(secret), text);
  });

  it('writes only lines at or above its level', () => {
    const log = capture({ level: 'warn' });
    log.logger.debug('d');
    log.logger.info('i');
    log.logger.warn('w');
    log.logger.error('e');
    assert.deepEqual(
      log.lines().map((l) => l.level),
      ['warn', 'error'],
    );
  });

  it('survives fields it cannot serialise as they are: cycles, bigints, getters that throw', () => {
    const cyclic: Record<string, unknown> = { name: 'a' };
    cyclic.self = cyclic;
    const hostile = Object.defineProperty({}, 'boom', {
      enumerable: true,
      get() {
        throw new Error('getter');
      },
    });
    const log = capture();
    log.logger.info('odd', { cyclic, big: 2n ** 70n, hostile, notANumber: Number.NaN });
    const [line] = log.lines();
    assert.equal(line?.big, '1180591620717411303424');
    assert.deepEqual(line?.hostile, { boom: '[unreadable]' });
    assert.equal(line?.notANumber, 'NaN');
    assert.ok(JSON.stringify(line?.cyclic).includes('[…]'));
  });
});

describe('redaction helpers', () => {
  it('knows the secret field names', () => {
    for (const name of [
      'password',
      'dbPassword',
      'passwd',
      'clientSecret',
      'accessToken',
      'Authorization',
      'apikey',
      'x-api-key',
      'api_key',
      'set-cookie',
    ]) {
      assert.ok(isSecretName(name), name);
    }
    for (const name of ['topic', 'owner', 'key', 'passage', 'messageId'])
      assert.ok(!isSecretName(name), name);
  });

  it('masks credentials quoted in free text and leaves other text alone', () => {
    assert.equal(
      redactSecrets('failed: amqp://guest:guest@localhost:5672 and https://a:b@x.io/p?token=zz&q=1'),
      'failed: amqp://guest:***@localhost:5672 and https://a:***@x.io/p?token=***&q=1',
    );
    assert.equal(redactSecrets('user@example.com wrote a=b'), 'user@example.com wrote a=b');
    assert.equal(redactSecrets('Authorization: Basic dXNlcjpwYXNz'), 'Authorization: Basic ***');
    const plain = 'nothing to mask here';
    assert.equal(redactSecrets(plain), plain);
  });

  it('serialises a thrown non-error and an error-like object', () => {
    assert.deepEqual(serializeError('plain'), { name: 'Error', message: 'plain' });
    assert.deepEqual(serializeError({ name: 'PgError', code: '57P01', message: 'terminating' }), {
      name: 'PgError',
      code: '57P01',
      message: 'terminating',
    });
    assert.deepEqual(logFields({ cause: 'x', n: 1 }), { cause: { name: 'Error', message: 'x' }, n: 1 });
  });
});

/** Every `logger.<level>(message, { event: '…' })` call in `dir`, by file and line. */
function loggedEvents(dir: string): Array<{ where: string; level: string; event: string }> {
  const found: Array<{ where: string; level: string; event: string }> = [];
  for (const name of readdirSync(dir, { recursive: true, encoding: 'utf8' })) {
    if (!name.endsWith('.ts')) continue;
    const path = join(dir, name);
    const file = ts.createSourceFile(path, readFileSync(path, 'utf8'), ts.ScriptTarget.Latest, true);
    const visit = (node: ts.Node): void => {
      if (ts.isCallExpression(node) && node.arguments.length >= 2) {
        const callee = node.expression;
        // logger.warn(…) and logger[cond ? 'warn' : 'debug'](…)
        const level = ts.isPropertyAccessExpression(callee)
          ? callee.name.text
          : ts.isElementAccessExpression(callee)
            ? 'dynamic'
            : undefined;
        const fields = node.arguments[1];
        if (level && /^(debug|info|warn|error|dynamic)$/.test(level) && fields) {
          const literals = ts.isObjectLiteralExpression(fields)
            ? [fields]
            : ts.isCallExpression(fields)
              ? fields.arguments.filter(ts.isObjectLiteralExpression)
              : [];
          for (const literal of literals) {
            for (const p of literal.properties) {
              if (
                ts.isPropertyAssignment(p) &&
                p.name.getText(file) === 'event' &&
                ts.isStringLiteral(p.initializer)
              ) {
                const line = file.getLineAndCharacterOfPosition(node.getStart(file)).line + 1;
                found.push({
                  where: `${relative(process.cwd(), path)}:${line}`,
                  level,
                  event: p.initializer.text,
                });
              }
            }
          }
        }
      }
      ts.forEachChild(node, visit);
    };
    visit(file);
  }
  return found;
}

describe('log events', () => {
  it('logged anywhere in src are declared, at the level the catalogue says', () => {
    const calls = loggedEvents(fileURLToPath(new URL('../src', import.meta.url)));
    assert.ok(calls.length >= 5, `found ${calls.length} calls naming an event`);
    const detail: readonly string[] = DETAIL_LOG_EVENTS;
    for (const { where, level, event } of calls) {
      const info = (LOG_EVENTS as Record<string, { level: string } | undefined>)[event];
      assert.ok(
        info !== undefined || detail.includes(event),
        `${where}: event ${event} is not in LOG_EVENTS`,
      );
      if (info && level !== 'debug' && level !== 'dynamic') {
        assert.equal(
          level,
          info.level,
          `${where}: ${event} is logged at ${level}, LOG_EVENTS says ${info.level}`,
        );
      }
    }
  });

  it('are snake_case and every one is documented in docs/logging.md', () => {
    const doc = readFileSync(new URL('../docs/logging.md', import.meta.url), 'utf8');
    for (const event of Object.keys(LOG_EVENTS)) {
      assert.match(event, /^[a-z]+(_[a-z]+)*$/);
      assert.ok(doc.includes(`\`${event}\``), `docs/logging.md lists ${event}`);
    }
  });
});

describe('relay logs at info', () => {
  it('writes a bounded number of lines for 500 deliveries and 40 dead letters, and no secret', async () => {
    const db = await createTestDb('clilog');
    const transport = new MemoryTransport({
      failWith: (m) =>
        m.topic === 'log.bad'
          ? new PermanentDeliveryError('refused by amqp://relay:topsecret@mq.internal:5672/')
          : undefined,
    });
    const log = capture({ level: 'info' });
    // As `mailroom relay` wires it: the relay's own lines through relayLogger, the activity
    // summary beside it.
    const relay = new Relay({
      store: db.store,
      transport,
      logger: relayLogger(log.logger),
      pollIntervalMs: 50,
      batchSize: 50,
    });
    const activity = new RelayActivityLog({
      relay,
      stats: () => db.store.stats(),
      logger: log.logger,
      progressEveryMs: 500,
    });
    const started = performance.now();
    try {
      activity.start();
      await relay.start();
      const outbox = new Outbox({ store: db.store });
      for (let i = 0; i < 10; i++) {
        await inTransaction(db.pool, (c) =>
          outbox.enqueue(c, [
            ...Array.from({ length: 50 }, (_, j) => ({
              topic: 'log.ok',
              key: `k${j % 7}`,
              payload: { i, j },
            })),
            ...(i < 4 ? Array.from({ length: 10 }, (_, j) => ({ topic: 'log.bad', payload: { i, j } })) : []),
          ]),
        );
      }
      await waitUntil(
        () => transport.messagesFor('log.ok').length >= 500 && activity.totals.dead >= 40,
        `500 deliveries and 40 dead letters (${transport.messagesFor('log.ok').length}, ${activity.totals.dead})`,
        60_000,
      );
    } finally {
      await relay.stop();
      activity.stop();
      await db.drop();
    }
    const elapsedMs = performance.now() - started;
    const lines = log.lines();
    const text = log.text();
    assert.ok(!text.includes('topsecret'), 'the credentials in the error are masked');

    // Every line names its component and its event.
    for (const l of lines) {
      assert.equal(l.component, 'relay', JSON.stringify(l));
      assert.ok(typeof l.event === 'string' && l.event in LOG_EVENTS, JSON.stringify(l));
    }
    const progress = lines.filter((l) => l.event === 'relay_progress');
    const others = lines.filter((l) => l.event !== 'relay_progress');
    // Progress lines are per interval, bounded by time; the rest by state changes: started,
    // one topic dead-lettering, stopped (and a stray first-of-interval relay_error at most).
    assert.ok(
      progress.length <= Math.ceil(elapsedMs / 500) + 1,
      `${progress.length} progress lines in ${Math.round(elapsedMs)} ms\n${text}`,
    );
    assert.ok(others.length <= 5, `${others.length} other lines for 540 messages\n${text}`);
    const dead = lines.filter((l) => l.event === 'topic_dead_lettering');
    assert.equal(dead.length, 1, `one dead-letter warning for 40 dead letters\n${text}`);
    assert.equal(dead[0]?.topic, 'log.bad');
    assert.deepEqual(dead[0]?.error, {
      name: 'PermanentDeliveryError',
      code: 'delivery_permanent',
      message: 'refused by amqp://relay:***@mq.internal:5672/',
    });
    assert.ok(lines.every((l) => l.level !== 'debug'));
    for (const l of lines)
      if (l.event !== undefined) assert.ok(String(l.event) in LOG_EVENTS, String(l.event));
  });
});
