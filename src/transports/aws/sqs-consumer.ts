import { groupOf } from '../../core/atomic-group.js';
import { ConfigError } from '../../core/errors/config-error.js';
import { PermanentDeliveryError } from '../../core/errors/permanent-delivery-error.js';
import { TransportError } from '../../core/errors/transport-error.js';
import { ACK_TO_HEADER } from '../../core/message.js';
import { MAILROOM_HEADER_PREFIX } from '../../core/received-message.js';
import type { ReceivedMessage } from '../../core/types.js';
import { isUuid } from '../../core/uuid.js';
import { CoreDrivenConsumer } from '../../consumer/consumer-base.js';
import {
  ConsumerCore,
  handlerRunner,
  type ConsumerBroker,
  type DecodedDelivery,
} from '../../consumer/consumer-core.js';
import {
  ATTEMPT_ATTRIBUTE,
  BODY_ENCODING_ATTRIBUTE,
  CONTENT_TYPE_ATTRIBUTE,
  CREATED_AT_ATTRIBUTE,
  HEADERS_ATTRIBUTE,
  ID_ATTRIBUTE,
  KEY_ATTRIBUTE,
  payloadOf,
  TOPIC_ATTRIBUTE,
  TYPE_ATTRIBUTE,
} from './aws-wire.js';
import type { SqsConsumerEvents } from './sqs-consumer-events.js';
import {
  resolveSqsConsumerOptions,
  type ResolvedSqsConsumerOptions,
  type SqsConsumerOptions,
} from './sqs-consumer-options.js';
import {
  DEAD_ATTRIBUTE,
  openSession,
  SqsCalls,
  type SqsConsumerSession,
  type SqsDelivery,
  type SqsMessage,
} from './sqs-consumer-session.js';

type Started = { queue: string };
type DeadLetterTo = { deadLetterQueue: string };

const DEFAULT_CONTENT_TYPE = 'application/octet-stream';
const JSON_CONTENT_TYPE = /^application\/(?:[\w.-]+\+)?json\s*(?:;|$)/i;
/** Message ids handed to the queue's redrive policy, remembered at most. */
const MAX_REDRIVEN = 10_000;

/**
 * Consumes an Amazon SQS queue of messages sent by Mailroom's `SqsTransport` (or any publisher
 * that sets a UUID `mailroom-id` message attribute) and runs a handler for each, with the shape
 * every Mailroom consumer has ({@link MessageConsumer}): once per message id with an `inbox`,
 * deleted from the queue (`DeleteMessageBatch`) only after the inbox transaction committed;
 * retried in the process with backoff, then dead-lettered; serial per key; receiving again after
 * an outage; draining on stop.
 *
 * It long-polls `ReceiveMessage` (up to 10 messages a call, at most `prefetch` held), extends the
 * visibility of the messages it holds while their handlers run, counts SQS's
 * `ApproximateReceiveCount` as earlier failed deliveries, and sends dead letters to
 * `deadLetterQueueUrl` (confirmed, then deletes) or leaves them to the queue's own redrive policy.
 * Network errors, throttling and 5xx answers are outages (the consumer receives again with
 * backoff), never a message's failure.
 *
 * `start()` looks the queue (and dead-letter queue) up and starts receiving; it throws a
 * `TransportError` (`unreachable`, `destination_missing`, `redrive_missing`) naming the redacted
 * URL. docs/transports/sns-sqs.md.
 *
 * @example
 * ```ts
 * const consumer = new SqsConsumer({
 *   url: 'sqs://eu-west-1/orders.fifo',
 *   inbox,
 *   handler: async (message, tx) => {
 *     await tx.query('insert into shipments (order_id) values ($1)', [message.key]);
 *   },
 * });
 * await consumer.start();
 * // …
 * await consumer.stop();
 * ```
 */
