import { redactSecrets, redactUrl } from '../../core/redact.js';
import { loadAmqplibConnect } from '../../transports/rabbitmq/amqp-client.js';
import { openTransport } from '../connect.js';
import type { ResolvedConfig } from '../options.js';
import { check, errorText, skip, type DoctorCheck } from './check.js';

/** Longest the broker checks wait for an answer. */
const BROKER_DEADLINE_MS = 10_000;

/** Topics dead-lettered as unroutable, from the outbox's dead letters (PostgreSQL). */
export interface UnroutableTopic {
  topic: string;
  count: number;
  lastAt: string;
  error: string;
}

function withDeadline<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

const isAmqp = (url: string): boolean => /^amqps?:/i.test(url);

/**
 * Opens the transport `--transport` names and probes it (connects; the broker accepts
 * publishes), without declaring anything: `fail` when it cannot, `skip` without `--transport`.
 */
export async function transportCheck(config: ResolvedConfig): Promise<DoctorCheck> {
  if (config.transport === undefined) {
    return skip('transport', 'no --transport given: the broker was not checked');
  }
  const url = String(config.transport);
  const shown = redactUrl(url);
  let transport: Awaited<ReturnType<typeof openTransport>>;
  try {
    // Checks create nothing: the exchange is looked at by the bindings check, passively.
    transport = await openTransport({ ...config, declareExchange: false });
  } catch (err) {
    return check('transport', 'fail', `cannot use --transport ${shown}: ${redactSecrets(errorText(err))}`, {
      fix: ['give a URL the relay could use, e.g. amqp://user:password@host:5672/vhost'],
    });
  }
  const abort = new AbortController();
  const started = performance.now();
  try {
    await withDeadline(transport.probe({ signal: abort.signal }), BROKER_DEADLINE_MS, `probe of ${shown}`);
    const ms = Math.round(performance.now() - started);
    return check('transport', 'ok', `${transport.name} at ${shown} accepts publishes (probe ${ms} ms)`);
  } catch (err) {
    abort.abort();
    return check(
      'transport',
      'fail',
      `${transport.name} at ${shown} is unreachable: ${redactSecrets(errorText(err))}`,
      {
        fix: [
          'check that the broker runs and that this host reaches it (host, port, TLS, user and password, vhost)',
          'relays pause their claims while it is down and resume by themselves: nothing is lost',
        ],
      },
    );
  } finally {
    await withDeadline(transport.close(), 5000, 'closing the transport').catch(() => undefined);
  }
}

/**
 * RabbitMQ bindings: topics whose messages came back unroutable (nobody is bound to receive
 * them) and, with an `amqp://` `--transport`, whether the exchange exists (a passive check).
 * amqplib cannot list bindings; the management API is not used.
 */
export async function bindingsCheck(
  config: ResolvedConfig,
  unroutable: UnroutableTopic[] | null,
): Promise<DoctorCheck> {
  const url = config.transport === undefined ? undefined : String(config.transport);
  const amqp = url !== undefined && isAmqp(url);
  if (url === undefined && unroutable === null) {
    return skip('bindings', 'no --transport given and no dead letters to read');
  }
  if (url !== undefined && !amqp && (unroutable === null || unroutable.length === 0)) {
    return skip('bindings', 'RabbitMQ only (--transport is not amqp://)');
  }
  const exchange = String(config.exchange ?? 'mailroom');
  const detail: string[] = [];
  const fix: string[] = [];
  let status: DoctorCheck['status'] = 'ok';
  const parts: string[] = [];
  if (amqp) {
    const exists = await exchangeExists(url, exchange);
    if (exists === false) {
      status = 'fail';
      parts.push(`exchange "${exchange}" does not exist`);
      fix.push(
        `create it (rabbitmqadmin declare exchange name=${exchange} type=topic durable=true), or start a relay with --declare-exchange`,
      );
    } else if (typeof exists === 'string') {
      detail.push(`exchange "${exchange}" not checked: ${exists}`);
    } else {
      parts.push(`exchange "${exchange}" exists`);
    }
  }
  if (unroutable === null) {
    detail.push('dead letters not read (the schema is not migrated, or this store keeps none to read here)');
  } else if (unroutable.length > 0) {
    if (status === 'ok') status = 'warn';
    for (const t of unroutable) {
      parts.push(`nobody is bound to topic ${t.topic}`);
      detail.push(
        `topic ${t.topic}: ${t.count} message(s) dead-lettered as unroutable in the last day (last ${t.lastAt}): ${t.error}`,
      );
      fix.push(
        `bind a queue to exchange ${exchange} with routing key ${t.topic} (rabbitmqadmin declare binding source=${exchange} destination=QUEUE routing_key=${t.topic}), then: mailroom dlq replay --topic ${t.topic}`,
      );
    }
  } else {
    parts.push('no message dead-lettered as unroutable in the last day');
  }
  if (url === undefined && unroutable !== null && unroutable.length === 0) {
    return check('bindings', 'ok', parts.join('; '), {
      detail: ['give --transport amqp://… to also check that the exchange exists'],
    });
  }
  return check('bindings', status, parts.join('; '), { detail, fix });
}

/** True or false; a string says why it could not be told. */
async function exchangeExists(url: string, exchange: string): Promise<boolean | string> {
  let connection: { close(): Promise<void>; createChannel?: () => Promise<unknown> } | undefined;
  try {
    const connect = await loadAmqplibConnect();
    connection = (await withDeadline(
      connect(url, { timeout: BROKER_DEADLINE_MS }),
      BROKER_DEADLINE_MS,
      'connecting to RabbitMQ',
    )) as unknown as typeof connection;
    (connection as unknown as { on(e: string, l: () => void): void }).on('error', () => undefined);
    const channel = (await connection?.createChannel?.()) as
      { checkExchange(name: string): Promise<unknown>; on(e: string, l: () => void): void } | undefined;
    if (!channel) return 'the connection opens no plain channel';
    channel.on('error', () => undefined);
    try {
      await withDeadline(channel.checkExchange(exchange), BROKER_DEADLINE_MS, 'checking the exchange');
      return true;
    } catch (err) {
      return /NOT_FOUND|404/.test(errorText(err)) ? false : redactSecrets(errorText(err));
    }
  } catch (err) {
    return `RabbitMQ unreachable (${redactSecrets(errorText(err))})`;
  } finally {
    await connection?.close().catch(() => undefined);
  }
}
