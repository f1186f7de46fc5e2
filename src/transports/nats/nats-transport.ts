import { TransportError } from '../../core/errors/transport-error.js';
import type { PublishOptions, PublishOutcome, Transport } from '../../core/ports.js';
import type { OutboxMessage } from '../../core/types.js';
import { closedError, describe, probeAbortedError, publishAbortedError } from './nats-errors.js';
import {
  resolveNatsOptions,
  type NatsTransportOptions,
  type ResolvedNatsTransportOptions,
} from './nats-options.js';
import { publishBatch, settledBefore } from './nats-publish.js';
import { noop, NatsSessions, type NatsSession } from './nats-session.js';

/**
 * Publishes outbox messages to NATS JetStream: each message to the subject its topic names
 * (`subjectPrefix.topic`), with `Nats-Msg-Id` set to the message id so that the stream drops a
 * copy published again within its duplicate window; reported `ok` only once the stream's PubAck
 * came (a PubAck marked `duplicate` too: the stream has the message). The id, topic, key, type,
 * content type, attempt and creation time travel as `mailroom-*` headers beside the user's.
 *
 * A subject no stream captures is a configuration error, reported `permanent` naming the subject
 * (or create the stream with `ensureStream`). Losing the connection, a server that does not
 * answer, or a stream without a leader reports `unavailable`; the next publish reconnects.
 * docs/transports/nats.md has the whole story.
 *
 * @example
 * ```ts
 * const transport = new NatsTransport({ url: 'nats://127.0.0.1:4222', subjectPrefix: 'events' });
 * await transport.start();
 * const outcomes = await transport.publish(messages); // to events.<topic>
 * await transport.close();
 * ```
 */
export class NatsTransport implements Transport {
  readonly name = 'nats';
  /**
   * One connection without client-side reconnect: a batch is written in array order, the server
   * reads a connection's messages in order and a stream stores them in the order it receives
   * them, so when a stream acknowledged a message it had taken every earlier one of the batch
   * bound for it. The exceptions (docs/transports/nats.md, "Ordering") are a stream that refuses
   * a message and takes a later one (limits with `discard: new`), and, in a cluster, a key whose
   * topics go to streams led by different servers: use `maxPerKey: 1` there.
   */
  readonly ordering = true;
  // Private: the endpoint holds the password or token, and public fields end up in logs.
  readonly #options: Readonly<ResolvedNatsTransportOptions>;
  readonly #sessions: NatsSessions;
  #closing: Promise<void> | undefined;
  readonly #inFlight = new Set<Promise<unknown>>();

  constructor(options: NatsTransportOptions) {
    this.#options = Object.freeze(resolveNatsOptions(options));
    this.#sessions = new NatsSessions(this.#options);
  }

  /** True while the publishing connection is open. */
  get connected(): boolean {
    return this.#sessions.current !== undefined;
  }

  /**
   * Connects, checks that the account has JetStream, and creates or updates the `ensureStream`
   * stream. Idempotent; reopens a closed transport. Throws a {@link TransportError}:
   * `unreachable`, `auth_failed`, `jetstream_disabled`, `stream_setup_failed`.
   */
  async start(): Promise<void> {
    if (this.#closing) {
      await this.#closing;
      this.#closing = undefined;
      this.#sessions.reopen();
    }
    await this.#sessions.open();
  }

  /**
   * Resolves when the connection is open and JetStream answers an account-info request,
   * connecting when needed. Throws a {@link TransportError}: the connect error,
   * `jetstream_disabled`, `closed`, or `probe_aborted` when `signal` aborts first.
   */
  async probe(options: PublishOptions = {}): Promise<void> {
    const { signal } = options;
    const { safeUrl } = this.#options.endpoint;
    if (this.#sessions.closed) throw closedError(safeUrl);
    if (signal?.aborted) throw probeAbortedError(safeUrl, signal);
    const check = this.#probe();
    check.catch(noop);
    if (signal && !(await settledBefore(check, signal))) throw probeAbortedError(safeUrl, signal);
    await check;
  }

  /**
   * Publishes the batch (pipelined: all sent, then the PubAcks awaited). Never throws; one outcome
   * per message, in order. When `signal` aborts first, resolves at once: messages without a
   * PubAck report `unavailable` (`publish_timeout`) and the connection is dropped.
   */
  publish(messages: readonly OutboxMessage[], options: PublishOptions = {}): Promise<PublishOutcome[]> {
    if (messages.length === 0) return Promise.resolve([]);
    const call = this.#publish(messages, options.signal);
    this.#inFlight.add(call);
    void call.finally(() => this.#inFlight.delete(call));
    return call;
  }

  /**
   * Waits up to `closeTimeoutMs` for batches in flight, then closes the connection. Idempotent.
   * Messages still without a PubAck then report `unavailable`.
   */
  close(): Promise<void> {
    this.#closing ??= this.#sessions.close(async () => {
      if (this.#inFlight.size === 0) return;
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        Promise.allSettled([...this.#inFlight]),
        new Promise<void>((resolve) => (timer = setTimeout(resolve, this.#options.closeTimeoutMs))),
      ]);
      clearTimeout(timer);
    });
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  async #probe(): Promise<void> {
    const session = await this.#sessions.open();
    const { safeUrl } = this.#options.endpoint;
    try {
      await session.jsm.getAccountInfo();
    } catch (err) {
      this.#sessions.drop(session);
      throw new TransportError(
        'jetstream_unavailable',
        `NATS server at ${safeUrl} is connected but JetStream did not answer an account-info request: ${describe(err)}`,
        { cause: err, details: { url: safeUrl } },
      );
    }
  }

  async #publish(
    messages: readonly OutboxMessage[],
    signal: AbortSignal | undefined,
  ): Promise<PublishOutcome[]> {
    const { safeUrl } = this.#options.endpoint;
    if (this.#sessions.closed) {
      const error = closedError(safeUrl);
      return messages.map(() => ({ status: 'unavailable', error }));
    }
    const opening = this.#sessions.open();
    opening.catch(noop);
    if (signal && !(await settledBefore(opening, signal))) {
      return messages.map((message) => ({
        status: 'unavailable',
        error: publishAbortedError(safeUrl, message, signal, 'connecting'),
      }));
    }
    let session: NatsSession;
    try {
      session = await opening;
    } catch (err) {
      const error = err instanceof Error ? err : new TransportError('unreachable', String(err));
      return messages.map(() => ({ status: 'unavailable', error }));
    }
    const result = await publishBatch(session, messages, this.#options, signal);
    // A server that did not answer in time is not worth waiting on again: the next publish
    // reconnects (messages re-sent carry the same Nats-Msg-Id).
    if (result.unanswered) this.#sessions.drop(session);
    return result.outcomes;
  }
}
