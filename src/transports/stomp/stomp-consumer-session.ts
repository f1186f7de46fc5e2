/**
 * The consumer's connection: logged in, subscribed with client-individual acknowledgements, and
 * the frames the consumer sends on it (ACK, dead letters, transactions).
 *
 * @module
 */
import { newTransactionId } from '../../core/broker-transaction.js';
import { TransportError } from '../../core/errors/transport-error.js';
import type { DeadLetterReason } from '../../consumer/consumer-events.js';
import { MAILROOM_HEADER_PREFIX } from '../../core/received-message.js';
import { StompConnection, type Request } from './stomp-connection.js';
import type { ResolvedStompConsumerOptions } from './stomp-consumer-options.js';
import { connectionLostError, describe, isStompRefusal } from './stomp-errors.js';
import type { HeaderList, StompFrame } from './stomp-frame.js';
import { settledBefore } from './stomp-publish.js';
import { RESERVED_HEADERS, TOPIC_HEADER } from './stomp-wire.js';

/** The subscription id the consumer uses on each of its connections. */
const SUBSCRIPTION_ID = 'mailroom-consumer';

/** Cut the error header to this many characters, as the RabbitMQ consumer does. */
export const MAX_ERROR_HEADER_CHARS = 1000;

/** Headers a dead letter gets, named as the RabbitMQ consumer's. */
export const ERROR_HEADER = 'mailroom-error';
export const FAILED_ATTEMPTS_HEADER = 'mailroom-failed-attempts';
export const DEAD_AT_HEADER = 'mailroom-dead-at';
export const DEAD_REASON_HEADER = 'mailroom-dead-reason';
/** The destination the message was consumed from. */
export const DEAD_QUEUE_HEADER = 'mailroom-dead-queue';
export const DEAD_TOPIC_HEADER = 'mailroom-dead-topic';

/** One connection with its subscription; replaced as a whole when it ends. */
export interface ConsumerSession {
  readonly connection: StompConnection;
}

export type { DeadLetterReason };

/**
 * Connects, logs in and subscribes (waiting for the SUBSCRIBE's receipt, so a refused destination
 * fails here). `onMessage` gets every MESSAGE with its session.
 */
export async function openConsumerSession(
  options: Readonly<ResolvedStompConsumerOptions>,
  onMessage: (session: ConsumerSession, frame: StompFrame) => void,
): Promise<ConsumerSession> {
  const holder: { session?: ConsumerSession } = {};
  const pending: StompFrame[] = [];
  const connection = await StompConnection.open({
    endpoint: options.endpoint,
    tls: options.tls,
    connectTimeoutMs: options.connectTimeoutMs,
    heartbeatMs: options.heartbeatMs,
    maxFrameBytes: options.maxMessageBytes,
    onMessage: (frame) => (holder.session ? onMessage(holder.session, frame) : pending.push(frame)),
  });
  const session: ConsumerSession = { connection };
  const { safeUrl } = options.endpoint;
  const request = connection.request('SUBSCRIBE', [
    ['id', SUBSCRIPTION_ID],
    ['destination', options.destination],
    ['ack', 'client-individual'],
    ['prefetch-count', String(options.prefetch)], // RabbitMQ
    ['activemq.prefetchSize', String(options.prefetch)], // ActiveMQ
  ]);
  const deadline = AbortSignal.timeout(options.connectTimeoutMs);
  try {
    if (!(await settledBefore(request.answered, deadline))) {
      throw new TransportError(
        'subscribe_failed',
        `the STOMP broker at ${safeUrl} did not answer SUBSCRIBE to ${JSON.stringify(options.destination)} ` +
          `within ${options.connectTimeoutMs} ms (connectTimeoutMs)`,
        { details: { url: safeUrl, destination: options.destination } },
      );
    }
    await request.answered;
  } catch (err) {
    connection.destroy(err instanceof Error ? err : new Error(String(err)));
    if (isStompRefusal(err)) {
      throw new TransportError(
        'subscribe_failed',
        `the STOMP broker at ${safeUrl} refused to subscribe to ${JSON.stringify(options.destination)}: ` +
          `${err.brokerMessage}; check the destination and that the user may read it`,
        { cause: err, details: { url: safeUrl, destination: options.destination } },
      );
    }
    throw err;
  }
  holder.session = session;
  for (const frame of pending) onMessage(session, frame);
  return session;
}

/** The id a MESSAGE is acknowledged by (STOMP 1.2: its `ack` header). */
export function ackIdOf(frame: StompFrame): string | undefined {
  return frame.headers['ack'] ?? frame.headers['message-id'];
}

/** ACK of one message, in a transaction when given. Resolves once written; rejects when the connection is gone. */
export function sendAck(session: ConsumerSession, frame: StompFrame, transaction?: string): Promise<void> {
  const id = ackIdOf(frame);
  if (id === undefined) return Promise.reject(new Error('the MESSAGE frame has no ack header'));
  const headers: Array<[string, string]> = [['id', id]];
  if (transaction !== undefined) headers.push(['transaction', transaction]);
  return session.connection.send('ACK', headers);
}

