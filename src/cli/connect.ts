import { ConfigError } from '../core/errors/config-error.js';
import type { Transport } from '../core/ports.js';
import { redactUrl } from '../core/redact.js';
import { postgresStoreOptionsSchema, PostgresStore } from '../stores/postgres/postgres-store.js';
import { bounds, type OptionSpec, type ResolvedConfig } from './options.js';

const deadlines = postgresStoreOptionsSchema.fields;

/**
 * The deadlines of a command's database connections (and, for `relay`, its broker connection).
 * A command that declares them takes them from flags, environment and config file; one that
 * does not gets the store's defaults all the same.
 */
export const CONNECTION_OPTIONS: readonly OptionSpec[] = [
  {
    key: 'connectTimeoutMs',
    flag: 'connect-timeout-ms',
    env: 'MAILROOM_CONNECT_TIMEOUT_MS',
    type: 'int',
    ...bounds(deadlines.connectTimeoutMs),
    description:
      'deadline for opening a connection (TCP, TLS, handshake, login); a URL that points at the wrong server fails after this long',
  },
  {
    key: 'statementTimeoutMs',
    flag: 'statement-timeout-ms',
    env: 'MAILROOM_STATEMENT_TIMEOUT_MS',
    type: 'int',
    ...bounds(deadlines.statementTimeoutMs),
    description: 'longest a database statement may run before PostgreSQL cancels it (migrations included)',
  },
  {
    key: 'serverStatementTimeout',
    flag: 'server-statement-timeout',
    env: 'MAILROOM_SERVER_STATEMENT_TIMEOUT',
    type: 'bool',
    ...(deadlines.serverStatementTimeout.default === undefined
      ? {}
      : { default: deadlines.serverStatementTimeout.default }),
    description:
      'send statement_timeout when connecting; --no-server-statement-timeout behind a pooler that refuses it (PgBouncer)',
  },
];

/** The store options a command's connection flags set; none when the command has no such flags. */
export function connectionSettings(config: ResolvedConfig) {
  return {
    ...(config.connectTimeoutMs === undefined ? {} : { connectTimeoutMs: Number(config.connectTimeoutMs) }),
    ...(config.statementTimeoutMs === undefined
      ? {}
      : { statementTimeoutMs: Number(config.statementTimeoutMs) }),
    ...(config.serverStatementTimeout === undefined
      ? {}
      : { serverStatementTimeout: Boolean(config.serverStatementTimeout) }),
  };
}

/**
 * Opens the store the database URL names. Only PostgreSQL for now; the scheme picks the store.
 * `poolSize` defaults to 4; the relay asks for two per batch in flight (a lease extension can run beside its settle) plus two (claim, LISTEN).
 * Connections have deadlines (see {@link CONNECTION_OPTIONS}) whether or not the command
 * declares the flags, so no command hangs on a server that does not answer.
 */
export async function openStore(
  config: ResolvedConfig,
  extra: { notify?: boolean; archive?: boolean; poolSize?: number } = {},
) {
  const url = String(config.databaseUrl);
  const scheme = url.slice(0, url.indexOf(':') + 1);
  if (scheme !== 'postgres:' && scheme !== 'postgresql:') {
    throw new ConfigError(
      'databaseUrl',
      `--database-url must be a postgres:// or postgresql:// URL, got "${scheme}" in ${redactUrl(url)}`,
    );
  }
  return PostgresStore.connect({
    connectionString: url,
    schema: String(config.schema),
    poolSize: extra.poolSize ?? 4,
    ...connectionSettings(config),
    ...(extra.notify === undefined ? {} : { notify: extra.notify }),
    ...(extra.archive === undefined ? {} : { archive: extra.archive }),
  });
}

