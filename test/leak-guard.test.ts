/**
 * The leak guard (test/helpers/leak-guard.ts) catches what it is for. The files that leak run in
 * child processes, through scripts/run-tests.mjs as every test file does, so this suite stays
 * green while they fail.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { LeakError } from './helpers/leak-guard.js';
import { createTestDb, DATABASE_URL, type TestDb } from './helpers/postgres.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

interface Run {
  code: number | null;
  output: string;
}

/** Runs one fixture file the way `npm test` runs a test file; fails if it does not end. */
function runFixture(name: string, schema: string, timeoutMs = 90_000): Promise<Run> {
  const env: NodeJS.ProcessEnv = { ...process.env, LEAK_FIXTURE_SCHEMA: schema };
  // Set by the runner for the process of this file: a nested run would report to it instead.
  delete env.NODE_TEST_CONTEXT;
  const child = spawn(process.execPath, ['scripts/run-tests.mjs', `test/helpers/leak-fixtures/${name}`], {
    cwd: ROOT,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr.on('data', (d: Buffer) => (output += d.toString()));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${name} did not end within ${timeoutMs} ms: a leak hung the run\n${output}`));
    }, timeoutMs);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

describe('leak guard', () => {
  let db: TestDb;
  before(async () => {
    db = await createTestDb('leak');
  });
  after(async () => {
    await db.drop();
  });

  it('fails a file that leaves a relay, a timer and a child process running, naming each and where it began', async () => {
    const run = await runFixture('left-running.fixture.ts', db.schema);
    assert.equal(run.code, 1, run.output);
    const output = run.output;
    assert.match(output, /✔ starts a relay and never stops it/, 'the tests themselves pass');
    assert.match(
      output,
      /LeakError\]?: test\/helpers\/leak-fixtures\/left-running\.fixture\.ts left \d+ thing\(s\) running/,
    );
    assert.match(output, /TCP connection 127\.0\.0\.1:\d+ → 127\.0\.0\.1:5432 \(PostgreSQL\)/);
    assert.match(output, /Relay\.#?start \(src\/core\/relay\.ts:\d+:\d+\)/, 'the relay named by its frames');
    assert.match(
      output,
      /timer: setInterval every 60000 ms, never cleared\n\s+created at .*left-running\.fixture\.ts:23:/,
    );
    assert.match(output, /child process \d+ \(\S+ -e setTimeout/);
    assert.match(
      output,
      /created at .*left-running\.fixture\.ts:27:/,
      'the child named by the line that spawned it',
    );
  });

  it('passes a file that closes everything, some of it in its last top-level after() hook', async () => {
    const run = await runFixture('all-closed.fixture.ts', db.schema);
    assert.doesNotMatch(run.output, /LeakError/);
    assert.equal(run.code, 0, run.output);
    assert.match(run.output, /ℹ pass 3/);
  });

  it('makes drop() fail when a pool client is still checked out, naming what it was doing, and drop anyway', async () => {
    const other = await createTestDb('leakdrop');
    const client = await other.pool.connect();
    await client.query('BEGIN');
    await client.query(`SELECT 'forgotten' AS why`);
    await assert.rejects(other.drop(), (err: unknown) => {
      assert.ok(err instanceof LeakError);
      assert.match(err.message, /drop\(\) found 1 pool client\(s\) still checked out/);
      assert.match(
        err.message,
        /backend \d+: idle in transaction, last statement: SELECT 'forgotten' AS why/,
      );
      return true;
    });
    assert.equal(other.pool.ended, true, 'the pool was ended');
    const check = new pg.Client({ connectionString: DATABASE_URL });
    await check.connect();
    try {
      const left = await check.query('SELECT 1 FROM pg_namespace WHERE nspname = $1', [other.schema]);
      assert.equal(left.rowCount, 0, 'the schema was dropped');
    } finally {
      await check.end();
    }
  });
});
