import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { TccStateStore } from '../src/tcc/index.js';
import { runCli } from './helpers/cli.js';
import { DATABASE_URL, createTestDb, type TestDb } from './helpers/postgres.js';

// Runs the built command (npm run build first) against the real PostgreSQL, with a real HTTP
// participant that records what it is asked.
describe('mailroom tcc', () => {
  let db: TestDb;
  let server: Server;
  let url = '';
  const calls: string[] = [];
  const cli = (args: string[]) => runCli([...args, '--schema', db.schema], { DATABASE_URL });

  before(async () => {
    db = await createTestDb('clitcc');
    server = createServer((req, res) => {
      let body = '';
      req.on('data', (d: Buffer) => (body += d.toString()));
      req.on('end', () => {
        const parsed = JSON.parse(body) as { gid: string; branch: string; phase: string };
        calls.push(`${req.url} ${parsed.gid} ${parsed.branch} ${parsed.phase}`);
        res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/tcc/inventory`;
  });
  after(async () => {
    await new Promise((r) => server.close(r));
    await db.drop();
  });

  /** A transaction as a coordinator that died while trying leaves it. */
  async function deadTransaction(gid: string, participant: 'http' | 'local'): Promise<void> {
    const state = new TccStateStore(db.store as never);
    assert.equal(
      await state.begin({ gid, kind: 'tcc', timeoutMs: 100, owner: 'dead', leaseMs: 50, meta: null }),
      true,
    );
    const descriptor =
      participant === 'http' ? { kind: 'http' as const, url, timeoutMs: 2000 } : { kind: 'local' as const };
    await state.addBranch({
      gid,
      expect: 'trying',
      branch: 'inventory',
      seq: 1,
      participant: descriptor,
      input: { sku: 'A' },
      state: 'trying',
    });
  }

  it('lists and shows unfinished transactions, and recover --once cancels a dead one over HTTP (not one with an in-process participant)', async () => {
    await deadTransaction('order-1', 'http');
    await deadTransaction('order-2', 'local');
    const listed = await cli(['tcc', 'list', '--state', 'unfinished', '--json']);
    assert.equal(listed.code, 0, listed.stderr);
    assert.deepEqual(
      (JSON.parse(listed.stdout) as Array<{ gid: string; state: string }>)
        .map((r) => `${r.gid}:${r.state}`)
        .sort(),
      ['order-1:trying', 'order-2:trying'],
    );
    const shown = await cli(['tcc', 'show', 'order-1']);
    assert.equal(shown.code, 0, shown.stderr);
    assert.match(shown.stdout, /tcc order-1: trying/);
    assert.match(shown.stdout, /inventory\s+http:\/\/127\.0\.0\.1:\d+\/tcc\/inventory\s+trying/);
    await new Promise((r) => setTimeout(r, 150));
    const recovered = await cli(['tcc', 'recover', '--once', '--json']);
    assert.equal(recovered.code, 0, recovered.stderr);
    assert.deepEqual(JSON.parse(recovered.stdout), { took: { tcc: 1, saga: 0 }, unfinished: 1 });
    assert.deepEqual(calls, ['/tcc/inventory/cancel order-1 inventory cancel']);
    const after = await cli(['tcc', 'show', 'order-1', '--json']);
    const record = JSON.parse(after.stdout) as {
      state: string;
      reason: string;
      branches: Array<{ state: string }>;
    };
    assert.equal(record.state, 'cancelled');
    assert.match(record.reason, /timeout/);
    assert.equal(record.branches[0]?.state, 'cancelled');
    const table = await cli(['tcc', 'list']);
    assert.match(table.stdout, /order-2\s+tcc\s+trying/);
  });

  it('refuses bad input with one clear line', async () => {
    const unknown = await cli(['tcc', 'frobnicate']);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /unknown tcc subcommand "frobnicate"; use one of list, show, recover/);
    const badState = await cli(['tcc', 'list', '--state', 'tryin']);
    assert.notEqual(badState.code, 0);
    assert.match(badState.stderr, /--state "tryin" is not a state/);
    const missing = await cli(['tcc', 'show', 'nope']);
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /no global transaction "nope"/);
    const wrongFlag = await cli(['tcc', 'show', 'x', '--once']);
    assert.match(wrongFlag.stderr, /tcc show takes no --once/);
  });
});
