import { createHash } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { StoreError } from '../../core/errors/store-error.js';
import { mysqlNames, OBJECT_NAMES, type ObjectName } from './mysql-sql.js';

/** One numbered migration file. */
export interface MySqlMigration {
  version: number;
  name: string;
  /** Its statements, names filled in, in order (MySQL runs one statement per call). */
  statements: string[];
}

/** Result of one migration in a run: applied now, already there before, or (dry run) pending. */
export interface MySqlMigrationResult {
  version: number;
  name: string;
  status: 'applied' | 'already-applied' | 'pending';
}

/** A connection of its own for the run: GET_LOCK belongs to the session. */
export interface MySqlMigrationConnection {
  query(sql: string, params?: unknown[]): Promise<[unknown, unknown]>;
}

const SQL_DIR = fileURLToPath(new URL('../../../sql/mysql/', import.meta.url));

/**
 * Splits a migration file into statements as the mysql client does: at a `;` that ends a line,
 * or, between `DELIMITER $$` and `DELIMITER ;`, at `$$` (procedure bodies hold `;`). Comment
 * lines outside statements are dropped.
 */
export function splitStatements(text: string): string[] {
  const statements: string[] = [];
  let delimiter = ';';
  let current: string[] = [];
  for (const line of text.split('\n')) {
    const directive = /^\s*DELIMITER\s+(\S+)\s*$/i.exec(line);
    if (directive) {
      delimiter = directive[1] as string;
      continue;
    }
    if (current.length === 0 && (/^\s*--/.test(line) || line.trim() === '')) continue;
    // A comment line inside a statement never ends it, whatever it ends with.
    if (/^\s*--/.test(line)) {
      current.push(line);
      continue;
    }
    const trimmed = line.trimEnd();
    if (trimmed.endsWith(delimiter)) {
      current.push(trimmed.slice(0, -delimiter.length));
      statements.push(current.join('\n').trim());
      current = [];
    } else {
      current.push(line);
    }
  }
  if (current.join('').trim() !== '') statements.push(current.join('\n').trim());
  return statements.filter((s) => s !== '');
}

/** Reads `sql/mysql/NNNNNN_name.sql` in order and fills in the names. */
export function loadMySqlMigrations(database: string | undefined, prefix: string): MySqlMigration[] {
  const names = mysqlNames(database, prefix);
  const files = readdirSync(SQL_DIR)
    .filter((f) => /^\d{6}_[a-z0-9_]+\.sql$/.test(f))
    .sort();
  return files.map((file) => {
    const text = readFileSync(SQL_DIR + file, 'utf8').replace(/\{\{(\w+)\}\}/g, (whole, name: string) => {
      if (!(OBJECT_NAMES as readonly string[]).includes(name)) {
        throw new Error(`sql/mysql/${file}: unknown name ${whole}`);
      }
      return names[name as ObjectName];
    });
    return { version: Number(file.slice(0, 6)), name: file.slice(7, -4), statements: splitStatements(text) };
  });
}

/** The highest schema version this copy of Mailroom knows for MySQL. */
export function latestMySqlVersion(): number {
  const all = loadMySqlMigrations(undefined, 'mailroom_');
  return all.length ? (all[all.length - 1] as MySqlMigration).version : 0;
}

/** How long a migrator waits for another one on the same schema. */
const LOCK_WAIT_SECONDS = 60;

function rowsOf(result: [unknown, unknown]): Array<Record<string, unknown>> {
  return Array.isArray(result[0]) ? (result[0] as Array<Record<string, unknown>>) : [];
}

/**
 * Applies the migrations a schema lacks, in order, each recorded in `<prefix>migrations`.
 * MySQL commits DDL on its own, so there is no enclosing transaction: two processes are
 * serialised by `GET_LOCK` on a name derived from the database and prefix (held by this
 * session until the end of the run), and every statement of every file is safe to run again,
 * so a run that failed half-way is completed by the next. With `dryRun`, reports what would be
 * applied and changes nothing.
 */