export class SqsConsumer<Tx = undefined> extends CoreDrivenConsumer<SqsConsumerEvents> {
  /** The name of the queue consumed. */
  readonly queue: string;
  readonly #options: Readonly<ResolvedSqsConsumerOptions>;
  readonly #handler: ReturnType<typeof handlerRunner>;
  readonly #calls: SqsCalls;
  /** SQS message ids left to the redrive policy: a copy received again is not run again here. */
  readonly #redriven = new Set<string>();
  /** Where dead letters go (each session decides: the redrive policy or the dead-letter queue). */
  readonly #deadLetterTo: DeadLetterTo;
  protected readonly core: ConsumerCore<SqsConsumerSession, SqsDelivery, Started, DeadLetterTo>;

  constructor(options: SqsConsumerOptions<Tx>) {
    const resolved = resolveSqsConsumerOptions(options);
    super(resolved.logger);
    this.#options = Object.freeze(resolved);
    this.queue = resolved.queue.name;
    this.#deadLetterTo = { deadLetterQueue: resolved.deadLetterQueue.safe };
    this.#handler = handlerRunner(options, ackNeedsInboxError, 'sqs');
    this.#calls = new SqsCalls(this.#options);
    const broker: ConsumerBroker<SqsConsumerSession, SqsDelivery, Started, DeadLetterTo> = {
      source: { queue: this.queue },
      deadLetterTo: this.#deadLetterTo,
      safeUrl: resolved.safeUrl,
      open: async () => {
        this.#calls.reopen();
        const session = await openSession(
          this.#options,
          this.#calls,
          {
            deliver: (delivery) => this.core.deliver(delivery),
            visibilityLost: (delivery, error) => {
              const id = delivery.message.MessageAttributes?.[ID_ATTRIBUTE]?.StringValue ?? null;
              this.logger.warn(
                'visibility of a message held could not be extended; SQS may hand it out again',
                {
                  id,
                  error: error.message,
                },
              );
              this.emit('consumer:visibility:lost', { id, error });
            },
            releaseFailed: (count, error) => {
              this.logger.warn('messages not started could not be made visible again; they come back later', {
                count,
                error: error.message,
              });
              this.emit('consumer:release:failed', { count, error });
            },
          },
          (text, fields) => this.logger.warn(text, fields),
        );
        this.#deadLetterTo.deadLetterQueue =
          session.redrive?.deadLetterTargetArn ?? this.#options.deadLetterQueue.safe;
        return session;
      },
      isOpen: (session) => session.open,
      ended: (session) => session.ended,
      watch: (session, lost) => session.watch(lost),
      close: (session) => session.close(),
      discard: () => {},
      stoppedWhileStarting: () =>
        new TransportError('stopped', `SqsConsumer for ${resolved.safeUrl} was stopped while starting`, {
          details: { url: resolved.safeUrl },
        }),
      beforeDrain: (session) => session.stopPolling(),
      countsLateDeliveries: false,
      decode: (delivery) => this.#decode(delivery),
      run: async (delivery, message) => {
        delivery.state = 'running';
        let status: 'processed' | 'duplicate';
        try {
          status = await this.#handler.run(message);
        } finally {
          if (delivery.state === 'running') delivery.state = 'queued';
        }
        return {
          status,
          acknowledge: async () => {
            await this.#delete(delivery, message.id);
            return 'acked';
          },
        };
      },
      exhausted: (failures) =>
        new Error(`received ${failures + 1} times (ApproximateReceiveCount) without being handled`),
      sendDeadLetter: (delivery, why) => {
        const id = delivery.message.MessageAttributes?.[ID_ATTRIBUTE]?.StringValue ?? null;
        return delivery.session.sendDeadLetter(delivery, id, this.#topicOf(delivery.message), why);
      },
      acknowledgeDead: async (delivery, id) => {
        if (delivery.session.redrive === undefined) return this.#delete(delivery, id);
        // The redrive policy moves it once SQS counted maxReceiveCount receives: visible again now.
        this.#rememberRedriven(delivery.message.MessageId);
        await delivery.session.release([delivery]);
      },
      deadTopic: (delivery, message) => message?.topic ?? this.#topicOf(delivery.message),
    };
    this.core = new ConsumerCore({
      options: resolved,
      broker,
      emit: (event, payload) => this.emit(event, payload as SqsConsumerEvents[typeof event]),
      prune: this.#handler.prune,
    });
  }

  /**
   * Looks the queue up (and the dead letters' way) and starts receiving, as every consumer does
   * (see {@link CoreDrivenConsumer.start}). When it throws, a client the consumer built is
   * destroyed again.
   */
  override async start(): Promise<void> {
    try {
      await super.start();
    } catch (err) {
      if (!this.running) {
        await this.#calls.settle();
        this.#calls.destroy();
      }
      throw err;
    }
  }

  /**
   * Stops as every consumer does (see {@link CoreDrivenConsumer.stop}): receiving ends at once (a
   * long poll under way is aborted), handlers running get `timeoutMs`, messages not started are
   * made visible again; then the calls under way finish (each within `requestTimeoutMs`) and a
   * client the consumer built is destroyed.
   */
  override async stop(options: { timeoutMs?: number } = {}): Promise<void> {
    await super.stop(options);
    if (this.running) return;
    await this.#calls.settle();
    this.#calls.destroy();
  }

  #topicOf(message: SqsMessage): string {
    return message.MessageAttributes?.[TOPIC_ATTRIBUTE]?.StringValue ?? this.queue;
  }

