/**
 * The commands that serve several databases or schemas (`relay`, `status`, `dlq`, `verify`), run
 * as an operator runs them: the built command against the real PostgreSQL and RabbitMQ.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Outbox } from '../src/core/index.js';
import { AMQP_URL, bindConsumer } from './helpers/amqp.js';
import { runCli, spawnCli, stopCli } from './helpers/cli.js';
import { createTestDb, DATABASE_URL, inTransaction, type TestDb } from './helpers/postgres.js';
import { waitUntil } from './helpers/wait.js';

/** DATABASE_URL with a password in it, to check that no output shows it. */
const SECRET = 'hunter2secret';
function withPassword(url: string): string {
  const u = new URL(url);
  u.password = SECRET;
  return u.toString();
}

describe('mailroom with several sources', () => {
  let a: TestDb;
  let b: TestDb;
  let dir: string;
  before(async () => {
    [a, b] = await Promise.all([createTestDb('cma'), createTestDb('cmb')]);
    dir = mkdtempSync(join(tmpdir(), 'mailroom-sources-'));
  });
  after(async () => {
    await Promise.all([a.drop(), b.drop()]);
    rmSync(dir, { recursive: true, force: true });
  });
  const env = () => ({ DATABASE_URL });

  it('relay: two --schema flags deliver both schemas through one broker, a missing schema does not stop them', async () => {
    const exchange = `mr_multi_${randomBytes(4).toString('hex')}`;
    const consumer = await bindConsumer(exchange);
    const missing = `nope_${randomBytes(3).toString('hex')}`;
    const child = spawnCli(
      [
        'relay',
        '--schema',
        a.schema,
        '--schema',
        b.schema,
        '--schema',
        missing,
        '--transport',
        AMQP_URL,
        '--exchange',
        exchange,
        '--log-format',
        'json',
      ],
      env(),
    );
    let text = '';
    child.stderr?.on('data', (d: Buffer) => (text += d.toString()));
    try {
      for (const db of [a, b]) {
        const outbox = new Outbox({ store: db.store });
        await inTransaction(db.pool, (c) => outbox.enqueue(c, { topic: `from.${db.schema}`, payload: 1 }));
      }
      await waitUntil(() => consumer.received.length >= 2, `both messages\n${text}`);
      assert.deepEqual(
        consumer.received.map((m) => m.topic).sort(),
        [`from.${a.schema}`, `from.${b.schema}`].sort(),
      );
      const lines = text
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as Record<string, unknown>);
      const started = lines.filter((l) => l.msg === 'relay started').map((l) => l.source);
      assert.deepEqual(started.sort(), [a.schema, b.schema].sort());
      await waitUntil(
        () => text.includes('did not start') && text.includes(missing),
        `a warning about the missing schema\n${text}`,
      );
    } finally {
      const code = await stopCli(child);
      await consumer.close();
      assert.equal(code, 0, text);
    }
  });

  it('refuses several URLs with several schemas, saying what to write', async () => {
    const res = await runCli(
      [
        'status',
        '--database-url',
        DATABASE_URL,
        '--database-url',
        withPassword(DATABASE_URL),
        '--schema',
        'x',
        '--schema',
        'y',
      ],
      {},
    );
    assert.equal(res.code, 2, res.stderr);
    assert.match(
      res.stderr,
      /2 --database-url and 2 --schema flags: give one --database-url with several --schema/,
    );
    assert.match(res.stderr, /--sources/);
    assert.doesNotMatch(res.stderr + res.stdout, new RegExp(SECRET));
  });

  it('refuses two sources with one name, and the same database and schema twice', async () => {
    const twice = await runCli(
      [
        'status',
        '--sources',
        JSON.stringify([
          { name: 'x', schema: a.schema },
          { name: 'x', schema: b.schema },
        ]),
      ],
      env(),
    );
    assert.equal(twice.code, 2, twice.stderr);
    assert.match(twice.stderr, /two sources are named "x"/);
    const same = await runCli(['status', '--schema', a.schema, '--schema', a.schema], env());
    assert.equal(same.code, 2, same.stderr);
    assert.match(same.stderr, /same database and schema/);
  });

  it('status: --json keyed by source name, text with a header per source, a broken source reported beside the others', async () => {
    const json = await runCli(['status', '--schema', a.schema, '--schema', b.schema, '--json'], env());
    assert.equal(json.code, 0, json.stderr);
    const report = JSON.parse(json.stdout) as Record<string, { schema: string; backlog: number }>;
    assert.deepEqual(Object.keys(report), [a.schema, b.schema]);
    assert.equal(report[a.schema]?.schema, a.schema);
    assert.equal(typeof report[b.schema]?.backlog, 'number');

    const file = join(dir, 'mailroom.config.json');
    writeFileSync(
      file,
      JSON.stringify({
        sources: [
          { name: 'alpha', schema: a.schema },
          { name: 'broken', databaseUrl: withPassword('postgres://postgres@127.0.0.1:1/test'), schema: 'x' },
        ],
        connectTimeoutMs: 1000,
      }),
    );
    const text = await runCli(['status', '--config', file], env());
    assert.equal(text.code, 1, text.stderr);
    assert.match(
      text.stdout,
      new RegExp(`== alpha \\(127\\.0\\.0\\.1:5432/test, schema ${a.schema}\\) ==\\nschema +${a.schema}`),
    );
    assert.match(text.stdout, /== broken \(127\.0\.0\.1:1\/test, schema x\) ==\nerror: /);
    assert.doesNotMatch(text.stdout + text.stderr, new RegExp(SECRET));
  });

  it('dlq list and purge per source; verify refuses several sources', async () => {
    const list = await runCli(['dlq', 'list', '--json', '--schema', a.schema, '--schema', b.schema], env());
    assert.equal(list.code, 0, list.stderr);
    assert.deepEqual(JSON.parse(list.stdout), { [a.schema]: [], [b.schema]: [] });
    const purge = await runCli(['dlq', 'purge', '--yes', '--schema', a.schema, '--schema', b.schema], env());
    assert.equal(purge.code, 0, purge.stderr);
    assert.match(
      purge.stdout,
      new RegExp(`== ${a.schema} .*==\\nno dead letters\\n\\n== ${b.schema} .*==\\nno dead letters`),
    );
    const verify = await runCli(
      ['verify', 'check', '--schema', a.schema, '--schema', b.schema, '--transport', AMQP_URL],
      env(),
    );
    assert.equal(verify.code, 2, verify.stderr);
    assert.match(verify.stderr, /verify checks one source at a time/);
  });

  it('relay --print-config shows a sources list without passwords', async () => {
    const res = await runCli(['relay', '--print-config', '--transport', AMQP_URL], {
      MAILROOM_SOURCES: JSON.stringify([
        { name: 'one', databaseUrl: withPassword(DATABASE_URL), schema: a.schema },
      ]),
    });
    assert.equal(res.code, 0, res.stderr);
    const printed = JSON.parse(res.stdout) as { sources: Array<{ name: string; databaseUrl: string }> };
    assert.equal(printed.sources[0]?.name, 'one');
    assert.doesNotMatch(res.stdout, new RegExp(SECRET));
    // Repeated flags: the sources as the relay would serve them, named by schema.
    const flags = await runCli(
      ['relay', '--print-config', '--transport', AMQP_URL, '--schema', 'x', '--schema', 'y'],
      {
        DATABASE_URL: withPassword(DATABASE_URL),
      },
    );
    assert.equal(flags.code, 0, flags.stderr);
    const shown = JSON.parse(flags.stdout) as { sources: Array<{ name: string; schema: string }> };
    assert.deepEqual(
      shown.sources.map((s) => [s.name, s.schema]),
      [
        ['x', 'x'],
        ['y', 'y'],
      ],
    );
    assert.doesNotMatch(flags.stdout, new RegExp(SECRET));
    // Without any database URL it still prints the settings.
    const bare = await runCli(['relay', '--print-config', '--transport', AMQP_URL], {});
    assert.equal(bare.code, 0, bare.stderr);
  });
});
