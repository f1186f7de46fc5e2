/**
 * A test file that leaves things running, for test/leak-guard.test.ts (run in a child process
 * through scripts/run-tests.mjs; the name keeps it out of the suite). Its tests pass; the guard
 * must fail the file.
 */
import { spawn } from 'node:child_process';
import { it } from 'node:test';
import pg from 'pg';
import { Relay } from '../../../src/core/index.js';
import { PostgresStore } from '../../../src/stores/postgres/index.js';
import { MemoryTransport } from '../../../src/transports/memory/index.js';
import { DATABASE_URL } from '../postgres.js';

it('starts a relay and never stops it', async () => {
  const pool = new pg.Pool({ connectionString: DATABASE_URL });
  pool.on('error', () => undefined);
  const store = new PostgresStore({ pool, schema: process.env.LEAK_FIXTURE_SCHEMA ?? 'missing' });
  const relay = new Relay({ store, transport: new MemoryTransport() });
  await relay.start();
});

it('starts an interval and never clears it', () => {
  setInterval(() => undefined, 60_000);
});

it('spawns a child process and never waits for it', () => {
  spawn(process.execPath, ['-e', 'setTimeout(() => {}, 600000)'], { stdio: 'ignore' });
});
