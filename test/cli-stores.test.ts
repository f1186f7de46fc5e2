/**
 * `--database-url` picks the store by its scheme: the built `mailroom` command against the local
 * MariaDB (a database of this file's own), a SQLite file and a PGlite directory in a temporary
 * folder. What the commands print, how they exit and what lands in the database are the
 * behaviour under test; the errors for URLs no store takes, and for a driver package that is
 * missing, name the value (never a password) and the fix.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import mysql from 'mysql2/promise';
import { ConfigError } from '../src/core/errors/config-error.js';
import { checkWakeup, driverLoadError, parseStoreUrl, relayWakeup } from '../src/cli/connect.js';
import { MySqlStore } from '../src/stores/mysql/index.js';
import { SqliteStore } from '../src/stores/sqlite/index.js';
import { runCli, spawnCli, stopCli } from './helpers/cli.js';
import { waitUntil } from './helpers/wait.js';

const MYSQL_SERVER = process.env.MYSQL_URL ?? 'mysql://root@127.0.0.1:3306';
const MYSQL_DATABASE = `mailroom_cli_${randomBytes(4).toString('hex')}`;
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

let dir: string;
let admin: mysql.Connection;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'mailroom-cli-stores-'));
  admin = await mysql.createConnection(MYSQL_SERVER);
  await admin.query(`CREATE DATABASE \`${MYSQL_DATABASE}\``);
});

after(async () => {
  await admin.query(`DROP DATABASE IF EXISTS \`${MYSQL_DATABASE}\``);
  await admin.end();
  rmSync(dir, { recursive: true, force: true });
});

/** `mailroom send` of one JSON message; asserts it succeeded and returns the printed id. */
async function send(url: string, topic: string, payload: string, extra: string[] = []): Promise<string> {
  const res = await runCli(['send', '--database-url', url, '--topic', topic, '--payload', payload, ...extra]);
  assert.equal(res.code, 0, res.stderr);
  const id = res.stdout.trim();
  assert.match(id, UUID);
  return id;
}

/** `mailroom migrate`, twice: the first run applies, the second finds nothing to do. */
async function migrateTwice(url: string, where: string, extra: string[] = []): Promise<void> {
  const first = await runCli(['migrate', '--database-url', url, ...extra]);
  assert.equal(first.code, 0, first.stderr);
  assert.match(first.stdout, /^000001_outbox: applied$/m);
  assert.ok(first.stdout.includes(`${where}: applied `), first.stdout);
  const second = await runCli(['migrate', '--database-url', url, ...extra]);
  assert.equal(second.code, 0, second.stderr);
  assert.match(second.stdout, /^000001_outbox: already-applied$/m);
  assert.ok(second.stdout.includes(`${where} is up to date`), second.stdout);
}

describe('mailroom with a mysql:// or mariadb:// URL', () => {
  const url = `${MYSQL_SERVER}/${MYSQL_DATABASE}`;

  it('migrates, sends in a transaction of its own, and the message waits in the outbox', async () => {
    await migrateTwice(url, `tables mailroom_* in database "${MYSQL_DATABASE}"`);
    const id = await send(url.replace(/^mysql:/, 'mariadb:'), 'cli.mysql', '{"n": 12345678901234567890123}');
    const store = await MySqlStore.connect({ connectionString: url });
    try {
      const [row] = (await admin.query(
        `SELECT topic, CAST(payload AS CHAR) AS payload FROM \`${MYSQL_DATABASE}\`.mailroom_outbox WHERE id = ?`,
        [id],
      )) as unknown as [Array<{ topic: string; payload: string }>];
      assert.deepEqual(row, [{ topic: 'cli.mysql', payload: '{"n":12345678901234567890123}' }]);
      assert.equal((await store.stats()).backlog, 1);
    } finally {
      await store.close();
    }
  });

  it('takes --schema as the prefix of the tables, in the database of the URL', async () => {
    await migrateTwice(url, `tables billing_* in database "${MYSQL_DATABASE}"`, ['--schema', 'billing']);
    await send(url, 'cli.billing', '{}', ['--schema', 'billing']);
    const [rows] = (await admin.query(
      `SELECT topic FROM \`${MYSQL_DATABASE}\`.billing_outbox WHERE topic = 'cli.billing'`,
    )) as unknown as [unknown[]];
    assert.equal(rows.length, 1);
  });

  it('refuses a URL without a database, and a --schema that cannot prefix a table, naming them', async () => {
    const none = await runCli(['migrate', '--database-url', MYSQL_SERVER]);
    assert.equal(none.code, 2);
    assert.match(none.stderr, /names no database: add it as the path/);
    const bad = await runCli(['migrate', '--database-url', url, '--schema', 'bad-name']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--schema "bad-name" cannot name MySQL tables/);
  });

  it('never prints the password of the URL, also when the server refuses the login', async () => {
    const wrong = `mysql://root:Hunter2secret@127.0.0.1:3306/${MYSQL_DATABASE}`;
    const res = await runCli(['send', '--database-url', wrong, '--topic', 't', '--payload', '{}']);
    assert.equal(res.code, 1);
    assert.match(res.stderr, /refused the login/);
    assert.ok(!res.stderr.includes('Hunter2secret'), res.stderr);
  });

  it('prints the SQL of --dry-run with the prefix, and changes nothing', async () => {
    const res = await runCli(['migrate', '--dry-run', '--database-url', url, '--schema', 'dry']);
    assert.equal(res.code, 0, res.stderr);
    assert.match(res.stdout, /CREATE TABLE IF NOT EXISTS `dry_outbox`/);
    const [tables] = (await admin.query(
      `SELECT table_name FROM information_schema.tables WHERE table_schema = ? AND table_name LIKE 'dry\\_%'`,
      [MYSQL_DATABASE],
    )) as unknown as [unknown[]];
    assert.equal(tables.length, 0);
  });
});

