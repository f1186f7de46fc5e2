export {
  MySqlStore,
  loadMysql2,
  validateMySqlUrl,
  mysqlStoreOptionsSchema,
  DEFAULT_DEAD_LETTER_BATCH,
  MYSQL_EXACT_COUNT_LIMIT,
  MYSQL_TOPIC_SAMPLE_ROWS,
  MYSQL_MAX_TOPICS,
  type MySqlStoreOptions,
} from './mysql-store.js';
export { mysqlExecutor, requireMySqlTransaction } from './mysql-executor.js';
export {
  migrateMySql,
  loadMySqlMigrations,
  latestMySqlVersion,
  pendingMySqlSql,
  splitStatements,
  type MySqlMigration,
  type MySqlMigrationResult,
} from './migrate.js';
export { validateTablePrefix, MAX_TABLE_PREFIX_LENGTH, MAX_ROWS_PER_INSERT } from './mysql-sql.js';
export { isRetryableMySqlError, describeMySqlError, RETRYABLE_MYSQL_ERRORS } from './mysql-errors.js';
export type {
  MySqlPool,
  MySqlPoolConnection,
  MySqlQueryable,
  MySqlTransactionConnection,
  MySqlTransactionHandle,
} from './mysql-driver.js';