  #decode(delivery: SqsDelivery): DecodedDelivery {
    const decoded = decodeSqsMessage(delivery.message, this.queue);
    if (!decoded.ok) return decoded;
    const sqsId = delivery.message.MessageId;
    if (sqsId !== undefined && this.#redriven.has(sqsId)) {
      // Handed to the redrive policy already: straight back to it, not run again.
      return {
        ...decoded,
        failedBefore: Math.max(decoded.failedBefore ?? 0, this.#options.retry.maxAttempts),
      };
    }
    return decoded;
  }

  #rememberRedriven(sqsId: string | undefined): void {
    if (sqsId === undefined) return;
    this.#redriven.delete(sqsId);
    this.#redriven.add(sqsId);
    if (this.#redriven.size > MAX_REDRIVEN) {
      const oldest = this.#redriven.values().next().value;
      if (oldest !== undefined) this.#redriven.delete(oldest);
    }
  }

  /** DeleteMessage (batched) after the handler's commit; a failure is reported, the copy that comes back is a duplicate. */
  async #delete(delivery: SqsDelivery, id: string | null): Promise<void> {
    const error = await this.#calls.delete(delivery.session.queueUrl, delivery.message.ReceiptHandle ?? '');
    delivery.session.finish(delivery);
    if (error === undefined) return;
    this.logger.warn('DeleteMessage failed; SQS hands the message out again after its visibility timeout', {
      id,
      error: error.message,
    });
    this.emit('consumer:ack:lost', { id, error });
  }
}

/**
 * Decodes a message as `SqsTransport` writes it (aws-wire.ts): the id, topic, key, type, attempt,
 * creation time and content type from their message attributes, the sender's headers from the
 * `mailroom-headers` JSON attribute (plus other String attributes of foreign publishers), the
 * payload from the body and `mailroom-body-encoding`. `failedBefore` is `ApproximateReceiveCount`
 * − 1. Without a UUID `mailroom-id`, or with a body that does not match its content type or
 * encoding, it is malformed (dead-lettered at once).
 */
