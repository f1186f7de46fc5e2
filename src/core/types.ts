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

/** A dead-lettered message, with why it died. */
export interface DeadLetter extends OutboxMessage {
  deadAt: Date;
  lastError: string | null;
}
