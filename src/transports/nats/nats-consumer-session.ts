/**
 * The consumer's connection: the stream that holds the subject found, the durable pull consumer
 * created or updated, messages pulled up to `prefetch` and kept in progress while held, and what
 * the consumer sends on it (double acks, dead letters, naks when it stops).
 *
 * @module
 */
import { setMaxListeners } from 'node:events';

import {
  AckPolicy,
  DeliverPolicy,
  type Consumer,
  type ConsumerConfig,
  type ConsumerMessages,
  type JsMsg,
} from '@nats-io/jetstream';
import { headers as natsHeaders } from '@nats-io/transport-node';

import { TransportError } from '../../core/errors/transport-error.js';
import { within } from '../../consumer/consumer-core.js';
import type { DeadLetterReason } from '../../consumer/consumer-events.js';
import { describe } from './nats-errors.js';
import type { ResolvedNatsConsumerOptions } from './nats-consumer-options.js';
import { isNoResponders } from './nats-publish.js';
import { noop, type NatsSession, type NatsSessions } from './nats-session.js';
import { encodeHeaderValue, readMessageHeaders } from './nats-wire.js';

/** The error of the last failed run (or why the message could not be decoded), truncated. */
export const ERROR_HEADER = 'mailroom-error';
/** Handler runs that failed, as a decimal string; `'0'` for a message that could not be decoded. */
export const FAILED_ATTEMPTS_HEADER = 'mailroom-failed-attempts';
/** When it was dead-lettered, ISO 8601. */
export const DEAD_AT_HEADER = 'mailroom-dead-at';
/** `handler_failed` or `malformed`. */
export const DEAD_REASON_HEADER = 'mailroom-dead-reason';
/** The subject consumed (the durable consumer's filter subject). */
export const DEAD_QUEUE_HEADER = 'mailroom-dead-queue';
/** The message's topic (`mailroom-topic`, else the subject it was stored under). */
export const DEAD_TOPIC_HEADER = 'mailroom-dead-topic';
/** The stream the original is stored in. */
export const DEAD_STREAM_HEADER = 'mailroom-dead-stream';
/** The original's sequence number in that stream. */
export const DEAD_SEQ_HEADER = 'mailroom-dead-seq';
/** The durable consumer that gave up on it. */
export const DEAD_CONSUMER_HEADER = 'mailroom-dead-consumer';

/** Longest `mailroom-error` value, in characters; longer messages end with `…`. */
export const MAX_ERROR_HEADER_CHARS = 1000;

const DEAD_HEADERS: ReadonlySet<string> = new Set([
  ERROR_HEADER,
  FAILED_ATTEMPTS_HEADER,
  DEAD_AT_HEADER,
  DEAD_REASON_HEADER,
  DEAD_QUEUE_HEADER,
  DEAD_TOPIC_HEADER,
  DEAD_STREAM_HEADER,
  DEAD_SEQ_HEADER,
  DEAD_CONSUMER_HEADER,
]);

/**
 * How long one pull request waits at the server for messages. The client asks for idle
 * heartbeats at half of it, and gives up on the connection when two are missed.
 */
const PULL_EXPIRES_MS = 10_000;

/** JetStream's negative acknowledgement: redeliver now. */
const NAK = new TextEncoder().encode('-NAK');

/** A message pulled on a session: only that session can acknowledge it. */
export interface Delivery {
  readonly session: ConsumerSession;
  readonly msg: JsMsg;
  /** True while its handler runs. */
  running: boolean;
}

export type { DeadLetterReason };

/**
 * One connection with its durable consumer and pull loop; replaced as a whole when it ends.
 * `deliver` gets each message pulled.
 */
export class ConsumerSession {
  readonly nats: NatsSession;
  /** The stream consumed from. */
  readonly stream: string;
  readonly #sessions: NatsSessions;
  readonly #consumer: Consumer;
  readonly #options: Readonly<ResolvedNatsConsumerOptions>;
  /** Pulled, not yet acknowledged (or returned). */
  readonly #held = new Set<Delivery>();
  #pulling = true;
  #batch: ConsumerMessages | undefined;
  #wake: (() => void) | undefined;
  readonly #working: ReturnType<typeof setInterval>;
  /** Why the session was given up while its connection was open (a pull that failed). */
  #failure: Error | undefined;
  /** Aborted when the connection ends or the session is given up, whichever comes first. */
  readonly #ended = new AbortController();
  /** When the session ended (performance.now()). */
  #endedAt: number | undefined;
  #closing: Promise<void> | undefined;

