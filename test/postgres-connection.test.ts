import assert from 'node:assert/strict';
import { createServer, type Server, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { Outbox } from '../src/core/index.js';
import { isStoreError, type StoreError } from '../src/core/errors/index.js';
import { describeDbError, PostgresStore } from '../src/stores/postgres/index.js';
import { TcpProxy } from '../src/testkit/tcp-proxy.js';
import { createTestDb, DATABASE_URL, inTransaction, type TestDb } from './helpers/postgres.js';

/** Asserts a StoreError with `code`, and returns it for more checks. */
function storeError(err: unknown, code: string): StoreError {
  assert.ok(isStoreError(err), `expected a StoreError, got ${String(err)}`);
  assert.equal(err.code, code, err.message);
  return err;
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  assert.fail('expected the call to fail');
}

/** The URL of the test database on another port (a proxy in front of it). */
function viaPort(port: number, password = 'pw'): string {
  const url = new URL(DATABASE_URL);
  url.hostname = '127.0.0.1';
  url.port = String(port);
  url.password = password;
  return url.toString();
}

/**
 * A server that reads a PostgreSQL startup packet, records its parameters, and answers with
 * the ErrorResponse `answer` picks: stands in for a pooler that refuses a parameter.
 */
async function fakeServer(answer: (params: Map<string, string>) => { code: string; message: string }) {
  const seen: Array<Map<string, string>> = [];
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    let buffered = Buffer.alloc(0);
    socket.on('data', (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      if (buffered.length < 4 || buffered.length < buffered.readInt32BE(0)) return;
      // length, protocol version, then key\0value\0 pairs and a final \0.
      const fields = buffered
        .subarray(8, buffered.readInt32BE(0) - 1)
        .toString('utf8')
        .split('\0');
      const params = new Map<string, string>();
      for (let i = 0; i + 1 < fields.length; i += 2) params.set(fields[i] as string, fields[i + 1] as string);
      seen.push(params);
      const { code, message } = answer(params);
      const body = Buffer.from(`SFATAL\0VFATAL\0C${code}\0M${message}\0\0`, 'utf8');
      const header = Buffer.alloc(5);
      header.write('E', 0);
      header.writeInt32BE(body.length + 4, 1);
      socket.end(Buffer.concat([header, body]));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return {
    port,
    seen,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

describe('PostgreSQL store deadlines', () => {
  let db: TestDb;
  let outbox: Outbox;
  before(async () => {
    db = await createTestDb('deadline');
    outbox = new Outbox({ store: db.store });
  });
  after(async () => db.drop());

  it('lets PostgreSQL cancel a claim that waits past statementTimeoutMs, and that claim leases nothing', async () => {
    const id = await inTransaction(db.pool, (client) =>
      outbox.enqueue(client, { topic: 'deadline.claim', payload: 1 }),
    );
    const store = await PostgresStore.connect({
      connectionString: DATABASE_URL,
      schema: db.schema,
      statementTimeoutMs: 300,
    });
    const locker = await db.pool.connect();
    try {
      await locker.query('BEGIN');
      // Every claim needs a lock on the outbox that ACCESS EXCLUSIVE holds back.
      await locker.query(`LOCK TABLE "${db.schema}".outbox IN ACCESS EXCLUSIVE MODE`);
      const err = storeError(
        await rejection(store.claim({ owner: 'deadline-test', limit: 10, leaseMs: 60_000 })),
        'statement_timeout',
      );
      assert.equal((err.cause as { code?: string }).code, '57014', 'the server cancelled it, not the driver');
      assert.match(
        err.message,
        /^PostgreSQL at 127\.0\.0\.1:5432 cancelled a statement that ran longer than 300 ms/,
      );
      assert.match(err.message, /pg_locks/);
      await locker.query('ROLLBACK');
      const row = (
        await db.pool.query(`SELECT lease_token, attempts FROM "${db.schema}".outbox WHERE id = $1`, [id])
      ).rows[0];
      assert.deepEqual(row, { lease_token: null, attempts: 0 }, 'the cancelled claim was rolled back');
      const batch = await store.claim({ owner: 'deadline-test', limit: 10, leaseMs: 60_000 });
      assert.deepEqual(
        batch.messages.map((m) => m.id),
        [id],
        'the same store claims it once the lock is gone',
      );
    } finally {
      await locker.query('ROLLBACK').catch(() => undefined);
      locker.release();
      await store.close();
    }
  });

  it('gives up on a statement the server never answers (a black-holed link), and the next call connects again', async () => {
    const proxy = await TcpProxy.start({ targetPort: Number(new URL(DATABASE_URL).port || 5432) });
    const store = await PostgresStore.connect({
      connectionString: viaPort(proxy.port),
      schema: db.schema,
      statementTimeoutMs: 200,
      connectTimeoutMs: 2000,
    });
    try {
      await store.nextDueInMs();
      proxy.blackhole();
      const err = storeError(await rejection(store.nextDueInMs()), 'read_timeout');
      // The server's cancel at 200 ms never arrives, so the driver's deadline (200 ms and the
      // grace that lets the server's cancel come first) ends the wait.
      assert.match(
        err.message,
        new RegExp(`^PostgreSQL at 127\\.0\\.0\\.1:${proxy.port} did not answer a statement within 5200 ms`),
      );
      assert.doesNotMatch(err.message, /pw/);
      proxy.heal();
      assert.equal(typeof (await store.stats()).backlog, 'number', 'a new connection serves the next call');
    } finally {
      proxy.heal();
      await store.close();
      await proxy.close();
    }
  });

  it('fails a connect to a black-holed address after connectTimeoutMs, naming host, port and deadline', async () => {
    const proxy = await TcpProxy.start({ targetPort: Number(new URL(DATABASE_URL).port || 5432) });
    proxy.blackhole();
    const store = await PostgresStore.connect({
      connectionString: viaPort(proxy.port, 's3cret-pw'),
      schema: db.schema,
      connectTimeoutMs: 300,
    });
    try {
      const err = storeError(await rejection(store.stats()), 'connect_timeout');
      assert.match(
        err.message,
        new RegExp(
          `^127\\.0\\.0\\.1:${proxy.port} did not answer as PostgreSQL within 300 ms \\(connectTimeoutMs\\): ` +
            `is 127\\.0\\.0\\.1:${proxy.port} a PostgreSQL server\\?`,
        ),
      );
      assert.doesNotMatch(err.message, /s3cret/);
      assert.equal(err.details?.['phase'], 'connect');
    } finally {
      await store.close();
      await proxy.close();
    }
  });

  it("refuses the store's own deadlines next to a pool of the caller's, saying what to set on that pool", () => {
    const pool = new pg.Pool({ connectionString: DATABASE_URL });
    try {
      assert.throws(
        () => new PostgresStore({ pool, connectTimeoutMs: 1000, statementTimeoutMs: 1000 }),
        (err: Error & { code?: string }) => {
          assert.equal(err.code, 'invalid_config');
          assert.match(
            err.message,
            /^PostgresStore options connectTimeoutMs, statementTimeoutMs apply to the pool the store makes from connectionString, and a pool was given: set connectionTimeoutMillis, statement_timeout and query_timeout on your pool/,
          );
          return true;
        },
      );
    } finally {
      void pool.end();
    }
  });

  it('names a pooler that refuses statement_timeout, and sends none with serverStatementTimeout off', async () => {
    const pooler = await fakeServer((params) =>
      params.has('statement_timeout')
        ? { code: '08P01', message: 'unsupported startup parameter: statement_timeout' }
        : { code: '28P01', message: 'password authentication failed for user "postgres"' },
    );
    const url = viaPort(pooler.port);
    const strict = await PostgresStore.connect({ connectionString: url, statementTimeoutMs: 4000 });
    const lenient = await PostgresStore.connect({ connectionString: url, serverStatementTimeout: false });
    try {
      const refused = storeError(await rejection(strict.stats()), 'startup_parameter_refused');
      assert.match(
        refused.message,
        new RegExp(`^127\\.0\\.0\\.1:${pooler.port} refused a connection parameter`),
      );
      assert.match(refused.message, /ignore_startup_parameters.*--no-server-statement-timeout/);
      assert.equal(pooler.seen[0]?.get('statement_timeout'), '4000');

      storeError(await rejection(lenient.stats()), 'auth_failed');
      assert.equal(pooler.seen[1]?.has('statement_timeout'), false);
    } finally {
      await strict.close();
      await lenient.close();
      await pooler.close();
    }
  });
});

describe('PostgreSQL driver errors explained', () => {
  let db: TestDb;
  before(async () => {
    db = await createTestDb('explain');
  });
  after(async () => db.drop());

  it('names the server by host and port, never its password, and keeps the driver error as the cause', () => {
    const driverError = new Error('Connection terminated unexpectedly');
    const target = 'postgres://app:***@db.internal:6379/orders';
    const atConnect = storeError(
      describeDbError(driverError, { schema: 'mailroom', target, phase: 'connect' }),
      'handshake_failed',
    );
    assert.equal(
      atConnect.message,
      'db.internal:6379 closed the connection without answering as PostgreSQL: is db.internal:6379 a ' +
        'PostgreSQL server? Redis listens on 6379 by default. A proxy or pooler in front of PostgreSQL ' +
        'does this too when it cannot reach the server',
    );
    assert.equal(atConnect.cause, driverError);
    assert.doesNotMatch(atConnect.message, /\*\*\*|app/, 'no user, no password placeholder: only host:port');

    // The same words mid-statement mean a restart or a cut, not a wrong server.
    const midStatement = storeError(
      describeDbError(driverError, { schema: 'mailroom', target, phase: 'statement' }),
      'connection_lost',
    );
    assert.match(
      midStatement.message,
      /^the connection to PostgreSQL at db\.internal:6379 was lost during a statement/,
    );
    assert.doesNotMatch(midStatement.message, /Redis/);

    // What is not a known case passes through untouched.
    const unique = Object.assign(new Error('duplicate key value violates unique constraint'), {
      code: '23505',
    });
    assert.equal(describeDbError(unique, { schema: 'mailroom', target, phase: 'statement' }), unique);
  });

  it('says the connection was lost when the server ends the session in the middle of a statement', async () => {
    const store = await PostgresStore.connect({ connectionString: DATABASE_URL, schema: db.schema });
    const locker = await db.pool.connect();
    try {
      await locker.query('BEGIN');
      await locker.query(`LOCK TABLE "${db.schema}".outbox IN ACCESS EXCLUSIVE MODE`);
      const waiting = rejection(store.nextDueInMs());
      // The store's backend is the one waiting for the lock the locker holds.
      let pids: number[] = [];
      while (pids.length === 0) {
        const res = await db.pool.query<{ pid: number }>(
          'SELECT pid FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))',
          [(await locker.query('SELECT pg_backend_pid() AS pid')).rows[0].pid],
        );
        pids = res.rows.map((r) => r.pid);
      }
      await db.pool.query('SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid', [pids]);
      const err = storeError(await waiting, 'connection_lost');
      assert.match(
        err.message,
        /^the connection to PostgreSQL at 127\.0\.0\.1:5432 was lost during a statement \(terminating connection due to administrator command\): the server restarted or ended the session/,
      );
      await locker.query('ROLLBACK');
      assert.equal(await store.nextDueInMs(), null, 'the next call opens a new connection');
    } finally {
      await locker.query('ROLLBACK').catch(() => undefined);
      locker.release();
      await store.close();
    }
  });

  it('tells a host name that does not resolve from a port where nothing listens', async () => {
    const noHost = await PostgresStore.connect({
      connectionString: 'postgres://u:pw@no-such-host.invalid:5432/db',
    });
    const noListener = await PostgresStore.connect({ connectionString: 'postgres://u:pw@127.0.0.1:1/db' });
    try {
      const dns = storeError(await rejection(noHost.stats()), 'host_not_found');
      assert.match(
        dns.message,
        /^the host name "no-such-host\.invalid" does not resolve \(ENOTFOUND|EAI_AGAIN\)/,
      );
      const refused = storeError(await rejection(noListener.stats()), 'unreachable');
      assert.match(
        refused.message,
        /^cannot reach PostgreSQL at 127\.0\.0\.1:1: nothing accepts connections there \(ECONNREFUSED\)/,
      );
    } finally {
      await noHost.close();
      await noListener.close();
    }
  });
});