export function decodeSqsMessage(message: SqsMessage, queue: string): DecodedDelivery {
  const attributes = message.MessageAttributes ?? {};
  const attr = (name: string): string | undefined => attributes[name]?.StringValue;
  const id = attr(ID_ATTRIBUTE) ?? null;
  const where = `SQS message ${message.MessageId ?? '(no MessageId)'} on queue ${JSON.stringify(queue)}`;
  if (id === null || id === '') {
    return malformed(
      null,
      `${where} has no ${ID_ATTRIBUTE} message attribute, so its copies cannot be recognised as one message; ` +
        `the publisher must set ${ID_ATTRIBUTE} to a UUID (SqsTransport does)`,
      ID_ATTRIBUTE,
    );
  }
  if (!isUuid(id)) {
    return malformed(
      id,
      `${ID_ATTRIBUTE} ${JSON.stringify(id)} of ${where} is not a UUID; the publisher must set it to the message's UUID ` +
        '(SqsTransport does)',
      ID_ATTRIBUTE,
    );
  }
  const encoding = attr(BODY_ENCODING_ATTRIBUTE);
  if (encoding !== undefined && encoding !== 'base64' && encoding !== 'empty') {
    return malformed(
      id,
      `message ${id} (${where}) has ${BODY_ENCODING_ATTRIBUTE} ${JSON.stringify(encoding)}; expected base64 or empty`,
      BODY_ENCODING_ATTRIBUTE,
    );
  }
  const body = payloadOf(message.Body ?? '', encoding);
  const contentType = attr(CONTENT_TYPE_ATTRIBUTE) ?? DEFAULT_CONTENT_TYPE;
  let payload: unknown = body;
  if (JSON_CONTENT_TYPE.test(contentType)) {
    try {
      payload = JSON.parse(body.toString('utf8'));
    } catch (err) {
      return malformed(
        id,
        `message ${id} (${where}) has content type ${JSON.stringify(contentType)} but its body is not JSON ` +
          `(${err instanceof Error ? err.message : String(err)}); the publisher must send JSON, or another content type`,
        'body',
        err,
      );
    }
  }
  let sent: Record<string, string> = {};
  const headersText = attr(HEADERS_ATTRIBUTE);
  if (headersText !== undefined) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(headersText);
    } catch {
      parsed = undefined;
    }
    if (
      typeof parsed !== 'object' ||
      parsed === null ||
      Array.isArray(parsed) ||
      Object.values(parsed).some((v) => typeof v !== 'string')
    ) {
      return malformed(
        id,
        `message ${id} (${where}) has a ${HEADERS_ATTRIBUTE} attribute that is not a JSON object of strings`,
        HEADERS_ATTRIBUTE,
      );
    }
    sent = parsed as Record<string, string>;
  }
  const headers: Record<string, string> = {};
  const mailroom: Record<string, string> = {};
  // String attributes of other publishers are headers too.
  for (const [name, value] of Object.entries(attributes)) {
    if (name.startsWith(MAILROOM_HEADER_PREFIX) || name === CONTENT_TYPE_ATTRIBUTE || name === DEAD_ATTRIBUTE)
      continue;
    if (value.StringValue !== undefined) headers[name] = value.StringValue;
  }
  for (const [name, value] of Object.entries(sent)) {
    if (name.startsWith(MAILROOM_HEADER_PREFIX)) mailroom[name] = value;
    else headers[name] = value;
  }
  const createdText = attr(CREATED_AT_ATTRIBUTE);
  const created = createdText === undefined ? null : new Date(createdText);
  const attemptText = attr(ATTEMPT_ATTRIBUTE) ?? '';
  const receiveCount = Number(message.Attributes?.ApproximateReceiveCount);
  const received: ReceivedMessage = {
    id,
    topic: attr(TOPIC_ATTRIBUTE) ?? queue,
    key: attr(KEY_ATTRIBUTE) ?? null,
    type: attr(TYPE_ATTRIBUTE) ?? null,
    headers,
    contentType,
    body,
    payload,
    ackTo: mailroom[ACK_TO_HEADER] || null,
    attempt: /^[1-9]\d{0,8}$/.test(attemptText) ? Number(attemptText) : 1,
    createdAt: created !== null && !Number.isNaN(created.getTime()) ? created : null,
    group: groupOf(mailroom),
  };
  return {
    ok: true,
    message: received,
    ...(Number.isInteger(receiveCount) && receiveCount > 1 ? { failedBefore: receiveCount - 1 } : {}),
  };
}

function malformed(id: string | null, text: string, field: string, cause?: unknown): DecodedDelivery {
  const error = new PermanentDeliveryError(text, {
    ...(cause === undefined ? {} : { cause }),
    details: { reason: 'malformed', field, messageId: id },
  });
  return { ok: false, error, id };
}

/** `context.ack()` on a consumer without an inbox. */
function ackNeedsInboxError(messageId: string): ConfigError {
  return new ConfigError(
    'inbox',
    `context.ack() for message ${messageId} needs an inbox: an acknowledgement is enqueued in the inbox ` +
      'transaction; give the SqsConsumer an inbox, or do not acknowledge from this handler',
  );
}