describe('mailroom with a sqlite: URL', () => {
  it('creates the file at migrate, and sends into it', async () => {
    const file = join(dir, 'app.db');
    const url = `sqlite:${file}`;
    // sqlite:/abs is sqlite:///abs too.
    await migrateTwice(url, `database file "${file}"`);
    const id = await send(`sqlite://${file}`, 'cli.sqlite', '{"a": [1, 2]}');
    const store = await SqliteStore.connect({ filename: file });
    try {
      const [row] = store.db
        .prepare('SELECT topic, CAST(payload AS TEXT) AS payload FROM mailroom_outbox')
        .all() as Array<{
        topic: string;
        payload: string;
      }>;
      assert.deepEqual(row, { topic: 'cli.sqlite', payload: '{"a":[1,2]}' });
      assert.deepEqual(
        (await store.listDeadLetters()).map((d) => d.id),
        [],
      );
      assert.equal((await store.stats()).backlog, 1);
      assert.ok(id);
    } finally {
      await store.close();
    }
  });

  it('refuses a file that does not exist for every command but migrate (a typo is not an empty outbox)', async () => {
    const missing = join(dir, 'typo.db');
    const res = await runCli([
      'send',
      '--database-url',
      `sqlite:${missing}`,
      '--topic',
      't',
      '--payload',
      '{}',
    ]);
    assert.equal(res.code, 2);
    assert.match(res.stderr, /no database file .*typo\.db; check the path, or create the outbox there/);
    assert.equal(existsSync(missing), false);
  });

  it('prints the whole schema for --dry-run on a file that does not exist, without creating it', async () => {
    const missing = join(dir, 'new.db');
    const res = await runCli(['migrate', '--dry-run', '--database-url', `sqlite:${missing}`]);
    assert.equal(res.code, 0, res.stderr);
    assert.match(res.stdout, /CREATE TABLE IF NOT EXISTS mailroom_migrations/);
    assert.match(res.stdout, /-- 000001_outbox\.sql/);
    assert.equal(existsSync(missing), false);
  });

  it('refuses :memory: and a --schema other than mailroom, saying why', async () => {
    const memory = await runCli(['migrate', '--database-url', 'sqlite::memory:']);
    assert.equal(memory.code, 2);
    assert.match(memory.stderr, /database in memory, which starts empty and is gone when this command exits/);
    const schema = await runCli([
      'migrate',
      '--database-url',
      `sqlite:${join(dir, 'x.db')}`,
      '--schema',
      'other',
    ]);
    assert.equal(schema.code, 2);
    assert.match(schema.stderr, /--schema "other" does not apply to a SQLite database/);
  });
});

