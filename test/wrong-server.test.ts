/**
 * The command as an operator meets it with a URL that points at the wrong server: every
 * command fails within its deadlines, naming the host and port it tried and what it expected
 * there, instead of hanging with no output. Runs the built CLI: `npm run build` first.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { TcpProxy } from '../src/testkit/tcp-proxy.js';
import { AMQP_URL } from './helpers/amqp.js';
import { runCli, type CliResult } from './helpers/cli.js';
import { createTestDb, DATABASE_URL, type TestDb } from './helpers/postgres.js';

/** Generous: a command waits at most its connect deadline (10 s by default) and then some. */
const CLI_TIMEOUT_MS = 60_000;
const PASSWORD = 'wrong-server-pw';

/** A PostgreSQL URL with the test database's user and database, at another port. */
function postgresUrlAt(port: number): string {
  const url = new URL(DATABASE_URL);
  url.hostname = '127.0.0.1';
  url.port = String(port);
  url.password = PASSWORD;
  return url.toString();
}

function amqpUrlAt(port: number): string {
  const url = new URL(AMQP_URL);
  url.hostname = '127.0.0.1';
  url.port = String(port);
  return url.toString();
}

/** `127.0.0.1:6379` as a regular expression. */
function at(port: number): string {
  return `127\\.0\\.0\\.1:${port}`;
}

function assertFailed(r: CliResult, what: string, expected: RegExp): void {
  assert.equal(r.signal, null, `${what} was killed (${String(r.signal)})`);
  assert.equal(r.code, 1, `${what} exits 1; stderr: ${r.stderr}`);
  assert.match(r.stderr, expected, what);
  assert.doesNotMatch(r.stderr + r.stdout, new RegExp(PASSWORD), `${what} prints no password`);
}

describe('a database URL that points at the wrong server', { concurrency: true }, () => {
  let proxy: TcpProxy;
  before(async () => {
    proxy = await TcpProxy.start({ targetPort: 5432 });
    proxy.blackhole();
  });
  after(async () => proxy.close());

  /** Runs status, migrate and relay (with a working broker) against the URL, side by side. */
  async function everyCommand(url: string): Promise<Array<[string, CliResult]>> {
    const schema = `wrong_${randomBytes(4).toString('hex')}`;
    const commands: Array<[string, string[]]> = [
      ['status', ['status', '--database-url', url, '--schema', schema]],
      ['migrate', ['migrate', '--database-url', url, '--schema', schema]],
      ['relay', ['relay', '--database-url', url, '--schema', schema, '--transport', AMQP_URL]],
    ];
    return Promise.all(
      commands.map(
        async ([name, args]) => [name, await runCli(args, {}, CLI_TIMEOUT_MS)] as [string, CliResult],
      ),
    );
  }

  it("fails status, migrate and relay on Redis's port, which never answers, naming it after the connect deadline", async () => {
    for (const [name, r] of await everyCommand(postgresUrlAt(6379))) {
      assertFailed(
        r,
        name,
        new RegExp(
          `${at(6379)} did not answer as PostgreSQL within 10000 ms \\(connectTimeoutMs\\): ` +
            `is ${at(6379)} a PostgreSQL server\\? Redis listens on 6379 by default\\.`,
        ),
      );
    }
  });

  it("fails status, migrate and relay on RabbitMQ's port, which hangs up, naming it", async () => {
    for (const [name, r] of await everyCommand(postgresUrlAt(5672))) {
      assertFailed(
        r,
        name,
        new RegExp(
          `${at(5672)} closed the connection without answering as PostgreSQL: ` +
            `is ${at(5672)} a PostgreSQL server\\? RabbitMQ listens for AMQP on 5672 by default\\.`,
        ),
      );
    }
  });

  it("fails status, migrate and relay on MariaDB's port, which answers in another protocol, naming it", async () => {
    for (const [name, r] of await everyCommand(postgresUrlAt(3306))) {
      // Which of MariaDB's bytes the driver trips over first depends on the server's version.
      assertFailed(
        r,
        name,
        new RegExp(
          `${at(3306)} (did not answer as PostgreSQL \\(the driver read: [^)]+\\)|closed the connection without answering as PostgreSQL): ` +
            `is ${at(3306)} a PostgreSQL server\\? MySQL and MariaDB listen on 3306 by default\\.`,
        ),
      );
    }
  });

  it('fails status, migrate and relay on a black-holed address after the connect deadline, naming it', async () => {
    for (const [name, r] of await everyCommand(postgresUrlAt(proxy.port))) {
      assertFailed(
        r,
        name,
        new RegExp(
          `${at(proxy.port)} did not answer as PostgreSQL within 10000 ms \\(connectTimeoutMs\\): ` +
            `is ${at(proxy.port)} a PostgreSQL server\\? If it is, check that nothing between \\(firewall, proxy\\) swallows the traffic`,
        ),
      );
    }
  });

  it('takes the connect deadline from --connect-timeout-ms and MAILROOM_CONNECT_TIMEOUT_MS', async () => {
    const url = postgresUrlAt(proxy.port);
    const [flag, env] = await Promise.all([
      runCli(['migrate', '--database-url', url, '--connect-timeout-ms', '1500'], {}, CLI_TIMEOUT_MS),
      runCli(['status', '--database-url', url], { MAILROOM_CONNECT_TIMEOUT_MS: '1200' }, CLI_TIMEOUT_MS),
    ]);
    assertFailed(
      flag,
      'migrate',
      new RegExp(`${at(proxy.port)} did not answer as PostgreSQL within 1500 ms`),
    );
    assertFailed(env, 'status', new RegExp(`${at(proxy.port)} did not answer as PostgreSQL within 1200 ms`));
  });
});

