import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';

import { webhookSignature } from '../../callbacks/webhook-signature.js';
import { TransportError } from '../../core/errors/transport-error.js';
import type { PublishOptions, PublishOutcome, Transport } from '../../core/ports.js';
import { redactUrl } from '../../core/redact.js';
import type { OutboxMessage } from '../../core/types.js';
import {
  abortedError,
  answeredText,
  closedError,
  connectionLostError,
  keyStoppedError,
  pausedError,
  probeAbortedError,
  probeFailedError,
  timeoutError,
  tooLargeError,
  unreachableError,
} from './webhook-errors.js';
import { batchWebhookId, CallState, classifyResult } from './webhook-outcome.js';
import {
  resolvePath,
  resolveWebhookOptions,
  type ResolvedWebhookTransportOptions,
  type WebhookTransportOptions,
} from './webhook-options.js';
import { sendRequest } from './webhook-post.js';
import { batchEntry, BATCH_HEADER, messageHeaders } from './webhook-wire.js';

/**
 * Publishes outbox messages as HTTP POSTs to a webhook endpoint, signed per Standard Webhooks
 * (`webhook-id` = the message id, `webhook-timestamp`, `webhook-signature`; several secrets sign
 * with each, for a key rotation). A message is `ok` only once the endpoint answered 2xx.
 *
 * One POST per message by default, up to `concurrency` at once per call, a key's messages one
 * after another in order; with `batch: true`, one POST of a JSON array per run of messages for
 * the same URL, whose answer is every one of their outcomes. Answers: 2xx `ok`; 4xx other than
 * 408 and 429 `permanent`; 408, 429, other 5xx, redirects and a deadline passed on an open
 * connection `retry`; a 503 with `Retry-After`, a connection that cannot be opened (refused, no
 * such host, TLS failure) or breaks before the answer `unavailable` (an outage: no attempt
 * spent). A `Retry-After` on a 429 or 503 pauses the endpoint: nothing more is POSTed before then.
 * Connections are kept alive and reused (a `node:http` Agent of the transport's own).
 * docs/transports/webhook.md has the whole story.
 *
 * @example
 * ```ts
 * const transport = new WebhookTransport({
 *   url: 'https://orders.internal/hooks/{topic}',
 *   secret: process.env.MAILROOM_WEBHOOK_SECRET!,
 * });
 * const relay = new Relay({ store, transport });
 * await relay.start();
 * ```
 */
export class WebhookTransport implements Transport {
  readonly name = 'webhook';
  /**
   * False: POSTs of different keys run side by side, so a later message of a call may reach the
   * endpoint before an earlier one. (A key's messages in one call do go in order, one after
   * another, and a key's later ones are not sent after its failure.)
   */
  readonly ordering = false;
  // Private: the keys and credentials must not end up in logs.
  readonly #options: Readonly<ResolvedWebhookTransportOptions>;
  readonly #fixed: Readonly<Record<string, string>>;
  #agent: HttpAgent | HttpsAgent | undefined;
  #closed = false;
  #closing: Promise<void> | undefined;
  #starting: Promise<void> | undefined;
  readonly #inFlight = new Set<Promise<unknown>>();
  /** Until when (ms since the epoch) the endpoint asked not to be sent anything, and why. */
  #pausedUntil = 0;
  #pauseReason = '';

