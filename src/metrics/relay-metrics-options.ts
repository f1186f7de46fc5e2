import type { Registry, RegistryContentType } from 'prom-client';
import { ConfigError } from '../core/errors/config-error.js';
import { custom, integer, optionsSchema, string } from '../core/options-schema.js';
import { showValue } from '../core/show-value.js';

/** Options of {@link RelayMetrics}. */
export interface RelayMetricsOptions {
  /**
   * The registry the metrics are registered in: yours, to serve them next to your own metrics
   * on your `/metrics` endpoint. @default a new `Registry` of its own (read it from `metrics.registry`)
   *
   * @example { registry: promClient.register } // prom-client's global registry
   */
  registry?: Registry<RegistryContentType>;
  /**
   * Prefix of every metric name: letters, digits and `_`, starting with a letter or `_`.
   * @default 'mailroom_'
   */
  prefix?: string;
  /**
   * Whether message counts carry a `topic` label. Off by default: each topic is a series of its
   * own, so only turn it on when topics are few and fixed. `true`: every topic. A list: those
   * topics, and every other as `other` (bounded whatever producers write).
   *
   * @default false
   * @example { topicLabel: ['orders.created', 'orders.paid'] }
   */
  topicLabel?: boolean | readonly string[];
  /**
   * How often the gauges that need a query (backlog, oldest age, dead letters, acks, slot lag)
   * are refreshed, per store: one cheap `stats()` at a time, however often `/metrics` is scraped.
   * The acknowledgement counts (`ackCounts()`, a count over the ack table) are read every fourth
   * refresh. @default 15000
   */
  statsIntervalMs?: number;
  /**
   * Buckets (seconds) of `mailroom_delivery_latency_seconds`, commit to broker confirm.
   * @default [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600]
   */
  latencyBuckets?: readonly number[];
  /**
   * Buckets (seconds) of `mailroom_publish_duration_seconds`, one batch's publish.
   * @default [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]
   */
  publishBuckets?: readonly number[];
}

/** Default {@link RelayMetricsOptions.latencyBuckets}. */
export const DEFAULT_LATENCY_BUCKETS: readonly number[] = [
  0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600,
];

/** Default {@link RelayMetricsOptions.publishBuckets}. */
export const DEFAULT_PUBLISH_BUCKETS: readonly number[] = [
  0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
];

/** Buckets of `mailroom_claim_duration_seconds` (a claim is one short statement). */
export const CLAIM_BUCKETS: readonly number[] = [
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
];

function isBuckets(v: unknown): v is readonly number[] {
  return (
    Array.isArray(v) &&
    v.length > 0 &&
    v.every((b, i) => typeof b === 'number' && Number.isFinite(b) && b > 0 && (i === 0 || b > v[i - 1]))
  );
}

function isTopicLabel(v: unknown): v is boolean | readonly string[] {
  return typeof v === 'boolean' || (Array.isArray(v) && v.every((t) => typeof t === 'string' && t !== ''));
}

const BUCKETS = 'a non-empty list of increasing positive numbers of seconds, e.g. [0.01, 0.1, 1, 10]';

export const relayMetricsSchema = optionsSchema<RelayMetricsOptions>()('RelayMetrics', {
  registry: custom(
    "a prom-client Registry (new Registry(), or prom-client's register)",
    (v): v is Registry<RegistryContentType> =>
      typeof v === 'object' &&
      v !== null &&
      typeof (v as { registerMetric?: unknown }).registerMetric === 'function' &&
      typeof (v as { metrics?: unknown }).metrics === 'function',
  ),
  prefix: string({
    empty: true,
    pattern: /^([A-Za-z_][A-Za-z0-9_]*)?$/,
    expected: 'letters, digits and _, starting with a letter or _ (e.g. "mailroom_")',
    default: 'mailroom_',
  }),
  topicLabel: custom('true, false, or a list of topic names', isTopicLabel, { default: false }),
  statsIntervalMs: integer({ min: 1000, max: 3_600_000, default: 15_000 }),
  latencyBuckets: custom(BUCKETS, isBuckets, { default: DEFAULT_LATENCY_BUCKETS }),
  publishBuckets: custom(BUCKETS, isBuckets, { default: DEFAULT_PUBLISH_BUCKETS }),
});

/** {@link RelayMetricsOptions} with every default applied. */
export interface ResolvedRelayMetricsOptions {
  registry: Registry<RegistryContentType> | undefined;
  prefix: string;
  topicLabel: boolean | readonly string[];
  statsIntervalMs: number;
  latencyBuckets: readonly number[];
  publishBuckets: readonly number[];
}

/** Checks the options and applies the defaults. */
export function resolveRelayMetricsOptions(options: RelayMetricsOptions): ResolvedRelayMetricsOptions {
  const resolved = relayMetricsSchema.resolve(options);
  if (Array.isArray(resolved.topicLabel) && resolved.topicLabel.includes('other')) {
    throw new ConfigError(
      'topicLabel',
      `RelayMetrics option topicLabel lists the topic "other", the label every topic not listed gets; ` +
        `rename that topic or leave it out of the list (got ${showValue(resolved.topicLabel)})`,
      { value: resolved.topicLabel },
    );
  }
  return resolved;
}
