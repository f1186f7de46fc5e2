import { ConfigError } from '../../core/errors/config-error.js';
import {
  boolean,
  custom,
  func,
  integer,
  MAX_TIMER_MS,
  nested,
  optionsSchema,
  string,
  type ResolvedOptions,
} from '../../core/options-schema.js';
import * as common from '../../consumer/consumer-options.js';
import type { AmqpConsumerConnect } from './amqp-consumer-client.js';
import { resolveAmqpUrl } from './rabbitmq-options.js';

export type {
  ConsumerContext,
  ConsumerHandler,
  ConsumerInbox,
  ConsumerRetryOptions,
} from '../../consumer/consumer.js';

/**
 * Options of {@link RabbitMqConsumer}; `url`, `queue`, `bindings` and `handler` are required.
 * With `inbox`, `Tx` is its transaction type and the handler gets the transaction; without,
 * the handler gets `undefined`.
 */
export type RabbitMqConsumerOptions<Tx = undefined> = common.ConsumerOptionsOf<
  RabbitMqConsumerBaseOptions,
  Tx
>;

/** The options of {@link RabbitMqConsumer} besides `inbox` and `handler`. */
export interface RabbitMqConsumerBaseOptions extends common.ConsumerCommonOptions {
  /**
   * Broker address, `amqp://` or `amqps://`, with credentials and virtual host. The password
   * never appears in errors or logs.
   *
   * @example 'amqps://billing:s3cret@rabbit.internal:5671/orders'
   */
  url: string;
  /**
   * The queue to consume, declared durable on every connect (with `queueArguments`). Name it
   * after the receiving service and what it does: every instance of the service shares it.
   *
   * @example 'billing.orders'
   */
  queue: string;
  /**
   * Routing-key patterns binding the queue to the exchange: Mailroom topics, with `*` for one
   * word and `#` for any number of words. `[]` when the queue is bound elsewhere.
   *
   * @example ['order.*', 'payment.#']
   */
  bindings: string[];
  /**
   * The exchange the sender's relay publishes to, declared (durable) as the transport declares
   * it. `''` (the default exchange) routes by queue name and takes no bindings.
   *
   * @default 'mailroom'
   */
  exchange?: string;
  /** Type of the exchange when declaring it, as on the transport. @default 'topic' */
  exchangeType?: string;
  /**
   * Declare the exchange, the queue, the dead-letter queue and the bindings on every connect.
   * Turn off when they are managed elsewhere (definitions file, Terraform); they must exist.
   *
   * @default true
   */
  declare?: boolean;
  /**
   * Arguments of the queue when declaring it. A quorum queue (`{ 'x-queue-type': 'quorum' }`)
   * counts redeliveries, which seeds the attempt count of messages redelivered after a crash.
   *
   * @default {}
   * @example { 'x-queue-type': 'quorum' }
   */
  queueArguments?: Record<string, unknown>;
  /**
   * Messages the broker hands over before they are acknowledged (`basic.qos`), at least
   * `concurrency`: messages waiting behind a busy key or a retry hold one each.
   *
   * @default 2 × concurrency
   */
  prefetch?: number;
  /**
   * Transacted receive: the handler gets `context.publish(messages)`, and the consumer publishes
   * those messages and acknowledges the delivery in one AMQP transaction on the consume channel,
   * committed after the handler (and its inbox transaction) succeeded. A run that throws sends
   * nothing (its outputs are dropped) and is retried as usual. A crash or a lost connection before
   * the commit loses neither the input (it is redelivered) nor leaves its outputs at the broker;
   * after the commit, the input is gone and its outputs are there, once.
   *
   * Outputs go to `exchange` with their topic as routing key, `mandatory` and persistent, as the
   * transport sends them; one no queue is bound for is reported (`consumer:output:returned`),
   * while the rest of the transaction is committed (RabbitMQ routes at commit). Runs that end
   * while a commit is under way are committed together in the next transaction, never part of a
   * run. With an inbox, a crash between the inbox commit and the broker commit loses that run's
   * outputs (the copy redelivered is a duplicate, and its handler does not run): enqueue outputs
   * that must not be lost with the outbox in the inbox transaction instead. docs/mq-transactions.md.
   *
   * @default false
   * @example
   * ```ts
   * new RabbitMqConsumer({ url, queue: 'orders.priced', bindings: ['order.placed'], transacted: true,
   *   handler: async (message, _tx, context) => {
   *     await context.publish?.([{ topic: 'order.priced', key: message.key, payload: price(message) }]);
   *   } });
   * ```
   */
  transacted?: boolean;
  /**
   * Transacted receive: how long to wait for the broker's answer to a commit. Without one in
   * time the outcome is unknown (the input may be acknowledged, its outputs delivered), the
   * connection is dropped and the consumer reconnects.
   *
   * @default 30000
   */
  commitTimeoutMs?: number;
  /**
   * Where messages go that failed `retry.maxAttempts` times or cannot be decoded; declared
   * durable, published to through the default exchange with confirms.
   *
   * @default `${queue}.dead`
   */
  deadLetterQueue?: string;
  /** Limit for connecting, the AMQP handshake and declaring. @default 10000 */
  connectTimeoutMs?: number;
  /** Heartbeat interval to ask for, in seconds; `0` disables. @default the broker's (60) */
  heartbeatSeconds?: number;
  /**
   * Socket and client options passed to the connect function (TLS, `clientProperties`).
   *
   * @default `{ noDelay: true, clientProperties: { connection_name: 'mailroom-consumer <queue>' } }`
   */
  socketOptions?: Record<string, unknown>;
  /** Opens connections. @default amqplib's `connect` */
  connect?: AmqpConsumerConnect;
}

