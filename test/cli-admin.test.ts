import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, before, beforeEach, describe, it } from 'node:test';
import { Outbox, type MessageInput } from '../src/core/index.js';
import { formatDuration, parseDuration } from '../src/cli/duration.js';
import { parseFlags, type OptionSpec } from '../src/cli/options.js';
import { PostgresLedger } from '../src/stores/postgres/index.js';
import { BIN, inParallel, runCli, type CliResult } from './helpers/cli.js';
import { DATABASE_URL, createTestDb, inTransaction, type TestDb } from './helpers/postgres.js';

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Runs the real command with `input` written to its stdin (a pipe, so not a terminal). */
function runCliWithInput(args: string[], input: string, env: NodeJS.ProcessEnv): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const clean = { ...process.env };
    for (const k of Object.keys(clean))
      if (k.startsWith('MAILROOM_') || k === 'DATABASE_URL') delete clean[k];
    const child = spawn(process.execPath, [BIN, ...args], { env: { ...clean, ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('exit', (code, signal) => resolve({ code, signal, stdout, stderr }));
    child.stdin.end(input);
  });
}

/**
 * Runs the real command on a pseudo-terminal through util-linux `script`, typing `answer`, so
 * the command sees a terminal on stdin and asks. Everything it prints arrives on stdout.
 */
async function runCliOnTerminal(args: string[], answer: string, env: NodeJS.ProcessEnv): Promise<CliResult> {
  const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  const command = [process.execPath, BIN, ...args].map(quote).join(' ');
  return new Promise((resolve, reject) => {
    const child = spawn('script', ['-qec', command, '/dev/null'], { env: { ...process.env, ...env } });
    let stdout = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.on('error', reject);
    child.on('exit', (code, signal) => resolve({ code, signal, stdout, stderr: '' }));
    setTimeout(() => child.stdin.end(`${answer}\n`), 200);
  });
}

const HAS_SCRIPT = process.platform === 'linux' && existsSync('/usr/bin/script');

function oneLine(r: CliResult): void {
  assert.equal(r.stderr.trim().split('\n').length, 1, `one line on stderr, got:\n${r.stderr}`);
}

