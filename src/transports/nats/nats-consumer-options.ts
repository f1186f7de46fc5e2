/**
 * Options of {@link NatsConsumer}: the schema with its defaults, the subject consumed (from a
 * topic as the transport makes it, or given), the durable consumer's name and the dead-letter
 * subject.
 *
 * @module
 */
import { createHash } from 'node:crypto';

import { ConfigError } from '../../core/errors/config-error.js';
import {
  custom,
  integer,
  MAX_TIMER_MS,
  nested,
  oneOf,
  optionsSchema,
  string,
  type ResolvedOptions,
} from '../../core/options-schema.js';
import * as common from '../../consumer/consumer-options.js';
import {
  isValidSubject,
  resolveNatsUrl,
  subjectFor,
  type NatsEndpoint,
  type NatsTlsOptions,
  type ResolvedNatsTransportOptions,
} from './nats-options.js';

export type {
  ConsumerContext,
  ConsumerHandler,
  ConsumerInbox,
  ConsumerRetryOptions,
} from '../../consumer/consumer.js';

/**
 * Options of {@link NatsConsumer}; `url`, `group`, `handler` and one of `topic` and `subject` are
 * required. With `inbox`, `Tx` is its transaction type and the handler gets the transaction;
 * without, `undefined`.
 */
export type NatsConsumerOptions<Tx = undefined> = common.ConsumerOptionsOf<NatsConsumerBaseOptions, Tx>;

/** The options of {@link NatsConsumer} besides `inbox` and `handler`. */
export interface NatsConsumerBaseOptions extends common.ConsumerCommonOptions {
  /**
   * Server address, as the transport takes it: `nats://[user:password@]host:4222`,
   * `nats://token@host:4222` or `tls://…`. The password and token never appear in errors or logs.
   *
   * @example 'nats://billing:s3cret@nats.internal:4222'
   */
  url: string;
  /**
   * The service that consumes: the same for every instance of it. Instances with the same group
   * (and subject) share one durable JetStream consumer, and so the work: each message goes to one
   * of them. Letters, digits, `-` and `_`.
   *
   * @example 'billing'
   */
  group: string;
  /**
   * The topic to consume, as the relay enqueued it: the subject is `subjectPrefix.topic`, the one
   * `NatsTransport` publishes it to. Give `topic` or `subject`, not both.
   *
   * @example 'order.created'
   */
  topic?: string;
  /** The transport's `subjectPrefix`, for `topic`. @default undefined (the subject is the topic) */
  subjectPrefix?: string;
  /**
   * The subject to consume instead of `topic`: the durable consumer's filter subject, wildcards
   * allowed (`events.order.*`, `events.>`; then `deadLetterSubject` is required).
   *
   * @example 'events.order.created'
   */
  subject?: string;
  /**
   * The stream to consume from. By default, the one stream that captures the subject, looked up
   * at each start; start() fails, naming the subject, when none or several do.
   *
   * @default the stream that captures the subject
   */
  stream?: string;
  /**
   * Name of the durable consumer, created (or updated) on the stream at start(). Every instance
   * of the service must use the same.
   *
   * @default `<group>__<subject with '.' as '_'>`, plus a short hash when the subject has
   * wildcards, `_` or other characters (e.g. `billing__events_order_created`)
   */
  durable?: string;
  /**
   * Where messages go that failed `retry.maxAttempts` times or cannot be decoded: published with
   * a PubAck (a stream must capture it, else start() fails naming it), then the original is
   * acknowledged. Must not be matched by the subject consumed.
   *
   * @default `<subject>.dead`
   */
  deadLetterSubject?: string;
  /**
   * Where a new durable consumer starts: `all` from the first message the stream holds, `new`
   * with messages stored after it was created. Only applies when the durable is created.
   *
   * @default 'all'
   */
  deliverPolicy?: 'all' | 'new';
  /**
   * The consumer's `ack_wait`: a message handed out and neither acknowledged nor reported in
   * progress for this long is redelivered (to any instance). While a message is held (handled,
   * waiting behind its key or for a retry), the consumer reports it in progress every third of
   * this, so only a crashed or cut-off instance's messages come back, after this much time.
   *
   * @default 30000
   */
  ackWaitMs?: number;
  /**
   * How long to wait for the server's confirmation of an acknowledgement (a double ack) and for
   * the PubAck of a dead letter, and for JetStream API answers.
   *
   * @default 10000
   */
  ackTimeoutMs?: number;
  /** Messages pulled and not yet acknowledged, at least `concurrency`. @default 2 × concurrency */
  prefetch?: number;
  /** Limit for connecting, the JetStream checks and creating the durable consumer. @default 10000 */
  connectTimeoutMs?: number;
  /** TLS settings, as the transport's: `ca`/`caFile`, `cert`/`certFile`, `key`/`keyFile`. */
  tls?: NatsTlsOptions;
  /** Client name the server shows in its connection list. @default 'mailroom-consumer' */
  name?: string;
}