// AMQP names as the transport accepts exchange names: letters, digits, '-', '_', '.', ':'.
const NAME_RE = /^[A-Za-z0-9_.:-]{1,255}$/;
const EXCHANGE_NAME_RE = /^[A-Za-z0-9_.:-]{0,255}$/;
const EXCHANGE_TYPE_RE = /^(direct|topic|fanout|headers|x-[A-Za-z0-9_.:-]+)$/;
const QUEUE_EXPECTED =
  "a queue name of 1 to 255 letters, digits, '-', '_', '.' or ':', not starting with 'amq.' (reserved by RabbitMQ)";

const isQueueName = (v: unknown): v is string =>
  typeof v === 'string' && NAME_RE.test(v) && !v.startsWith('amq.');

const consumerSchema = optionsSchema<common.ConsumerOptionKeys<RabbitMqConsumerBaseOptions>>()(
  'RabbitMqConsumer',
  {
    url: string({ expected: 'an amqp:// or amqps:// URL string', secret: true, required: true }),
    queue: custom(QUEUE_EXPECTED, isQueueName, { required: true }),
    bindings: custom(
      "an array of routing-key patterns (strings) such as ['order.*', 'payment.#'], or [] when the queue is bound elsewhere",
      (v): v is string[] => Array.isArray(v) && v.every((b) => typeof b === 'string'),
      { required: true },
    ),
    exchange: string({
      empty: true,
      pattern: EXCHANGE_NAME_RE,
      expected: "at most 255 letters, digits, '-', '_', '.' or ':'",
      default: 'mailroom',
    }),
    exchangeType: string({
      pattern: EXCHANGE_TYPE_RE,
      expected: 'topic, direct, fanout, headers or a plugin type starting with x-',
      default: 'topic',
    }),
    declare: boolean({ default: true }),
    queueArguments: custom(
      'an object of queue arguments',
      (v): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v),
      { default: () => ({}) },
    ),
    ...common.handlerFields,
    transacted: boolean({ default: false }),
    commitTimeoutMs: integer({ min: 1, max: MAX_TIMER_MS, default: 30_000 }),
    retry: nested(common.retryOptionsSchema('RabbitMqConsumer')),
    deadLetterQueue: custom(QUEUE_EXPECTED, isQueueName, {
      default: (r) => `${r['queue'] as string}.dead`,
    }),
    ...common.lifecycleFields,
    heartbeatSeconds: integer({ min: 0, max: 65_535 }),
    socketOptions: custom(
      'an object',
      (v): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v),
      { default: () => ({}) },
    ),
    ...common.reconnectFields,
    connect: func<AmqpConsumerConnect>('a function (url, socketOptions) => Promise<connection>'),
    logger: common.loggerField,
  },
  { ordered: common.consumerOrderedOptions },
);

