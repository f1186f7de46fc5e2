import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { fileURLToPath } from 'node:url';
import { ConfigError, NotATransactionError, Outbox, Relay, StoreError } from '../../src/core/index.js';
import { Inbox } from '../../src/inbox/inbox.js';
import {
  loadSqliteMigrations,
  MAX_ROWS_PER_INSERT,
  pendingSqliteSql,
  SqliteStore,
  sqliteFilenameFromUrl,
} from '../../src/stores/sqlite/index.js';
import { uuidv7 } from '../../src/core/uuid.js';
import type { ReceivedMessage } from '../../src/core/types.js';
import { MemoryTransport } from '../../src/transports/memory/index.js';
import { runStoreConformance, type StoreHarness } from '../../src/testkit/store-conformance.js';

const dir = mkdtempSync(join(tmpdir(), 'mailroom-sqlite-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
const freshFile = () => join(dir, `t${n++}.db`);

/** An application transaction on a better-sqlite3 connection, around awaits. */
async function inTransaction<T>(
  db: Database.Database,
  fn: (tx: Database.Database) => Promise<T>,
): Promise<T> {
  db.exec('BEGIN IMMEDIATE');
  try {
    const result = await fn(db);
    db.exec('COMMIT');
    return result;
  } catch (err) {
    if (db.inTransaction) db.exec('ROLLBACK');
    throw err;
  }
}

// A file, the store on a connection of its own, the application on another: the usual setup.
runStoreConformance('SQLite store (file)', {
  create: async (): Promise<StoreHarness> => {
    const filename = freshFile();
    const store = await SqliteStore.connect({ filename });
    await store.migrate();
    const app = new Database(filename);
    return {
      store,
      transaction: (fn) => inTransaction(app, fn),
      close: async () => {
        await store.close();
        app.close();
      },
    };
  },
});

// In memory: one connection, shared by the store and the application.
runStoreConformance('SQLite store (:memory:, shared connection)', {
  create: async (): Promise<StoreHarness> => {
    const db = new Database(':memory:');
    const store = new SqliteStore({ db });
    await store.migrate();
    return {
      store,
      transaction: (fn) => inTransaction(db, fn),
      close: async () => {
        await store.close();
        db.close();
      },
    };
  },
});

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function fileStore(options: { relayLockMs?: number; busyTimeoutMs?: number; archive?: boolean } = {}) {
  const filename = freshFile();
  const store = await SqliteStore.connect({ filename, ...options });
  await store.migrate();
  return { filename, store };
}

async function waitUntil(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

describe('SQLite store', () => {
  it('refuses a second relay on the same file with a typed error naming the holder, until the first gives the lock back', async (t) => {
    const { filename, store: first } = await fileStore({ relayLockMs: 1000 });
    const second = await SqliteStore.connect({ filename, relayLockMs: 1000 });
    t.after(async () => {
      await first.close();
      await second.close();
    });
    await first.claim({ owner: 'relay-one', limit: 10, leaseMs: 5000 });
    await assert.rejects(second.claim({ owner: 'relay-two', limit: 10, leaseMs: 5000 }), (err: unknown) => {
      assert.ok(err instanceof StoreError);
      assert.equal(err.code, 'relay_locked');
      assert.match(err.message, /another relay holds SQLite database .* owner "relay-one"/);
      assert.match(err.message, /one relay per database file/);
      return true;
    });
    // The holder renews its lock while it claims nothing (a transport outage): still refused
    // after more than one lock lease.
    await sleep(1500);
    await assert.rejects(second.claim({ owner: 'relay-two', limit: 10, leaseMs: 5000 }), /relay-one/);
    const held = await second.relayLock();
    assert.equal(held?.owner, 'relay-one');
    assert.equal(held?.mine, false);
    // close() gives the lock back: the second relay starts at once.
    await first.close();
    assert.equal(await second.relayLock(), null);
    await second.claim({ owner: 'relay-two', limit: 10, leaseMs: 5000 });
    assert.equal((await second.relayLock())?.mine, true);
  });

  it('takes over from a relay process that was SIGKILLed, once its lock and leases run out', async (t) => {
    const { filename, store } = await fileStore({ relayLockMs: 1000 });
    t.after(() => store.close());
    const app = new Database(filename);
    t.after(() => app.close());
    const outbox = new Outbox({ store });
    const ids = await inTransaction(app, (tx) =>
      outbox.enqueue(tx, [
        { topic: 'takeover', key: 'k', payload: 1 },
        { topic: 'takeover', key: 'k', payload: 2 },
      ]),
    );
    // A relay in another process claims the first message and dies before settling it.
    const script = `
      import { SqliteStore } from ${JSON.stringify(new URL('src/stores/sqlite/index.ts', `file://${ROOT}`).href)};
      const store = await SqliteStore.connect({ filename: ${JSON.stringify(filename)}, relayLockMs: 1000 });
      const batch = await store.claim({ owner: 'doomed-relay', limit: 10, leaseMs: 1000 });
      console.log('claimed ' + batch.messages.length);
      setInterval(() => {}, 1000);
    `;
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const exited = new Promise((resolve) => child.once('exit', resolve));
    let out = '';
    child.stdout?.on('data', (chunk: Buffer) => (out += chunk.toString()));
    try {
      await waitUntil(() => out.includes('claimed'), 'the other process to claim', 15_000);
    } finally {
      child.kill('SIGKILL');
      await exited;
    }
    assert.match(out, /claimed 1/);

    const transport = new MemoryTransport();
    const errors: unknown[] = [];
    const relay = new Relay({ store, transport, pollIntervalMs: 100, leaseMs: 2000 });
    relay.on('relay:error', (e) => errors.push(e.error));
    t.after(() => relay.stop());
    await relay.start();
    await transport.waitFor(2, 15_000);
    assert.deepEqual(
      transport.messages.map((m) => [m.id, m.attempts]),
      [
        [ids[0], 2],
        [ids[1], 1],
      ],
      'the dead relay’s message first, as its second attempt, then the next of its key',
    );
    assert.ok(
      errors.some((e) => e instanceof StoreError && e.code === 'relay_locked'),
      'the relay was refused while the dead one’s lock lasted',
    );
  });

  it('enqueues synchronously inside better-sqlite3’s db.transaction(), all or nothing', async (t) => {
    const { filename, store } = await fileStore();
    t.after(() => store.close());
    const db = new Database(filename);
    t.after(() => db.close());
    db.exec('CREATE TABLE orders (id TEXT PRIMARY KEY)');
    const place = db.transaction((id: string, fail: boolean) => {
      db.prepare('INSERT INTO orders (id) VALUES (?)').run(id);
      const messageId = store.enqueueSync(db, { topic: 'order.created', key: id, payload: { id } });
      if (fail) throw new Error('business failure');
      return messageId;
    });
    const id = place('o1', false);
    assert.throws(() => place('o2', true), /business failure/);
    // A bad message throws before anything is written, and rolls the business rows back with it.
    assert.throws(
      () =>
        db.transaction(() => {
          db.prepare('INSERT INTO orders (id) VALUES (?)').run('o3');
          store.enqueueSync(db, [
            { topic: 'ok', payload: 1 },
            { topic: '', payload: 2 },
          ]);
        })(),
      /topic must not be empty/,
    );
    assert.deepEqual(
      db.prepare('SELECT id FROM orders').all(),
      [{ id: 'o1' }],
      'only the committed order is there',
    );
    const { messages } = await store.claim({ owner: 'r', limit: 10, leaseMs: 5000 });
    assert.deepEqual(
      messages.map((m) => m.id),
      [id],
    );
    const ids = db.transaction(() =>
      store.enqueueSync(db, [
        { topic: 'a', payload: 1 },
        { topic: 'b', payload: 2 },
      ]),
    )();
    assert.equal(ids.length, 2);
    assert.throws(
      () => store.enqueueSync(db, { topic: 'no.tx', payload: 1 }),
      (err: unknown) => err instanceof NotATransactionError && /db\.inTransaction is false/.test(err.message),
    );
    assert.equal((await store.stats()).backlog, 3, 'the refused enqueue wrote nothing');
  });

  it('refuses a Database outside a transaction, and takes an adapter with execute(sql, params)', async (t) => {
    const { filename, store } = await fileStore();
    t.after(() => store.close());
    const db = new Database(filename);
    t.after(() => db.close());
    const outbox = new Outbox({ store });
    await assert.rejects(
      outbox.enqueue(db, { topic: 'autocommit', payload: 1 }),
      (err: unknown) =>
        err instanceof NotATransactionError &&
        /BEGIN IMMEDIATE/.test(err.message) &&
        /enqueueSync/.test(err.message),
    );
    await assert.rejects(outbox.enqueue({} as never, { topic: 'x', payload: 1 }), NotATransactionError);
    assert.equal((await store.stats()).backlog, 0);
    // An ORM-style adapter: the one execute port, over the caller's transaction.
    const adapter = {
      async execute(sql: string, params: readonly unknown[] = []) {
        db.prepare(sql).run(...params);
        return { rows: [] };
      },
    };
    db.exec('BEGIN');
    await outbox.enqueue(adapter, { topic: 'adapter', payload: 1 });
    db.exec('ROLLBACK');
    assert.equal((await store.stats()).backlog, 0, 'rolled back with the adapter’s transaction');
  });

  it('writes big enqueues in one statement each, in order, whatever SQLite’s parameter limit', async (t) => {
    const { filename, store } = await fileStore();
    t.after(() => store.close());
    const db = new Database(filename);
    t.after(() => db.close());
    const outbox = new Outbox({ store });
    const many = (topic: string, count: number) =>
      Array.from({ length: count }, (_, i) => ({ topic, key: `k${i % 7}`, payload: i }));
    // The usual form: one JSON parameter whatever the number of rows (the Outbox's chunks of
    // 1,000 messages as VALUES rows would bind 8,000 parameters each)…
    const usual = store.enqueueStatement(outbox.encode(many('usual', 1500)));
    assert.equal(usual.params.length, 1);
    await inTransaction(db, (tx) => outbox.enqueue(tx, many('async', 2500)));
    db.transaction(() => store.enqueueSync(db, many('sync', 3000)))();
    // …and big payloads (over 16 MiB in one statement: 17 of 1 MiB) as blob parameters of VALUES rows, under
    // the limit of 32,766 parameters, refusing more rows than fit.
    const big = Array.from({ length: 17 }, (_, i) => ({
      topic: 'big',
      payload: Buffer.alloc(1024 * 1024, i),
    }));
    const values = store.enqueueStatement(outbox.encode(big));
    assert.equal(values.params.length, 17 * 8);
    await inTransaction(db, (tx) => outbox.enqueue(tx, big));
    const tooMany = Array.from({ length: MAX_ROWS_PER_INSERT + 1 }, () => ({
      topic: 'x',
      payload: Buffer.alloc(8 * 1024),
    }));
    assert.ok(MAX_ROWS_PER_INSERT * 8 <= 32_766);
    assert.throws(() => store.enqueueStatement(outbox.encode(tooMany)), RangeError);

    assert.equal((await store.stats()).backlog, 2500 + 3000 + 17);
    const rows = db.prepare('SELECT topic, key, payload FROM mailroom_outbox ORDER BY seq').all() as Array<{
      topic: string;
      key: string | null;
      payload: Buffer;
    }>;
    const decoded = rows.map((r) => (r.topic === 'big' ? r.payload[0] : JSON.parse(r.payload.toString())));
    assert.deepEqual(decoded, [
      ...Array.from({ length: 2500 }, (_, i) => i),
      ...Array.from({ length: 3000 }, (_, i) => i),
      ...Array.from({ length: 17 }, (_, i) => i),
    ]);
    assert.ok(rows.filter((r) => r.topic === 'big').every((r) => r.payload.length === 1024 * 1024));
    assert.equal(rows[8]?.key, 'k1');
  });

  it('waits for the write lock without blocking the event loop, and gives up at busyTimeoutMs', async (t) => {
    const { filename, store } = await fileStore({ busyTimeoutMs: 3000 });
    const impatient = await SqliteStore.connect({ filename, busyTimeoutMs: 300 });
    const other = new Database(filename);
    t.after(async () => {
      if (other.inTransaction) other.exec('ROLLBACK');
      await store.close();
      await impatient.close();
      other.close();
    });
    other.exec('BEGIN IMMEDIATE'); // another writer holds SQLite's one write lock
    const claim = store.claim({ owner: 'r', limit: 10, leaseMs: 5000 });
    // Waiting in SQLite's busy handler would block this process for the whole 3 s.
    const started = Date.now();
    await sleep(50);
    assert.ok(Date.now() - started < 1500, `a timer ran while the claim waited (${Date.now() - started} ms)`);
    other.exec('COMMIT');
    assert.deepEqual((await claim).messages, [], 'the claim ran once the lock was free');

    other.exec('BEGIN IMMEDIATE');
    await assert.rejects(
      impatient.extendLease('no-such-lease', 1000),
      (err: unknown) => err instanceof StoreError && err.code === 'busy' && /busyTimeoutMs/.test(err.message),
    );
    other.exec('ROLLBACK');
  });

  it('on a shared connection, runs its statements after the application’s open transaction, never inside it', async (t) => {
    const db = new Database(':memory:');
    t.after(() => db.close());
    const store = new SqliteStore({ db });
    t.after(() => store.close());
    await store.migrate();
    const outbox = new Outbox({ store });
    db.exec('BEGIN IMMEDIATE');
    await outbox.enqueue(db, { topic: 'phantom', payload: 1 });
    // A claim now would see the uncommitted row if it ran inside the open transaction.
    const claim = store.claim({ owner: 'r', limit: 10, leaseMs: 5000 });
    await sleep(50);
    db.exec('ROLLBACK');
    assert.deepEqual((await claim).messages, [], 'the rolled-back message was never claimed');
    assert.equal((await store.stats()).backlog, 0);
  });

  it('migrates once: WAL mode, numbered files recorded, safe to run twice and from two connections at once', async (t) => {
    const filename = freshFile();
    const a = await SqliteStore.connect({ filename });
    const b = await SqliteStore.connect({ filename });
    t.after(async () => {
      await a.close();
      await b.close();
    });
    await assert.rejects(
      a.check(),
      (err: unknown) => err instanceof StoreError && err.code === 'schema_missing',
    );
    const files = loadSqliteMigrations();
    assert.deepEqual(
      files.map((m) => m.version),
      files.map((_, i) => i + 1),
      'numbered from 1 without gaps',
    );
    const dry = await a.migrate({ dryRun: true });
    assert.deepEqual(
      dry.map((r) => r.status),
      files.map(() => 'pending'),
    );
    await assert.rejects(a.check(), /schema_missing|version 0/, 'a dry run changes nothing');
    // What `mailroom migrate --dry-run` would print applies as it is.
    const scratch = new Database(':memory:');
    scratch.exec(pendingSqliteSql(dry));
    assert.equal(
      (scratch.prepare('SELECT count(*) AS n FROM mailroom_migrations').get() as { n: number }).n,
      files.length,
    );
    scratch.close();
    const [ra, rb] = await Promise.all([a.migrate(), b.migrate()]);
    const applied = [...ra, ...rb].filter((r) => r.status === 'applied');
    assert.deepEqual(
      applied.map((r) => r.version).sort((x, y) => x - y),
      files.map((m) => m.version),
      'each file applied exactly once',
    );
    assert.deepEqual(
      (await a.migrate()).map((r) => r.status),
      files.map(() => 'already-applied'),
    );
    await a.check();
    const db = new Database(filename);
    t.after(() => db.close());
    assert.equal(db.pragma('journal_mode', { simple: true }), 'wal');
    assert.deepEqual(
      db.prepare('SELECT version, name FROM mailroom_migrations ORDER BY version').all(),
      files.map((m) => ({ version: m.version, name: m.name })),
    );
  });

  it('archives delivered messages when asked, and prunes the archive', async (t) => {
    const { filename, store } = await fileStore({ archive: true });
    t.after(() => store.close());
    const db = new Database(filename);
    t.after(() => db.close());
    const outbox = new Outbox({ store });
    const id = await inTransaction(db, (tx) => outbox.enqueue(tx, { topic: 'kept', payload: 1 }));
    const batch = await store.claim({ owner: 'r', limit: 10, leaseMs: 5000 });
    await store.settle({
      leaseToken: batch.leaseToken,
      delivered: batch.messages,
      released: [],
      retry: [],
      dead: [],
    });
    assert.equal((await store.stats()).backlog, 0);
    assert.deepEqual(db.prepare('SELECT id, attempts FROM mailroom_archive').all(), [{ id, attempts: 1 }]);
    assert.equal(await store.pruneArchive(60_000), 0, 'younger than the retention');
    await sleep(5);
    assert.equal(await store.pruneArchive(1), 1);
  });

  it('refuses messages with ack or callback, which it cannot track, writing nothing', async (t) => {
    const { filename, store } = await fileStore();
    t.after(() => store.close());
    const db = new Database(filename);
    t.after(() => db.close());
    const outbox = new Outbox({ store });
    await assert.rejects(
      inTransaction(db, (tx) =>
        outbox.enqueue(tx, [
          { topic: 'plain', payload: 1 },
          { topic: 'tracked', payload: 2, ack: { timeoutMs: 5000 } },
        ]),
      ),
      /does not support/,
    );
    assert.equal((await store.stats()).backlog, 0);
  });

  it('inbox: runs a handler once per message in a transaction with its record, and not after a rollback', async (t) => {
    const { filename, store } = await fileStore();
    t.after(() => store.close());
    const db = new Database(filename);
    t.after(() => db.close());
    db.exec('CREATE TABLE effects (message_id TEXT)');
    const inbox = new Inbox({ store, consumer: 'billing' });
    const message: ReceivedMessage = {
      id: uuidv7(),
      topic: 'order.created',
      key: null,
      type: null,
      headers: {},
      contentType: 'application/json',
      body: Buffer.from('{}'),
      payload: {},
      ackTo: null,
      attempt: 1,
      createdAt: null,
    };
    let runs = 0;
    const effect = async (tx: Database.Database) => {
      runs++;
      tx.prepare('INSERT INTO effects (message_id) VALUES (?)').run(message.id);
      await sleep(5);
    };
    await assert.rejects(
      inbox.handle(message, async (tx) => {
        await effect(tx as Database.Database);
        throw new Error('handler failed');
      }),
      /handler failed/,
    );
    assert.deepEqual(db.prepare('SELECT * FROM effects').all(), [], 'the failed attempt left no effect');
    const first = await inbox.handle(message, (tx) => effect(tx as Database.Database));
    const again = await inbox.handle(message, (tx) => effect(tx as Database.Database));
    assert.equal(first.status, 'processed');
    assert.equal(again.status, 'duplicate');
    assert.equal(runs, 2, 'the duplicate did not run the handler');
    assert.equal((db.prepare('SELECT count(*) AS n FROM effects').get() as { n: number }).n, 1);
    await sleep(5);
    assert.equal(await store.pruneInbox('billing', 1, 100), 1);
  });

  it('reads the database file from a sqlite: URL, and refuses URLs that name none', () => {
    assert.equal(sqliteFilenameFromUrl('databaseUrl', 'sqlite:./data/app.db'), './data/app.db');
    assert.equal(sqliteFilenameFromUrl('databaseUrl', 'sqlite:app.db'), 'app.db');
    assert.equal(
      sqliteFilenameFromUrl('databaseUrl', 'sqlite:///var/lib/app%20one.db'),
      '/var/lib/app one.db',
    );
    for (const bad of ['sqlite:', 'sqlite::memory:', 'postgres://x/y', 'sqlite:./a.db?mode=ro']) {
      assert.throws(
        () => sqliteFilenameFromUrl('databaseUrl', bad),
        (err: unknown) => err instanceof ConfigError && err.message.includes(JSON.stringify(bad)),
        bad,
      );
    }
  });

  it('explains a missing schema and a closed store, and checks its options', async () => {
    const db = new Database(':memory:');
    const store = new SqliteStore({ db });
    try {
      await assert.rejects(
        store.claim({ owner: 'r', limit: 1, leaseMs: 1000 }),
        (err: unknown) =>
          err instanceof StoreError &&
          err.code === 'schema_missing' &&
          /store\.migrate\(\)/.test(err.message),
      );
      assert.throws(() => new SqliteStore({ db, relayLockMs: 10 }), /relayLockMs/);
      assert.throws(() => new SqliteStore({} as never), /db and filename are both missing/);
      assert.throws(() => new SqliteStore({ db, filename: 'x.db' }), /not both/);
    } finally {
      await store.close();
      db.close();
    }
    await assert.rejects(store.stats(), (err: unknown) => err instanceof StoreError && err.code === 'closed');
  });

  it('keeps per-key order through a relay whose transport fails a third of first attempts mid-run', async (t) => {
    const { filename, store } = await fileStore();
    const db = new Database(filename);
    const keys = 6;
    const perKey = 30;
    const expected = new Map<string, number[]>();
    for (let i = 0; i < perKey; i++) {
      // One transaction per round, with a message of every key, as concurrent writers would.
      db.transaction(() =>
        store.enqueueSync(
          db,
          Array.from({ length: keys }, (_, k) => ({ topic: 'order', key: `k${k}`, payload: i })),
        ),
      )();
      for (let k = 0; k < keys; k++) expected.set(`k${k}`, [...(expected.get(`k${k}`) ?? []), i]);
    }
    // Deterministic: every third message fails its first attempt.
    const seen = new Set<string>();
    let n = 0;
    const transport = new MemoryTransport({
      failWith: (m) => {
        if (seen.has(m.id)) return undefined;
        seen.add(m.id);
        return n++ % 3 === 1 ? 'retry' : undefined;
      },
    });
    const relay = new Relay({
      store,
      transport,
      pollIntervalMs: 20,
      leaseMs: 2000,
      maxPerKey: 10,
      retry: { baseDelayMs: 5, maxDelayMs: 20, maxAttempts: 10, jitter: 'none' },
    });
    t.after(async () => {
      await relay.stop();
      await store.close();
      db.close();
    });
    await relay.start();
    await waitUntil(async () => (await store.stats()).backlog === 0, 'an empty outbox', 15_000);
    const firsts = new Map<string, number[]>();
    const delivered = new Set<string>();
    for (const m of transport.messages) {
      if (delivered.has(m.id) || m.key === null) continue;
      delivered.add(m.id);
      firsts.set(m.key, [...(firsts.get(m.key) ?? []), JSON.parse(m.payload.toString()) as number]);
    }
    assert.deepEqual(firsts, expected, 'every key’s messages delivered once each, in enqueue order');
    assert.equal((await store.stats()).deadLetters, 0);
  });
});