describe('mailroom status, dlq and send', () => {
  let db: TestDb;
  let outbox: Outbox;
  const env = { DATABASE_URL };
  const cli = (args: string[]) => runCli([...args, '--schema', db.schema], env);

  before(async () => {
    db = await createTestDb('cli_admin');
    outbox = new Outbox({ store: db.store });
  });
  after(async () => {
    await db.drop();
  });
  beforeEach(async () => {
    await db.pool.query(`TRUNCATE "${db.schema}".outbox, "${db.schema}".dead_letter`);
  });

  /** Enqueues the messages, then claims and dead-letters everything in the outbox. */
  async function makeDeadLetters(messages: MessageInput[], error = 'broker says no'): Promise<string[]> {
    const ids = await inTransaction(db.pool, (c) => outbox.enqueue(c, messages));
    await deadLetterEverything(error);
    return ids;
  }

  /** Claims and dead-letters every message in the outbox. */
  async function deadLetterEverything(error = 'broker says no'): Promise<void> {
    for (;;) {
      const batch = await db.store.claim({ owner: 'test', limit: 5000, leaseMs: 10_000 });
      if (batch.messages.length === 0) break;
      await db.store.settle({
        leaseToken: batch.leaseToken,
        delivered: [],
        released: [],
        retry: [],
        dead: batch.messages.map((message) => ({ message, error })),
      });
    }
  }

  it('lists status, dlq and send in the main help, each with help of its own', async () => {
    const [r, dlq, send, status] = await inParallel(
      [['--help'], ['dlq', '--help'], ['help', 'send'], ['status', '-h']],
      (args) => runCli(args),
    );
    assert.equal(r.code, 0);
    for (const c of ['migrate', 'relay', 'status', 'dlq', 'send', 'version', 'help']) {
      assert.match(r.stdout, new RegExp(`\\n  ${c} `), c);
    }
    assert.equal(dlq.code, 0);
    assert.match(dlq.stdout, /--older-than <duration>/);
    assert.match(dlq.stdout, /--id <uuid,…>.*\(repeatable\)/);
    assert.match(dlq.stdout, /replay .*purge/s);
    assert.equal(send.code, 0);
    assert.match(send.stdout, /--header <name=value>/);
    assert.equal(status.code, 0);
    assert.match(status.stdout, /--json/);
  });

  it('sends a message in its own transaction and status counts it in the backlog', async () => {
    const sent = await cli([
      'send',
      '--topic',
      'orders',
      '--key',
      'o-1',
      '--type',
      'order.created',
      '--header',
      'source=ops',
      '--header',
      'note=a=b',
      '--payload',
      '{"id":1,"total":9.5}',
    ]);
    assert.equal(sent.code, 0, sent.stderr);
    const id = sent.stdout.trim();
    assert.match(id, UUID_RE);
    const row = await db.pool.query(
      `SELECT topic, key, type, headers, convert_from(payload, 'UTF8') AS payload FROM "${db.schema}".outbox WHERE id = $1`,
      [id],
    );
    assert.deepEqual(row.rows[0], {
      topic: 'orders',
      key: 'o-1',
      type: 'order.created',
      headers: { source: 'ops', note: 'a=b' },
      payload: '{"id":1,"total":9.5}',
    });

    const [json, table] = await inParallel([['status', '--json'], ['status']], cli);
    assert.equal(json.code, 0, json.stderr);
    const status = JSON.parse(json.stdout);
    assert.deepEqual(Object.keys(status), [
      'schema',
      'backlog',
      'inFlight',
      'scheduled',
      'oldestAgeMs',
      'deadLetters',
      'topics',
      'approximate',
      'estimated',
      'topicsTruncated',
      'verifyLedger',
      'acks',
      'slot',
    ]);
    assert.equal(status.slot, null, 'no replication slot on this schema');
    assert.deepEqual(status.acks, {
      awaiting: 0,
      acknowledged: 0,
      expired: 0,
      callbacksPending: 0,
      callbacksDead: 0,
    });
    assert.equal(status.approximate, false, 'a small outbox is counted exactly');
    assert.deepEqual(status.estimated, []);
    assert.equal(status.topicsTruncated, false);
    assert.equal(status.schema, db.schema);
    assert.equal(status.backlog, 1);
    assert.equal(status.inFlight, 0);
    assert.equal(status.deadLetters, 0);
    assert.equal(typeof status.oldestAgeMs, 'number');
    assert.deepEqual(status.topics, [{ topic: 'orders', backlog: 1, deadLetters: 0 }]);

    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, /backlog\s+1/);
    assert.match(table.stdout, /oldest\s+\d+(ms|\.\ds)/);
    assert.match(table.stdout, /TOPIC\s+BACKLOG\s+DEAD\norders\s+1\s+0/);
  });

  it('stores a payload as written, big numbers digit for digit, and dlq shows it the same way', async () => {
    const written = '{ "id": 12345678901234567890123,\n  "price": 0.10000000000000000555, "tiny": 1e-400 }\n';
    const exact = '{"id":12345678901234567890123,"price":0.10000000000000000555,"tiny":1e-400}';
    const sent = await cli(['send', '--topic', 'ledger', '--payload', written]);
    assert.equal(sent.code, 0, sent.stderr);
    const id = sent.stdout.trim();
    const row = await db.pool.query(
      `SELECT content_type, convert_from(payload, 'UTF8') AS payload FROM "${db.schema}".outbox WHERE id = $1`,
      [id],
    );
    assert.deepEqual(row.rows[0], { content_type: 'application/json', payload: exact });

    await deadLetterEverything();
    const [json, list, text] = await inParallel(
      [
        ['dlq', 'show', id, '--json'],
        ['dlq', 'list', '--json'],
        ['dlq', 'show', id],
      ],
      cli,
    );
    assert.equal(json.code, 0, json.stderr);
    assert.equal(JSON.parse(json.stdout).payloadEncoding, 'json');
    assert.ok(json.stdout.includes(`"payload":${exact}`), json.stdout);
    assert.ok(list.stdout.includes(`"payload":${exact}`), list.stdout);
    assert.match(text.stdout, /\n {2}"id": 12345678901234567890123,\n {2}"price": 0\.10000000000000000555,/);
  });

  it('marks estimates in status when the outbox is too big to count on every call', async () => {
    await db.pool.query(
      `INSERT INTO "${db.schema}".outbox (id, topic, payload)
       SELECT gen_random_uuid(), 'bulk', '\\x31' FROM generate_series(1, 120000)`,
    );
    await db.pool.query(`ANALYZE "${db.schema}".outbox`);
    const [json, table] = await inParallel([['status', '--json'], ['status']], cli);
    assert.equal(json.code, 0, json.stderr);
    const status = JSON.parse(json.stdout);
    assert.equal(status.approximate, true);
    assert.deepEqual(status.estimated, ['backlog', 'topics']);
    assert.ok(Math.abs(status.backlog - 120_000) < 12_000, `about 120000, got ${status.backlog}`);
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, /backlog\s+~\d+/);
    assert.match(table.stdout, /in flight\s+0\n/);
    assert.match(table.stdout, /bulk\s+~\d+\s+~0\n\(counts estimated from a sample\)/);
    assert.match(table.stdout, /~ estimated: too many rows to count/);
  });

  it('shows in status whether the verify ledger is recording enqueues', async () => {
    const ledger = new PostgresLedger(db.pool, db.schema);
    const [off, offTable] = await inParallel([['status', '--json'], ['status']], cli);
    assert.equal(off.code, 0, off.stderr);
    assert.equal(JSON.parse(off.stdout).verifyLedger, false);
    assert.match(offTable.stdout, /\nverify ledger off\n/);
    await ledger.setEnabled(true);
    try {
      const [on, onTable] = await inParallel([['status', '--json'], ['status']], cli);
      assert.equal(JSON.parse(on.stdout).verifyLedger, true);
      assert.match(onTable.stdout, /\nverify ledger on {2}\(every enqueue is recorded .*verify stop/);
    } finally {
      await ledger.setEnabled(false);
    }
  });

  it('reports an empty outbox with no oldest age', async () => {
    const [r, table] = await inParallel([['status', '--json'], ['status']], cli);
    assert.equal(r.code, 0, r.stderr);
    const status = JSON.parse(r.stdout);
    assert.equal(status.backlog, 0);
    assert.equal(status.oldestAgeMs, null);
    assert.deepEqual(status.topics, []);
    assert.match(table.stdout, /oldest\s+-/);
  });

  it('reads the payload from a file or from stdin and can delay the message', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mailroom-send-'));
    const file = join(dir, 'payload.json');
    writeFileSync(file, '{"from":"file"}\n');
    const [fromFile, fromStdin] = await Promise.all([
      cli(['send', '--topic', 'f', '--payload-file', file]),
      runCliWithInput(
        ['send', '--topic', 's', '--delay', '1h', '--schema', db.schema],
        '["from","stdin"]',
        env,
      ),
    ]);
    assert.equal(fromFile.code, 0, fromFile.stderr);
    assert.equal(fromStdin.code, 0, fromStdin.stderr);
    const rows = await db.pool.query(
      `SELECT topic, convert_from(payload, 'UTF8') AS payload, available_at > now() + interval '50 minutes' AS later
       FROM "${db.schema}".outbox ORDER BY topic`,
    );
    assert.deepEqual(rows.rows, [
      { topic: 'f', payload: '{"from":"file"}', later: false },
      { topic: 's', payload: '["from","stdin"]', later: true },
    ]);
    const status = JSON.parse((await cli(['status', '--json'])).stdout);
    assert.equal(status.scheduled, 1, 'the delayed message counts as scheduled');
  });

  it('rejects an invalid message with exit code 2 on one line and writes nothing', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['--topic', 't', '--payload', '{"a":'], /payload from --payload is not valid JSON/],
      [['--topic', 't', '--header', 'novalue', '--payload', '1'], /--header "novalue" must be name=value/],
      [['--topic', '', '--payload', '1'], /missing topic of the message: pass --topic/],
      [['--topic', 'a\u0007b', '--payload', '1'], /topic/],
      [['--topic', 't', '--header', 'x=1\r\nevil: yes', '--payload', '1'], /header "x"/],
      [['--topic', 't', '--payload', '1', '--payload-file', '/nonexistent'], /not both/],
      [['--topic', 't', '--payload-file', '/nonexistent/payload.json'], /cannot read --payload-file/],
      [['--topic', 't', '--payload', '1', '--delay', 'soon'], /--delay must be a duration/],
      [['--topic', 't'], /no payload: pass --payload/],
    ];
    const results = await inParallel(cases, ([args]) => cli(['send', ...args]));
    for (const [i, [args, message]] of cases.entries()) {
      const r = results[i] as CliResult;
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, message);
      oneLine(r);
    }
    assert.equal(await db.count(), 0, 'nothing was written');
  });

  it('lists dead letters as a table and as JSON, filtered by topic, key, id, age and limit', async () => {
    const [a1, a2, b1] = await makeDeadLetters([
      { topic: 'billing', key: 'k1', payload: { n: 1 } },
      { topic: 'billing', key: 'k2', payload: { n: 2 } },
      { topic: 'shipping', key: 'k1', payload: { n: 3 } },
    ]);
    const idsOf = (r: CliResult) => {
      assert.equal(r.code, 0, r.stderr);
      return (JSON.parse(r.stdout) as Array<{ id: string }>).map((d) => d.id).sort();
    };
    // The table and the filters before any dead letter is old, side by side.
    const filtered: Array<[string[], Array<string | undefined>, string?]> = [
      [[], [a1, a2, b1]],
      [
        ['--topic', 'billing'],
        [a1, a2],
      ],
      [
        ['--key', 'k1'],
        [a1, b1],
      ],
      [['--topic', 'billing', '--key', 'k1'], [a1]],
      [
        ['--id', `${a1},${b1}`],
        [a1, b1],
      ],
      [
        ['--id', a1 as string, '--id', (b1 as string).toUpperCase()],
        [a1, b1],
      ],
      [['--older-than', '1h'], [], 'they died just now'],
    ];
    const [table, ...found] = await inParallel(
      [['dlq', 'list'], ...filtered.map(([args]) => ['dlq', 'list', '--json', ...args])],
      cli,
    );
    assert.equal(table.code, 0, table.stderr);
    const lines = table.stdout.trim().split('\n');
    assert.match(lines[0] ?? '', /^ID\s+TOPIC\s+KEY\s+ATTEMPTS\s+DEAD AT\s+LAST ERROR$/);
    assert.equal(lines.length, 4);
    assert.match(
      table.stdout,
      new RegExp(
        `${a1}\\s+billing\\s+k1\\s+1\\s+\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\dZ\\s+broker says no`,
      ),
    );
    for (const [i, [args, expected, why]] of filtered.entries()) {
      assert.deepEqual(idsOf(found[i] as CliResult), [...expected].sort(), why ?? args.join(' '));
    }
    await db.pool.query(
      `UPDATE "${db.schema}".dead_letter SET dead_at = now() - interval '3 days' WHERE id = $1`,
      [a2],
    );
    const [older, limited, json, none] = await inParallel(
      [
        ['dlq', 'list', '--json', '--older-than', '2d'],
        ['dlq', 'list', '--json', '--limit', '1'],
        ['dlq', 'list', '--json', '--id', a1 as string],
        ['dlq', 'list', '--topic', 'nothing'],
      ],
      cli,
    );
    assert.deepEqual(idsOf(older as CliResult), [a2]);
    assert.deepEqual(idsOf(limited as CliResult), [a2], 'oldest first');

    const [entry] = JSON.parse(json.stdout);
    assert.deepEqual(Object.keys(entry), [
      'id',
      'topic',
      'key',
      'type',
      'contentType',
      'headers',
      'attempts',
      'createdAt',
      'deadAt',
      'lastError',
      'payloadEncoding',
      'payload',
    ]);
    assert.equal(entry.lastError, 'broker says no');
    assert.deepEqual(entry.payload, { n: 1 });

    assert.equal(none.code, 0);
    assert.equal(none.stdout.trim(), 'no dead letters match');
  });

  it('shows one dead letter with its headers and payload, JSON as JSON and bytes as base64', async () => {
    const [jsonId, bytesId] = await makeDeadLetters(
      [
        {
          topic: 't',
          key: 'k',
          type: 'thing.happened',
          payload: { hello: 'world' },
          headers: { trace: 'abc' },
        },
        { topic: 't', payload: Buffer.from([0, 1, 2, 250]) },
      ],
      'rejected\nby the broker',
    );
    const [text, bytes, json, missing, bad] = await inParallel(
      [
        ['dlq', 'show', jsonId as string],
        ['dlq', 'show', bytesId as string],
        ['dlq', 'show', bytesId as string, '--json'],
        ['dlq', 'show', '01900000-0000-7000-8000-000000000000'],
        ['dlq', 'show', 'not-an-id'],
      ],
      cli,
    );
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, new RegExp(`id\\s+${jsonId}`));
    assert.match(text.stdout, /type\s+thing\.happened/);
    assert.match(text.stdout, /headers\n {2}trace: abc/);
    assert.match(text.stdout, /last error\n {2}rejected\nby the broker/);
    assert.match(text.stdout, /payload \(JSON\)\n\{\n {2}"hello": "world"\n\}/);

    assert.equal(bytes.code, 0, bytes.stderr);
    assert.match(bytes.stdout, /payload \(base64, 4 bytes\)\nAAEC\+g==/);

    const shown = JSON.parse(json.stdout);
    assert.equal(shown.id, bytesId);
    assert.equal(shown.contentType, 'application/octet-stream');
    assert.equal(shown.payloadEncoding, 'base64');
    assert.equal(shown.payload, 'AAEC+g==');

    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /no dead letter with id 01900000-0000-7000-8000-000000000000/);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /"not-an-id" is not a UUID/);
  });

  it('replays only the dead letters the filters select, with a line for each and a total', async () => {
    const [a1, a2, b1] = await makeDeadLetters([
      { topic: 'billing', key: 'k1', payload: 1 },
      { topic: 'billing', key: 'k2', payload: 2 },
      { topic: 'shipping', key: 'k1', payload: 3 },
    ]);
    const r = await cli(['dlq', 'replay', '--topic', 'billing', '--yes']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`${a1}  replayed`));
    assert.match(r.stdout, new RegExp(`${a2}  replayed`));
    assert.doesNotMatch(r.stdout, new RegExp(b1 as string));
    assert.match(r.stdout, /replayed 2 of 2 dead letters\n$/);
    const back = await db.pool.query(
      `SELECT id::text AS id, attempts FROM "${db.schema}".outbox ORDER BY id`,
    );
    assert.deepEqual(
      back.rows,
      [a1, a2].sort().map((id) => ({ id, attempts: 0 })),
      'back in the outbox with their ids, attempts reset',
    );
    assert.equal(await db.count('dead_letter'), 1);

    const json = await cli(['dlq', 'replay', '-y', '--json', '--id', b1 as string]);
    assert.equal(json.code, 0, json.stderr);
    assert.deepEqual(JSON.parse(json.stdout), {
      action: 'replay',
      matched: 1,
      replayed: 1,
      skipped: 0,
      failed: 0,
      results: [{ id: b1, status: 'replayed' }],
    });
    assert.equal(await db.count('dead_letter'), 0);
    const again = await cli(['dlq', 'replay', '--yes']);
    assert.equal(again.code, 0);
    assert.equal(again.stdout.trim(), 'no dead letters');
  });

  it('replays a few thousand dead letters in batches of 1,000, showing progress on stderr', async () => {
    await makeDeadLetters(Array.from({ length: 2500 }, (_, i) => ({ topic: 'bulk', payload: i })));
    const r = await cli(['dlq', 'replay', '--yes']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(r.stderr.trim().split('\n'), [
      'replayed 1000/2500',
      'replayed 2000/2500',
      'replayed 2500/2500',
    ]);
    assert.equal(r.stdout.match(/ {2}replayed$/gm)?.length, 2500, 'one line per message');
    assert.match(r.stdout, /replayed 2500 of 2500 dead letters\n$/);
    assert.equal(await db.count(), 2500);
    assert.equal(await db.count('dead_letter'), 0);
  });

  it('purges in batches too, and a dry run over many shows the oldest 100 and the total', async () => {
    const ids = await makeDeadLetters(
      Array.from({ length: 1500 }, (_, i) => ({ topic: 'bulk', payload: i })),
    );
    const dry = await cli(['dlq', 'purge', '--dry-run']);
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(
      dry.stdout,
      /\(dry run\) would purge 1500 dead letters \(the oldest 100 shown; dlq list --limit <n> shows more\)$/m,
    );
    assert.equal(dry.stdout.match(/^[0-9a-f]{8}-/gm)?.length, 100);
    const r = await cli(['dlq', 'purge', '--yes', '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(r.stderr.trim().split('\n'), ['purged 1000/1500', 'purged 1500/1500']);
    const out = JSON.parse(r.stdout);
    assert.equal(out.purged, 1500);
    assert.deepEqual(new Set(out.results.map((x: { id: string }) => x.id)), new Set(ids));
    assert.equal(await db.count('dead_letter'), 0);
  });

  it('purges after a dry run that changes nothing, reporting each purged message', async () => {
    const [old, recent] = await makeDeadLetters([
      { topic: 't', payload: 'old' },
      { topic: 't', payload: 'recent' },
    ]);
    await db.pool.query(
      `UPDATE "${db.schema}".dead_letter SET dead_at = now() - interval '8 days' WHERE id = $1`,
      [old],
    );
    const dry = await cli(['dlq', 'purge', '--older-than', '7d', '--dry-run']);
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stdout, new RegExp(old as string));
    assert.doesNotMatch(dry.stdout, new RegExp(recent as string));
    assert.match(dry.stdout, /\(dry run\) would purge 1 dead letter$/m);
    assert.equal(await db.count('dead_letter'), 2, 'a dry run changes nothing');

    const r = await cli(['dlq', 'purge', '--older-than', '7d', '--yes', '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), {
      action: 'purge',
      matched: 1,
      purged: 1,
      skipped: 0,
      failed: 0,
      results: [{ id: old, status: 'purged' }],
    });
    const left = await db.store.listDeadLetters();
    assert.deepEqual(
      left.map((d) => d.id),
      [recent],
    );
    assert.equal(await db.count(), 0, 'purge does not replay');
  });

  it('refuses to replay or purge without --yes when stdin is not a terminal', async () => {
    await makeDeadLetters([{ topic: 't', payload: 1 }]);
    const actions = ['replay', 'purge'];
    const answers = await inParallel(actions, (action) =>
      Promise.all([
        cli(['dlq', action]),
        runCliWithInput(['dlq', action, '--schema', db.schema], 'y\n', env),
      ]),
    );
    for (const [i, action] of actions.entries()) {
      const [r, piped] = answers[i] as [CliResult, CliResult];
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, new RegExp(`dlq ${action} .*stdin is not a terminal.*pass --yes`));
      oneLine(r);
      assert.equal(piped.code, 2, 'a "y" piped in is not a confirmation');
    }
    assert.equal(await db.count('dead_letter'), 1, 'nothing changed');
  });

  it(
    'asks on a terminal, saying "all" without filters, and changes nothing unless told yes',
    {
      skip: HAS_SCRIPT ? false : 'needs util-linux script for a pseudo-terminal',
    },
    async () => {
      const [a, b] = await makeDeadLetters([
        { topic: 'one', payload: 1 },
        { topic: 'two', payload: 2 },
      ]);
      const no = await runCliOnTerminal(['dlq', 'purge', '--schema', db.schema], 'n', env);
      assert.equal(no.code, 1, no.stdout);
      assert.match(no.stdout, /Purge all 2 dead letters\? \[y\/N\]/);
      assert.match(no.stdout, /aborted; nothing changed/);
      assert.equal(await db.count('dead_letter'), 2);

      const yes = await runCliOnTerminal(
        ['dlq', 'replay', '--topic', 'one', '--schema', db.schema],
        'y',
        env,
      );
      assert.equal(yes.code, 0, yes.stdout);
      assert.match(yes.stdout, /Replay 1 dead letter \(topic "one"\)\? \[y\/N\]/);
      assert.match(yes.stdout, new RegExp(`${a}  replayed`));
      assert.deepEqual(
        (await db.store.listDeadLetters()).map((d) => d.id),
        [b],
      );
    },
  );

  it('rejects a bad --id, a bad --older-than and an unknown subcommand with exit code 2 on one line', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['dlq', 'list', '--id', 'abc'], /--id "abc" is not a UUID/],
      [
        ['dlq', 'replay', '--yes', '--id', `01900000-0000-7000-8000-000000000000,x'; DROP`],
        /--id "x'; DROP" is not a UUID/,
      ],
      [['dlq', 'list', '--id', ','], /--id needs at least one message id/],
      [
        ['dlq', 'purge', '--yes', '--older-than', '7 days'],
        /--older-than must be a duration like 30s, 10m, 2h or 7d/,
      ],
      [['dlq', 'list', '--older-than', '-5m'], /--older-than must be a duration/],
      [['dlq', 'list', '--limit', '0'], /flag --limit must be a whole number from 1/],
      [['dlq', 'frobnicate'], /unknown dlq subcommand "frobnicate"; use one of list, show, replay, purge/],
      [['dlq'], /dlq needs a subcommand: list, show, replay, purge/],
      [['dlq', 'list', 'extra'], /dlq list takes no arguments/],
      [['dlq', 'show'], /dlq show needs the id/],
    ];
    const results = await inParallel(cases, ([args]) => cli(args));
    for (const [i, [args, message]] of cases.entries()) {
      const r = results[i] as CliResult;
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, message);
      oneLine(r);
    }
  });

  it('treats SQL-looking --topic and --key values as data', async () => {
    await makeDeadLetters([{ topic: 't', key: 'k', payload: 1 }]);
    const injections = [
      `t' OR '1'='1`,
      `'; DROP TABLE "${db.schema}".dead_letter; --`,
      `t"; DELETE FROM "${db.schema}".outbox; --`,
    ];
    // Each value as each flag: listed, then purged; the pairs side by side.
    const pairs = injections.flatMap((value) => ['--topic', '--key'].map((flag) => [flag, value]));
    await inParallel(pairs, async ([flag, value]) => {
      const list = await cli(['dlq', 'list', flag as string, value as string]);
      assert.equal(list.code, 0, list.stderr);
      assert.equal(list.stdout.trim(), 'no dead letters match');
      const purge = await cli(['dlq', 'purge', '--yes', flag as string, value as string]);
      assert.equal(purge.code, 0, purge.stderr);
      assert.equal(purge.stdout.trim(), 'no dead letters match');
    });
    assert.equal(await db.count('dead_letter'), 1, 'the dead letter is still there');
    const sent = await cli([
      'send',
      '--topic',
      injections[1] as string,
      '--key',
      injections[0] as string,
      '--payload',
      '1',
    ]);
    assert.equal(sent.code, 0, sent.stderr);
    const row = await db.pool.query(`SELECT topic, key FROM "${db.schema}".outbox`);
    assert.deepEqual(row.rows, [{ topic: injections[1], key: injections[0] }], 'stored as given');
  });

  it('says the database is unreachable, with exit code 1 and without printing the password', async () => {
    const url = 'postgres://me:hunter2@127.0.0.1:1/db';
    const commands = [
      ['status'],
      ['dlq', 'list'],
      ['dlq', 'purge', '--yes'],
      ['send', '--topic', 't', '--payload', '1'],
    ];
    const results = await inParallel(commands, (args) => runCli([...args, '--database-url', url]));
    for (const [i, args] of commands.entries()) {
      const r = results[i] as CliResult;
      assert.equal(r.code, 1, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, /cannot reach PostgreSQL at 127\.0\.0\.1:1: nothing accepts connections there/);
      assert.doesNotMatch(r.stderr, /hunter2/);
      oneLine(r);
    }
  });

  it('gives up within --connect-timeout-ms on a server that never answers, naming it, in every command', async () => {
    // Accepts connections and says nothing: a black-holed link, or a port of something else.
    const sockets = new Set<Socket>();
    const silent = createServer((socket) => {
      sockets.add(socket);
      socket.on('error', () => undefined);
    });
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const { port } = silent.address() as AddressInfo;
    const url = `postgres://me:hunter2@127.0.0.1:${port}/db`;
    try {
      const commands = [
        ['status'],
        ['dlq', 'list'],
        ['send', '--topic', 't', '--payload', '1'],
        ['verify', 'check', '--transport', 'amqp://guest:guest@127.0.0.1:5672'],
      ];
      const results = await inParallel(commands, (args) =>
        runCli([...args, '--database-url', url, '--connect-timeout-ms', '300'], {}, 15_000),
      );
      for (const [i, args] of commands.entries()) {
        const r = results[i] as CliResult;
        assert.equal(r.code, 1, `${args.join(' ')}: ${r.stderr}`);
        assert.match(
          r.stderr,
          new RegExp(`127\\.0\\.0\\.1:${port} did not answer as PostgreSQL within 300 ms`),
        );
        assert.doesNotMatch(r.stderr, /hunter2/);
        oneLine(r);
      }
    } finally {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => silent.close(resolve));
    }
  });

  it('tells the user to run migrate when the schema is missing', async () => {
    const commands = [['status'], ['dlq', 'list'], ['send', '--topic', 't', '--payload', '1']];
    const results = await inParallel(commands, (args) =>
      runCli([...args, '--schema', 'no_such_schema'], env),
    );
    for (const [i, args] of commands.entries()) {
      const r = results[i] as CliResult;
      assert.equal(r.code, 1, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, /run `npx mailroom migrate --schema no_such_schema`/);
    }
  });
});

