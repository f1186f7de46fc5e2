import { ConfigError } from '../core/errors/config-error.js';
import type { Transport } from '../core/ports.js';
import { redactUrl } from '../core/redact.js';
import { PostgresStore } from '../stores/postgres/postgres-store.js';
import type { ResolvedConfig } from './options.js';

/**
 * Opens the store the database URL names. Only PostgreSQL for now; the scheme picks the store.
 * `poolSize` defaults to 4; the relay asks for one per batch in flight plus two (claim, leases).
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
      });
    }
    default:
      throw new ConfigError(
        'transport',
        `no transport for scheme "${scheme}" in ${redactUrl(url)}; supported: amqp://, amqps://`,
      );
  }
}
