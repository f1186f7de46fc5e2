/**
 * Prometheus metrics of the relay (`mailroom/metrics`): {@link RelayMetrics} registers the
 * `mailroom_…` metrics in a prom-client registry (yours or its own) and measures relays and relay
 * groups. Needs `prom-client` (an optional peer dependency: `npm install prom-client`). The metric
 * list, PromQL examples and alert rules: docs/metrics.md.
 *
 * @module
 */
export { RelayMetrics, type ObserveGroupOptions, type ObserveRelayOptions } from './relay-metrics.js';
export {
  DEFAULT_LATENCY_BUCKETS,
  DEFAULT_PUBLISH_BUCKETS,
  type RelayMetricsOptions,
} from './relay-metrics-options.js';
export {
  postgresSlotLag,
  SLOT_LAG_SQL,
  type SlotLag,
  type SlotLagQueryable,
  type SlotLagReader,
} from './slot-lag.js';
export type { StatsStore } from './stats-poller.js';