describe('command-line parsing for the operator commands', () => {
  const specs: OptionSpec[] = [
    { key: 'id', flag: 'id', type: 'string', repeatable: true, description: 'ids' },
    { key: 'topic', flag: 'topic', type: 'string', description: 'topic' },
  ];

  it('collects every value of a repeatable flag and keeps the last of any other', () => {
    const { flags, positionals } = parseFlags(
      ['list', '--id', 'a', '--topic', 'x', '--id=b', '--topic', 'y', '-y'],
      specs,
      ['yes'],
    );
    assert.deepEqual(positionals, ['list']);
    assert.deepEqual(flags.get('id'), ['a', 'b']);
    assert.equal(flags.get('topic'), 'y');
    assert.equal(flags.get('yes'), true);
  });

  it('parses durations in ms, s, m, h, d and w, alone or combined, and rejects anything else', () => {
    assert.equal(parseDuration('x', '250ms'), 250);
    assert.equal(parseDuration('x', '30s'), 30_000);
    assert.equal(parseDuration('x', '10m'), 600_000);
    assert.equal(parseDuration('x', '2h'), 7_200_000);
    assert.equal(parseDuration('x', '7d'), 604_800_000);
    assert.equal(parseDuration('x', '1w'), 604_800_000);
    assert.equal(parseDuration('x', '1h30m'), 5_400_000);
    assert.equal(parseDuration('x', '1.5s'), 1500);
    for (const bad of ['', '5', 'm', '5 m', '-5m', '5x', '1h 30m', '99999999999999999999d']) {
      assert.throws(() => parseDuration('older-than', bad), /--older-than/, bad);
    }
  });

  it('formats ages for people with the two largest units', () => {
    assert.equal(formatDuration(850), '850ms');
    assert.equal(formatDuration(3240), '3.2s');
    assert.equal(formatDuration(250_000), '4m 10s');
    assert.equal(formatDuration(120_000), '2m');
    assert.equal(formatDuration(7_500_000), '2h 5m');
    assert.equal(formatDuration(3 * 86_400_000 + 4 * 3_600_000 + 59_000), '3d 4h');
  });
});
