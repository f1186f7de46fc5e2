/**
 * The bad-input corpus: garbage, truncated, oversized and SQL-looking input at every boundary.
 * Each must give a clear, typed, one-line error — never a stack trace, never a crash — and
 * nothing already committed may be lost.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Outbox, Relay, type MessageInput } from '../src/core/index.js';
import { MemoryTransport } from '../src/transports/memory/index.js';
import { runCli, type CliResult } from './helpers/cli.js';
import { createTestDb, DATABASE_URL, inTransaction, type TestDb } from './helpers/postgres.js';
import { waitUntil } from './helpers/wait.js';

const SQLISH = [
  "'; DROP TABLE outbox; --",
  '" OR 1=1 --',
  'x"; SELECT pg_sleep(10); --',
  'mailroom.outbox',
  '$1',
  '\\x00',
];

function assertCleanFailure(r: CliResult, what: string, code = 2) {
  assert.equal(r.signal, null, `${what}: no crash`);
  assert.equal(r.code, code, `${what}: exit ${code}, got ${r.code}\n${r.stderr}`);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, `${what}: one line of error, got:\n${r.stderr}`);
  assert.doesNotMatch(
    r.stderr,
    /\n\s+at |TypeError|ReferenceError|undefined is not/,
    `${what}: no stack trace`,
  );
}

describe('bad input corpus', () => {
  let db: TestDb;
  let dir: string;
  before(async () => {
    db = await createTestDb('corpus');
    dir = mkdtempSync(join(tmpdir(), 'mailroom-corpus-'));
  });
  after(async () => db.drop());

  it('rejects malformed config files with the file and the problem', async () => {
    const bodies: Array<[string, string | Buffer]> = [
      ['truncated', '{"databaseUrl": "postgres://x@y/z", "schema": '],
      ['array', '[1, 2, 3]'],
      ['number', '42'],
      ['null', 'null'],
      ['empty', ''],
      ['binary', Buffer.from([0xff, 0xfe, 0x00, 0x01, 0x9c])],
      ['wrong type', '{"batchSize": "many"}'],
      ['unknown key', '{"databseUrl": "postgres://x@y/z"}'],
      ['negative', '{"leaseMs": -5}'],
      ['sql key', `{"${SQLISH[0]?.replace(/"/g, '')}": 1}`],
    ];
    for (const [name, body] of bodies) {
      const file = join(dir, `${name.replace(/\W/g, '_')}.json`);
      writeFileSync(file, body);
      const r = await runCli(['relay', '--print-config', '--config', file]);
      assertCleanFailure(r, `config ${name}`);
      assert.match(r.stderr, /config file|must be|unknown key/, name);
    }
    const missing = await runCli(['status', '--config', join(dir, 'nope.json')]);
    assertCleanFailure(missing, 'missing config file');
    assert.match(missing.stderr, /cannot read config file/);
  });

  it('rejects bad database and broker URLs without printing passwords', async () => {
    const databaseUrls = [
      'postgres//no-colon',
      'http://user:pw-secret@host/db',
      'mysql://user:pw-secret@host/db',
      '',
      ' ',
      'postgres://user:pw-secret@[::1/db',
      `postgres://u:pw-secret@host/${'x'.repeat(5000)}`,
    ];
    for (const url of databaseUrls) {
      const r = await runCli(['status', '--database-url', url]);
      assert.ok(
        r.code === 1 || r.code === 2,
        `database URL ${JSON.stringify(url.slice(0, 40))}: exit 1 or 2`,
      );
      assertCleanFailure(r, `database URL ${JSON.stringify(url.slice(0, 40))}`, r.code as number);
      assert.doesNotMatch(r.stderr, /pw-secret/);
    }
    const transports = [
      'amqp//x',
      'gopher://h:70',
      'amqp://user:pw-secret@',
      'ftp://user:pw-secret@h',
      'not a url',
    ];
    for (const url of transports) {
      const r = await runCli([
        'relay',
        '--database-url',
        DATABASE_URL,
        '--schema',
        db.schema,
        '--transport',
        url,
      ]);
      assertCleanFailure(r, `transport ${url}`, r.code as number);
      assert.doesNotMatch(r.stderr, /pw-secret/);
    }
    const unreachable = await runCli(['status', '--database-url', 'postgres://u:pw-secret@127.0.0.1:1/db']);
    assertCleanFailure(unreachable, 'unreachable database', 1);
    assert.doesNotMatch(unreachable.stderr, /pw-secret/);
  });

  it('treats SQL-looking identifiers as invalid and SQL-looking data as data', async () => {
    for (const schema of SQLISH) {
      const r = await runCli(['status', '--database-url', DATABASE_URL, '--schema', schema]);
      assertCleanFailure(r, `schema ${schema}`);
      assert.match(r.stderr, /plain SQL identifier/);
    }
    // As a topic, key or header, the same strings are ordinary data, stored byte for byte.
    for (const text of SQLISH) {
      const r = await runCli([
        'send',
        '--database-url',
        DATABASE_URL,
        '--schema',
        db.schema,
        '--topic',
        text,
        '--key',
        text,
        '--header',
        `h=${text}`,
        '--payload',
        JSON.stringify({ text }),
      ]);
      assert.equal(r.code, 0, r.stderr);
      const id = r.stdout.trim();
      const row = (
        await db.pool.query(`SELECT topic, key, headers FROM "${db.schema}".outbox WHERE id = $1`, [id])
      ).rows[0];
      assert.deepEqual(row, { topic: text, key: text, headers: { h: text } });
    }
    const tables = await db.pool.query(`SELECT count(*)::int AS n FROM pg_tables WHERE schemaname = $1`, [
      db.schema,
    ]);
    assert.ok(tables.rows[0].n >= 4, 'every table still there');
  });

  it('rejects garbage arguments to every command in one line', async () => {
    const commands = ['migrate', 'relay', 'status', 'dlq', 'send', 'verify', 'demo'];
    const garbage = [
      ['--'],
      ['stray-positional', 'and-another', 'and-more'],
      ['--\u0001'],
      ['--database-url'],
      ['--no-such-flag', 'x'],
      ['-z'],
      ['--schema', '--json'],
    ];
    for (const command of commands) {
      for (const args of garbage) {
        // `demo --` is a demo with no flags, a valid call.
        if (command === 'demo' && args[0] === '--') continue;
        const r = await runCli([command, ...args], {}, 20_000);
        assert.notEqual(r.code, 0, `${command} ${JSON.stringify(args)} must not succeed`);
        assertCleanFailure(r, `${command} ${JSON.stringify(args)}`, r.code as number);
      }
    }
    const unknown = await runCli(['frobnicate']);
    assertCleanFailure(unknown, 'unknown command');
    // help of garbage is the same clean failure, never the command list with exit 0.
    for (const topic of ['frobnicate', '\u0001', 'x'.repeat(5000), ...SQLISH]) {
      const r = await runCli(['help', topic]);
      assertCleanFailure(r, `help ${JSON.stringify(topic.slice(0, 20))}`);
      assert.match(r.stderr, /^mailroom help: unknown command /);
      assert.ok(r.stderr.length < 400, 'a long name is cut in the message');
    }
    const sendGarbage = [
      ['--topic', 't', '--payload', '{"truncated": '],
      ['--topic', '', '--payload', '1'],
      ['--topic', 'x'.repeat(300), '--payload', '1'],
      ['--topic', 't', '--key', 'k'.repeat(2000), '--payload', '1'],
      ['--topic', 't', '--header', 'no-equals-sign', '--payload', '1'],
      ['--topic', 't', '--payload', '1', '--delay', 'soon'],
    ];
    for (const args of sendGarbage) {
      const r = await runCli(['send', '--database-url', DATABASE_URL, '--schema', db.schema, ...args]);
      assertCleanFailure(r, `send ${JSON.stringify(args).slice(0, 60)}`);
    }
  });

  it('keeps the relay running and loses nothing while bad messages are turned away', async () => {
    await db.pool.query(`TRUNCATE "${db.schema}".outbox`);
    const transport = new MemoryTransport();
    const relay = new Relay({ store: db.store, transport, pollIntervalMs: 50 });
    await relay.start();
    const outbox = new Outbox({ store: db.store, maxPayloadBytes: 4096 });
    try {
      const good = await inTransaction(db.pool, (c) =>
        outbox.enqueue(c, { topic: 'good', key: 'k', payload: 1 }),
      );
      const cyclic: Record<string, unknown> = {};
      cyclic.self = cyclic;
      const bad: unknown[] = [
        null,
        42,
        'a string',
        {},
        { topic: 't' },
        { topic: 't', payload: cyclic },
        { topic: 't', payload: 'x'.repeat(5000) },
        { topic: 't', payload: 1, headers: { a: { nested: true } } },
        { topic: 't', payload: 1, headers: 'a=b' },
        { topic: 't\r\n', payload: 1 },
        { topic: 't', key: 'k\u0000', payload: 1 },
        { topic: 't', payload: 1, id: "'; DROP TABLE x; --" },
        { topic: 't', payload: 1, delayMs: Number.NaN },
        { topic: 't', payload: 1, extra: true },
        { topic: 't', payload: Symbol('s') },
      ];
      for (const [i, message] of bad.entries()) {
        await assert.rejects(
          inTransaction(db.pool, (c) => outbox.enqueue(c, message as MessageInput)),
          (err: Error) => /InvalidMessageError|PayloadTooLargeError/.test(err.name),
          `bad message #${i}`,
        );
      }
      // The SQL API turns bad input away too, inside the caller's transaction.
      for (const sql of [
        `SELECT "${db.schema}".enqueue(NULL, '{}')`,
        `SELECT "${db.schema}".enqueue('t', '{}', repeat('k', 2000))`,
        `SELECT "${db.schema}".enqueue('t', '{}', NULL, '[1]')`,
        `SELECT "${db.schema}".enqueue(E't\\x01', '{}')`,
        `SELECT "${db.schema}".enqueue('t', '{}', NULL, '{}', NULL, '-1 second')`,
      ]) {
        await assert.rejects(db.pool.query(sql), /mailroom\.enqueue:/, sql);
      }
      const after = await inTransaction(db.pool, (c) =>
        outbox.enqueue(c, { topic: 'good', key: 'k', payload: 2 }),
      );
      await waitUntil(() => transport.messagesFor('good').length >= 2, 'both good messages');
      assert.deepEqual(
        transport.messagesFor('good').map((m) => m.id),
        [good, after],
      );
      assert.ok(relay.running, 'the relay is still running');
      assert.equal(
        transport.messages.filter((m) => m.topic !== 'good').length,
        0,
        'nothing bad was delivered',
      );
    } finally {
      await relay.stop();
    }
  });
});
