/**
 * The consumer's connection: one AMQP connection with a channel to consume from and a confirm
 * channel for dead letters (a "session"), the queues, exchange and bindings declared, the
 * consumer registered. Replaced as a whole when any part of it dies.
 *
 * @module
 */
import { ConfigError } from '../../core/errors/config-error.js';
import { loadAmqplibConnect, txMethods } from './amqp-client.js';
import {
  canPublish,
  isConsumerConnection,
  type AmqpConsumeChannel,
  type AmqpConsumerConnect,
  type AmqpConsumerConnection,
  type AmqpDeadLetterChannel,
  type AmqpDelivery,
} from './amqp-consumer-client.js';
import {
  connectionLostError,
  consumeRefusedError,
  consumerCancelledError,
  consumerChannelError,
  consumerStoppedError,
  declareRefusedError,
  type DeclaredThing,
} from './rabbitmq-consumer-errors.js';
import type { ResolvedRabbitMqConsumerOptions } from './rabbitmq-consumer-options.js';
import { DeadLetterPublisher } from './rabbitmq-dead-letter.js';
import { connectError, connectTimeoutError } from './rabbitmq-errors.js';
import { TransactedAcks } from './rabbitmq-transacted-receive.js';
import { TxChannel } from './rabbitmq-tx-channel.js';

/** One connection with its two channels; replaced as a whole when any of them dies. */
export interface ConsumerSession {
  readonly connection: AmqpConsumerConnection;
  readonly channel: AmqpConsumeChannel;
  readonly deadLetters: DeadLetterPublisher;
  /**
   * Transacted receive (`transacted: true`): the consume channel is in transaction mode, and
   * every acknowledgement goes through this, committed with the outputs of its run.
   */
  readonly transactions: TransactedAcks | undefined;
  /** Set once `basic.consume` answered. */
  consumerTag: string | undefined;
  /** False once the connection or a channel closed, or the consumer closed the session. */
  open: boolean;
  /** Aborted when the session ends: retries waiting on its deliveries stop waiting. */
  readonly ended: AbortController;
}

/** What the session tells its owner. */
export interface SessionHooks {
  /** A delivery arrived on the session's channel. */
  onDelivery(session: ConsumerSession, delivery: AmqpDelivery): void;
  /** The session ended without being closed by its owner; `error` says why. */
  onLost(session: ConsumerSession, error: Error): void;
}

/**
 * How long closing a connection may wait for the broker's close-ok before its socket is
 * destroyed: a broker that does not answer must not hold up stop() or keep the process alive.
 */
const CLOSE_HANDSHAKE_MS = 2000;

/**
 * Opens a session within `connectTimeoutMs` (connect, handshake, channels, declarations and
 * `basic.consume` together). `cancelled()` true when the connect finishes means the owner was
 * stopped meanwhile: the session is closed and a `closed` error thrown.
 */
export function openConsumerSession(
  options: Readonly<ResolvedRabbitMqConsumerOptions>,
  hooks: SessionHooks,
  cancelled: () => boolean,
): Promise<ConsumerSession> {
  const { connectTimeoutMs, safeUrl } = options;
  return new Promise<ConsumerSession>((resolve, reject) => {
    let expired = false;
    const timer = setTimeout(() => {
      expired = true;
      reject(connectTimeoutError(safeUrl, connectTimeoutMs));
    }, connectTimeoutMs);
    connectOnce(options, hooks).then(
      (session) => {
        clearTimeout(timer);
        if (expired) {
          void closeConsumerSession(session);
        } else if (cancelled()) {
          void closeConsumerSession(session);
          reject(consumerStoppedError(safeUrl, options.queue));
        } else {
          resolve(session);
        }
      },
      (err: unknown) => {
        clearTimeout(timer);
        reject(err);
      },
    );
  });
}