  constructor(options: WebhookTransportOptions) {
    this.#options = Object.freeze(resolveWebhookOptions(options));
    const { endpoint, headers } = this.#options;
    this.#fixed = Object.freeze({
      'user-agent': 'mailroom',
      ...(endpoint.authorization === undefined ? {} : { authorization: endpoint.authorization }),
      ...headers,
    });
  }

  /** The URL template, password masked. */
  get url(): string {
    return this.#options.endpoint.safeUrl;
  }

  /** Until when the endpoint asked (`Retry-After`) not to be sent anything, or undefined. */
  get pausedUntil(): Date | undefined {
    return this.#pausedUntil > Date.now() ? new Date(this.#pausedUntil) : undefined;
  }

  /**
   * Opens the connection pool and checks the endpoint as {@link probe} does. Idempotent, also
   * concurrently; reopens a closed transport. Throws a `TransportError` when the endpoint cannot
   * be reached.
   */
  async start(): Promise<void> {
    if (this.#closing) {
      await this.#closing;
      this.#closing = undefined;
      this.#closed = false;
    }
    this.#pool();
    this.#starting ??= this.probe().finally(() => (this.#starting = undefined));
    await this.#starting;
  }

  /**
   * Checks that a POST now could succeed: not closed, not paused by a `Retry-After`, and the
   * endpoint answering: a GET of `probeUrl` answered 2xx when given, else a HEAD of the messages'
   * path answered with anything but a 5xx or 429. Throws a `TransportError`: `closed`,
   * `endpoint_paused`, `unreachable`, `connection_lost`, `timeout`, `probe_failed`, `probe_aborted`.
   */
  async probe(options: PublishOptions = {}): Promise<void> {
    const { signal } = options;
    const { endpoint, probePath, template, timeoutMs, connectTimeoutMs } = this.#options;
    if (this.#closed) throw closedError(endpoint.origin);
    if (this.#pausedUntil > Date.now())
      throw pausedError(endpoint.origin, this.#pausedUntil, this.#pauseReason);
    if (signal?.aborted) throw probeAbortedError(endpoint.origin);
    // Without a probeUrl: HEAD on the messages' path (placeholders empty). Any answer but a 5xx
    // or 429 shows the endpoint up and answering (a receiver answers 405 to HEAD); a connection
    // that opens but never answers (a hung server, a black hole) fails, as it should.
    const path = probePath ?? resolvePath(template, endpoint.origin, { topic: '', key: null, type: null });
    const method = probePath === undefined ? 'HEAD' : 'GET';
    const what = `probe ${method} ${redactUrl(endpoint.origin + path)}`;
    const result = await sendRequest({
      tls: endpoint.tls,
      agent: this.#pool(),
      host: endpoint.host,
      port: endpoint.port,
      method,
      path,
      headers: { ...this.#fixed },
      timeoutMs,
      connectTimeoutMs,
      signal,
    });
    switch (result.kind) {
      case 'answered': {
        const { status } = result;
        const up = probePath === undefined ? status < 500 && status !== 429 : status >= 200 && status < 300;
        if (up) return;
        throw probeFailedError(
          endpoint.origin,
          answeredText(what, status, result.statusText, result.snippet),
          status,
          probePath === undefined ? 'any answer but a 5xx or 429' : 'a 2xx from the probeUrl',
        );
      }
      case 'failed':
        throw result.connected
          ? connectionLostError(endpoint.origin, what, result.error)
          : unreachableError(endpoint.origin, what, result.error);
      case 'timeout':
        throw timeoutError(what, timeoutMs);
      case 'aborted':
        throw probeAbortedError(endpoint.origin);
      case 'invalid':
        throw new TransportError(
          'probe_failed',
          `${what}: the request cannot be built (${result.error.message})`,
          {
            cause: result.error,
            details: { origin: endpoint.origin },
          },
        );
    }
  }

  /**
   * POSTs the messages and reports one outcome per message, in order. Never throws. When `signal`
   * aborts, resolves at once: messages without an answer report `unavailable` (`publish_aborted`)
   * and their requests are cut.
   */
  publish(messages: readonly OutboxMessage[], options: PublishOptions = {}): Promise<PublishOutcome[]> {
    if (messages.length === 0) return Promise.resolve([]);
    const call = this.#options.batch
      ? this.#publishBatches(messages, options.signal)
      : this.#publishEach(messages, options.signal);
    this.#inFlight.add(call);
    void call.finally(() => this.#inFlight.delete(call));
    return call;
  }

  /**
   * Stops publishing (later publishes report `unavailable`), waits up to `closeTimeoutMs` for
   * POSTs in flight, then destroys every connection. Idempotent.
   */
  close(): Promise<void> {
    this.#closed = true;
    this.#closing ??= (async () => {
      if (this.#inFlight.size > 0) {
        let timer: ReturnType<typeof setTimeout> | undefined;
        await Promise.race([
          Promise.allSettled([...this.#inFlight]),
          new Promise<void>((resolve) => (timer = setTimeout(resolve, this.#options.closeTimeoutMs))),
        ]);
        clearTimeout(timer);
      }
      this.#agent?.destroy();
      this.#agent = undefined;
    })();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #newAgent(): HttpAgent | HttpsAgent {
    const { endpoint, concurrency, tls } = this.#options;
    const pool = { keepAlive: true, maxFreeSockets: concurrency, scheduling: 'lifo' as const };
    return endpoint.tls ? new HttpsAgent({ ...tls, ...pool }) : new HttpAgent(pool);
  }

  /** The connection pool, made on first use (a publish or probe before start()). */
  #pool(): HttpAgent | HttpsAgent {
    this.#agent ??= this.#newAgent();
    return this.#agent;
  }

  /** Why a message is not sent now, or undefined to send it. */
  #held(
    message: OutboxMessage,
    state: CallState,
    signal: AbortSignal | undefined,
  ): PublishOutcome | undefined {
    const { origin } = this.#options.endpoint;
    if (this.#closed) return { status: 'unavailable', error: closedError(origin) };
    if (signal?.aborted) {
      return { status: 'unavailable', error: abortedError(origin, `message ${message.id}`, false) };
    }
    if (state.outage) return { status: 'unavailable', error: state.outage };
    if (this.#pausedUntil > Date.now()) {
      return { status: 'unavailable', error: pausedError(origin, this.#pausedUntil, this.#pauseReason) };
    }
    const blocker = message.key === null ? undefined : state.stopped.get(message.key);
    return blocker === undefined ? undefined : { status: 'retry', error: keyStoppedError(message, blocker) };
  }

  async #publishEach(
    messages: readonly OutboxMessage[],
    signal: AbortSignal | undefined,
  ): Promise<PublishOutcome[]> {
    const outcomes = new Array<PublishOutcome>(messages.length);
    // A lane per key (in order of first appearance), one per keyless message: lanes run side by
    // side, each one's messages one after another.
    const lanes: number[][] = [];
    const byKey = new Map<string, number[]>();
    messages.forEach((message, i) => {
      if (message.key === null) return void lanes.push([i]);
      let lane = byKey.get(message.key);
      if (!lane) {
        lane = [];
        byKey.set(message.key, lane);
        lanes.push(lane);
      }
      lane.push(i);
    });
    const state = new CallState();
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < lanes.length) {
        const lane = lanes[next++] as number[];
        for (const i of lane) {
          const message = messages[i] as OutboxMessage;
          const outcome = this.#held(message, state, signal) ?? (await this.#postOne(message, signal));
          outcomes[i] = outcome;
          state.note(message, outcome);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.#options.concurrency, lanes.length) }, worker));
    return outcomes;
  }

  async #postOne(message: OutboxMessage, signal: AbortSignal | undefined): Promise<PublishOutcome> {
    const { maxBodyBytes, template, endpoint } = this.#options;
    if (message.payload.length > maxBodyBytes) {
      return {
        status: 'permanent',
        error: tooLargeError(message, message.payload.length, maxBodyBytes, false),
      };
    }
    let headers: Record<string, string>;
    try {
      headers = messageHeaders(message, this.#fixed);
    } catch (err) {
      return { status: 'permanent', error: err as Error };
    }
    const path = resolvePath(template, endpoint.origin, message);
    return this.#post(path, headers, message.id, message.payload, `POST of message ${message.id}`, signal);
  }

  async #publishBatches(
    messages: readonly OutboxMessage[],
    signal: AbortSignal | undefined,
  ): Promise<PublishOutcome[]> {
    const { maxBodyBytes, template, endpoint } = this.#options;
    const outcomes = new Array<PublishOutcome | undefined>(messages.length);
    // Runs of consecutive messages for the same URL, each within maxBodyBytes, POSTed one after
    // another: the array's order is the order the endpoint sees.
    const chunks: Array<{ path: string; items: Array<{ i: number; entry: string }>; bytes: number }> = [];
    messages.forEach((message, i) => {
      const entry = batchEntry(message);
      const bytes = Buffer.byteLength(entry);
      if (bytes + 2 > maxBodyBytes) {
        outcomes[i] = { status: 'permanent', error: tooLargeError(message, bytes + 2, maxBodyBytes, true) };
        return;
      }
      const path = resolvePath(template, endpoint.origin, message);
      const last = chunks.at(-1);
      if (last && last.path === path && last.bytes + bytes + 1 <= maxBodyBytes) {
        last.items.push({ i, entry });
        last.bytes += bytes + 1;
      } else {
        chunks.push({ path, items: [{ i, entry }], bytes: bytes + 2 });
      }
    });
    const state = new CallState();
    for (const chunk of chunks) {
      const send = chunk.items.filter(({ i }) => {
        const kept = this.#held(messages[i] as OutboxMessage, state, signal);
        if (kept) outcomes[i] = kept;
        return kept === undefined;
      });
      if (send.length === 0) continue;
      const ids = send.map(({ i }) => (messages[i] as OutboxMessage).id);
      const body = Buffer.from(`[${send.map(({ entry }) => entry).join(',')}]`, 'utf8');
      const headers = { 'content-type': 'application/json', [BATCH_HEADER]: String(send.length) };
      const outcome = await this.#post(
        chunk.path,
        headers,
        batchWebhookId(ids),
        body,
        `POST of a batch of ${send.length} (first ${ids[0]})`,
        signal,
      );
      for (const { i } of send) {
        outcomes[i] = outcome;
        state.note(messages[i] as OutboxMessage, outcome);
      }
    }
    return outcomes as PublishOutcome[];
  }

  /** Signs and sends one POST, and classifies what came of it. */
  async #post(
    path: string,
    headers: Record<string, string>,
    webhookId: string,
    body: Buffer,
    label: string,
    signal: AbortSignal | undefined,
  ): Promise<PublishOutcome> {
    const { endpoint, secret, timeoutMs, connectTimeoutMs } = this.#options;
    const agent = this.#pool();
    // Wall-clock seconds, new on every attempt, so that a retry hours later is inside the
    // receiver's tolerance; the id stays the message's.
    const timestamp = String(Math.floor(Date.now() / 1000));
    const result = await sendRequest({
      tls: endpoint.tls,
      agent,
      host: endpoint.host,
      port: endpoint.port,
      method: 'POST',
      path,
      headers: {
        ...this.#fixed,
        ...headers,
        'webhook-id': webhookId,
        'webhook-timestamp': timestamp,
        'webhook-signature': webhookSignature(secret, webhookId, timestamp, body),
      },
      body,
      timeoutMs,
      connectTimeoutMs,
      signal,
    });
    const { outcome, retryAfterMs, status } = classifyResult(
      result,
      `${label} to ${redactUrl(endpoint.origin + path)}`,
      endpoint.origin,
      timeoutMs,
    );
    if (retryAfterMs !== undefined) this.#pause(retryAfterMs, `Retry-After on a ${status}`);
    return outcome;
  }

  #pause(retryAfterMs: number, why: string): void {
    const ms = Math.min(retryAfterMs, this.#options.maxRetryAfterMs);
    if (ms <= 0) return;
    const until = Date.now() + ms;
    if (until > this.#pausedUntil) {
      this.#pausedUntil = until;
      this.#pauseReason = why;
    }
  }
}