/** The headers of a dead letter: the original's own (not the broker's), plus why it died. */
export function deadLetterHeaders(
  frame: StompFrame,
  destination: string,
  deadLetterDestination: string,
  why: DeadLetterReason,
): HeaderList {
  const headers: Array<[string, string]> = [
    ['destination', deadLetterDestination],
    ['persistent', 'true'],
  ];
  const contentType = frame.headers['content-type'];
  if (contentType !== undefined) headers.push(['content-type', contentType]);
  for (const [name, value] of Object.entries(frame.headers)) {
    if (RESERVED_HEADERS.has(name) || name === 'timestamp') continue;
    if (
      name.startsWith(`${MAILROOM_HEADER_PREFIX}dead-`) ||
      name === ERROR_HEADER ||
      name === FAILED_ATTEMPTS_HEADER
    ) {
      continue;
    }
    headers.push([name, value]);
  }
  headers.push(
    [ERROR_HEADER, why.error.message.replaceAll('\0', '').slice(0, MAX_ERROR_HEADER_CHARS)],
    [FAILED_ATTEMPTS_HEADER, String(why.failedAttempts)],
    [DEAD_AT_HEADER, new Date().toISOString()],
    [DEAD_REASON_HEADER, why.reason],
    [DEAD_QUEUE_HEADER, destination],
    [DEAD_TOPIC_HEADER, frame.headers[TOPIC_HEADER] ?? frame.headers['destination'] ?? destination],
  );
  return headers;
}

/**
 * Sends the dead letter with a receipt and waits for it (at most `receiptTimeoutMs`); throws a
 * `TransportError` `dead_letter_failed` otherwise. The caller acknowledges the original after.
 */
export async function sendDeadLetter(
  session: ConsumerSession,
  frame: StompFrame,
  options: Readonly<ResolvedStompConsumerOptions>,
  why: DeadLetterReason,
): Promise<void> {
  const headers = deadLetterHeaders(frame, options.destination, options.deadLetterDestination, why);
  const request = session.connection.request('SEND', headers, frame.body);
  const deadline = AbortSignal.timeout(options.receiptTimeoutMs);
  let failure: string | undefined;
  if (!(await settledBefore(request.answered, deadline))) {
    failure = `no RECEIPT within ${options.receiptTimeoutMs} ms (receiptTimeoutMs)`;
  } else {
    await request.answered.catch((err: unknown) => {
      failure = describe(err);
    });
  }
  if (failure !== undefined) {
    throw new TransportError(
      'dead_letter_failed',
      `could not dead-letter message ${frame.headers['mailroom-id'] ?? '(no mailroom-id)'} to ` +
        `${JSON.stringify(options.deadLetterDestination)}: ${failure}; the message stays unacknowledged and is ` +
        'dead-lettered again after a pause (or redelivered, if the connection was lost)',
      { details: { deadLetterDestination: options.deadLetterDestination } },
    );
  }
}

/** A broker transaction on the consumer's connection, for transacted receive. */
export class ReceiveTransaction {
  readonly id = newTransactionId();
  constructor(
    private readonly session: ConsumerSession,
    private readonly options: Readonly<ResolvedStompConsumerOptions>,
  ) {}

  begin(): Promise<void> {
    return this.session.connection.send('BEGIN', [['transaction', this.id]]);
  }

  /** The transaction's SENDs, whose RECEIPTs commit() waits for (RabbitMQ: once confirmed). */
  readonly #sends: Request[] = [];

  send(headers: HeaderList, body: Buffer): Promise<void> {
    const request = this.session.connection.request('SEND', [...headers, ['transaction', this.id]], body);
    this.#sends.push(request);
    return request.written;
  }

  ack(frame: StompFrame): Promise<void> {
    return sendAck(this.session, frame, this.id);
  }

  /** COMMIT with a receipt; throws when the broker refused it, the connection ended or no RECEIPT came in time. */
  async commit(): Promise<void> {
    const connection = this.session.connection;
    const request = connection.request('COMMIT', [['transaction', this.id]]);
    const all = Promise.all([request.answered, ...this.#sends.map((r) => r.answered)]);
    const deadline = AbortSignal.timeout(this.options.receiptTimeoutMs);
    if (!(await settledBefore(all, deadline))) {
      const error = connectionLostError(
        this.options.endpoint.safeUrl,
        'no RECEIPT for COMMIT in time; dropped',
      );
      connection.destroy(error);
      throw error;
    }
    await all;
  }

  /**
   * ABORT. The handler's failure is what the caller reports; the ABORT's RECEIPT only says that
   * the SENDs' RECEIPTs still missing will never come (RabbitMQ answers a transaction's SENDs when
   * it publishes them at COMMIT), so the waits for them end. Without it, the connection's state is
   * unknown: it is dropped (which aborts the transaction; the broker redelivers the input).
   */
  abort(): void {
    const { answered } = this.session.connection.request('ABORT', [['transaction', this.id]]);
    const deadline = AbortSignal.timeout(this.options.receiptTimeoutMs);
    void settledBefore(answered, deadline).then(async (settled) => {
      const ok =
        settled &&
        (await answered.then(
          () => true,
          () => false,
        ));
      if (ok) for (const send of this.#sends) send.cancel();
      else {
        this.session.connection.destroy(
          connectionLostError(this.options.endpoint.safeUrl, 'ABORT was not answered'),
        );
      }
    });
  }
}