/** Ends the session: closes its connection (and so its channels). Never rejects. */
export async function closeConsumerSession(session: ConsumerSession): Promise<void> {
  const wasOpen = session.open;
  session.open = false;
  session.ended.abort();
  if (wasOpen) {
    // The consume channel first, and waiting for its close-ok: amqplib interleaves the frames of
    // its channels, so a connection.close could reach the broker before acks still buffered on
    // the channel, and the broker would redeliver messages that were handled. A channel's close
    // comes after its own acks.
    await bounded(session.channel.close());
  }
  await releaseConnection(session.connection);
}

/** True when `promise` settled (either way) within {@link CLOSE_HANDSHAKE_MS}. */
async function bounded(promise: Promise<unknown>): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const answered = await Promise.race([
    promise.then(
      () => true,
      () => true, // already closed: nothing left to release
    ),
    new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), CLOSE_HANDSHAKE_MS))),
  ]);
  clearTimeout(timer);
  return answered;
}

/**
 * Closes the connection within {@link CLOSE_HANDSHAKE_MS}, then makes sure its socket is gone.
 * Never rejects.
 */
async function releaseConnection(connection: AmqpConsumerConnection): Promise<void> {
  if (!(await bounded(connection.close()))) {
    destroySocket(connection, `mailroom: RabbitMQ sent no close-ok within ${CLOSE_HANDSHAKE_MS} ms`);
  }
}

/**
 * Destroys the socket under an amqplib connection (`connection.stream`) for a close the broker
 * did not answer (as the transport's session does): amqplib would wait for close-ok forever.
 */
function destroySocket(connection: AmqpConsumerConnection, reason: string): void {
  const inner: unknown = connection.connection;
  if (typeof inner !== 'object' || inner === null || !('stream' in inner)) return;
  const stream = inner.stream as { destroyed?: unknown; destroy?: unknown } | null;
  if (typeof stream?.destroy !== 'function' || stream.destroyed === true) return;
  (stream.destroy as (err: Error) => void).call(stream, new Error(reason));
}

async function loadConnect(): Promise<AmqpConsumerConnect> {
  const connect = await loadAmqplibConnect();
  return async (url, socketOptions) => {
    const connection: unknown = await connect(url, socketOptions);
    if (isConsumerConnection(connection)) return connection;
    throw new ConfigError(
      'connect',
      'the installed amqplib connection has no createChannel/createConfirmChannel; install amqplib ' +
        '0.10 or later, or pass your own `connect` function',
    );
  };
}

