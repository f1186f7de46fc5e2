/**
 * The "Input" list of issue 11 as a newcomer meets it: the built `mailroom` command, one step
 * after another in the order a new user tries things (help, a schema name, relay flags,
 * migrate, send, the SQL API, status). Each step is what the user typed and what they must
 * see; the detailed cases live beside each feature's own tests.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { AMQP_URL } from './helpers/amqp.js';
import { runCli, type CliResult } from './helpers/cli.js';
import { DATABASE_URL } from './helpers/postgres.js';

function oneLineError(r: CliResult, code: number): string {
  assert.equal(r.code, code, r.stderr);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, `one line on stderr, got:\n${r.stderr}`);
  return lines[0] as string;
}

describe('a newcomer typing the inputs of issue 11', () => {
  const schema = `newcomer_${randomBytes(4).toString('hex')}`;
  const env = { DATABASE_URL, MAILROOM_SCHEMA: schema };
  let pool: pg.Pool;
  before(() => {
    pool = new pg.Pool({ connectionString: DATABASE_URL, max: 2 });
  });
  after(async () => {
    await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    await pool.end();
  });

  it('is told, step by step, what each wrong input was and what to type instead', async () => {
    // Help for a command misspelled: not the command list, which would hide the typo.
    const help = oneLineError(await runCli(['help', 'stauts']), 2);
    assert.match(help, /unknown command "stauts" \(did you mean "status"\?\)/);

    // A PostgreSQL system schema as Mailroom's schema.
    for (const system of ['pg_catalog', 'information_schema', 'pg_toast']) {
      const r = await runCli(['status', '--schema', system], { DATABASE_URL });
      assert.match(oneLineError(r, 2), /is a PostgreSQL system schema name/, system);
    }

    // A first retry delay above the largest one.
    const retry = await runCli(
      ['relay', '--transport', AMQP_URL, '--retry-base-ms', '5000', '--retry-max-ms', '1000'],
      env,
    );
    assert.match(oneLineError(retry, 2), /--retry-base-ms \(5000\) must not exceed --retry-max-ms \(1000\)/);

    const migrate = await runCli(['migrate'], env);
    assert.equal(migrate.code, 0, migrate.stderr);

    // An id too big for a JavaScript number goes out digit for digit.
    const sent = await runCli(
      ['send', '--topic', 'order.created', '--payload', '{"id": 12345678901234567890123}'],
      env,
    );
    assert.equal(sent.code, 0, sent.stderr);
    const stored = await pool.query(
      `SELECT convert_from(payload, 'UTF8') AS p FROM "${schema}".outbox WHERE id = $1`,
      [sent.stdout.trim()],
    );
    assert.equal(stored.rows[0].p, '{"id":12345678901234567890123}');

    // The SQL API refuses what the library refuses: 2 MiB is over the 1 MiB limit.
    await assert.rejects(
      pool.query(`SELECT "${schema}".enqueue('big', to_jsonb(repeat('x', 2 * 1024 * 1024)))`),
      (err: Error & { code?: string }) => {
        assert.equal(err.code, '22023');
        assert.match(err.message, /payload is 2097154 bytes, over the limit of 1048576 bytes/);
        return true;
      },
    );

    // status says whether the verify ledger costs a row per message right now.
    const status = await runCli(['status'], env);
    assert.equal(status.code, 0, status.stderr);
    assert.match(status.stdout, /^backlog +1$/m);
    assert.match(status.stdout, /^verify ledger off$/m);
  });
});
