import { isMailroomError } from '../../core/errors/mailroom-error.js';
import { TransportError } from '../../core/errors/transport-error.js';
import type { PublishOptions, PublishOutcome, Transport } from '../../core/ports.js';
import type { OutboxMessage } from '../../core/types.js';
import type { RedisClient } from './redis-client.js';
import {
  closedError,
  connectionLostError,
  describe,
  isReplyError,
  probeAbortedError,
  probeTimeoutError,
  publishAbortedError,
  readOnlyError,
  replicasMissingError,
} from './redis-errors.js';
import {
  resolveRedisStreamsOptions,
  streamFor,
  type RedisStreamsTransportOptions,
  type ResolvedRedisStreamsTransportOptions,
} from './redis-options.js';
import { publishBatch, settledBefore } from './redis-publish.js';
import { noop, RedisSessions } from './redis-session.js';

/**
 * Publishes outbox messages to Redis Streams: each message an `XADD` to the stream its topic
 * names (`{topic}` by default), with the message id, topic, key, type, attempt, creation time,
 * content type and headers as fields beside the payload bytes; a batch is one pipeline on one
 * connection. A message is `ok` once Redis replied to its `XADD` with the entry's id (and, with
 * `waitReplicas`, once `WAIT` saw enough replicas acknowledge it).
 *
 * Redis Streams do not deduplicate: a message published again (after a lost reply, a relay
 * crash) is a second entry with the same `mailroom-id`, and consumers dedupe with an inbox.
 *
 * Reconnects lazily: when the connection is lost, messages without a reply report `unavailable`
 * and the next `publish` opens a new connection. docs/transports/redis.md has the whole story.
 *
 * @example
 * ```ts
 * const transport = new RedisStreamsTransport({ url: 'redis://localhost:6379', stream: 'mailroom:{topic}' });
 * await transport.start();
 * const relay = new Relay({ store, transport });
 * ```
 */
export class RedisStreamsTransport implements Transport {
  readonly name = 'redis';
  /**
   * One pipeline on one connection per call, and Redis runs a connection's commands in order:
   * when an `XADD` of the call was run, every earlier one of the call was run before it (added,
   * or refused with an error reply). A lost connection cuts the call at some point, leaving a
   * prefix. So the relay may batch runs of a key's messages (docs/design.md, "Runs").
   */
  readonly ordering = true;
  // Private: the endpoint holds the password, and public fields end up in logs.
  readonly #options: Readonly<ResolvedRedisStreamsTransportOptions>;
  readonly #sessions: RedisSessions;
  #closing: Promise<void> | undefined;
  readonly #inFlight = new Set<Promise<unknown>>();

  constructor(options: RedisStreamsTransportOptions) {
    this.#options = Object.freeze(resolveRedisStreamsOptions(options));
    this.#sessions = new RedisSessions(this.#options);
  }

  /** True while the connection is open. */
  get connected(): boolean {
    return this.#sessions.current !== undefined;
  }

