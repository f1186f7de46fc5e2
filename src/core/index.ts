export * from './errors/index.js';
export type {
  JsonValue,
  MessageInput,
  EncodedMessage,
  OutboxMessage,
  DeadLetter,
  AckRequest,
  CallbackRequest,
  DeliveryOptions,
  ReceivedMessage,
  AckReceipt,
} from './types.js';
export type {
  SqlExecutor,
  SqlStatement,
  StoreCapabilities,
  ClaimRequest,
  ClaimIdsRequest,
  ClaimedBatch,
  MessageSource,
  SourceBatch,
  SourceContext,
  Settlement,
  OutboxStats,
  DeadLetterFilter,
  DeadLetterOpResult,
  DeadLetterBatchOptions,
  StatsCount,
  Unsubscribe,
  WakeGate,
  OutboxStore,
  PublishOutcome,
  PublishOptions,
  Transport,
  MessageState,
  MessageStatus,
  AckOutcome,
  AckRecord,
  AckCounts,
  InboxPort,
  AckPort,
  CallbackEvent,
  CallbackPort,
} from './ports.js';
export type { WaitForOptions } from './wait-for.js';
export { toReceivedMessage, MAILROOM_HEADER_PREFIX } from './received-message.js';
export {
  encodeMessage,
  validateTopic,
  DEFAULT_MAX_PAYLOAD_BYTES,
  MAX_DELAY_MS,
  DEFAULT_ACK_TOPIC,
  ACK_TO_HEADER,
  type MessageLimits,
} from './message.js';
export { uuidv7, isUuid } from './uuid.js';
export {
  LogSource,
  type LogSourceOptions,
  type LogSourceStore,
  type LogStream,
  type LogTransaction,
} from './log-source.js';
export { Outbox, type EnqueueOptions, type OutboxOptions } from './outbox.js';
export { TransactionContext, type AmbientTransaction } from './transaction-context.js';
export {
  Relay,
  resolveRelayOptions,
  type RelayOptions,
  type ResolvedRelayOptions,
  type RelayEvents,
  type RelayObserver,
} from './relay.js';
export {
  RelayGroup,
  SOURCE_NAME,
  type BudgetUsage,
  type RelayGroupEvents,
  type RelayGroupOptions,
  type RelayGroupSource,
  type RelayGroupSourceBacklog,
  type RelayGroupSourceOverrides,
  type RelayGroupSourceStatus,
  type RelayGroupObserver,
} from './relay-group.js';
export {
  resolveRetryPolicy,
  retryDelayMs,
  type RetryPolicyOptions,
  type ResolvedRetryPolicy,
} from './retry-policy.js';
export { silentLogger, withLogFields, type Logger } from './logger.js';
export {
  LOG_EVENTS,
  logFields,
  serializeError,
  type LogComponent,
  type LogEvent,
  type LogEventInfo,
  type LogFields,
  type LoggedError,
  type LogLevel,
} from './log-fields.js';
export { pinoLogger, redactingLogger, type PinoLike } from './logger-adapters.js';
export { systemClock, type Clock } from './clock.js';
export { isSecretName, redactSecrets, redactUrl } from './redact.js';
export {
  isTransactionalTransport,
  newTransactionId,
  runInTransaction,
  toOutboxMessages,
  type BrokerTransaction,
  type TransactionalTransport,
} from './broker-transaction.js';
export {
  ATOMIC_GROUP_CONTENT_TYPE,
  GROUP_ID_HEADER,
  GROUP_INDEX_HEADER,
  GROUP_SIZE_HEADER,
  MAX_GROUP_BYTES,
  MAX_GROUP_MESSAGES,
  decodeGroup,
  encodeGroup,
  groupOf,
  isGroup,
} from './atomic-group.js';