const NAME_RE = /^[A-Za-z0-9_-]{1,64}$/;
const STREAM_RE = /^[A-Za-z0-9_-]{1,255}$/;
/** What the server refuses in a consumer name (as its client checks). */
// eslint-disable-next-line no-control-regex
const DURABLE_RE = /^[^.*>/\\\s\u0000-\u001f\u007f]{1,255}$/u;
const TLS_KEYS = ['ca', 'caFile', 'cert', 'certFile', 'key', 'keyFile'];

const subjectField = (wildcards: boolean) =>
  custom(
    wildcards
      ? "a NATS subject such as 'events.order.created' or 'events.order.*' (dot-separated tokens; '*' and '>' as whole tokens)"
      : "a NATS subject such as 'events.order.created.dead' (dot-separated tokens, no spaces, no wildcards)",
    (v): v is string => typeof v === 'string' && isValidSubject(v, wildcards),
  );

const consumerSchema = optionsSchema<common.ConsumerOptionKeys<NatsConsumerBaseOptions>>()(
  'NatsConsumer',
  {
    url: string({ expected: 'a nats:// or tls:// URL string', secret: true, required: true }),
    group: string({
      pattern: NAME_RE,
      expected: "a service name of letters, digits, '-' and '_' (up to 64), such as 'billing'",
      required: true,
    }),
    topic: string({ expected: "a topic such as 'order.created'" }),
    subjectPrefix: subjectField(false),
    subject: subjectField(true),
    stream: string({ pattern: STREAM_RE, expected: "a stream name of letters, digits, '-' and '_'" }),
    durable: string({
      pattern: DURABLE_RE,
      expected: "a consumer name without '.', '*', '>', '/', '\\' or whitespace (up to 255)",
    }),
    deadLetterSubject: subjectField(false),
    deliverPolicy: oneOf(['all', 'new'], { default: 'all' }),
    ackWaitMs: integer({ min: 100, max: MAX_TIMER_MS, default: 30_000 }),
    ackTimeoutMs: integer({ min: 1, max: MAX_TIMER_MS, default: 10_000 }),
    ...common.handlerFields,
    retry: nested(common.retryOptionsSchema('NatsConsumer')),
    ...common.lifecycleFields,
    tls: custom(
      `an object with string keys among ${TLS_KEYS.join(', ')}`,
      (v): v is NatsTlsOptions =>
        typeof v === 'object' &&
        v !== null &&
        !Array.isArray(v) &&
        Object.entries(v).every(([k, s]) => TLS_KEYS.includes(k) && typeof s === 'string'),
    ),
    name: string({ default: 'mailroom-consumer' }),
    ...common.reconnectFields,
    logger: common.loggerField,
  },
  { ordered: common.consumerOrderedOptions },
);

/** Options after defaults and validation. */
export interface ResolvedNatsConsumerOptions extends Omit<
  ResolvedOptions<typeof consumerSchema.fields>,
  'handler' | 'inbox' | 'url' | 'topic' | 'subject' | 'durable' | 'deadLetterSubject'
> {
  endpoint: NatsEndpoint;
  /** The filter subject of the durable consumer. */
  subject: string;
  durable: string;
  deadLetterSubject: string;
}

/**
 * Applies defaults and validates; throws a {@link ConfigError} naming the option at fault. The
 * handler and inbox are checked here but kept by the caller, which knows their types.
 */
