/**
 * Terminology
 *
 * - **message**: what a service wants another system to learn. It has a stable `id` (UUIDv7),
 *   a `topic` (where it goes), an optional `key` (what it is about; messages with the same key
 *   are delivered in order), an optional `type`, a payload (JSON or bytes) and string headers.
 * - **outbox**: the table in the producer's database that holds messages written inside
 *   business transactions, until the relay has delivered them.
 * - **store**: an adapter to that database (PostgreSQL, PGlite, …). It enqueues, claims and
 *   settles rows. Implements {@link OutboxStore}.
 * - **transport**: an adapter to a broker or endpoint (RabbitMQ, memory, …). It publishes a
 *   batch and reports an outcome per message. Implements {@link Transport}.
 * - **relay**: the worker that claims messages from the store, publishes them through the
 *   transport and settles them.
 * - **claim**: take a batch of due messages under a lease, so no other relay takes them.
 * - **lease**: a claim's expiry time, on the database clock. A relay that dies loses its
 *   leases when they run out and another relay takes the messages.
 * - **settle**: after the transport answered: delete (or archive) delivered messages,
 *   schedule a retry for failed ones, or dead-letter them.
 * - **dead letter**: a message that failed permanently or ran out of attempts. Kept with its
 *   last error; it can be listed, replayed into the outbox or purged.
 * - **wake-up**: how the relay learns there is work: polling, or a notification sent by the
 *   enqueueing transaction at commit (PostgreSQL NOTIFY).
 *
 * @module
 */

/** Any value `JSON.stringify` turns into JSON without loss. */
export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

/** A message as application code hands it to `enqueue`. */
export interface MessageInput {
  /** Stable id, carried to the broker and to consumers. @default a new UUIDv7 */
  id?: string;
  /** Where the message goes (RabbitMQ: the routing key). 1–255 bytes, no control characters. */
  topic: string;
  /**
   * What the message is about (an order id, an account id…). Messages with the same key are
   * delivered in commit order; messages without a key are delivered in parallel. At most 1 KiB.
   */
  key?: string | null;
  /** Message type, for consumers that dispatch on it (`order.created`). */
  type?: string | null;
  /** A JSON value, or bytes. JSON is stored as UTF-8 text exactly as serialised. */
  payload: unknown;
  /**
   * Content type of the payload.
   * @default 'application/json' for JSON payloads, 'application/octet-stream' for bytes
   */
  contentType?: string;
  /** String headers carried with the message. Names: 1–255 bytes, printable. */
  headers?: Record<string, string>;
  /**
   * Deliver no earlier than this many milliseconds after the enqueueing transaction (on the
   * database clock). At most 365 days (`MAX_DELAY_MS`); more, a negative or a non-number value
   * is an `InvalidMessageError` and nothing is written. A delayed message with a key holds back
   * the later messages of its key until it is due and delivered: per-key order wins over the
   * delay.
   *
   * @default 0
   * @example { topic: 'reminder', key: userId, payload, delayMs: 15 * 60_000 }
   */
  delayMs?: number;
  /**
   * Acknowledged delivery (docs/acknowledged-delivery.md): after the transport confirmed, the
   * message waits for the receiving service to acknowledge it (from `inbox.handle`, or over
   * HTTP), is resent with the same id when no acknowledgement comes in time, and expires after
   * `maxResends` resends. `outbox.status(id)` and `outbox.waitFor(id)` follow it.
   *
   * @example { topic: 'payment.requested', key: orderId, payload, ack: { timeoutMs: 30_000, maxResends: 3, onExpire: 'payment.cancelled' } }
   */
  ack?: AckRequest;
  /**
   * Tell a URL the outcome of this message (`delivered`, `acknowledged`, `expired`, `dead`): the
   * relay POSTs it there, signed with Standard Webhooks headers, with retries of its own that
   * never hold up messages. The relay needs a signing secret (`callbacks.secret`).
   *
   * @example { callback: { url: 'https://orders.internal/hooks/mailroom' } }
   */
  callback?: CallbackRequest;
}

