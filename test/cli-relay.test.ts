/**
 * `mailroom relay` as an operator runs it: the built command in a process of its own, against
 * the real PostgreSQL and RabbitMQ, reached through a TcpProxy where a test needs to make a link
 * go silent. What the process prints and how it ends are the behaviour under test.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { after, afterEach, before, describe, it } from 'node:test';
import amqp from 'amqplib';
import { Outbox } from '../src/core/index.js';
import { TcpProxy } from '../src/testkit/tcp-proxy.js';
import { AMQP_URL, bindConsumer } from './helpers/amqp.js';
import { runCli, spawnCli } from './helpers/cli.js';
import { createTestDb, DATABASE_URL, inTransaction, type TestDb } from './helpers/postgres.js';
import { waitUntil } from './helpers/wait.js';

/** Mirrors the command's SHUTDOWN_CLOSE_MARGIN_MS and EXIT_SHUTDOWN_DEADLINE (documented in docs/relay.md). */
const CLOSE_MARGIN_MS = 5000;
const EXIT_SHUTDOWN_DEADLINE = 3;
const SHUTDOWN_TIMEOUT_MS = 1000;

interface LogLine {
  level: string;
  msg: string;
  [field: string]: unknown;
}

/** A running `mailroom relay`: its JSON log lines (stderr is not a terminal) and its exit. */
interface RelayProcess {
  child: ChildProcess;
  lines(): LogLine[];
  text(): string;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function startRelay(args: string[], env: NodeJS.ProcessEnv = {}): RelayProcess {
  const child = spawnCli(['relay', ...args], env);
  let text = '';
  child.stderr?.on('data', (d: Buffer) => (text += d.toString()));
  child.stdout?.on('data', (d: Buffer) => (text += d.toString()));
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  return {
    child,
    text: () => text,
    lines: () =>
      text
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as LogLine),
    exit,
  };
}

/**
 * Waits for the process to end. The bound fails a process that does not end at all; it is the
 * deadline under test plus a generous allowance for starting and scheduling processes, not a
 * speed requirement.
 */
async function exited(relay: RelayProcess, boundMs: number) {
  let timer: NodeJS.Timeout | undefined;
  const gaveUp = new Promise<'hung'>((resolve) => (timer = setTimeout(() => resolve('hung'), boundMs)));
  const result = await Promise.race([relay.exit, gaveUp]);
  clearTimeout(timer);
  if (result === 'hung') {
    relay.child.kill('SIGKILL');
    await relay.exit;
    assert.fail(`mailroom relay was still running ${boundMs} ms after SIGTERM\n${relay.text()}`);
  }
  return result;
}

/** Removes an exchange a relay declared (the test's broker is shared). */
async function deleteExchange(exchange: string): Promise<void> {
  const conn = await amqp.connect(AMQP_URL);
  try {
    const ch = await conn.createChannel();
    await ch.deleteExchange(exchange);
  } finally {
    await conn.close();
  }
}

/** A URL like `url` that goes through `port` on 127.0.0.1 instead. */
function through(url: string, port: number): string {
  const u = new URL(url);
  u.hostname = '127.0.0.1';
  u.port = String(port);
  return u.toString();
}

function target(url: string, defaultPort: number) {
  const u = new URL(url);
  return { targetHost: u.hostname, targetPort: Number(u.port || defaultPort) };
}