export async function migrateMySql(
  conn: MySqlMigrationConnection,
  options: { database?: string; tablePrefix: string; dryRun?: boolean },
): Promise<MySqlMigrationResult[]> {
  const names = mysqlNames(options.database, options.tablePrefix);
  const migrations = loadMySqlMigrations(options.database, options.tablePrefix);
  const db = rowsOf(
    await conn.query(options.database === undefined ? 'SELECT DATABASE() AS db' : 'SELECT ? AS db', [
      options.database,
    ]),
  )[0]?.db;
  if (typeof db !== 'string') {
    throw new StoreError(
      'database_missing',
      'the connection has no current database, and no database option was given: put the database in the URL ' +
        '(mysql://user:password@host:3306/app) or pass database',
    );
  }
  // GET_LOCK names are at most 64 characters: a digest of database and prefix.
  const lockName = `mailroom_migrate_${createHash('sha1').update(`${db}\0${options.tablePrefix}`).digest('hex')}`;
  const got = rowsOf(await conn.query('SELECT GET_LOCK(?, ?) AS got', [lockName, LOCK_WAIT_SECONDS]))[0]?.got;
  if (Number(got) !== 1) {
    throw new StoreError(
      'migrate_lock_timeout',
      `another process has been migrating the Mailroom tables ${names.outbox} in database "${db}" for over ` +
        `${LOCK_WAIT_SECONDS} s (GET_LOCK ${lockName}): wait for it to finish, or find it with SHOW PROCESSLIST`,
      { details: { database: db, lock: lockName } },
    );
  }
  try {
    const exists = rowsOf(
      await conn.query(
        'SELECT 1 AS x FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?',
        [db, `${options.tablePrefix}migrations`],
      ),
    );
    const applied = new Set<number>();
    if (exists.length > 0) {
      for (const r of rowsOf(await conn.query(`SELECT version FROM ${names.migrations}`))) {
        applied.add(Number(r.version));
      }
    }
    const results: MySqlMigrationResult[] = [];
    for (const m of migrations) {
      if (applied.has(m.version)) {
        results.push({ version: m.version, name: m.name, status: 'already-applied' });
        continue;
      }
      if (options.dryRun) {
        results.push({ version: m.version, name: m.name, status: 'pending' });
        continue;
      }
      await conn.query(
        `CREATE TABLE IF NOT EXISTS ${names.migrations} (version INT NOT NULL PRIMARY KEY, name VARCHAR(255) NOT NULL, ` +
          'applied_at DATETIME(6) NOT NULL) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin',
      );
      for (const statement of m.statements) await conn.query(statement);
      await conn.query(
        `INSERT INTO ${names.migrations} (version, name, applied_at) VALUES (?, ?, UTC_TIMESTAMP(6))`,
        [m.version, m.name],
      );
      results.push({ version: m.version, name: m.name, status: 'applied' });
    }
    return results;
  } finally {
    await conn.query('SELECT RELEASE_LOCK(?)', [lockName]).catch(() => undefined);
  }
}

/** The SQL `migrateMySql` would run for the pending migrations, for `migrate --dry-run`. */
export function pendingMySqlSql(
  database: string | undefined,
  prefix: string,
  results: MySqlMigrationResult[],
): string {
  const names = mysqlNames(database, prefix);
  const pending = new Set(results.filter((r) => r.status === 'pending').map((r) => r.version));
  const parts = [
    `CREATE TABLE IF NOT EXISTS ${names.migrations} (version INT NOT NULL PRIMARY KEY, name VARCHAR(255) NOT NULL, applied_at DATETIME(6) NOT NULL);`,
  ];
  for (const m of loadMySqlMigrations(database, prefix)) {
    if (!pending.has(m.version)) continue;
    parts.push(`-- ${String(m.version).padStart(6, '0')}_${m.name}.sql`, 'DELIMITER $$');
    for (const s of m.statements) parts.push(`${s}$$`);
    parts.push('DELIMITER ;');
    parts.push(
      `INSERT INTO ${names.migrations} (version, name, applied_at) VALUES (${m.version}, '${m.name}', UTC_TIMESTAMP(6));`,
    );
  }
  return parts.join('\n');
}