describe('mailroom with a pglite: URL', () => {
  it('migrates a data directory, sends into it, and a relay delivers the message to Redis', async () => {
    const data = join(dir, 'pglite-data');
    const url = `pglite:${data}`;
    // PGlite starts PostgreSQL in WebAssembly in every command: one migrate, one send, one relay.
    const migrated = await runCli(['migrate', '--database-url', url]);
    assert.equal(migrated.code, 0, migrated.stderr);
    assert.match(migrated.stdout, /^schema "mailroom": applied \d+ migration\(s\)$/m);
    const topic = `mailroom-cli-pglite-${randomBytes(4).toString('hex')}`;
    const id = await send(url, topic, '{"via":"pglite"}');
    const redis = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1 });
    await redis.connect();
    const relay = spawnCli(['relay', '--database-url', url, '--transport', REDIS_URL]);
    let log = '';
    relay.stderr?.on('data', (d: Buffer) => (log += d.toString()));
    try {
      await waitUntil(async () => (await redis.xlen(topic)) === 1, `the message in Redis stream ${topic}`);
      const [[, fields] = ['', []]] = await redis.xrange(topic, '-', '+');
      assert.ok(fields.includes(id), `stream entry ${JSON.stringify(fields)} carries message id ${id}`);
      assert.ok(fields.includes('{"via":"pglite"}'), JSON.stringify(fields));
    } finally {
      assert.equal(await stopCli(relay), 0, log);
      await redis.del(topic);
      redis.disconnect();
    }
    // Stopping drains the batch in flight: the relay exits having settled (delivered) it.
    assert.match(log, /"msg":"relay exited".*"delivered":1\b/);
  });

  it('prints the whole PostgreSQL schema for --dry-run on pglite:memory: or a new directory, creating nothing', async () => {
    const memory = await runCli(['migrate', '--dry-run', '--database-url', 'pglite:memory:']);
    assert.equal(memory.code, 0, memory.stderr);
    assert.match(memory.stdout, /CREATE SCHEMA IF NOT EXISTS "mailroom"/);
    assert.match(memory.stdout, /-- 000001_outbox\.sql/);
    const fresh = join(dir, 'pglite-new');
    const dry = await runCli([
      'migrate',
      '--dry-run',
      '--database-url',
      `pglite:${fresh}`,
      '--schema',
      'billing',
    ]);
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stdout, /CREATE SCHEMA IF NOT EXISTS "billing"/);
    assert.equal(existsSync(fresh), false);
  });

  it('refuses pglite:memory: where data is read or kept', async () => {
    const send = await runCli([
      'send',
      '--database-url',
      'pglite:memory:',
      '--topic',
      't',
      '--payload',
      '{}',
    ]);
    assert.equal(send.code, 2);
    assert.match(send.stderr, /pglite:memory: is a database in this command's memory/);
  });
});

describe('--database-url that no store takes', () => {
  it('lists the schemes, with the password hidden', async () => {
    const res = await runCli([
      'send',
      '--database-url',
      'mongodb://app:Hunter2secret@db:27017/shop',
      '--topic',
      't',
      '--payload',
      '{}',
    ]);
    assert.equal(res.code, 2);
    assert.match(
      res.stderr,
      /names no database Mailroom can open \(scheme "mongodb:"\); supported: postgres:\/\/, postgresql:\/\/, mysql:\/\/, mariadb:\/\/, sqlite:path, pglite:path/,
    );
    assert.ok(!res.stderr.includes('Hunter2secret'), res.stderr);
  });

  it('refuses a store a command cannot use, naming both', async () => {
    const file = join(dir, 'ack.db');
    await runCli(['migrate', '--database-url', `sqlite:${file}`]);
    const res = await runCli(['ack', 'list', '--database-url', `sqlite:${file}`]);
    assert.equal(res.code, 2);
    assert.match(
      res.stderr,
      /names a SQLite database \(sqlite:.*ack\.db\), and this command needs PostgreSQL or PGlite/,
    );
  });
});