async function connectOnce(
  options: Readonly<ResolvedRabbitMqConsumerOptions>,
  hooks: SessionHooks,
): Promise<ConsumerSession> {
  const connect = options.connect ?? (await loadConnect());
  const userProperties = (options.socketOptions['clientProperties'] ?? {}) as Record<string, unknown>;
  const socketOptions = {
    // A second past our deadline, which then fires first (see the transport's session).
    timeout: options.connectTimeoutMs + 1000,
    noDelay: true, // acks are small writes; see the transport's session for why Nagle hurts
    ...options.socketOptions,
    clientProperties: { connection_name: `mailroom-consumer ${options.queue}`, ...userProperties },
  };
  let connection: AmqpConsumerConnection;
  try {
    connection = await connect(options.url, socketOptions);
  } catch (err) {
    throw connectError(err, options.url, options.safeUrl, options.connectTimeoutMs);
  }

  // Listeners first: an 'error' without a listener would crash the process. The session does
  // not exist yet; 'close' reaches it through `opened` once it does.
  let lostReason: Error | undefined;
  /** The connection closed (not only a channel, as a refused declaration does). */
  let closed = false;
  const opened: { session?: ConsumerSession } = {};
  const end = (reason: Error | undefined): void => {
    const session = opened.session;
    if (!session?.open) return;
    session.open = false;
    session.ended.abort();
    hooks.onLost(session, reason ?? connectionLostError(options.safeUrl, lostReason));
  };
  connection.on('error', (err) => {
    lostReason ??= err;
  });
  connection.on('close', (err) => {
    if (err) lostReason ??= err;
    closed = true;
    end(undefined);
  });

  const fail = async (error: Error): Promise<never> => {
    if (opened.session) opened.session.open = false;
    await releaseConnection(connection);
    throw error;
  };

  let channel: AmqpConsumeChannel;
  let confirm: AmqpDeadLetterChannel;
  try {
    channel = await connection.createChannel();
    confirm = await connection.createConfirmChannel();
  } catch (err) {
    return fail(
      closed ? connectionLostError(options.safeUrl, lostReason) : consumerChannelError(options.safeUrl, err),
    );
  }
  for (const ch of [channel, confirm]) {
    // A channel error (a refused declaration, an ack of an unknown tag) closes that channel
    // only; the session is replaced whole, so the connection goes too.
    ch.on('error', (err) => {
      lostReason ??= err;
    });
    ch.on('close', () => end(undefined));
  }
  let transactions: TransactedAcks | undefined;
  if (options.transacted) {
    if (!canPublish(channel)) {
      return fail(
        new ConfigError(
          'transacted',
          "transacted: true needs a consume channel that can publish (amqplib's Channel can); the " +
            'connection your connect function returned gives channels without publish()',
        ),
      );
    }
    const tx = new TxChannel({
      channel,
      methods: txMethods(channel),
      safeUrl: options.safeUrl,
      exchange: options.exchange,
      connectionClosed: () => closed,
      connectionLost: () => lostReason,
    });
    try {
      // Before basic.consume: every acknowledgement on this channel is then transactional.
      await tx.select();
    } catch (err) {
      return fail(
        closed
          ? connectionLostError(options.safeUrl, lostReason)
          : consumerChannelError(options.safeUrl, err),
      );
    }
    transactions = new TransactedAcks({
      channel,
      tx,
      commitTimeoutMs: options.commitTimeoutMs,
      // The broker did not answer a commit: replace the session (the 'close' ends it).
      onStalled: () => void releaseConnection(connection),
    });
  }
  const session: ConsumerSession = {
    connection,
    channel,
    deadLetters: new DeadLetterPublisher(confirm, options.deadLetterQueue),
    transactions,
    consumerTag: undefined,
    open: !closed,
    ended: new AbortController(),
  };
  opened.session = session;

  if (options.declare) {
    const step = async (thing: DeclaredThing, run: () => Promise<unknown>): Promise<void> => {
      try {
        await run();
      } catch (err) {
        await fail(
          closed
            ? connectionLostError(options.safeUrl, lostReason)
            : declareRefusedError(options.safeUrl, thing, err),
        );
      }
    };
    const { exchange, exchangeType, queue, deadLetterQueue, queueArguments } = options;
    if (exchange !== '') {
      await step({ kind: 'exchange', name: exchange, type: exchangeType }, () =>
        channel.assertExchange(exchange, exchangeType, { durable: true }),
      );
    }
    await step({ kind: 'queue', name: queue }, () =>
      channel.assertQueue(queue, { durable: true, arguments: queueArguments }),
    );
    await step({ kind: 'dead-letter queue', name: deadLetterQueue }, () =>
      channel.assertQueue(deadLetterQueue, { durable: true }),
    );
    for (const pattern of options.bindings) {
      await step({ kind: 'binding', name: queue, exchange, pattern }, () =>
        channel.bindQueue(queue, exchange, pattern),
      );
    }
  }
  try {
    await channel.prefetch(options.prefetch);
    const { consumerTag } = await channel.consume(
      options.queue,
      (delivery) => {
        if (delivery !== null) {
          hooks.onDelivery(session, delivery);
        } else if (session.open) {
          // basic.cancel from the broker: nothing more comes on this channel.
          session.open = false;
          session.ended.abort();
          hooks.onLost(session, consumerCancelledError(options.safeUrl, options.queue));
        }
      },
      { noAck: false },
    );
    session.consumerTag = consumerTag;
  } catch (err) {
    return fail(
      closed
        ? connectionLostError(options.safeUrl, lostReason)
        : consumeRefusedError(options.safeUrl, options.queue, err),
    );
  }
  if (!session.open) return fail(connectionLostError(options.safeUrl, lostReason));
  return session;
}