describe('a statement that waits too long', () => {
  it('fails migrate at --statement-timeout-ms while another migrator holds the lock, saying what to look for', async () => {
    const db = await createTestDb('stmt');
    const schema = `${db.schema}_new`;
    const holder = await db.pool.connect();
    try {
      await holder.query('BEGIN');
      // The lock every migrator of this schema takes first (src/stores/postgres/migrate.ts).
      await holder.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`mailroom:migrate:${schema}`]);
      const r = await runCli(
        ['migrate', '--database-url', DATABASE_URL, '--schema', schema, '--statement-timeout-ms', '500'],
        {},
        CLI_TIMEOUT_MS,
      );
      assertFailed(
        r,
        'migrate',
        /PostgreSQL at 127\.0\.0\.1:5432 cancelled a statement that ran longer than 500 ms \(statementTimeoutMs\), and rolled back its transaction: .*pg_locks/,
      );
      const created = await db.pool.query('SELECT 1 FROM pg_namespace WHERE nspname = $1', [schema]);
      assert.equal(created.rowCount, 0, 'nothing of the cancelled migration stays');
    } finally {
      await holder.query('ROLLBACK').catch(() => undefined);
      holder.release();
      await db.pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await db.drop();
    }
  });
});

describe('a broker URL that points at the wrong server', { concurrency: true }, () => {
  let db: TestDb;
  let proxy: TcpProxy;
  before(async () => {
    db = await createTestDb('wrongamqp');
    proxy = await TcpProxy.start({ targetPort: Number(new URL(AMQP_URL).port || 5672) });
    proxy.blackhole();
  });
  after(async () => {
    await proxy.close();
    await db.drop();
  });

  function relayTo(transport: string): Promise<CliResult> {
    return runCli(
      ['relay', '--database-url', DATABASE_URL, '--schema', db.schema, '--transport', transport],
      {},
      CLI_TIMEOUT_MS,
    );
  }

  it("fails relay on Redis's port, which never answers, naming it after the connect deadline", async () => {
    assertFailed(
      await relayTo(amqpUrlAt(6379)),
      'relay',
      new RegExp(
        `cannot connect to RabbitMQ at amqp://[^@]*@${at(6379)}: ${at(6379)} did not answer as AMQP within ` +
          `10000 ms \\(connectTimeoutMs\\): is ${at(6379)} an AMQP broker \\(RabbitMQ\\)\\? Redis listens on 6379 by default\\.`,
      ),
    );
  });

  it("fails relay on PostgreSQL's port, which hangs up on AMQP, naming it", async () => {
    assertFailed(
      await relayTo(amqpUrlAt(5432)),
      'relay',
      new RegExp(
        `cannot connect to RabbitMQ at amqp://[^@]*@${at(5432)}: ${at(5432)} closed the connection without answering ` +
          `as AMQP: is ${at(5432)} an AMQP broker \\(RabbitMQ\\)\\? PostgreSQL listens on 5432 by default\\.`,
      ),
    );
  });

  it('fails relay on a black-holed broker address after the connect deadline, naming it', async () => {
    // Under RabbitMQ's own handshake timeout (10 s), which closes the proxy's upstream connection
    // and would reach the relay as a hang-up racing its deadline.
    const r = await runCli(
      [
        'relay',
        '--database-url',
        DATABASE_URL,
        '--schema',
        db.schema,
        '--transport',
        amqpUrlAt(proxy.port),
        '--connect-timeout-ms',
        '4000',
      ],
      {},
      CLI_TIMEOUT_MS,
    );
    assertFailed(
      r,
      'relay',
      new RegExp(`${at(proxy.port)} did not answer as AMQP within 4000 ms \\(connectTimeoutMs\\)`),
    );
  });
});