  /** The stream key a topic's messages are added to. */
  streamFor(topic: string): string {
    return streamFor(this.#options.stream, topic);
  }

  /**
   * Connects (and logs in, selects the database). Idempotent, also concurrently; reopens a
   * closed transport. Throws a {@link TransportError}: `unreachable`, `auth_failed`.
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
   * Connects when needed, then asks the server its `ROLE`: resolves when it is a primary (and,
   * with `waitReplicas`, has at least `count` replicas connected). Falls back to `PING` when
   * the user may not run `ROLE` (and `waitReplicas` is unset). Throws a {@link TransportError}:
   * the connect error, `closed`, `read_only`, `replicas_missing`, `reply_timeout`, or
   * `probe_aborted` when `signal` aborts first.
   */
  async probe(options: PublishOptions = {}): Promise<void> {
    const { signal } = options;
    const { safeUrl } = this.#options.endpoint;
    if (this.#sessions.closed) throw closedError(safeUrl);
    if (signal?.aborted) throw probeAbortedError(safeUrl, signal);
    const opening = this.#sessions.open();
    opening.catch(noop);
    if (signal && !(await settledBefore(opening, signal))) {
      const error = probeAbortedError(safeUrl, signal);
      this.#sessions.abandonOpening(error);
      throw error;
    }
    const client = await opening;
    let role: unknown;
    try {
      role = await this.#command(client, signal, 'ROLE');
    } catch (err) {
      if (!isReplyError(err) || this.#options.waitReplicas) throw this.#probeFailure(client, err, signal);
      // No permission for ROLE (an ACL): PING says at least that the server answers.
      try {
        await this.#command(client, signal, 'PING');
      } catch (pingErr) {
        throw this.#probeFailure(client, pingErr, signal);
      }
      return;
    }
    const [kind, , replicas] = Array.isArray(role) ? (role as unknown[]) : [];
    const kindText = String(kind);
    if (kindText !== 'master') throw readOnlyError(safeUrl, kindText === 'slave' ? 'replica' : kindText);
    const wait = this.#options.waitReplicas;
    if (wait) {
      const connected = Array.isArray(replicas) ? replicas.length : 0;
      if (connected < wait.count) throw replicasMissingError(safeUrl, connected, wait.count);
    }
  }

  /**
   * Adds the batch's messages to their streams in one pipeline and reads the replies. Never
   * throws; one outcome per message, in order. When `signal` aborts first, resolves at once:
   * messages without a reply report `unavailable` (`publish_timeout`) and the connection is
   * dropped.
   */
  publish(messages: readonly OutboxMessage[], options: PublishOptions = {}): Promise<PublishOutcome[]> {
    if (messages.length === 0) return Promise.resolve([]);
    const call = this.#publish(messages, options.signal);
    this.#track(call);
    return call;
  }

  /**
   * Waits up to `closeTimeoutMs` for batches in flight, then closes the connection (QUIT, at most
   * 2 s, then the socket is closed). Idempotent. Messages still without a reply then report
   * `unavailable`.
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

  #track(call: Promise<unknown>): void {
    this.#inFlight.add(call);
    void call.then(
      () => this.#inFlight.delete(call),
      () => this.#inFlight.delete(call),
    );
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
      this.#sessions.abandonOpening(
        connectionLostError(safeUrl, 'the publish that was waiting for the handshake was aborted'),
      );
      return messages.map((message) => ({
        status: 'unavailable',
        error: publishAbortedError(safeUrl, message, this.streamFor(message.topic), signal, 'connecting'),
      }));
    }
    let client: RedisClient;
    try {
      client = await opening;
    } catch (err) {
      const error = err instanceof Error ? err : new TransportError('unreachable', String(err));
      return messages.map(() => ({ status: 'unavailable', error }));
    }
    const result = await publishBatch(client, messages, this.#options, signal);
    // A server that did not answer in time is not worth waiting on again: the next publish
    // reconnects, and replies that come late would only answer commands nobody waits for.
    if (result.unanswered) {
      this.#sessions.drop(client, connectionLostError(safeUrl, 'replies did not come in time; dropped'));
    }
    return result.outcomes;
  }

  /** One command under `replyTimeoutMs` and `signal`; drops the connection when it gets no reply. */
  async #command(client: RedisClient, signal: AbortSignal | undefined, command: string): Promise<unknown> {
    const { safeUrl } = this.#options.endpoint;
    const timeoutMs = this.#options.replyTimeoutMs;
    const timedOut = AbortSignal.timeout(timeoutMs);
    const stop = signal ? AbortSignal.any([signal, timedOut]) : timedOut;
    const reply = client.call(command);
    reply.catch(noop);
    if (!(await settledBefore(reply, stop))) {
      const error = signal?.aborted
        ? probeAbortedError(safeUrl, signal)
        : probeTimeoutError(safeUrl, timeoutMs);
      this.#sessions.drop(client, error);
      throw error;
    }
    return reply;
  }

  #probeFailure(client: RedisClient, err: unknown, signal: AbortSignal | undefined): Error {
    const { safeUrl } = this.#options.endpoint;
    if (isMailroomError(err)) return err;
    if (signal?.aborted) return probeAbortedError(safeUrl, signal);
    if (isReplyError(err)) {
      return new TransportError(
        'refused',
        `the Redis server at ${safeUrl} answered the probe (ROLE) with an error: ${err.message}; waitReplicas needs ` +
          "the ROLE command: allow it in the user's ACL",
        { cause: err, details: { url: safeUrl } },
      );
    }
    const lost = connectionLostError(safeUrl, describe(err), err);
    this.#sessions.drop(client, lost);
    return lost;
  }
}
