export {
  verifyDeliveries,
  parseSnapshot,
  visibleIn,
  type LedgerEntry,
  type OutboxState,
  type OrderViolation,
  type Snapshot,
  type VerifyReport,
} from './verify-report.js';
export {
  RabbitMqCollector,
  type RabbitMqCollectorOptions,
  type CollectedDelivery,
} from './rabbitmq-collector.js';
export { checkGroups, type GroupCheck, type GroupedDelivery } from './group-check.js';