/** What `ack` on a message asks for. */
export interface AckRequest {
  /**
   * How long after the transport confirmed a delivery the receiver has to acknowledge it before
   * the message is resent (or expires). 1 s to 365 days.
   */
  timeoutMs: number;
  /** Resends after the first delivery before the message expires; 0 to 1000. @default 3 */
  maxResends?: number;
  /**
   * A topic: when the message expires, a cancellation message `{ id, topic, reason }` is
   * enqueued to it in the same transaction that marks the message expired, so compensation goes
   * through the outbox like any message. @default none
   */
  onExpire?: string;
  /**
   * The topic the receiver sends its acknowledgement to (the `mailroom-ack-to` header); the
   * sender consumes it with an `AckReceiver`. @default the Outbox's `ackTopic` ('mailroom.ack')
   */
  replyTo?: string;
}

/** What `callback` on a message asks for. */
export interface CallbackRequest {
  /** An http:// or https:// URL the outcomes are POSTed to. */
  url: string;
}

/** The delivery options of a message as stored (the `delivery` column), defaults applied. */
export interface DeliveryOptions {
  ack?: { timeoutMs: number; maxResends: number; onExpire: string | null; replyTo: string };
  callback?: { url: string };
}

/** A validated message, payload encoded to bytes, ready for a store to write. */
export interface EncodedMessage {
  id: string;
  topic: string;
  key: string | null;
  type: string | null;
  payload: Buffer;
  contentType: string;
  headers: Record<string, string>;
  /** Milliseconds after the database's `now()` at insert. */
  delayMs: number;
  /** Acknowledgement and callback requests, or null for a plain message. */
  delivery: DeliveryOptions | null;
}

/** A message read back from the outbox, as a transport receives it. */
export interface OutboxMessage {
  /** Store-local position: increases in insert order. Opaque to transports. */
  seq: string;
  id: string;
  topic: string;
  key: string | null;
  type: string | null;
  payload: Buffer;
  contentType: string;
  headers: Record<string, string>;
  createdAt: Date;
  /** Delivery attempts so far, this one included. */
  attempts: number;
}

/**
 * A message as a consumer receives it from a broker, decoded from Mailroom's wire format by a
 * consumer (`RabbitMqConsumer`, …) and handed to `inbox.handle` and handlers.
 */
export interface ReceivedMessage {
  /** The id the sender gave it: the same on every copy, which is what the inbox keys on. */
  id: string;
  topic: string;
  key: string | null;
  type: string | null;
  /** The sender's headers, without the ones Mailroom adds (`mailroom-*`). */
  headers: Record<string, string>;
  contentType: string;
  /** The payload as bytes, exactly as sent. */
  body: Buffer;
  /** The payload parsed from JSON when the content type is JSON; otherwise `body`. */
  payload: unknown;
  /** Where the sender wants the acknowledgement (the `mailroom-ack-to` header), or null. */
  ackTo: string | null;
  /** The sender's delivery attempt (`mailroom-attempt`), 1 when not given. */
  attempt: number;
  /** When the sender enqueued it, when the transport carries it. */
  createdAt: Date | null;
  /**
   * The atomic group it came in (`outbox.enqueue(…, { atomic: true })`): the group's id (its
   * first message's), how many messages it has and this one's place, from 0. Null (or absent,
   * from consumers older than groups) for a message sent on its own.
   */
  group?: { id: string; size: number; index: number } | null;
}

/** What a receiver's acknowledgement says (the payload of an ack message, or an HTTP ack). */
export interface AckReceipt {
  /** The id of the message acknowledged. */
  id: string;
  /** The receiving service that acknowledged it (its inbox's `consumer`). */
  consumer: string;
  /** A small result the sender can read back with `outbox.status(id)`. */
  result?: JsonValue;
}

/** A dead-lettered message, with why it died. */
export interface DeadLetter extends OutboxMessage {
  deadAt: Date;
  lastError: string | null;
}
