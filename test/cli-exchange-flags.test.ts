/**
 * `mailroom relay --exchange-type` and `--no-declare-exchange`: for exchanges of another type and
 * for least-privilege users who may not declare exchanges (issue 11).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import amqp from 'amqplib';
import { AMQP_URL } from './helpers/amqp.js';
import { runCli, spawnCli } from './helpers/cli.js';
import { createTestDb, DATABASE_URL, type TestDb } from './helpers/postgres.js';
import { waitUntil } from './helpers/wait.js';

describe('mailroom relay exchange flags', () => {
  let db: TestDb;
  before(async () => {
    db = await createTestDb('exflags');
  });
  after(async () => {
    await db.drop();
  });

  const base = () => ['--database-url', DATABASE_URL, '--schema', db.schema, '--transport', AMQP_URL];

  it('takes the exchange type and the declare switch from flags and environment', async () => {
    const flags = await runCli([
      'relay',
      '--print-config',
      ...base(),
      '--exchange-type',
      'direct',
      '--no-declare-exchange',
    ]);
    assert.equal(flags.code, 0, flags.stderr);
    const printed = JSON.parse(flags.stdout) as Record<string, unknown>;
    assert.equal(printed.exchangeType, 'direct');
    assert.equal(printed.declareExchange, false);
    const env = await runCli(['relay', '--print-config', ...base()], {
      MAILROOM_EXCHANGE_TYPE: 'fanout',
      MAILROOM_DECLARE_EXCHANGE: 'false',
    });
    const fromEnv = JSON.parse(env.stdout) as Record<string, unknown>;
    assert.equal(fromEnv.exchangeType, 'fanout');
    assert.equal(fromEnv.declareExchange, false);
  });

  it('refuses an unknown exchange type, naming the allowed ones', async () => {
    const r = await runCli(['relay', ...base(), '--exchange-type', 'nope']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /exchange-type/);
    assert.match(r.stderr, /topic.*direct.*fanout.*headers/);
  });

  it('declares the exchange with the type given, and declares nothing when told not to', async () => {
    const conn = await amqp.connect(AMQP_URL);
    conn.on('error', () => undefined);
    const direct = `mr_exdirect_${randomBytes(3).toString('hex')}`;
    const undeclared = `mr_exnone_${randomBytes(3).toString('hex')}`;
    const run = async (args: string[]) => {
      const child = spawnCli(['relay', ...base(), '--log-level', 'info', ...args]);
      let err = '';
      child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
      await waitUntil(
        () => err.includes('relay started') || child.exitCode !== null,
        'the relay to start',
        30_000,
      );
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
      return err;
    };
    try {
      await run(['--exchange', direct, '--exchange-type', 'direct']);
      // Declaring it as a topic exchange now fails: the relay made it a direct one.
      const ch = await conn.createChannel();
      ch.on('error', () => undefined);
      await assert.rejects(ch.assertExchange(direct, 'topic', { durable: true }), /PRECONDITION_FAILED/);
      const ch2 = await conn.createChannel();
      await ch2.deleteExchange(direct);

      await run(['--exchange', undeclared, '--no-declare-exchange']);
      const ch3 = await conn.createChannel();
      ch3.on('error', () => undefined);
      await assert.rejects(ch3.checkExchange(undeclared), /NOT_FOUND/, 'nothing was declared');
    } finally {
      await conn.close().catch(() => undefined);
    }
  });
});
