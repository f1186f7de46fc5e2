import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Outbox, uuidv7, type MessageInput } from '../src/core/index.js';
import { inParallel, runCli, type CliResult } from './helpers/cli.js';
import { DATABASE_URL, createTestDb, inTransaction, type TestDb } from './helpers/postgres.js';

function oneLine(r: CliResult): void {
  assert.equal(r.stderr.trim().split('\n').length, 1, `one line on stderr, got:\n${r.stderr}`);
}

// Runs the built command (npm run build first) against a schema of its own. The messages are
// settled through the store the way a relay does (claim, settle delivered), and their
// acknowledgement deadlines moved into the past instead of waiting for them.
describe('mailroom ack and the acknowledgement counts of status', () => {
  let db: TestDb;
  let outbox: Outbox;
  const env = { DATABASE_URL };
  const cli = (args: string[]) => runCli([...args, '--schema', db.schema], env);
  const ids = { awaiting: '', acknowledged: '', expired: '', resending: '', plain: '' };

  /** Claims everything due and settles it as delivered: messages with ack start awaiting. */
  async function deliverAll(): Promise<void> {
    for (;;) {
      const batch = await db.store.claim({ owner: 'test', limit: 1000, leaseMs: 10_000 });
      if (batch.messages.length === 0) return;
      await db.store.settle({
        leaseToken: batch.leaseToken,
        delivered: batch.messages,
        released: [],
        retry: [],
        dead: [],
      });
    }
  }

  const send = (message: MessageInput) => inTransaction(db.pool, (c) => outbox.enqueue(c, message));

  /** Moves the acknowledgement deadline of `id` into the past and runs the relay's sweep. */
  async function passDeadline(id: string): Promise<void> {
    await db.pool.query(
      `UPDATE "${db.schema}".ack SET deadline = now() - interval '1 second' WHERE id = $1`,
      [id],
    );
    await db.store.sweepAcks(100);
  }

  before(async () => {
    db = await createTestDb('cli_ack');
    outbox = new Outbox({ store: db.store });
    ids.awaiting = await send({
      topic: 'payment.requested',
      key: 'order-1',
      payload: { order: 1 },
      ack: { timeoutMs: 3_600_000, maxResends: 2 },
    });
    ids.acknowledged = await send({
      topic: 'payment.requested',
      key: 'order-2',
      payload: { order: 2 },
      ack: { timeoutMs: 3_600_000, maxResends: 2 },
    });
    ids.expired = await send({
      topic: 'payment.requested',
      key: 'order-3',
      payload: { order: 3 },
      ack: { timeoutMs: 1000, maxResends: 0, onExpire: 'payment.cancelled' },
    });
    ids.resending = await send({
      topic: 'stock.reserve',
      key: 'order-4',
      payload: { order: 4 },
      ack: { timeoutMs: 1000, maxResends: 1 },
    });
    ids.plain = await send({ topic: 'order.created', payload: { order: 5 } });
    await deliverAll();
    assert.equal(
      await db.store.applyAck({
        id: ids.acknowledged,
        consumer: 'payments',
        result: { authorized: true, reference: 'pay-2' },
      }),
      'acknowledged',
    );
    await passDeadline(ids.expired);
    await passDeadline(ids.resending);
  });
  after(async () => {
    await db.drop();
  });

  it('counts awaiting (resends included), acknowledged and expired messages in status, as a table and as JSON', async () => {
    const [json, table] = await inParallel([['status', '--json'], ['status']], cli);
    assert.equal(json.code, 0, json.stderr);
    const status = JSON.parse(json.stdout);
    assert.deepEqual(status.acks, {
      awaiting: 2,
      acknowledged: 1,
      expired: 1,
      callbacksPending: 0,
      callbacksDead: 0,
    });
    // The cancellation of the expired message waits in the outbox like any message, and so does
    // the resent copy.
    assert.equal(status.backlog, 2);

    assert.equal(table.code, 0, table.stderr);
    assert.match(
      table.stdout,
      /\nacks {10}2 awaiting, 1 acknowledged, 1 expired {2}\(mailroom ack expired lists them\)\n/,
    );
    assert.match(table.stdout, /\ncallbacks {5}0 pending, 0 dead\n/);
    assert.match(table.stdout, /\nverify ledger off\n/);
  });

  it('lists every message with ack, with its state, resends, time, consumer and result', async () => {
    const r = await cli(['ack', 'list']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, '');
    const lines = r.stdout.trimEnd().split('\n');
    assert.match(lines[0] as string, /^ID\s+STATE\s+TOPIC\s+KEY\s+RESENDS\s+WHEN\s+CONSUMER\s+RESULT$/);
    assert.equal(lines.length, 5, r.stdout);
    const row = (id: string) => lines.find((l) => l.startsWith(id)) ?? assert.fail(`no row for ${id}`);
    assert.match(
      row(ids.awaiting),
      /\sawaiting\s+payment\.requested\s+order-1\s+0\/2\s+deadline \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ\s+-\s+-$/,
    );
    assert.match(
      row(ids.acknowledged),
      // jsonb keeps an object's keys shortest first.
      /\sacknowledged\s+payment\.requested\s+order-2\s+0\/2\s+acked \d{4}-[\d :-]+Z\s+payments\s+\{"reference":"pay-2","authorized":true\}$/,
    );
    assert.match(
      row(ids.expired),
      /\sexpired\s+payment\.requested\s+order-3\s+0\/0\s+expired \d{4}-[\d :-]+Z\s+-\s+-$/,
    );
    assert.match(
      row(ids.resending),
      /\sresending\s+stock\.reserve\s+order-4\s+1\/1\s+resend queued\s+-\s+-$/,
    );
    assert.ok(!r.stdout.includes(ids.plain), 'a message without ack is not listed');
  });

  it('lists as JSON, filters by state (awaiting includes resending) and limits', async () => {
    const [all, awaitingList, acknowledged, limited] = await inParallel(
      [
        ['ack', 'list', '--json'],
        ['ack', 'list', '--state', 'awaiting', '--json'],
        ['ack', 'list', '--state', 'acknowledged'],
        ['ack', 'list', '--limit', '1', '--json'],
      ],
      cli,
    );
    assert.equal(all.code, 0, all.stderr);
    const records = JSON.parse(all.stdout) as Array<Record<string, unknown>>;
    assert.equal(records.length, 4);
    const acked = records.find((x) => x.id === ids.acknowledged);
    assert.deepEqual(Object.keys(acked ?? {}), [
      'id',
      'state',
      'topic',
      'key',
      'resends',
      'maxResends',
      'deadline',
      'sentAt',
      'ackedAt',
      'consumer',
      'result',
      'expiredAt',
    ]);
    assert.equal(acked?.state, 'acknowledged');
    assert.equal(acked?.consumer, 'payments');
    assert.deepEqual(acked?.result, { authorized: true, reference: 'pay-2' });
    assert.ok(!Number.isNaN(Date.parse(String(acked?.ackedAt))), 'ackedAt is a time');
    assert.equal(acked?.deadline, null);

    const awaiting = JSON.parse(awaitingList.stdout) as Array<{
      id: string;
      state: string;
    }>;
    assert.deepEqual(
      awaiting.map((x) => [x.id, x.state]),
      [
        [ids.resending, 'resending'],
        [ids.awaiting, 'awaiting-ack'],
      ],
    );
    assert.equal(acknowledged.code, 0, acknowledged.stderr);
    assert.equal(acknowledged.stdout.trimEnd().split('\n').length, 2);
    assert.ok(acknowledged.stdout.includes(ids.acknowledged));

    const one = JSON.parse(limited.stdout) as unknown[];
    assert.equal(one.length, 1);
  });

  it('lists the expired messages with ack expired', async () => {
    const [r, table] = await inParallel(
      [
        ['ack', 'expired', '--json'],
        ['ack', 'expired'],
      ],
      cli,
    );
    assert.equal(r.code, 0, r.stderr);
    const [expired, ...rest] = JSON.parse(r.stdout) as Array<Record<string, unknown>>;
    assert.deepEqual(rest, []);
    assert.equal(expired?.id, ids.expired);
    assert.equal(expired?.state, 'expired');
    assert.ok(!Number.isNaN(Date.parse(String(expired?.expiredAt))));
    assert.match(table.stdout, new RegExp(`\\n${ids.expired}\\s+expired\\s+payment\\.requested`));
  });

  it("shows one message's state with every field the store knows, wherever the message is", async () => {
    const unknownId = uuidv7();
    const [acked, awaitingShown, resendingShown, text, unknown, plain] = await inParallel(
      [
        ['ack', 'show', ids.acknowledged, '--json'],
        ['ack', 'show', ids.awaiting, '--json'],
        ['ack', 'show', ids.resending.toUpperCase(), '--json'],
        ['ack', 'show', ids.expired],
        ['ack', 'show', unknownId, '--json'],
        ['ack', 'show', ids.plain],
      ],
      cli,
    );
    assert.equal(acked.code, 0, acked.stderr);
    const s = JSON.parse(acked.stdout);
    assert.equal(s.id, ids.acknowledged);
    assert.equal(s.state, 'acknowledged');
    assert.equal(s.topic, 'payment.requested');
    assert.equal(s.resends, 0);
    assert.equal(s.consumer, 'payments');
    assert.deepEqual(s.result, { authorized: true, reference: 'pay-2' });
    assert.match(s.ackedAt, /^\d{4}-\d\d-\d\dT/);

    const awaiting = JSON.parse(awaitingShown.stdout);
    assert.equal(awaiting.state, 'awaiting-ack');
    assert.ok(Date.parse(awaiting.ackDeadline) > Date.now() + 3_000_000, 'the deadline is an hour out');

    // Resending: the copy is back in the outbox, so the message is pending again.
    const resending = JSON.parse(resendingShown.stdout);
    assert.equal(resending.id, ids.resending, 'the id is matched in any case');
    assert.equal(resending.state, 'pending');
    assert.equal(resending.resends, 1);

    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, new RegExp(`^id\\s+${ids.expired}\\n`));
    assert.match(text.stdout, /\nstate\s+expired {2}\(no acknowledgement came after every resend/);
    assert.match(text.stdout, /\nexpired at\s+\d{4}-\d\d-\d\dT[\d:.]+Z {2}\(.* ago\)\n/);
    assert.match(text.stdout, /\nacked at\s+-\n/);

    assert.equal(unknown.code, 0, unknown.stderr);
    assert.deepEqual(JSON.parse(unknown.stdout), { id: unknownId, state: 'unknown' });
    assert.match(plain.stdout, /\nstate\s+unknown {2}\(in no table: delivered and deleted/);
  });

  it('rejects an unknown state, a bad id, a bad duration and misplaced flags with exit code 2, naming the value', async () => {
    const cases: Array<[string[], RegExp]> = [
      [
        ['ack', 'list', '--state', 'lost'],
        /^mailroom ack: flag --state must be one of awaiting, acknowledged, expired, got "lost"/,
      ],
      [['ack', 'show', 'order-42'], /^mailroom ack: "order-42" is not a UUID/],
      [['ack', 'show'], /^mailroom ack: ack show needs a message id/],
      [
        ['ack', 'prune', '--older-than', '3 days'],
        /^mailroom ack: --older-than must be a duration like 30s.*got "3 days"/,
      ],
      [['ack', 'prune'], /^mailroom ack: ack prune needs --older-than <duration>/],
      [['ack', 'list', '--limit', '0'], /^mailroom ack: flag --limit must be a whole number from 1/],
      [['ack', 'expired', '--state', 'awaiting'], /^mailroom ack: ack expired takes no --state/],
      [['ack', 'list', '--older-than', '1d'], /^mailroom ack: ack list takes no --older-than/],
      [['ack', 'lst'], /^mailroom ack: unknown ack subcommand "lst"; use one of list, expired, show, prune/],
      [['ack'], /^mailroom ack: ack needs a subcommand/],
    ];
    const results = await inParallel(cases, ([args]) => cli(args));
    for (const [i, [args, expected]] of cases.entries()) {
      const r = results[i] as CliResult;
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.equal(r.stdout, '', args.join(' '));
      oneLine(r);
      assert.match(r.stderr, expected);
    }
  });

  it('lists ack in the main help and explains its subcommands', async () => {
    const [main, help] = await inParallel([['--help'], ['ack', '--help']], (args) => runCli(args));
    assert.match(main.stdout, /\n {2}ack {2,}messages sent with ack/);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /--state <awaiting\|acknowledged\|expired>/);
    assert.match(help.stdout, /--older-than <duration>/);
    assert.match(help.stdout, /prune .*older-than/s);
  });

  // Last: it deletes the records the other tests read.
  it('prunes finished records older than the duration, in batches, and leaves the others', async () => {
    // 2,500 acknowledged records from two days ago: three batches of the prune.
    await db.pool.query(
      `INSERT INTO "${db.schema}".ack (id, state, acked_at, consumer, updated_at)
       SELECT gen_random_uuid(), 'acknowledged', now() - interval '2 days', 'bulk', now() - interval '2 days'
       FROM generate_series(1, 2500)`,
    );
    await db.pool.query(
      `UPDATE "${db.schema}".ack SET updated_at = now() - interval '2 days' WHERE id = ANY($1::uuid[])`,
      [[ids.acknowledged, ids.expired, ids.awaiting]],
    );
    const cut = await cli(['ack', 'list', '--state', 'acknowledged']);
    assert.equal(cut.stdout.trimEnd().split('\n').length, 101, 'the header and 100 rows');
    assert.equal(cut.stderr, 'showing the 100 most recently changed; pass --limit <n> to see more\n');

    const r = await cli(['ack', 'prune', '--older-than', '1d']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'pruned 2502 acknowledged or expired records last changed more than 1d ago\n');
    assert.equal(r.stderr, 'pruned 1000 so far\npruned 2000 so far\n');
    const left = JSON.parse((await cli(['ack', 'list', '--json'])).stdout) as Array<{ id: string }>;
    assert.deepEqual(
      left.map((x) => x.id).sort(),
      [ids.awaiting, ids.resending].sort(),
      'an awaiting message is never pruned, however old',
    );
    const again = await cli(['ack', 'prune', '--older-than', '1d', '--json']);
    assert.equal(again.code, 0, again.stderr);
    assert.deepEqual(JSON.parse(again.stdout), { pruned: 0, olderThanMs: 86_400_000, batches: 1 });
  });
});

describe('mailroom status on a schema without the acknowledgement tables', () => {
  let db: TestDb;
  before(async () => {
    db = await createTestDb('cli_ack_old');
    // What a schema from before version 8 lacks.
    await db.pool.query(`DROP TABLE "${db.schema}".ack`);
  });
  after(async () => {
    await db.drop();
  });

  it('still shows the outbox, and says the counts need a migration', async () => {
    const [json, table] = await inParallel([['status', '--json'], ['status']], (args) =>
      runCli([...args, '--schema', db.schema], { DATABASE_URL }),
    );
    assert.equal(json.code, 0, json.stderr);
    assert.equal(JSON.parse(json.stdout).acks, null);
    assert.equal(table.code, 0, table.stderr);
    assert.match(
      table.stdout,
      /\nacks {10}- {2}\(schema older than version 8: run `npx mailroom migrate`\)\n/,
    );
  });
});
