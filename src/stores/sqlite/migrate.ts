import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { SqliteDatabase } from './sqlite-driver.js';
import { runSync, runTransaction, type RunTransactionOptions } from './sqlite-executor.js';
import { sqliteSql } from './sqlite-sql.js';

/** One numbered migration file. */
export interface SqliteMigration {
  version: number;
  name: string;
  sql: string;
}

/** Result of one migration in a run: applied now, already there before, or (dry run) pending. */
export interface SqliteMigrationResult {
  version: number;
  name: string;
  status: 'applied' | 'already-applied' | 'pending';
}

const SQL_DIR = fileURLToPath(new URL('../../../sql/sqlite/', import.meta.url));

/** Reads `sql/sqlite/NNNNNN_name.sql` in order. */
export function loadSqliteMigrations(): SqliteMigration[] {
  return readdirSync(SQL_DIR)
    .filter((f) => /^\d{6}_[a-z0-9_]+\.sql$/.test(f))
    .sort()
    .map((file) => ({
      version: Number(file.slice(0, 6)),
      name: file.slice(7, -4),
      sql: readFileSync(SQL_DIR + file, 'utf8'),
    }));
}

/** The highest schema version this copy of Mailroom knows. */
export function latestSqliteVersion(): number {
  const all = loadSqliteMigrations();
  return all.length ? (all[all.length - 1] as SqliteMigration).version : 0;
}

/**
 * Applies the migrations the database lacks, all in one `BEGIN IMMEDIATE` transaction: SQLite
 * takes its write lock at BEGIN, so two processes migrating at once run one after the other, the
 * second finds every file recorded and applies nothing; DDL in SQLite is transactional, so a
 * failure leaves nothing half-done. Also switches the file to WAL (readers never wait for the
 * writer; the mode is kept in the file). With `dryRun`, reports what would be applied.
 */
export async function migrateSqlite(
  db: SqliteDatabase,
  options: { dryRun?: boolean } & RunTransactionOptions,
): Promise<SqliteMigrationResult[]> {
  const sql = sqliteSql;
  const migrations = loadSqliteMigrations();
  if (!options.dryRun && !db.memory && !db.inTransaction) {
    // Outside any transaction (SQLite refuses to change the journal mode inside one). The mode is
    // kept in the file, so this switches it once; later runs only read it.
    const mode = (
      runSync<{ journal_mode: string }>(db, 'PRAGMA journal_mode')[0]?.journal_mode ?? ''
    ).toLowerCase();
    if (mode !== 'wal') {
      try {
        db.exec('PRAGMA journal_mode = WAL');
      } catch (err) {
        throw options.wrap(err);
      }
    }
  }
  return runTransaction(
    db,
    options.dryRun ? 'DEFERRED' : 'IMMEDIATE',
    () => {
      const exists = runSync(db, sql.migrationsTableExists).length > 0;
      if (!exists && !options.dryRun) db.exec(sql.createMigrationsTable);
      const applied = new Set(
        exists ? runSync<{ version: number }>(db, sql.appliedMigrations).map((r) => Number(r.version)) : [],
      );
      const results: SqliteMigrationResult[] = [];
      for (const m of migrations) {
        if (applied.has(m.version)) {
          results.push({ version: m.version, name: m.name, status: 'already-applied' });
          continue;
        }
        if (options.dryRun) {
          results.push({ version: m.version, name: m.name, status: 'pending' });
          continue;
        }
        db.exec(m.sql);
        runSync(db, sql.recordMigration, [m.version, m.name]);
        results.push({ version: m.version, name: m.name, status: 'applied' });
      }
      return results;
    },
    options,
  );
}

/**
 * The SQL of the migrations a dry run reported `pending`, in order, each under a comment naming
 * its file: what `mailroom migrate --dry-run` prints, for review or for applying by hand (then
 * record each version in `mailroom_migrations`, as the statements at the end do).
 */
export function pendingSqliteSql(results: readonly SqliteMigrationResult[]): string {
  const pending = new Set(results.filter((r) => r.status === 'pending').map((r) => r.version));
  const migrations = loadSqliteMigrations().filter((m) => pending.has(m.version));
  if (migrations.length === 0) return '';
  const parts = [
    'BEGIN IMMEDIATE;',
    `${sqliteSql.createMigrationsTable.replace('CREATE TABLE', 'CREATE TABLE IF NOT EXISTS')};`,
  ];
  for (const m of migrations) {
    const file = `${String(m.version).padStart(6, '0')}_${m.name}.sql`;
    parts.push(`-- ${file}`, m.sql.trim());
    parts.push(`INSERT INTO mailroom_migrations (version, name) VALUES (${m.version}, '${m.name}');`);
  }
  parts.push('COMMIT;');
  return `${parts.join('\n')}\n`;
}
