/**
 * Writer impact on the database side, measured with pgbench (a C client), so that the load
 * generator's own CPU does not decide the result the way a single Node process does.
 *
 * Every transaction inserts one business row; the variants add, in the same transaction:
 * nothing; a second business row (the cheapest second row there is: the reference for "one more
 * INSERT"); the outbox row exactly as `outbox.enqueue` writes it (the library's own statement,
 * NOTIFY off); the same with NOTIFY on. pgbench prepares every statement (`-M prepared`), as the
 * library prepares its one-message enqueue.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encodeMessage } from '../../src/core/message.js';
import { postgresSql } from '../../src/stores/postgres/postgres-sql.js';
import { benchDb, DATABASE_URL, payload256, round, type Row } from '../lib.js';

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
function enqueueStatement(schema: string, channel: string, notify: boolean): string {
  const message = encodeMessage({ topic: 'bench.order', key: 'KEY', payload: payload256(1) });
  const { sql, params } = postgresSql(schema, channel).enqueue([message], notify);
  return sql.replace(/\$(\d+)/g, (_, n: string) => {
    const i = Number(n) - 1;
    if (i === 0) return `"${schema}".uuid_generate_v7()`;
    if (params[i] === 'KEY') return `('c' || :c)`;
    return literal(params[i]);
  });
}

export async function writerPgbench(seconds: number): Promise<Row[]> {
  const bin = pgbenchPath();
  if (!bin) {
    return [{ note: 'pgbench not found: install the postgresql (or postgresql-contrib) Debian package' }];
  }
  const db = await benchDb({ poolMax: 2 });
  const dir = mkdtempSync(join(tmpdir(), 'mailroom-pgbench-'));
  try {
    await db.pool.query(
      `CREATE TABLE "${db.schema}".orders (id bigserial PRIMARY KEY, customer text, data jsonb)`,
    );
    const business = `INSERT INTO "${db.schema}".orders (customer, data) VALUES ('c' || :c, ${literal(
      JSON.stringify(payload256(1)),
    )});`;
    const channel = db.store.channel;
    const variants: { name: string; body: string }[] = [
      { name: 'business row only', body: business },
      { name: '+ a second business row (reference)', body: `${business}\n${business}` },
      {
        name: '+ outbox row, NOTIFY off',
        body: `${business}\n${enqueueStatement(db.schema, channel, false)};`,
      },
      {
        name: '+ outbox row, NOTIFY on',
        body: `${business}\n${enqueueStatement(db.schema, channel, true)};`,
      },
    ];
    const rows: Row[] = [];
    for (const clients of [8, 32]) {
      let base = NaN;
      for (const v of variants) {
        const file = join(dir, 'script.sql');
        writeFileSync(file, `\\set c random(1, 1000)\nBEGIN;\n${v.body}\nCOMMIT;\n`);
        const out = execFileSync(
          bin,
          [
            '-n',
            '-M',
            'prepared',
            '-c',
            String(clients),
            '-j',
            '2',
            '-T',
            String(seconds),
            '-f',
            file,
            DATABASE_URL,
          ],
          { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] },
        );
        const tps = Number(/tps = ([\d.]+)/.exec(out)?.[1]);
        if (!Number.isFinite(tps)) throw new Error(`cannot read tps from pgbench output:\n${out}`);
        if (Number.isNaN(base)) base = tps;
        rows.push({
          clients,
          variant: v.name,
          'tx/s': round(tps, 0),
          'vs business only': `${round((tps / base) * 100, 0)}%`,
        });
      }
    }
    return rows;
  } finally {
    rmSync(dir, { recursive: true, force: true });
    await db.drop();
  }
}