describe('parseStoreUrl', () => {
  it('reads the path of sqlite: and pglite: URLs in each written form', () => {
    assert.deepEqual(parseStoreUrl('sqlite:./app.db'), {
      kind: 'sqlite',
      scheme: 'sqlite:',
      path: './app.db',
    });
    assert.deepEqual(parseStoreUrl('sqlite:app.db'), { kind: 'sqlite', scheme: 'sqlite:', path: 'app.db' });
    assert.deepEqual(parseStoreUrl('sqlite:///var/lib/a%20b.db'), {
      kind: 'sqlite',
      scheme: 'sqlite:',
      path: '/var/lib/a b.db',
    });
    assert.deepEqual(parseStoreUrl('pglite:///srv/data'), {
      kind: 'pglite',
      scheme: 'pglite:',
      path: '/srv/data',
    });
    assert.deepEqual(parseStoreUrl('pglite:memory:'), { kind: 'pglite', scheme: 'pglite:' });
    assert.deepEqual(parseStoreUrl('POSTGRESQL://h/db'), { kind: 'postgres', scheme: 'postgresql:' });
    assert.deepEqual(parseStoreUrl('mariadb://h/db'), { kind: 'mysql', scheme: 'mariadb:' });
    assert.throws(() => parseStoreUrl('sqlite:./app.db?mode=ro'), /has a query or fragment/);
    assert.throws(() => parseStoreUrl('pglite:'), /names no data directory/);
    assert.throws(() => parseStoreUrl('not a url'), ConfigError);
  });
});

describe('checkWakeup and relayWakeup', () => {
  const config = (databaseUrl: string, wakeup?: string) => ({ databaseUrl, ...(wakeup ? { wakeup } : {}) });
  const store = (notify: boolean) => ({ capabilities: { notify } });

  it('refuses, from the URL, a wake-up the database cannot give', () => {
    assert.throws(
      () => checkWakeup(config('mysql://h/db', 'notify')),
      /--wakeup notify needs wake-ups at commit, which MySQL and MariaDB cannot send/,
    );
    for (const url of ['mariadb://h/db', 'sqlite:./a.db', 'pglite:./data']) {
      assert.throws(
        () => checkWakeup(config(url, 'replication')),
        /--wakeup replication reads PostgreSQL's write-ahead log/,
      );
    }
    for (const [url, wakeup] of [
      ['postgres://h/db', 'replication'],
      ['postgres://h/db', 'notify'],
      ['sqlite:./a.db', 'notify'],
      ['mysql://h/db', 'poll'],
      ['mysql://h/db', undefined],
    ] as const) {
      assert.doesNotThrow(() => checkWakeup(config(url, wakeup)));
    }
  });

  it('wakes at commit where the store can, polls where it cannot, and keeps a --wakeup given', () => {
    assert.equal(relayWakeup(config('sqlite:./a.db'), store(true)), 'notify');
    assert.equal(relayWakeup(config('mysql://h/db'), store(false)), 'poll');
    assert.equal(relayWakeup(config('postgres://h/db', 'poll'), store(true)), 'poll');
    assert.equal(relayWakeup(config('postgres://h/db', 'replication'), store(true)), 'replication');
  });
});

describe('driverLoadError', () => {
  /** What a store's loader throws when `import()` cannot find the package: a ConfigError around Node's error. */
  function missing(pkg: string): unknown {
    const notFound = Object.assign(new Error(`Cannot find package '${pkg}' imported from /app/dist/x.js`), {
      code: 'ERR_MODULE_NOT_FOUND',
    });
    return new ConfigError(pkg, `the store needs ${pkg}`, {}, notFound);
  }

  it('names the package and the exact npm install line for each scheme', () => {
    assert.equal(
      driverLoadError('mysql', 'mysql:', missing('mysql2')).message,
      'the mysql:// store needs the mysql2 package: npm install mysql2',
    );
    assert.equal(
      driverLoadError('mysql', 'mariadb:', missing('mysql2')).message,
      'the mariadb:// store needs the mysql2 package: npm install mysql2',
    );
    assert.equal(
      driverLoadError('sqlite', 'sqlite:', missing('better-sqlite3')).message,
      'the sqlite: store needs the better-sqlite3 package: npm install better-sqlite3@12',
    );
    assert.equal(
      driverLoadError('pglite', 'pglite:', missing('@electric-sql/pglite')).message,
      'the pglite: store needs the @electric-sql/pglite package: npm install @electric-sql/pglite',
    );
    const pg = driverLoadError('postgres', 'postgres:', missing('pg'));
    assert.equal(pg.message, 'the postgres:// store needs the pg package: npm install pg');
    assert.equal(pg.code, 'invalid_config');
    assert.equal((pg.cause as { code?: string }).code, 'ERR_MODULE_NOT_FOUND');
  });

  it('tells a package that is there but does not load from one that is missing', () => {
    const abi = new Error(
      "The module 'better_sqlite3.node' was compiled against a different Node.js version using NODE_MODULE_VERSION 127.",
    );
    assert.match(
      driverLoadError('sqlite', 'sqlite:', abi).message,
      /^the better-sqlite3 package \(for sqlite: URLs\) is installed but failed to load \(The module 'better_sqlite3\.node' was compiled .*\); reinstall it for this Node\.js v\d+.*: npm install better-sqlite3@12$/,
    );
    const inner = Object.assign(
      new Error("Cannot find package 'lru.min' imported from /app/node_modules/mysql2/x.js"),
      {
        code: 'ERR_MODULE_NOT_FOUND',
      },
    );
    assert.match(
      driverLoadError('mysql', 'mysql:', inner).message,
      /installed but incomplete .*lru\.min.*: npm install mysql2$/,
    );
  });
});

