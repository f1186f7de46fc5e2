import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { uuidv7 } from '../src/core/index.js';
import { OutboxLogStream } from '../src/replication/index.js';
import type { SlotHealth } from '../src/cli/slot-health.js';
import { runCli, type CliResult } from './helpers/cli.js';
import { DATABASE_URL, createTestDb, type TestDb } from './helpers/postgres.js';

const LSN = /^[0-9A-F]+\/[0-9A-F]+$/;

function oneLine(r: CliResult): void {
  assert.equal(r.stderr.trim().split('\n').length, 1, `one line on stderr, got:\n${r.stderr}`);
}

function statusSlot(r: CliResult): SlotHealth | null {
  assert.equal(r.code, 0, r.stderr);
  return (JSON.parse(r.stdout) as { slot: SlotHealth | null }).slot;
}

// Runs the built command (npm run build first) against the real PostgreSQL (wal_level = logical).
// Every slot and publication here starts with the test schema's random name and is dropped in
// `after`, whatever the tests did: a slot left behind keeps WAL on the server for good.
describe('mailroom slot and the slot health of status', () => {
  let db: TestDb;
  const env = { DATABASE_URL };
  const streams: OutboxLogStream[] = [];
  const cli = (args: string[], extraEnv: NodeJS.ProcessEnv = {}) =>
    runCli([...args, '--schema', db.schema], { ...env, ...extraEnv });
  /** `slot` takes no --schema: slots belong to the database. */
  const slotCli = (args: string[]) => runCli(args, env);
  const name = (suffix: string) => `${db.schema}_${suffix}`;

  const createSlot = (slot: string) =>
    db.pool.query(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, [slot]);
  const slotExists = async (slot: string) =>
    (await db.pool.query(`SELECT 1 FROM pg_replication_slots WHERE slot_name = $1`, [slot])).rowCount === 1;

  /** Writes WAL: rows in a table of this schema (not the outbox, so no stream has work). */
  async function writeWal(rows: number): Promise<void> {
    await db.pool.query(
      `INSERT INTO "${db.schema}".wal_filler (pad) SELECT repeat('x', 200) FROM generate_series(1, $1)`,
      [rows],
    );
  }

  before(async () => {
    db = await createTestDb('cli_slot');
    await db.pool.query(`CREATE TABLE "${db.schema}".wal_filler (pad text)`);
  });

  after(async () => {
    for (const s of streams) await s.stop();
    const prefix = `${db.schema}_`;
    // A stream that did not stop (a failed test) still holds its slot: end its backend first.
    await db.pool.query(
      `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE starts_with(slot_name, $1) AND active_pid IS NOT NULL`,
      [prefix],
    );
    for (let attempt = 0; attempt < 50; attempt++) {
      const { rows } = await db.pool.query<{ active: number }>(
        `SELECT count(*)::int AS active FROM pg_replication_slots WHERE starts_with(slot_name, $1) AND active`,
        [prefix],
      );
      if (rows[0]?.active === 0) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    await db.pool.query(
      `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE starts_with(slot_name, $1)`,
      [prefix],
    );
    const pubs = await db.pool.query<{ pubname: string }>(
      `SELECT pubname FROM pg_publication WHERE starts_with(pubname, $1)`,
      [prefix],
    );
    for (const { pubname } of pubs.rows) await db.pool.query(`DROP PUBLICATION "${pubname}"`);
    const left = await db.pool.query(
      `SELECT slot_name FROM pg_replication_slots WHERE starts_with(slot_name, $1)`,
      [prefix],
    );
    await db.drop();
    assert.deepEqual(left.rows, [], 'every slot of this file is dropped');
  });

  it('says there is no slot when the schema has none (relays use notify or poll)', async () => {
    const human = await cli(['status']);
    assert.equal(human.code, 0, human.stderr);
    assert.match(
      human.stdout,
      new RegExp(`^slot +- +\\(no slot ${name('relay')}: relays use notify or poll\\)$`, 'm'),
    );
    assert.doesNotMatch(human.stdout, /^warning/m);
    assert.equal(statusSlot(await cli(['status', '--json'])), null);
  });

  it('shows the default slot <schema>_relay: confirmed position, lag growing with WAL, WAL kept, inactive warning', async () => {
    const slot = name('relay');
    await createSlot(slot);
    const first = statusSlot(await cli(['status', '--json']));
    assert.ok(first, 'status --json has a slot object');
    assert.equal(first.slot, slot);
    assert.equal(first.plugin, 'pgoutput');
    assert.equal(first.active, false);
    assert.equal(first.activePid, null);
    assert.match(first.confirmedFlushLsn ?? '', LSN);
    assert.match(first.currentLsn ?? '', LSN);
    assert.equal(first.walStatus, 'reserved');
    assert.equal(first.lagSeconds, null, 'nobody streams it: no lag in time');
    assert.ok(first.lagBytes !== null && first.lagBytes >= 0);
    assert.ok(
      first.retainedWalBytes !== null && first.retainedWalBytes >= first.lagBytes,
      'the restart position is at or before the confirmed one',
    );
    assert.equal(first.warnings.length, 1, first.warnings.join('\n'));
    assert.match(first.warnings[0] as string, /is inactive.*mailroom slot drop /);

    await writeWal(2000);
    const second = statusSlot(await cli(['status', '--json']));
    assert.ok(second);
    assert.equal(second.confirmedFlushLsn, first.confirmedFlushLsn, 'nobody confirmed anything');
    assert.ok(
      (second.lagBytes as number) >= (first.lagBytes as number) + 2000 * 200,
      `lag grew by at least the rows written: ${first.lagBytes} → ${second.lagBytes}`,
    );
    assert.ok((second.retainedWalBytes as number) > (first.retainedWalBytes as number));

    const human = await cli(['status']);
    assert.equal(human.code, 0, human.stderr);
    const lines = human.stdout.split('\n');
    assert.ok(lines.includes(`slot          ${slot}  inactive`), human.stdout);
    assert.ok(lines.includes(`  confirmed   ${first.confirmedFlushLsn}`), human.stdout);
    assert.match(human.stdout, /^ {2}lag {9}\d+(\.\d)? (B|KiB|MiB), -$/m);
    assert.match(human.stdout, /^ {2}retained {4}\d+(\.\d)? (B|KiB|MiB) of WAL {2}\(wal_status reserved\)$/m);
    const warnings = lines.filter((l) => l.startsWith('warning'));
    assert.equal(warnings.length, 1, human.stdout);
    assert.match(warnings[0] as string, new RegExp(`inactive.*\`mailroom slot drop ${slot}\``));
  });

  it('warns when the slot keeps more WAL than --slot-warn-bytes, and not under the 1 GiB default', async () => {
    const slot = name('relay');
    const tiny = statusSlot(await cli(['status', '--json', '--slot-warn-bytes', '1']));
    assert.ok(
      tiny?.warnings.some((w) => /keeps .* of WAL, over --slot-warn-bytes \(1 B\)/.test(w)),
      tiny?.warnings.join('\n'),
    );
    const byDefault = statusSlot(await cli(['status', '--json']));
    assert.ok(byDefault);
    assert.ok((byDefault.retainedWalBytes as number) < 1024 ** 3, 'this slot keeps far less than 1 GiB');
    assert.ok(
      !byDefault.warnings.some((w) => /over --slot-warn-bytes/.test(w)),
      byDefault.warnings.join('\n'),
    );
    const viaEnv = await cli(['status'], { MAILROOM_SLOT_WARN_BYTES: '1' });
    assert.equal(viaEnv.code, 0, viaEnv.stderr);
    assert.match(
      viaEnv.stdout,
      new RegExp(`^warning +slot ${slot} keeps .* of WAL, over --slot-warn-bytes`, 'm'),
    );
    const bad = await cli(['status', '--slot-warn-bytes', '0']);
    assert.equal(bad.code, 2, bad.stderr);
  });

  it('--slot (and MAILROOM_SLOT) name another slot; a bad name exits 2 before connecting', async () => {
    const other = name('other');
    await createSlot(other);
    assert.equal(statusSlot(await cli(['status', '--json', '--slot', other]))?.slot, other);
    assert.equal(statusSlot(await cli(['status', '--json'], { MAILROOM_SLOT: other }))?.slot, other);
    assert.equal(statusSlot(await cli(['status', '--json', '--slot', name('nothing_here')])), null);
    for (const bad of ['Bad-Name', "x';drop table t;--", 'a'.repeat(64)]) {
      const r = await cli(['status', '--slot', bad]);
      assert.equal(r.code, 2, `--slot ${bad}: ${r.stderr}`);
      oneLine(r);
      assert.match(r.stderr, /is not a replication slot name: 1 to 63 characters from a-z, 0-9 and _/);
    }
  });

  it('slot list shows every logical slot of the database with the same columns', async () => {
    const human = await slotCli(['slot', 'list']);
    assert.equal(human.code, 0, human.stderr);
    const [header, ...rows] = human.stdout.split('\n');
    assert.match(header ?? '', /^SLOT +PLUGIN +ACTIVE +CONFIRMED +LAG +LAG TIME +RETAINED +WAL STATUS$/);
    for (const slot of [name('relay'), name('other')]) {
      const row = rows.find((l) => l.startsWith(`${slot} `));
      assert.ok(row, `${slot} is listed:\n${human.stdout}`);
      assert.match(
        row,
        /^\S+ +pgoutput +no +[0-9A-F]+\/[0-9A-F]+ +\S+ (B|KiB|MiB) +- +\S+ (B|KiB|MiB) +reserved$/,
      );
    }
    assert.match(human.stdout, new RegExp(`^warning: slot ${name('other')} is inactive`, 'm'));

    const json = await slotCli(['slot', 'list', '--json']);
    assert.equal(json.code, 0, json.stderr);
    const slots = (JSON.parse(json.stdout) as SlotHealth[]).filter((s) => s.slot.startsWith(`${db.schema}_`));
    assert.deepEqual(
      slots.map((s) => s.slot),
      [name('other'), name('relay')],
    );
    for (const s of slots) {
      assert.equal(s.plugin, 'pgoutput');
      assert.equal(s.active, false);
      assert.match(s.confirmedFlushLsn ?? '', LSN);
      assert.equal(typeof s.lagBytes, 'number');
      assert.equal(typeof s.retainedWalBytes, 'number');
      assert.ok(Array.isArray(s.warnings));
    }
    const noSuchFlag = await slotCli(['slot', 'list', '--yes']);
    assert.equal(noSuchFlag.code, 2, noSuchFlag.stderr);
  });

  it('shows an active slot with its pid, and refuses to drop it, naming the pid', async () => {
    const slot = name('held');
    const stream = new OutboxLogStream({
      connectionString: DATABASE_URL,
      schema: db.schema,
      slot,
      publication: name('outbox'),
      statusIntervalMs: 200,
      timeoutMs: 10_000,
    });
    streams.push(stream);
    const started = await stream.start();
    assert.ok(started.pid, 'the stream reports its backend pid');

    // Traffic while status runs: outbox rows the stream receives and confirms. The server
    // measures the lag in time only while WAL flows (it forgets it once the reader has caught up
    // and nothing is written), so the pump runs until both status calls are done.
    let pumping = true;
    let pumped = 0;
    const pump = (async () => {
      while (pumping) {
        await db.pool.query(
          `INSERT INTO "${db.schema}".outbox (id, topic, payload) VALUES ($1, 'test.topic', '\\x7b7d')`,
          [uuidv7()],
        );
        const tx = await stream.next(AbortSignal.timeout(10_000));
        assert.ok(tx, 'the stream yields the insert');
        stream.confirm(tx.endLsn);
        pumped++;
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    let health: SlotHealth | null;
    let human: CliResult;
    try {
      while (pumped < 10) await new Promise((r) => setTimeout(r, 20));
      health = statusSlot(await cli(['status', '--json', '--slot', slot]));
      human = await cli(['status', '--slot', slot]);
    } finally {
      pumping = false;
      await pump;
    }
    assert.ok(health);
    assert.equal(health.active, true);
    assert.equal(health.activePid, started.pid);
    assert.ok(!health.warnings.some((w) => /inactive/.test(w)), health.warnings.join('\n'));
    assert.equal(typeof health.lagSeconds, 'number', 'the server measures the lag of a reader that confirms');
    assert.ok(
      (health.lagSeconds as number) >= 0 && (health.lagSeconds as number) < 60,
      `${health.lagSeconds}`,
    );
    const lines = human.stdout.split('\n');
    assert.ok(lines.includes(`slot          ${slot}  active (pid ${started.pid})`), human.stdout);
    assert.match(human.stdout, /^ {2}lag {9}\d+(\.\d)? (B|KiB|MiB), \d+(ms|\.\ds)$/m);

    const refused = await slotCli(['slot', 'drop', slot, '--yes']);
    assert.equal(refused.code, 1, refused.stderr);
    oneLine(refused);
    assert.match(
      refused.stderr,
      new RegExp(`"${slot}" is active: PID ${started.pid} .*Stop that relay first`),
    );
    assert.match(refused.stderr, /nothing was dropped/);
    assert.ok(await slotExists(slot), 'the active slot is still there');

    await stream.stop();
    // Freed once the stream's connection is gone: now it can be dropped.
    const dropped = await slotCli(['slot', 'drop', slot, '--yes']);
    assert.equal(dropped.code, 0, dropped.stderr);
    assert.equal(await slotExists(slot), false);
    const pub = await db.pool.query(`SELECT 1 FROM pg_publication WHERE pubname = $1`, [name('outbox')]);
    assert.equal(pub.rowCount, 1, 'the publication is not dropped with the slot');
  });

  it('slot drop --yes drops that slot and no other', async () => {
    const victim = name('victim');
    await createSlot(victim);
    const r = await slotCli(['slot', 'drop', victim, '--yes', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { dropped: string; slot: SlotHealth };
    assert.equal(out.dropped, victim);
    assert.equal(out.slot.slot, victim);
    assert.equal(await slotExists(victim), false);
    assert.ok(await slotExists(name('relay')), 'the other slots stay');
    assert.ok(await slotExists(name('other')), 'the other slots stay');

    const human = await slotCli(['slot', 'drop', name('other'), '-y']);
    assert.equal(human.code, 0, human.stderr);
    assert.match(human.stdout, new RegExp(`^dropped replication slot ${name('other')}`));
    assert.equal(await slotExists(name('other')), false);

    const again = await slotCli(['slot', 'drop', victim, '--yes']);
    assert.equal(again.code, 1, again.stderr);
    oneLine(again);
    assert.match(again.stderr, new RegExp(`no replication slot "${victim}"`));
  });

  it('slot drop without --yes and without a terminal exits 2 and drops nothing', async () => {
    const r = await slotCli(['slot', 'drop', name('relay')]);
    assert.equal(r.code, 2, r.stderr);
    oneLine(r);
    assert.match(r.stderr, /stdin is not a terminal.*pass --yes \(-y\)/);
    assert.ok(await slotExists(name('relay')));
  });

  it('slot drop refuses a bad name (exit 2) and a physical slot (exit 1)', async () => {
    for (const bad of ['Bad-Name', "x');select pg_drop_replication_slot('y", '', 'a'.repeat(64)]) {
      const r = await slotCli(['slot', 'drop', bad, '--yes']);
      assert.equal(r.code, 2, `${JSON.stringify(bad)}: ${r.stderr}`);
      oneLine(r);
    }
    for (const args of [['slot'], ['slot', 'purge'], ['slot', 'drop'], ['slot', 'drop', 'a', 'b', '--yes']]) {
      const r = await slotCli(args);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    }
    const physical = name('physical');
    await db.pool.query(`SELECT pg_create_physical_replication_slot($1)`, [physical]);
    const r = await slotCli(['slot', 'drop', physical, '--yes']);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /is a physical slot .*only drops logical slots/);
    assert.ok(await slotExists(physical));
    const listed = JSON.parse((await slotCli(['slot', 'list', '--json'])).stdout) as SlotHealth[];
    assert.ok(!listed.some((s) => s.slot === physical), 'slot list shows logical slots only');
  });
});
