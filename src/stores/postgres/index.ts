export {
  PostgresStore,
  validatePostgresUrl,
  DEFAULT_DEAD_LETTER_BATCH,
  type PostgresStoreOptions,
  type DeadLetterBatchOptions,
} from './postgres-store.js';
export { postgresExecutor, requirePostgresTransaction } from './postgres-executor.js';
export {
  migrate,
  loadMigrations,
  pendingSql,
  notifyChannel,
  type MigrationResult,
  type Migration,
} from './migrate.js';
export {
  EXACT_COUNT_LIMIT,
  MAX_TOPICS,
  TOPIC_SAMPLE_ROWS,
  type PostgresStats,
  type StatsCount,
} from './postgres-stats.js';
export { validateSchemaName, MAX_SCHEMA_NAME_BYTES, MAX_IDENTIFIER_BYTES } from './schema-name.js';
export { isRetryableDbError, describeDbError, RETRYABLE_ERROR_CODES } from './postgres-errors.js';
export type {
  PgPool,
  PgPoolClient,
  PgQueryable,
  PostgresJsSql,
  PgTransactionClient,
  PostgresJsTransaction,
  PostgresTransactionHandle,
} from './postgres-driver.js';
export { PostgresLedger } from './ledger.js';
