/**
 * Writer impact on the database side, measured with pgbench (a C client), so that the load
 * generator's own CPU does not decide the result the way a single Node process does.
 *
 * Every transaction inserts one business row; the variants add, in the same transaction:
 * nothing; `SELECT 1` (the floor: one more statement round trip and nothing else); a second
 * business row (the cheapest second row there is: the reference for "one more INSERT"); the
 * outbox row exactly as `outbox.enqueue` writes it (the library's own statement) with NOTIFY
 * off, on, and through the wake gate (NOTIFY only while a relay is idle: no relay idle, and
 * the gate held all the time), each without a relay, and for off, on and the gate with a
 * `mailroom relay` process delivering to RabbitMQ meanwhile (polling when NOTIFY is off,
 * notified when on, taking the gate when idle with the gate: the default). pgbench prepares every
 * statement (`-M prepared`), as the library prepares its one-message enqueue.
 *
 * The variants run in turn, round after round, each from an empty outbox; a row gives the
 * median of the rounds and their range, and the ratio of medians to the business row alone.
 */
import { execFile, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { encodeMessage } from '../../src/core/message.js';
import { postgresSql } from '../../src/stores/postgres/postgres-sql.js';
import {
  benchDb,
  brokerSink,
  DATABASE_URL,
  payload256,
  round,
  sleep,
  spawnRelay,
  stopProcess,
  type Row,
} from '../lib.js';

const run = promisify(execFile);

function pgbenchPath(): string | undefined {
  for (const candidate of ['pgbench', '/usr/lib/postgresql/15/bin/pgbench']) {
    try {
      execFileSync(candidate, ['--version'], { stdio: 'ignore' });
      return candidate;
    } catch {
      // try the next one
    }
  }
  return undefined;
}

/** A SQL literal for a parameter value of the library's enqueue statement. */
function literal(value: unknown): string {
  if (value === null || value === undefined) return 'NULL';
  if (typeof value === 'number') return String(value);
  if (Buffer.isBuffer(value)) return `'\\x${value.toString('hex')}'`;
  return `'${String(value).replace(/'/g, "''")}'`;
}

/**
 * The library's one-message enqueue statement with its parameters inlined for pgbench: the id
 * comes from the schema's uuid_generate_v7() (the library generates a UUIDv7 in Node), the key
 * from pgbench's `:c`.
 */
function enqueueStatement(schema: string, channel: string, notify: boolean | 'idle'): string {
  const message = encodeMessage({ topic: 'bench.order', key: 'KEY', payload: payload256(1) });
  const { sql, params } = postgresSql(schema, channel).enqueue([message], notify);
  return sql.replace(/\$(\d+)/g, (_, n: string) => {
    const i = Number(n) - 1;
    if (i === 0) return `"${schema}".uuid_generate_v7()`;
    if (params[i] === 'KEY') return `('c' || :c)`;
    return literal(params[i]);
  });
}

/**
 * A `mailroom relay` process on the bench schema; resolves once it logs that it started (the
 * logger writes to stderr), so pgbench never runs before the relay does.
 */
async function startRelay(
  schema: string,
  exchange: string,
  wakeup: 'notify' | 'poll',
): Promise<ChildProcess> {
  const child = spawnRelay({
    schema,
    exchange,
    wakeup,
    logLevel: 'info',
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  await new Promise<void>((resolve, reject) => {
    let seen = '';
    child.stderr?.on('data', (chunk: Buffer) => {
      seen += chunk.toString();
      if (seen.includes('relay started')) resolve();
    });
    child.once('exit', (code) =>
      reject(new Error(`mailroom relay exited with ${code} before it started:\n${seen}`)),
    );
  });
  return child;
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

export async function writerPgbench(seconds: number, rounds = 3): Promise<Row[]> {
  const bin = pgbenchPath();
  if (!bin) {
    return [{ note: 'pgbench not found: install the postgresql (or postgresql-contrib) Debian package' }];
  }
  const db = await benchDb({ poolMax: 2 });
  const sink = await brokerSink();
  const dir = mkdtempSync(join(tmpdir(), 'mailroom-pgbench-'));
  try {
    await db.pool.query(
      `CREATE TABLE "${db.schema}".orders (id bigserial PRIMARY KEY, customer text, data jsonb)`,
    );
    const business = `INSERT INTO "${db.schema}".orders (customer, data) VALUES ('c' || :c, ${literal(
      JSON.stringify(payload256(1)),
    )});`;
    const channel = db.store.channel;
    const gateSql = postgresSql(db.schema, channel).wakeGate;
    const outbox = (notify: boolean | 'idle') =>
      `${business}\n${enqueueStatement(db.schema, channel, notify)};`;
    const variants: { name: string; body: string; relay?: 'notify' | 'poll'; gate?: boolean }[] = [
      { name: 'business row only', body: business },
      { name: '+ SELECT 1 (reference: one more round trip)', body: `${business}\nSELECT 1;` },
      { name: '+ a second business row (reference)', body: `${business}\n${business}` },
      { name: '+ outbox row, NOTIFY off, no relay', body: outbox(false) },
      { name: '+ outbox row, NOTIFY on, no relay', body: outbox(true) },
      // The wake gate (postgresSql().wakeGate): NOTIFY only while a relay holds the gate. With
      // no relay idle every writer skips it; with the gate held (what an idle relay does) every
      // writer notifies: the two ends of what it costs.
      { name: '+ outbox row, wake gate, no relay idle', body: outbox('idle') },
      { name: '+ outbox row, wake gate, held by an idle relay', body: outbox('idle'), gate: true },
      { name: '+ outbox row, NOTIFY off, relay polling', body: outbox(false), relay: 'poll' },
      { name: '+ outbox row, NOTIFY on, relay notified', body: outbox(true), relay: 'notify' },
      // The default end to end: writers through the gate, a relay that takes it when idle.
      { name: '+ outbox row, wake gate (default), relay', body: outbox('idle'), relay: 'notify' },
    ];
    variants.forEach((v, i) =>
      writeFileSync(join(dir, `v${i}.sql`), `\\set c random(1, 1000)\nBEGIN;\n${v.body}\nCOMMIT;\n`),
    );
    const rows: Row[] = [];
    for (const clients of [8, 32]) {
      const tps: number[][] = variants.map(() => []);
      for (let r = 0; r < rounds; r++) {
        for (const [i, v] of variants.entries()) {
          await db.pool.query(`TRUNCATE "${db.schema}".outbox, "${db.schema}".orders`);
          const relay = v.relay ? await startRelay(db.schema, sink.exchange, v.relay) : undefined;
          const gate = v.gate ? await db.pool.connect() : undefined;
          try {
            if (gate) await gate.query(gateSql.arm);
            const args = ['-n', '-M', 'prepared', '-c', String(clients), '-j', '2'];
            args.push('-T', String(seconds), '-f', join(dir, `v${i}.sql`), DATABASE_URL);
            const { stdout } = await run(bin, args, { encoding: 'utf8' });
            const value = Number(/tps = ([\d.]+)/.exec(stdout)?.[1]);
            if (!Number.isFinite(value)) throw new Error(`cannot read tps from pgbench output:\n${stdout}`);
            (tps[i] as number[]).push(value);
          } finally {
            if (relay) await stopProcess(relay);
            if (gate) {
              await gate.query(gateSql.disarm);
              gate.release();
            }
          }
          await sleep(300);
        }
      }
      const base = median(tps[0] as number[]);
      variants.forEach((v, i) => {
        const xs = tps[i] as number[];
        rows.push({
          clients,
          variant: v.name,
          'tx/s (median)': round(median(xs), 0),
          range: `${round(Math.min(...xs), 0)}–${round(Math.max(...xs), 0)}`,
          'vs business only': `${round((median(xs) / base) * 100, 0)}%`,
        });
      });
    }
    return rows;
  } finally {
    rmSync(dir, { recursive: true, force: true });
    await sink.close();
    await db.drop();
  }
}