describe('relay, status and dlq on MySQL/MariaDB and SQLite', () => {
  /** `status --json` of the URL. */
  async function status(
    url: string,
    extra: string[],
  ): Promise<{ backlog: number; verifyLedger: boolean; slot: unknown }> {
    const res = await runCli(['status', '--json', '--database-url', url, ...extra]);
    assert.equal(res.code, 0, res.stderr);
    return JSON.parse(res.stdout) as { backlog: number; verifyLedger: boolean; slot: unknown };
  }

  /** Sends one message, relays it to a Redis stream of its own, then reads status and dlq. */
  async function relayOne(url: string, wakeup: string, extra: string[] = []): Promise<void> {
    const topic = `mailroom-cli-stores-${randomBytes(4).toString('hex')}`;
    const id = await send(url, topic, '{"relayed":true}', extra);
    assert.equal((await status(url, extra)).backlog, 1);
    const redis = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1 });
    await redis.connect();
    const relay = spawnCli(['relay', '--database-url', url, '--transport', REDIS_URL, ...extra]);
    let log = '';
    relay.stderr?.on('data', (d: Buffer) => (log += d.toString()));
    try {
      await waitUntil(async () => (await redis.xlen(topic)) === 1, `the message in Redis stream ${topic}`);
      const [[, fields] = ['', []]] = await redis.xrange(topic, '-', '+');
      assert.ok(fields.includes(id), JSON.stringify(fields));
    } finally {
      assert.equal(await stopCli(relay), 0, log);
      await redis.del(topic);
      redis.disconnect();
    }
    assert.match(log, new RegExp(`"msg":"relay starting".*"wakeup":"${wakeup}"`));
    assert.match(log, /"msg":"relay exited".*"delivered":1\b/);
    const after = await status(url, extra);
    assert.equal(after.backlog, 0);
    assert.equal(after.verifyLedger, false);
    assert.equal(after.slot, null);
    const dlq = await runCli(['dlq', 'list', '--json', '--database-url', url, ...extra]);
    assert.equal(dlq.code, 0, dlq.stderr);
    assert.deepEqual(JSON.parse(dlq.stdout), []);
  }

  it('relays from MariaDB by polling (no NOTIFY), and status and dlq read it', async () => {
    const url = `${MYSQL_SERVER}/${MYSQL_DATABASE}`;
    const migrated = await runCli(['migrate', '--database-url', url, '--schema', 'relayed']);
    assert.equal(migrated.code, 0, migrated.stderr);
    await relayOne(url, 'poll', ['--schema', 'relayed']);
  });

  it('relays from a SQLite file, woken at commit', async () => {
    const url = `sqlite:${join(dir, 'relayed.db')}`;
    assert.equal((await runCli(['migrate', '--database-url', url])).code, 0);
    await relayOne(url, 'notify');
  });

  it('refuses a wake-up the database cannot give, before connecting', async () => {
    const mysqlNotify = await runCli([
      'relay',
      '--database-url',
      `${MYSQL_SERVER}/${MYSQL_DATABASE}`,
      '--transport',
      REDIS_URL,
      '--wakeup',
      'notify',
    ]);
    assert.equal(mysqlNotify.code, 2);
    assert.match(
      mysqlNotify.stderr,
      /--wakeup notify needs wake-ups at commit, which MySQL and MariaDB cannot send/,
    );
    const sqliteLog = await runCli([
      'relay',
      '--database-url',
      `sqlite:${join(dir, 'relayed.db')}`,
      '--transport',
      REDIS_URL,
      '--wakeup',
      'replication',
    ]);
    assert.equal(sqliteLog.code, 2);
    assert.match(sqliteLog.stderr, /--wakeup replication reads PostgreSQL's write-ahead log/);
  });
});