/** Options after defaults and validation. */
export interface ResolvedRabbitMqConsumerOptions extends Omit<
  ResolvedOptions<typeof consumerSchema.fields>,
  'handler' | 'inbox'
> {
  /** The URL handed to the connect function (heartbeat applied). */
  url: string;
  /** The same URL with the password replaced by `***`. */
  safeUrl: string;
}

/**
 * Applies defaults and validates; throws a {@link ConfigError} naming the option at fault. The
 * handler and inbox are checked here but kept by the caller, which knows their types.
 */
export function resolveRabbitMqConsumerOptions<Tx>(
  options: RabbitMqConsumerOptions<Tx>,
): ResolvedRabbitMqConsumerOptions {
  const { handler, inbox: _inbox, ...resolved } = consumerSchema.resolve(options);
  common.requireHandler('RabbitMqConsumer', handler);
  common.requireDistinctDeadLetters('RabbitMqConsumer', {
    option: 'deadLetterQueue',
    value: resolved.deadLetterQueue,
    source: 'queue',
    sourceValue: resolved.queue,
    where: 'on the queue they failed on',
  });
  if (!isQueueName(resolved.deadLetterQueue)) {
    throw new ConfigError(
      'deadLetterQueue',
      `RabbitMqConsumer default deadLetterQueue ${JSON.stringify(resolved.deadLetterQueue)} is too long; ` +
        'give deadLetterQueue a name of at most 255 characters',
      { value: resolved.deadLetterQueue },
    );
  }
  checkBindings(resolved.bindings, resolved.exchange, resolved.exchangeType);
  return { ...resolved, ...resolveAmqpUrl(resolved.url, resolved.heartbeatSeconds, 'RabbitMqConsumer') };
}

/** Each binding is a routing-key pattern the exchange can use; says which one is wrong, and why. */
function checkBindings(bindings: readonly string[], exchange: string, exchangeType: string): void {
  if (exchange === '' && bindings.length > 0) {
    throw new ConfigError(
      'bindings',
      "RabbitMqConsumer option bindings must be [] with exchange '' (the default exchange routes by " +
        'queue name and cannot be bound); set exchange to the one your relay publishes to (default ' +
        "'mailroom')",
      { value: bindings },
    );
  }
  bindings.forEach((binding, index) => {
    const key = `bindings[${index}]`;
    const fail = (why: string): never => {
      throw new ConfigError(key, `RabbitMqConsumer option ${key} ${JSON.stringify(binding)} ${why}`, {
        value: binding,
      });
    };
    if (binding === '') fail("is empty; use '#' to receive every topic");
    if (Buffer.byteLength(binding) > 255) fail('is longer than 255 bytes, the AMQP limit of a routing key');
    if (exchangeType !== 'topic') return;
    const words = binding.split('.');
    if (words.some((w) => w === '')) {
      fail("has an empty word (two dots in a row, or a dot at either end); topics are words joined by '.'");
    }
    if (words.some((w) => w !== '*' && w !== '#' && /[*#]/.test(w))) {
      const meant = words
        .map((w) =>
          w === '*' || w === '#'
            ? w
            : w.replace(/([^*#])(?=[*#])/g, '$1.').replace(/([*#])(?=[^*#])/g, '$1.'),
        )
        .join('.');
      fail(
        "mixes a wildcard with letters in one word; '*' (one word) and '#' (any words) stand for whole " +
          `words between dots, otherwise they match themselves only: did you mean ${JSON.stringify(meant)}?`,
      );
    }
  });
}