  constructor(setup: {
    nats: NatsSession;
    sessions: NatsSessions;
    stream: string;
    consumer: Consumer;
    options: Readonly<ResolvedNatsConsumerOptions>;
  }) {
    this.nats = setup.nats;
    this.#sessions = setup.sessions;
    this.stream = setup.stream;
    this.#consumer = setup.consumer;
    this.#options = setup.options;
    // While held (run, queued behind its key, waiting for a retry), a message is reported in
    // progress, which restarts its ack_wait: only a crashed or cut-off instance's come back.
    const every = Math.max(50, Math.floor(setup.options.ackWaitMs / 3));
    this.#working = setInterval(() => {
      for (const delivery of this.#held) {
        try {
          delivery.msg.working();
        } catch {
          // The connection is gone: the session ends and the broker redelivers.
        }
      }
    }, every);
    this.#working.unref();
    // One listener per request in flight on it (acks, dead letters) and per delivery waiting.
    setMaxListeners(0, this.#ended.signal);
    const onEnd = () => {
      this.#end();
      this.#ended.abort(this.nats.ended.reason);
    };
    if (this.nats.ended.aborted) onEnd();
    else this.nats.ended.addEventListener('abort', onEnd, { once: true });
  }

  /** True while the connection is open and the session not given up. */
  get open(): boolean {
    return !this.#ended.signal.aborted;
  }

  /** Aborted when the connection ends, the session is given up or closed. */
  get ended(): AbortSignal {
    return this.#ended.signal;
  }

  /** Why the session ended. */
  get lostReason(): Error {
    const reason: unknown = this.#failure ?? this.#ended.signal.reason;
    return reason instanceof Error ? reason : new Error(describe(reason ?? 'connection closed'));
  }

  /** Starts pulling; `deliver` gets each message. */
  startPulling(deliver: (delivery: Delivery) => void): void {
    void this.#pull(deliver);
  }

  /** A held delivery was acknowledged or returned: its prefetch slot is free. */
  release(delivery: Delivery): void {
    if (this.#held.delete(delivery)) this.#wakeUp();
  }

  /**
   * The held messages whose handler is not running (queued, waiting for a retry), no longer
   * held here: for the next session to return after this one was lost. None once half of
   * ack_wait has passed since the loss: they may have been redelivered (their last in-progress
   * report was at most a third of ack_wait before it), and a nak must not hit another
   * instance's delivery.
   */
  takeWaiting(): Delivery[] {
    const waiting = [...this.#held].filter((d) => !d.running);
    for (const delivery of waiting) this.#held.delete(delivery);
    const since = performance.now() - (this.#endedAt ?? performance.now());
    return since < this.#options.ackWaitMs / 2 ? waiting : [];
  }

  /**
   * Returns (nak) messages a lost session held and had not started, on this connection (an ack
   * subject works from any connection), before the first pull: the server redelivers them first,
   * at once, instead of after ack_wait behind later messages of their keys.
   */
  async returnWaiting(deliveries: readonly Delivery[]): Promise<void> {
    if (deliveries.length === 0) return;
    for (const { msg } of deliveries) {
      const reply = (msg as JsMsg & { reply?: string }).reply;
      if (!reply) continue;
      try {
        this.nats.nc.publish(reply, NAK);
      } catch {
        // This connection is gone too: they come back after ack_wait.
      }
    }
    await within(this.nats.nc.flush(), this.#options.ackTimeoutMs);
  }

  /** No more pulls; a pull under way is cancelled. Messages arriving after are returned at once. */
  async stopPulling(): Promise<void> {
    this.#pulling = false;
    this.#wakeUp();
    await this.#batch?.close().catch(noop);
  }

  /**
   * Stops pulling, returns the held messages not being handled (a nak: another instance gets them
   * now instead of after ack_wait) and closes the connection. Never rejects.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      await this.stopPulling();
      if (!this.nats.ended.aborted) {
        for (const delivery of this.#held) {
          if (delivery.running) continue;
          this.#held.delete(delivery); // returned: never nak'ed again by a later session
          try {
            delivery.msg.nak();
          } catch {
            // Gone with the connection: redelivered after ack_wait.
          }
        }
        // Closing does not flush what was written: the naks are sent first (bounded).
        await within(this.nats.nc.flush(), this.#options.ackTimeoutMs);
      }
      this.#end();
      this.#ended.abort(new Error('the consumer closed the connection'));
      this.#sessions.drop(this.nats);
      // Bounded: a close never holds stop() up for long, even on a link that went dead.
      await within(this.nats.nc.closed(), this.#options.connectTimeoutMs);
    })();
    return this.#closing;
  }

  #end(): void {
    this.#endedAt ??= performance.now();
    clearInterval(this.#working);
    this.#pulling = false;
    this.#wakeUp();
  }

  #wakeUp(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  /** Pulls while the session is open: at most `prefetch` messages held at any time. */
  async #pull(deliver: (delivery: Delivery) => void): Promise<void> {
    const { prefetch } = this.#options;
    while (this.#pulling && this.open) {
      const free = prefetch - this.#held.size;
      if (free <= 0) {
        await new Promise<void>((resolve) => (this.#wake = resolve));
        continue;
      }
      try {
        const batch = await this.#consumer.fetch({ max_messages: free, expires: PULL_EXPIRES_MS });
        this.#batch = batch;
        for await (const msg of batch) {
          if (!this.#pulling) {
            msg.nak();
            continue;
          }
          const delivery: Delivery = { session: this, msg, running: false };
          this.#held.add(delivery);
          deliver(delivery);
        }
      } catch (err) {
        if (!this.#pulling || !this.open) return;
        // Missed heartbeats, the consumer deleted, JetStream gone: a new session sets it all up
        // again (the core reconnects when this connection's end is reported).
        this.#failure = new TransportError(
          'pull_failed',
          `pulling from durable consumer ${JSON.stringify(this.#options.durable)} on stream ` +
            `${JSON.stringify(this.stream)} at ${this.#options.endpoint.safeUrl} failed: ${describe(err)}; reconnecting`,
          { cause: err, details: { url: this.#options.endpoint.safeUrl, durable: this.#options.durable } },
        );
        // Ended now, without waiting for the connection to close (which may hang on a dead link).
        this.#end();
        this.#ended.abort(this.#failure);
        this.#sessions.drop(this.nats);
        return;
      } finally {
        this.#batch = undefined;
      }
    }
  }
}

/**
 * Connects, finds the stream, checks that a stream captures the dead-letter subject, creates or
 * updates the durable pull consumer, and starts pulling. Throws a `TransportError`: the
 * connection's (`unreachable`, `auth_failed`, `not_nats`, `jetstream_disabled`), `stream_not_found`,
 * `dead_letter_stream_missing`, `consumer_setup_failed`, or `consumer_stopped` when `cancelled()`.
 */
export async function openConsumerSession(
  options: Readonly<ResolvedNatsConsumerOptions>,
  sessions: NatsSessions,
  cancelled: () => boolean,
  stoppedError: () => Error,
): Promise<ConsumerSession> {
  const nats = await sessions.open();
  try {
    if (cancelled()) throw stoppedError();
    const stream = await findStream(nats, options);
    await checkDeadLetterStream(nats, options);
    await ensureDurable(nats, stream, options);
    let consumer: Consumer;
    try {
      consumer = await nats.js.consumers.get(stream, options.durable);
    } catch (err) {
      throw consumerSetupError(options, stream, err);
    }
    if (cancelled()) throw stoppedError();
    return new ConsumerSession({ nats, sessions, stream, consumer, options });
  } catch (err) {
    sessions.drop(nats);
    await nats.nc.closed().catch(noop);
    throw err;
  }
}

function isNamed(err: unknown, name: string): boolean {
  return (err as { name?: unknown })?.name === name;
}

/** The stream named by `stream`, or the one stream that captures the subject. */
async function findStream(nats: NatsSession, o: Readonly<ResolvedNatsConsumerOptions>): Promise<string> {
  const { safeUrl } = o.endpoint;
  const details = { url: safeUrl, subject: o.subject };
  if (o.stream !== undefined) {
    try {
      await nats.jsm.streams.info(o.stream);
      return o.stream;
    } catch (err) {
      if (!isNamed(err, 'StreamNotFoundError')) throw setupFailedError(o, 'looking up the stream', err);
      throw new TransportError(
        'stream_not_found',
        `no JetStream stream named ${JSON.stringify(o.stream)} on ${safeUrl} (NatsConsumer option stream); ` +
          `create it capturing ${JSON.stringify(o.subject)} (e.g. nats stream add ${o.stream} --subjects ` +
          `'${o.subject}'), or leave the option out to use the stream that captures the subject`,
        { cause: err, details: { ...details, stream: o.stream } },
      );
    }
  }
  let names: string[];
  try {
    names = (await nats.jsm.streams.names(o.subject).next()) ?? [];
  } catch (err) {
    throw setupFailedError(o, 'looking up the stream of the subject', err);
  }
  if (names.length === 1) return names[0] as string;
  if (names.length === 0) {
    throw new TransportError(
      'stream_not_found',
      `no JetStream stream on ${safeUrl} captures subject ${JSON.stringify(o.subject)}, so there is nothing ` +
        `to consume: create one (e.g. nats stream add EVENTS --subjects '${o.subject.split('.')[0] ?? o.subject}.>'), ` +
        "or let the relay's NatsTransport create it (ensureStream), then start the consumer again",
      { details },
    );
  }
  throw new TransportError(
    'stream_not_found',
    `subject ${JSON.stringify(o.subject)} on ${safeUrl} is captured by several streams (${names.join(', ')}); ` +
      'give the one to consume with the stream option',
    { details: { ...details, streams: names } },
  );
}

/** A dead letter must be storable: some stream has to capture its subject. */
async function checkDeadLetterStream(
  nats: NatsSession,
  o: Readonly<ResolvedNatsConsumerOptions>,
): Promise<void> {
  let names: string[];
  try {
    names = (await nats.jsm.streams.names(o.deadLetterSubject).next()) ?? [];
  } catch (err) {
    throw setupFailedError(o, 'looking up the stream of the dead-letter subject', err);
  }
  if (names.length > 0) return;
  throw new TransportError(
    'dead_letter_stream_missing',
    `no JetStream stream on ${o.endpoint.safeUrl} captures the dead-letter subject ${JSON.stringify(o.deadLetterSubject)}, ` +
      "so failed messages could not be kept: add it to a stream's subjects (e.g. nats stream add DEAD --subjects " +
      `'${o.deadLetterSubject}'), or set deadLetterSubject to a subject a stream captures`,
    { details: { url: o.endpoint.safeUrl, deadLetterSubject: o.deadLetterSubject } },
  );
}

/** Creates the durable pull consumer, or updates what may change of an existing one. */
async function ensureDurable(
  nats: NatsSession,
  stream: string,
  o: Readonly<ResolvedNatsConsumerOptions>,
): Promise<void> {
  const changeable = {
    ack_wait: o.ackWaitMs * 1_000_000,
    filter_subject: o.subject,
    // Unlimited: the consumer counts the deliveries itself and dead-letters the message; the
    // server's own limit would only stop redelivering it, leaving it nowhere.
    max_deliver: -1,
  };
  let existing: ConsumerConfig | undefined;
  try {
    existing = (await nats.jsm.consumers.info(stream, o.durable)).config;
  } catch (err) {
    if (!isNamed(err, 'ConsumerNotFoundError')) throw consumerSetupError(o, stream, err);
  }
  if (existing !== undefined) {
    if (existing.deliver_subject || existing.ack_policy !== AckPolicy.Explicit) {
      throw new TransportError(
        'consumer_setup_failed',
        `consumer ${JSON.stringify(o.durable)} on stream ${JSON.stringify(stream)} (${o.endpoint.safeUrl}) exists as ` +
          `${existing.deliver_subject ? 'a push consumer' : `a consumer with ack_policy ${existing.ack_policy}`}; ` +
          'NatsConsumer needs a pull consumer with explicit acks: give another durable, or delete that consumer',
        { details: { url: o.endpoint.safeUrl, stream, durable: o.durable } },
      );
    }
    if (
      existing.ack_wait === changeable.ack_wait &&
      existing.filter_subject === changeable.filter_subject &&
      existing.max_deliver === changeable.max_deliver
    ) {
      return;
    }
  }
  try {
    if (existing === undefined) {
      const deliver_policy = o.deliverPolicy === 'new' ? DeliverPolicy.New : DeliverPolicy.All;
      await nats.jsm.consumers.add(stream, {
        durable_name: o.durable,
        ack_policy: AckPolicy.Explicit,
        deliver_policy,
        ...changeable,
      });
    } else {
      await nats.jsm.consumers.update(stream, o.durable, changeable);
    }
  } catch (err) {
    throw consumerSetupError(o, stream, err);
  }
}

function consumerSetupError(
  o: Readonly<ResolvedNatsConsumerOptions>,
  stream: string,
  cause: unknown,
): TransportError {
  return new TransportError(
    'consumer_setup_failed',
    `cannot create or update durable consumer ${JSON.stringify(o.durable)} (filter ${JSON.stringify(o.subject)}) on ` +
      `stream ${JSON.stringify(stream)} at ${o.endpoint.safeUrl}: ${describe(cause)}; the account may lack the ` +
      'rights, or a consumer of that name may exist with settings that cannot change (give another durable)',
    { cause, details: { url: o.endpoint.safeUrl, stream, durable: o.durable, subject: o.subject } },
  );
}

function setupFailedError(
  o: Readonly<ResolvedNatsConsumerOptions>,
  what: string,
  cause: unknown,
): TransportError {
  return new TransportError(
    'consumer_setup_failed',
    `JetStream at ${o.endpoint.safeUrl} did not answer ${what} (${JSON.stringify(o.subject)}): ${describe(cause)}`,
    { cause, details: { url: o.endpoint.safeUrl, subject: o.subject } },
  );
}

/** The error as a header value: its message, cut to {@link MAX_ERROR_HEADER_CHARS}. */
function errorText(error: Error): string {
  const text = error.message || error.name || String(error);
  return text.length <= MAX_ERROR_HEADER_CHARS ? text : `${text.slice(0, MAX_ERROR_HEADER_CHARS - 1)}…`;
}

/**
 * Publishes the dead letter and waits for its PubAck (at most `ackTimeoutMs`); throws a
 * `TransportError` `dead_letter_failed` otherwise. The body and the sender's headers are kept;
 * `Nats-*` headers are not copied, and `Nats-Msg-Id` is `<stream>:<seq>:dead`, so a dead letter
 * sent again for the same stored message is dropped within the duplicate window.
 */
export async function sendDeadLetter(
  delivery: Delivery,
  options: Readonly<ResolvedNatsConsumerOptions>,
  why: DeadLetterReason,
): Promise<void> {
  const { msg, session } = delivery;
  const h = natsHeaders();
  for (const [name, values] of msg.headers ?? []) {
    const lower = name.toLowerCase();
    if (lower.startsWith('nats-') || DEAD_HEADERS.has(lower)) continue;
    for (const value of values) h.append(name, value);
  }
  const topic = readMessageHeaders(msg.headers).topic ?? msg.subject;
  h.set(ERROR_HEADER, encodeHeaderValue(errorText(why.error)));
  h.set(FAILED_ATTEMPTS_HEADER, String(why.failedAttempts));
  h.set(DEAD_AT_HEADER, new Date().toISOString());
  h.set(DEAD_REASON_HEADER, why.reason);
  h.set(DEAD_QUEUE_HEADER, encodeHeaderValue(options.subject));
  h.set(DEAD_TOPIC_HEADER, encodeHeaderValue(topic));
  h.set(DEAD_STREAM_HEADER, session.stream);
  h.set(DEAD_SEQ_HEADER, String(msg.seq));
  h.set(DEAD_CONSUMER_HEADER, encodeHeaderValue(options.durable));
  try {
    await whileOpen(session, () =>
      session.nats.js.publish(options.deadLetterSubject, msg.data, {
        headers: h,
        msgID: `${session.stream}:${msg.seq}:dead`,
        timeout: options.ackTimeoutMs,
      }),
    );
  } catch (err) {
    const id = readMessageHeaders(msg.headers).id;
    const why = isNoResponders(err)
      ? `no stream captures ${JSON.stringify(options.deadLetterSubject)} (any more); add it to a stream's subjects`
      : describe(err);
    throw new TransportError(
      'dead_letter_failed',
      `could not dead-letter message ${id ?? `(no id; stream sequence ${msg.seq})`} to ` +
        `${JSON.stringify(options.deadLetterSubject)} at ${options.endpoint.safeUrl}: ${why}; the message stays ` +
        'unacknowledged and is dead-lettered again after a pause (or redelivered, if the connection was lost)',
      {
        cause: err,
        details: { url: options.endpoint.safeUrl, deadLetterSubject: options.deadLetterSubject },
      },
    );
  }
}

/**
 * Runs a request on the session's connection; rejects with why the session ended when it is not
 * open, or ends before the answer (a connection that ends while a request is being written may
 * leave it unanswered until its timeout).
 */
async function whileOpen<T>(session: ConsumerSession, request: () => Promise<T>): Promise<T> {
  if (!session.open) throw session.lostReason;
  const { ended } = session;
  let onEnd: (() => void) | undefined;
  const end = new Promise<never>((_, reject) => {
    onEnd = () => reject(session.lostReason);
    ended.addEventListener('abort', onEnd, { once: true });
  });
  try {
    return await Promise.race([request(), end]);
  } finally {
    if (onEnd) ended.removeEventListener('abort', onEnd);
  }
}

/**
 * Acknowledges with a double ack (the server confirms it, within `ackTimeoutMs`) and frees the
 * delivery's prefetch slot. Returns the error when the confirmation did not come: the server may
 * redeliver the message after ack_wait.
 */
export async function acknowledge(delivery: Delivery): Promise<Error | undefined> {
  try {
    await whileOpen(delivery.session, () => delivery.msg.ackAck());
    return undefined;
  } catch (err) {
    return err instanceof Error ? err : new Error(String(err));
  } finally {
    delivery.session.release(delivery);
  }
}
