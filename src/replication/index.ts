/**
 * Logical replication building blocks: the outbox log stream (committed outbox transactions
 * from a `pgoutput` slot), LSN and xid helpers, and its error type.
 */
export { PostgresLogSource, type PostgresLogSourceOptions } from './postgres-log-source.js';
export { OutboxLogStream, type OutboxLogStreamStart } from './outbox-log-stream.js';
export type { OutboxLogStreamOptions, ReplicationConnectionConfig } from './outbox-log-stream-options.js';
export type { OutboxInsert, OutboxLogMessage, OutboxTransaction } from './transaction-assembler.js';
export type { SlotInfo } from './replication-setup.js';
export { ReplicationError, isReplicationError, type ReplicationErrorCode } from './replication-error.js';
export { compareLsn, isLsn, lsnFromBigInt, lsnToBigInt, maxLsn, normalizeLsn, type Lsn } from './lsn.js';
export { xid8Of, XID_VISIBLE_SQL } from './xid.js';
