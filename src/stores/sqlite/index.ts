export {
  SqliteStore,
  loadBetterSqlite3,
  sqliteFilenameFromUrl,
  DEFAULT_DEAD_LETTER_BATCH,
  MAX_TOPICS,
  type SqliteStoreOptions,
  type SqliteEnqueueOptions,
  type SqliteRelayLock,
} from './sqlite-store.js';
export { sqliteExecutor, isSqliteDatabase, type SqliteTransactionHandle } from './sqlite-executor.js';
export {
  migrateSqlite,
  pendingSqliteSql,
  loadSqliteMigrations,
  latestSqliteVersion,
  type SqliteMigration,
  type SqliteMigrationResult,
} from './migrate.js';
export { isBusyError, describeSqliteError, RETRYABLE_SQLITE_CODES } from './sqlite-errors.js';
export { MAX_ROWS_PER_INSERT, MIN_SQLITE_VERSION } from './sqlite-sql.js';
export type {
  SqliteDatabase,
  SqliteStatement,
  SqliteRunResult,
  SqliteDatabaseConstructor,
} from './sqlite-driver.js';