/** Builds the transport a URL names; the scheme picks it. */
export async function openTransport(config: ResolvedConfig): Promise<Transport> {
  const url = String(config.transport);
  let scheme: string;
  try {
    scheme = new URL(url).protocol;
  } catch {
    throw new ConfigError(
      'transport',
      `--transport is not a URL: ${JSON.stringify(redactUrl(url))}; e.g. amqp://guest:guest@127.0.0.1:5672`,
    );
  }
  switch (scheme) {
    case 'amqp:':
    case 'amqps:': {
      const { RabbitMqTransport } = await import('../transports/rabbitmq/index.js');
      return new RabbitMqTransport({
        url,
        exchange: String(config.exchange),
        mandatory: Boolean(config.mandatory),
        ...(config.exchangeType === undefined ? {} : { exchangeType: String(config.exchangeType) }),
        ...(config.declareExchange === undefined ? {} : { declareExchange: Boolean(config.declareExchange) }),
        ...(config.connectTimeoutMs === undefined
          ? {}
          : { connectTimeoutMs: Number(config.connectTimeoutMs) }),
      });
    }
    case 'stomp:':
    case 'stomps:': {
      // Loaded on demand, like the RabbitMQ transport. It speaks STOMP with Node's own net/tls
      // (no client package to install); the destination is the default `/queue/{topic}`.
      const { StompTransport } = await import('../transports/stomp/index.js');
      return new StompTransport({
        url,
        ...(config.connectTimeoutMs === undefined
          ? {}
          : { connectTimeoutMs: Number(config.connectTimeoutMs) }),
      });
    }
    case 'http:':
    case 'https:': {
      // The URL is the template messages are POSTed to ({topic}, {key}, {type} in its path or
      // query); the signing secret never rides in it: --webhook-secret or MAILROOM_WEBHOOK_SECRET.
      const secret = config.webhookSecret;
      if (secret === undefined || secret === '') {
        throw new ConfigError(
          'webhookSecret',
          `an ${scheme}// transport signs every POST (Standard Webhooks): give the secret with ` +
            '--webhook-secret or MAILROOM_WEBHOOK_SECRET (a whsec_… secret, e.g. from generateWebhookSecret()); ' +
            'it never goes in the URL',
        );
      }
      const { WebhookTransport } = await import('../transports/webhook/index.js');
      return new WebhookTransport({
        url,
        secret: String(secret),
        ...(config.connectTimeoutMs === undefined
          ? {}
          : { connectTimeoutMs: Number(config.connectTimeoutMs) }),
      });
    }
    case 'nats:':
    case 'tls:': {
      // Loaded on demand: @nats-io/transport-node and @nats-io/jetstream are optional peer
      // dependencies. `?prefix=` sets the subject prefix, `?stream=NAME[&subjects=a.>,b.>]` makes
      // the relay create (or extend) that stream at start; see docs/transports/nats.md.
      const { NatsTransport, natsOptionsFromUrl } = await import('../transports/nats/index.js');
      return new NatsTransport({
        ...natsOptionsFromUrl(url),
        ...(config.connectTimeoutMs === undefined
          ? {}
          : { connectTimeoutMs: Number(config.connectTimeoutMs) }),
      });
    }
    case 'redis:':
    case 'rediss:': {
      // Loaded on demand; needs the ioredis package (an optional peer dependency). Streams are
      // named by the topic (the default '{topic}' template); docs/transports/redis.md.
      const { RedisStreamsTransport } = await import('../transports/redis/index.js');
      return new RedisStreamsTransport({
        url,
        ...(config.connectTimeoutMs === undefined
          ? {}
          : { connectTimeoutMs: Number(config.connectTimeoutMs) }),
      });
    }
    case 'mqtt:':
    case 'mqtts:': {
      // Loaded on demand; MqttTransport loads the mqtt package (MQTT.js 5) on its first connect and
      // says to install it when it is missing. QoS 1; topics with dots turned into slashes.
      const { MqttTransport } = await import('../transports/mqtt/index.js');
      return new MqttTransport({
        url,
        ...(config.connectTimeoutMs === undefined
          ? {}
          : { connectTimeoutMs: Number(config.connectTimeoutMs) }),
      });
    }
    case 'kafka:':
    case 'kafkas:': {
      // Loaded on demand; kafkajs (optional peer) is loaded when the producer is built.
      const { KafkaTransport } = await import('../transports/kafka/index.js');
      return new KafkaTransport({
        url,
        ...(config.connectTimeoutMs === undefined
          ? {}
          : { connectTimeoutMs: Number(config.connectTimeoutMs) }),
      });
    }
    case 'sqs:': {
      const { SqsTransport } = await import('../transports/aws/index.js');
      return new SqsTransport({ url });
    }
    case 'sns:': {
      const { SnsTransport } = await import('../transports/aws/index.js');
      return new SnsTransport({ url });
    }
    default:
      throw new ConfigError(
        'transport',
        `no transport for scheme "${scheme}" in ${redactUrl(url)}; supported: amqp://, amqps://, stomp://, stomps://, http://, https://, nats://, tls:// (NATS), redis://, rediss://, mqtt://, mqtts://, kafka://, kafkas://, sqs://, sns://`,
      );
  }
}
