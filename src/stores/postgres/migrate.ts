import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { quoteIdent, quoteLiteral } from '../sql-identifier.js';
import { notifyChannel, validateSchemaName } from './schema-name.js';

export { notifyChannel };

/** One numbered migration file. */
export interface Migration {
  version: number;
  name: string;
  /** SQL with the schema name filled in. */
  sql: string;
}

/** Result of one migration in a run: applied now, or already there before. */
export interface MigrationResult {
  version: number;
  name: string;
  status: 'applied' | 'already-applied' | 'pending';
}

/** A connection that can run statements inside a transaction it controls (BEGIN/COMMIT). */
export interface MigrationConnection {
  query(sql: string, params?: unknown[]): Promise<{ rows: Array<Record<string, unknown>> }>;
}

const SQL_DIR = fileURLToPath(new URL('../../../sql/postgres/', import.meta.url));

/** Reads `sql/postgres/NNNNNN_name.sql` in order and fills in the schema. */
export function loadMigrations(schema: string): Migration[] {
  validateSchemaName(schema);
  const files = readdirSync(SQL_DIR)
    .filter((f) => /^\d{6}_[a-z0-9_]+\.sql$/.test(f))
    .sort();
  return files.map((file) => {
    const version = Number(file.slice(0, 6));
    const name = file.slice(7, -4);
    const sql = readFileSync(SQL_DIR + file, 'utf8')
      .replaceAll('{{schema}}', quoteIdent(schema))
      .replaceAll('{{schema_text}}', quoteLiteral(schema))
      .replaceAll('{{channel_text}}', quoteLiteral(notifyChannel(schema)));
    return { version, name, sql };
  });
}

/** The highest schema version this copy of Mailroom knows. */
export function latestVersion(): number {
  const all = loadMigrations('mailroom');
  return all.length ? (all[all.length - 1] as Migration).version : 0;
}

/**
 * Applies the migrations a schema lacks, all in one transaction under an advisory lock, so two
 * processes migrating at once apply each file exactly once and a failure leaves nothing
 * half-done. With `dryRun`, reports what would be applied and changes nothing.
 */
export async function migrate(
  conn: MigrationConnection,
  options: { schema: string; dryRun?: boolean },
): Promise<MigrationResult[]> {
  const schema = validateSchemaName(options.schema);
  const s = quoteIdent(schema);
  const migrations = loadMigrations(schema);
  await conn.query('BEGIN');
  try {
    // Serialise concurrent migrators on this schema before touching the catalog: CREATE ... IF
    // NOT EXISTS is not safe against a concurrent twin without it.
    await conn.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`mailroom:migrate:${schema}`]);
    const exists = await conn.query(
      `SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = $1 AND tablename = 'migrations'`,
      [schema],
    );
    let applied = new Set<number>();
    if (exists.rows.length > 0) {
      const res = await conn.query(`SELECT version FROM ${s}.migrations`);
      applied = new Set(res.rows.map((r) => Number(r.version)));
    }
    const results: MigrationResult[] = [];
    for (const m of migrations) {
      if (applied.has(m.version)) {
        results.push({ version: m.version, name: m.name, status: 'already-applied' });
        continue;
      }
      if (options.dryRun) {
        results.push({ version: m.version, name: m.name, status: 'pending' });
        continue;
      }
      if (exists.rows.length === 0 && results.every((r) => r.status !== 'applied')) {
        await conn.query(`CREATE SCHEMA IF NOT EXISTS ${s}`);
        await conn.query(
          `CREATE TABLE IF NOT EXISTS ${s}.migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`,
        );
      }
      await conn.query(m.sql);
      await conn.query(`INSERT INTO ${s}.migrations (version, name) VALUES ($1, $2)`, [m.version, m.name]);
      results.push({ version: m.version, name: m.name, status: 'applied' });
    }
    await conn.query(options.dryRun ? 'ROLLBACK' : 'COMMIT');
    return results;
  } catch (err) {
    await conn.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
}

/** The SQL `migrate` would run for the pending migrations, for `migrate --dry-run`. */
export function pendingSql(schema: string, results: MigrationResult[]): string {
  const pending = new Set(results.filter((r) => r.status === 'pending').map((r) => r.version));
  const s = quoteIdent(schema);
  const parts = [
    `CREATE SCHEMA IF NOT EXISTS ${s};`,
    `CREATE TABLE IF NOT EXISTS ${s}.migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now());`,
  ];
  for (const m of loadMigrations(schema)) {
    if (!pending.has(m.version)) continue;
    parts.push(`-- ${String(m.version).padStart(6, '0')}_${m.name}.sql`, m.sql.trim());
    parts.push(`INSERT INTO ${s}.migrations (version, name) VALUES (${m.version}, ${quoteLiteral(m.name)});`);
  }
  return parts.join('\n');
}