export function resolveNatsConsumerOptions<Tx>(
  options: NatsConsumerOptions<Tx>,
): ResolvedNatsConsumerOptions {
  const {
    handler,
    inbox,
    url,
    topic,
    subject: given,
    durable,
    deadLetterSubject,
    ...resolved
  } = consumerSchema.resolve(options);
  void inbox;
  common.requireHandler('NatsConsumer', handler);
  if ((topic === undefined) === (given === undefined)) {
    throw new ConfigError(
      topic === undefined ? 'topic' : 'subject',
      topic === undefined
        ? "NatsConsumer needs what to consume: give topic (with the transport's subjectPrefix) or subject"
        : 'NatsConsumer takes topic or subject, not both: topic makes the subject as the transport does ' +
            '(subjectPrefix.topic); subject gives it directly',
    );
  }
  if (given !== undefined && resolved.subjectPrefix !== undefined) {
    throw new ConfigError(
      'subjectPrefix',
      'NatsConsumer option subjectPrefix applies to topic; with subject, give the whole subject',
    );
  }
  const subject = given ?? subjectFor(resolved.subjectPrefix, topic as string);
  if (!isValidSubject(subject, false) && given === undefined) {
    throw new ConfigError(
      'topic',
      `NatsConsumer topic ${JSON.stringify(topic)} gives subject ${JSON.stringify(subject)}, which is not a ` +
        'NATS subject (dot-separated tokens without spaces or wildcards)',
      { value: topic },
    );
  }
  const wildcard = /(^|\.)[*>](\.|$)/.test(subject);
  if (wildcard && deadLetterSubject === undefined) {
    throw new ConfigError(
      'deadLetterSubject',
      `NatsConsumer subject ${JSON.stringify(subject)} has wildcards, so ${JSON.stringify(`${subject}.dead`)} ` +
        'cannot be published to; give deadLetterSubject (one that the subject does not match)',
    );
  }
  const dead = deadLetterSubject ?? `${subject}.dead`;
  if (subjectMatches(subject, dead)) {
    throw new ConfigError(
      'deadLetterSubject',
      `NatsConsumer option deadLetterSubject (${JSON.stringify(dead)}) is matched by the subject consumed ` +
        `(${JSON.stringify(subject)}): dead letters would be consumed again and fail again forever; ` +
        'give one outside it',
      { value: dead },
    );
  }
  return {
    ...resolved,
    subject,
    durable: durable ?? defaultDurable(resolved.group, subject),
    deadLetterSubject: dead,
    endpoint: resolveNatsUrl(url, 'NatsConsumer'),
  };
}

/** True when `subject` (no wildcards) is matched by `filter` (wildcards allowed). */
export function subjectMatches(filter: string, subject: string): boolean {
  const f = filter.split('.');
  const s = subject.split('.');
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '>') return s.length > i;
    if (i >= s.length) return false;
    if (f[i] !== '*' && f[i] !== s[i]) return false;
  }
  return f.length === s.length;
}

/**
 * The durable name of `group` consuming `subject`: `<group>__<tokens joined by '_'>`. A subject
 * whose tokens hold anything but letters, digits and `-` (wildcards, `_`) gets a hash of it
 * appended, so that two subjects never share a name; so does a long one.
 */
export function defaultDurable(group: string, subject: string): string {
  const readable = subject.replaceAll('.', '_');
  const plain = /^[A-Za-z0-9.-]+$/.test(subject) && !group.includes('__');
  const name = `${group}__${readable.replace(/[^A-Za-z0-9_-]/g, '_')}`;
  if (plain && name.length <= 200) return name;
  const hash = createHash('sha256').update(`${group}\0${subject}`).digest('hex').slice(0, 10);
  return `${name.slice(0, 200)}_${hash}`;
}

/** The transport options the consumer's connection is opened with (`NatsSessions`). */
export function sessionOptions(o: Readonly<ResolvedNatsConsumerOptions>): ResolvedNatsTransportOptions {
  return {
    endpoint: o.endpoint,
    subjectPrefix: o.subjectPrefix,
    ensureStream: undefined,
    ackTimeoutMs: o.ackTimeoutMs,
    maxMessageBytes: undefined,
    connectTimeoutMs: o.connectTimeoutMs,
    closeTimeoutMs: 0,
    tls: o.tls,
    name: o.name,
  };
}