describe('mailroom relay', () => {
  let db: TestDb;
  let outbox: Outbox;
  const running = new Set<RelayProcess>();

  before(async () => {
    db = await createTestDb('clirelay');
    outbox = new Outbox({ store: db.store });
  });
  after(async () => {
    await killAll();
    await db.drop();
  });

  // Tests share the schema: what one leaves (an abandoned batch, dead letters) must not reach the
  // next one's relay.
  // A test that failed half-way leaves its relay running on the shared schema: it would take the
  // next test's messages.
  async function killAll() {
    for (const relay of running) {
      if (relay.child.exitCode === null && relay.child.signalCode === null) relay.child.kill('SIGKILL');
      await relay.exit;
    }
    running.clear();
  }
  afterEach(async () => {
    await killAll();
    await db.pool.query(`DELETE FROM "${db.schema}".outbox`);
    await db.pool.query(`DELETE FROM "${db.schema}".dead_letter`);
  });

  function relay(args: string[], env: NodeJS.ProcessEnv = {}): RelayProcess {
    const r = startRelay(args, env);
    running.add(r);
    return r;
  }

  const enqueue = (topic: string, payload: unknown = {}) =>
    inTransaction(db.pool, (c) => outbox.enqueue(c, { topic, payload }));

  const started = (r: RelayProcess) =>
    waitUntil(() => r.lines().some((l) => l.msg === 'relay started'), `the relay to start\n${r.text()}`);

  describe('after SIGTERM', () => {
    it('exits by its shutdown deadline while the database link is black-holed, saying what did not close', async (t) => {
      const proxy = await TcpProxy.start(target(DATABASE_URL, 5432));
      t.after(() => proxy.close());
      const exchange = `mr_clirelay_${randomBytes(3).toString('hex')}`;
      const consumer = await bindConsumer(exchange);
      t.after(() => consumer.close());
      const r = relay([
        '--database-url',
        through(DATABASE_URL, proxy.port),
        '--schema',
        db.schema,
        '--transport',
        AMQP_URL,
        '--exchange',
        exchange,
        '--poll-interval-ms',
        '50',
        '--shutdown-timeout-ms',
        String(SHUTDOWN_TIMEOUT_MS),
      ]);
      await started(r);
      const id = await enqueue('clirelay.db');
      await waitUntil(
        () => consumer.received.some((m) => m.id === id),
        `the relay to deliver through the proxy\n${r.text()}`,
      );

      // Every connection of the relay to PostgreSQL now goes silent: the LISTEN connection, the
      // pool's idle clients and the next claim, as behind a firewall that drops packets.
      proxy.blackhole();
      await waitUntil(() => proxy.openConnections > 0 && true, 'connections to stay open');
      r.child.kill('SIGTERM');
      const { code } = await exited(r, SHUTDOWN_TIMEOUT_MS + CLOSE_MARGIN_MS + 10_000);

      // The relay's sockets went with its process. Waiting for the proxy to see them close keeps
      // proxy.close() from resetting sockets the peer is closing at that moment, which can leave a
      // handle behind in Node.
      await waitUntil(() => proxy.openConnections === 0, "the dead relay's connections to close");
      assert.equal(code, EXIT_SHUTDOWN_DEADLINE, `exit code of a shutdown past its deadline\n${r.text()}`);
      const last = r.lines().find((l) => l.msg.startsWith('shutdown deadline passed'));
      assert.ok(last, `one line says the deadline passed\n${r.text()}`);
      assert.equal(last.level, 'error');
      assert.match(String(last.open), /store/, 'it names the store as not closed');
      assert.doesNotMatch(String(last.open), /transport/, 'the transport did close');
    });

    it('exits by its shutdown deadline while the broker link is black-holed with a batch in flight', async (t) => {
      const proxy = await TcpProxy.start(target(AMQP_URL, 5672));
      t.after(() => proxy.close());
      const exchange = `mr_clirelay_${randomBytes(3).toString('hex')}`;
      const consumer = await bindConsumer(exchange);
      t.after(() => consumer.close());
      const r = relay([
        '--database-url',
        DATABASE_URL,
        '--schema',
        db.schema,
        '--transport',
        through(AMQP_URL, proxy.port),
        '--exchange',
        exchange,
        '--shutdown-timeout-ms',
        String(SHUTDOWN_TIMEOUT_MS),
      ]);
      await started(r);
      proxy.blackhole();
      await enqueue('clirelay.broker');
      // Claimed and published into the silent link: the publish waits for a confirm that never
      // comes (the publish deadline, 30 s by default, is far away).
      await waitUntil(async () => (await db.store.stats()).inFlight > 0, 'the batch to be in flight');
      r.child.kill('SIGTERM');
      const { code, signal } = await exited(r, SHUTDOWN_TIMEOUT_MS + CLOSE_MARGIN_MS + 10_000);

      assert.equal(signal, null);
      assert.equal(
        code,
        0,
        `the abandoned publish dropped its connection, so everything closed\n${r.text()}`,
      );
      const stopped = r.lines().find((l) => l.msg === 'relay stopped');
      assert.equal(stopped?.abandoned, 1, `the batch in flight is abandoned to its lease\n${r.text()}`);
      await waitUntil(() => proxy.openConnections === 0, "the dead relay's connections to close");
    });

    it('exits by its shutdown deadline when stopped while still connecting to a silent broker', async (t) => {
      const proxy = await TcpProxy.start(target(AMQP_URL, 5672));
      t.after(() => proxy.close());
      // The TCP connect succeeds and the AMQP handshake is never answered: the relay is stuck in
      // its start (connect timeout 10 s by default) when the signal comes.
      proxy.blackhole();
      const r = relay([
        '--database-url',
        DATABASE_URL,
        '--schema',
        db.schema,
        '--transport',
        through(AMQP_URL, proxy.port),
        '--exchange',
        `mr_clirelay_${randomBytes(3).toString('hex')}`,
        '--shutdown-timeout-ms',
        String(SHUTDOWN_TIMEOUT_MS),
      ]);
      await waitUntil(() => proxy.connections > 0, 'the relay to connect to the broker');
      r.child.kill('SIGTERM');
      const { code } = await exited(r, SHUTDOWN_TIMEOUT_MS + CLOSE_MARGIN_MS + 10_000);
      await waitUntil(() => proxy.openConnections === 0, "the dead relay's connections to close");

      assert.equal(code, EXIT_SHUTDOWN_DEADLINE, `exit code of a shutdown past its deadline\n${r.text()}`);
      const last = r.lines().find((l) => l.msg.startsWith('shutdown deadline passed'));
      assert.match(String(last?.open), /relay \(starting/, `it names the start under way\n${r.text()}`);
      assert.ok(!r.lines().some((l) => l.msg === 'relay started'));
    });
  });
  describe('messages no queue is bound to receive', () => {
    it('dead-letters them by default, warning once per topic, and delivers them on dlq replay once a queue is bound', async (t) => {
      const exchange = `mr_clirelay_${randomBytes(3).toString('hex')}`;
      const [a, b] = ['unbound.a', 'unbound.b'];
      const r = relay([
        '--database-url',
        DATABASE_URL,
        '--schema',
        db.schema,
        '--transport',
        AMQP_URL,
        '--exchange',
        exchange,
      ]);
      await started(r);
      const ids = [await enqueue(a), await enqueue(a), await enqueue(a)];
      await enqueue(b);
      await waitUntil(async () => (await db.count('dead_letter')) === 4, `4 dead letters\n${r.text()}`);

      const warnings = r.lines().filter((l) => l.level === 'warn');
      assert.deepEqual(
        warnings.map((l) => l.topic),
        [a, b],
        `one warning per topic, not per message\n${r.text()}`,
      );
      assert.match(warnings[0]?.msg ?? '', /dead-lettered.*mailroom dlq list --topic unbound\.a/);
      // Errors are written as objects: { name, code, message, cause }.
      assert.match(
        String((warnings[0]?.error as { message?: string })?.message),
        /no queue bound for topic "unbound\.a"/,
      );

      const list = await runCli(['dlq', 'list', '--topic', a, '--json', '--schema', db.schema], {
        DATABASE_URL,
      });
      assert.equal(list.code, 0, list.stderr);
      assert.deepEqual(
        (JSON.parse(list.stdout) as Array<{ id: string }>).map((d) => d.id).sort(),
        [...ids].sort(),
      );

      const consumer = await bindConsumer(exchange, 'unbound.#');
      t.after(() => consumer.close());
      const replay = await runCli(['dlq', 'replay', '--topic', a, '--yes', '--schema', db.schema], {
        DATABASE_URL,
      });
      assert.equal(replay.code, 0, replay.stderr);
      await waitUntil(
        () => ids.every((id) => consumer.received.some((m) => m.id === id)),
        `the replayed messages to arrive\n${r.text()}`,
      );
      await waitUntil(
        () => r.lines().some((l) => l.topic === a && l.msg.includes('delivered again')),
        `a line saying topic ${a} delivers again\n${r.text()}`,
      );

      r.child.kill('SIGTERM');
      const { code } = await r.exit;
      assert.equal(code, 0, r.text());
      const exit = r.lines().find((l) => l.msg === 'relay exited');
      assert.equal(exit?.dead, 4, 'the dead letters are counted');
      assert.equal(exit?.delivered, 3);
    });

    it('can be told to let RabbitMQ drop them, and then says so when it starts', async (t) => {
      const exchange = `mr_clirelay_${randomBytes(3).toString('hex')}`;
      t.after(() => deleteExchange(exchange));
      const common = ['--database-url', DATABASE_URL, '--transport', AMQP_URL, '--exchange', exchange];
      const config = async (...flags: string[]) => {
        const res = await runCli(['relay', '--print-config', ...common, ...flags]);
        assert.equal(res.code, 0, res.stderr);
        return JSON.parse(res.stdout).mandatory as boolean;
      };
      assert.equal(await config(), true);
      assert.equal(await config('--no-mandatory'), false);
      assert.equal(await config('--mandatory=false'), false);

      const r = relay([...common, '--schema', db.schema, '--no-mandatory']);
      await started(r);
      r.child.kill('SIGTERM');
      assert.equal((await r.exit).code, 0, r.text());
      const warning = r.lines().find((l) => l.level === 'warn');
      assert.match(
        warning?.msg ?? '',
        /^mandatory is off: RabbitMQ drops a message no queue is bound to receive/,
      );
    });
  });
  describe('--wakeup replication', () => {
    it('delivers from the log, SIGKILLed mid-stream loses nothing, and a bad slot name or a stray --slot is a usage error', async (t) => {
      const exchange = `mr_clirelay_${randomBytes(3).toString('hex')}`;
      const slot = `mr_cli_${randomBytes(3).toString('hex')}`;
      const consumer = await bindConsumer(exchange);
      t.after(() => consumer.close());
      t.after(async () => {
        await waitUntil(
          async () =>
            (
              await db.pool.query(
                `SELECT count(*)::int AS n FROM pg_replication_slots WHERE slot_name = $1 AND active`,
                [slot],
              )
            ).rows[0].n === 0,
          'the slot released',
        );
        await db.pool.query(`SELECT pg_drop_replication_slot($1)`, [slot]).catch(() => undefined);
        await db.pool.query(`DROP PUBLICATION IF EXISTS "${db.schema}_outbox"`);
      });
      const args = [
        '--database-url',
        DATABASE_URL,
        '--schema',
        db.schema,
        '--transport',
        AMQP_URL,
        '--exchange',
        exchange,
        '--wakeup',
        'replication',
        '--slot',
        slot,
        '--lease-ms',
        '2000',
      ];
      const first = relay(args);
      await started(first);
      const start = first.lines().find((l) => l.msg === 'relay starting');
      assert.equal(start?.wakeup, 'replication');
      const ids: string[] = [];
      for (let i = 0; i < 20; i++) ids.push(await enqueue('clirelay.log', { i }));
      await waitUntil(() => ids.every((id) => consumer.received.some((m) => m.id === id)), 'delivered');

      // Killed while writers go on; the next relay resumes from the confirmed position.
      const more: string[] = [];
      const writing = (async () => {
        for (let i = 0; i < 40; i++) more.push(await enqueue('clirelay.log', { more: i }));
      })();
      await new Promise((r) => setTimeout(r, 50));
      first.child.kill('SIGKILL');
      await first.exit;
      await writing;
      const second = relay(args);
      await started(second);
      await waitUntil(
        () => more.every((id) => consumer.received.some((m) => m.id === id)),
        `everything delivered after the restart\n${second.text()}`,
      );
      second.child.kill('SIGTERM');
      assert.equal((await second.exit).code, 0, second.text());

      const bad = relay([...args.slice(0, -2), '--slot', 'Bad-Slot!']);
      assert.equal((await bad.exit).code, 2, bad.text());
      assert.match(bad.text(), /slot/);
      const stray = relay([
        '--database-url',
        DATABASE_URL,
        '--schema',
        db.schema,
        '--transport',
        AMQP_URL,
        '--slot',
        slot,
      ]);
      assert.equal((await stray.exit).code, 2, stray.text());
      assert.match(stray.text(), /--slot needs --wakeup replication/);
    });
  });

  describe('logs', () => {
    it('names the database, the broker without its password, the exchange and the wake-up in one line at start', async (t) => {
      const exchange = `mr_clirelay_${randomBytes(3).toString('hex')}`;
      t.after(() => deleteExchange(exchange));
      // PostgreSQL here trusts local connections: the password is there to be hidden.
      const databaseUrl = new URL(DATABASE_URL);
      databaseUrl.password = 'db-secret-1';
      const r = relay(['--schema', db.schema, '--exchange', exchange, '--wakeup', 'poll'], {
        DATABASE_URL: databaseUrl.toString(),
        MAILROOM_TRANSPORT: AMQP_URL,
      });
      await started(r);
      r.child.kill('SIGTERM');
      assert.equal((await r.exit).code, 0, r.text());

      const start = r.lines().find((l) => l.msg === 'relay starting');
      assert.ok(start, r.text());
      assert.equal(start.level, 'info');
      assert.equal(
        start.database,
        `${databaseUrl.hostname}:${databaseUrl.port || '5432'}${databaseUrl.pathname}`,
      );
      assert.equal(start.schema, db.schema);
      assert.equal(start.broker, AMQP_URL.replace(/:[^:@/]*@/, ':***@'));
      assert.equal(start.exchange, exchange);
      assert.equal(start.wakeup, 'poll');
      assert.equal(start.mandatory, true);
      const brokerPassword = new URL(AMQP_URL).password;
      assert.doesNotMatch(r.text(), new RegExp(`db-secret-1|:${brokerPassword}@`));
    });

    it('reports a run of failing deliveries as one warning for the topic, progress lines, and one line when it delivers again', async (t) => {
      const exchange = `mr_clirelay_${randomBytes(3).toString('hex')}`;
      const topic = 'nacked.orders';
      const consumer = await bindConsumer(exchange, topic);
      t.after(() => consumer.close());
      // A second queue bound to the topic that refuses everything: the broker nacks each
      // message (a message-level failure), so every message is retried, again and again.
      const conn = await amqp.connect(AMQP_URL);
      const ch = await conn.createChannel();
      const full = `${exchange}.full`;
      await ch.assertQueue(full, { arguments: { 'x-max-length': 0, 'x-overflow': 'reject-publish' } });
      await ch.bindQueue(full, exchange, topic);
      t.after(async () => {
        await ch.deleteQueue(full).catch(() => undefined);
        await conn.close();
      });

      const r = relay([
        '--database-url',
        DATABASE_URL,
        '--schema',
        db.schema,
        '--transport',
        AMQP_URL,
        '--exchange',
        exchange,
        '--retry-base-ms',
        '20',
        '--retry-max-ms',
        '100',
        // Every message keeps failing while the test looks: none may reach its last attempt.
        '--max-attempts',
        '1000',
        '--progress-interval-ms',
        '500',
      ]);
      await started(r);
      const ids = await Promise.all(Array.from({ length: 10 }, () => enqueue(topic)));
      const retried = () =>
        r
          .lines()
          .filter((l) => l.msg === 'relay progress')
          .reduce((n, l) => n + Number(l.retried), 0);
      await waitUntil(() => retried() >= 50, `50 retries reported in progress lines\n${r.text()}`);

      const warnings = r.lines().filter((l) => l.level === 'warn' || l.level === 'error');
      assert.equal(warnings.length, 1, `one warning for ${retried()} retries\n${r.text()}`);
      assert.equal(warnings[0]?.topic, topic);
      assert.match(String((warnings[0]?.error as { message?: string })?.message), /nacked/);
      const progress = r.lines().find((l) => l.msg === 'relay progress' && Number(l.retried) > 0);
      assert.equal(progress?.level, 'info');
      assert.match(String(progress?.lastError), /nacked/);
      assert.equal(typeof progress?.backlog, 'number');

      await ch.deleteQueue(full);
      await waitUntil(
        () => ids.every((id) => consumer.received.some((m) => m.id === id)),
        `every message once the refusing queue is gone\n${r.text()}`,
      );
      await waitUntil(
        () => r.lines().some((l) => l.msg.includes('delivered again') && l.topic === topic),
        `a line saying the topic delivers again\n${r.text()}`,
      );
      // Once the work is done the progress lines stop: the last one shows an empty backlog.
      await waitUntil(
        () => r.lines().some((l) => l.msg === 'relay progress' && l.backlog === 0),
        `a progress line with an empty backlog\n${r.text()}`,
      );
      // Silent when idle: give a late batch's line time to come, then no line for 4 intervals.
      const progressLines = () => r.lines().filter((l) => l.msg === 'relay progress').length;
      await new Promise((resolve) => setTimeout(resolve, 1000));
      const idle = progressLines();
      await new Promise((resolve) => setTimeout(resolve, 2000));
      assert.equal(progressLines(), idle, `no progress line while idle\n${r.text()}`);
      r.child.kill('SIGTERM');
      assert.equal((await r.exit).code, 0, r.text());
      const exit = r.lines().find((l) => l.msg === 'relay exited');
      assert.equal(exit?.delivered, 10);
      assert.ok(Number(exit?.retried) >= retried(), 'the exit line counts every retry');
    });

    it('writes one line when the broker goes away and one when it is back, whatever the number of messages', async (t) => {
      const proxy = await TcpProxy.start(target(AMQP_URL, 5672));
      t.after(() => proxy.close());
      const exchange = `mr_clirelay_${randomBytes(3).toString('hex')}`;
      const consumer = await bindConsumer(exchange);
      t.after(() => consumer.close());
      const r = relay([
        '--database-url',
        DATABASE_URL,
        '--schema',
        db.schema,
        '--transport',
        through(AMQP_URL, proxy.port),
        '--exchange',
        exchange,
        '--progress-interval-ms',
        '500',
      ]);
      await started(r);
      proxy.refuse();
      proxy.cut();
      const ids = await Promise.all(Array.from({ length: 10 }, (_, i) => enqueue(`outage.${i}`)));
      await waitUntil(
        () => r.lines().some((l) => l.msg === 'relay progress' && l.transport === 'unavailable'),
        `a progress line during the outage\n${r.text()}`,
      );
      proxy.heal();
      await waitUntil(
        () => ids.every((id) => consumer.received.some((m) => m.id === id)),
        `every message after the outage\n${r.text()}`,
        40_000,
      );
      r.child.kill('SIGTERM');
      assert.equal((await r.exit).code, 0, r.text());
      await waitUntil(() => proxy.openConnections === 0, "the relay's connections to close");

      const warnings = r.lines().filter((l) => l.level === 'warn' || l.level === 'error');
      assert.deepEqual(
        warnings.map((l) => l.msg),
        ['transport unavailable; claims paused until a probe succeeds (no attempts are spent)'],
        r.text(),
      );
      assert.equal(r.lines().filter((l) => l.msg.startsWith('transport available again')).length, 1);
      assert.equal(r.lines().find((l) => l.msg === 'relay exited')?.retried, 0);
    });
  });
});
