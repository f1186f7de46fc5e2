/**
 * The consumer of the webhook transport: the receiving endpoint in the shape every Mailroom
 * consumer has (handler + inbox, acknowledged only after the inbox committed, serial per key,
 * drained on stop), where "acknowledged" is the 2xx answer to the sender's POST.
 *
 * @module
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

import { HttpError, sendJson } from '../../callbacks/http-receive.js';
import { readHeader } from '../../callbacks/webhook-signature.js';
import { ConfigError } from '../../core/errors/config-error.js';
import { isPermanentDeliveryError } from '../../core/errors/permanent-delivery-error.js';
import { TransportError } from '../../core/errors/transport-error.js';
import { TypedEmitter } from '../../core/typed-emitter.js';
import type { ReceivedMessage } from '../../core/types.js';
import { isUuid } from '../../core/uuid.js';
import type { MessageConsumer } from '../../consumer/consumer.js';
import { handlerRunner, toError, within } from '../../consumer/consumer-core.js';
import { HandlerLanes } from '../../consumer/handler-lanes.js';
import { answerError, readVerifiedRequest, type VerifiedWebhookRequest } from './receiver.js';
import type { WebhookConsumerEvents } from './webhook-consumer-events.js';
import {
  resolveWebhookConsumerOptions,
  type ResolvedWebhookConsumerOptions,
  type WebhookConsumerOptions,
} from './webhook-consumer-options.js';
import { isRefusal, isWebhookStatusError } from './webhook-status-error.js';
import { BATCH_HEADER, TOPIC_HEADER } from './webhook-wire.js';

/** A Node request handler, as `http.createServer` and express take it. */
export type WebhookRequestListener = (req: IncomingMessage, res: ServerResponse) => void;

/** Where the consumer's own server listens (`listen`), once started. */
export interface WebhookConsumerAddress {
  host: string;
  port: number;
  /** `http://host:port`, for the sender's `url`. */
  url: string;
}

/** One request being handled: answered once, by its messages' outcome or by stop()'s deadline. */
interface Exchange {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  answered: boolean;
}

/** What one message's run came to. */
type Outcome =
  | { kind: 'processed' }
  | { kind: 'duplicate' }
  | { kind: 'failed'; error: Error }
  /** Not run: its request was answered meanwhile (stop's deadline). */
  | { kind: 'skipped' };

const HANDLER_FAILED = 'the message could not be handled; send it again';

/**
 * Receives the POSTs of a `WebhookTransport` and runs a handler for each message, with the shape
 * every Mailroom consumer has ({@link MessageConsumer}): once per message id with an `inbox`, and
 * answered 2xx only after the inbox transaction committed, so the sender settles a message only
 * once its effects are durable. A request is verified first (signature, timestamp within
 * `toleranceSec`, body within `maxBodyBytes`); the handler never sees one that fails.
 *
 * What the answer tells the sender (its classification: 2xx delivered; 4xx but 408/429 dead
 * letter at once; 5xx, 408, 429 retry; a 503 with `Retry-After` an outage, no attempt spent):
 * - 200 processed, or a duplicate the inbox had processed already;
 * - 500 the handler threw (its transaction rolled back): sent again after the sender's backoff;
 * - 422 the handler threw a `PermanentDeliveryError`: dead-lettered by the sender at once;
 * - the status of a `WebhookStatusError` the handler threw;
 * - 503 with `Retry-After` more than `concurrency` requests at once, a key busy past `keyWaitMs`,
 *   stopping, or not started;
 * - 401, 400, 405, 413 as `createWebhookReceiver` answers.
 *
 * Retries and dead letters are the sender's (the relay's retry policy and dead-letter table):
 * there is no broker to hold a message between attempts, so this consumer does not retry in
 * process; it answers, and the status says what happens next.
 *
 * Mount {@link handler} in your own server, or give `listen` and `start()` runs a server of the
 * consumer's own. Requests are handled only between `start()` and `stop()` (503 otherwise).
 *
 * @example
 * ```ts
 * const consumer = new WebhookConsumer({
 *   secret: process.env.MAILROOM_WEBHOOK_SECRET!,
 *   inbox: new Inbox({ store, consumer: 'billing' }),
 *   handler: async (message, tx) => {
 *     await tx.query('INSERT INTO invoices (order_id) VALUES ($1)', [message.key]);
 *   },
 *   listen: { port: 8080, host: '0.0.0.0' },
 * });
 * await consumer.start();
 * // …
 * await consumer.stop();
 * ```
 */
export class WebhookConsumer<Tx = undefined>
  extends TypedEmitter<WebhookConsumerEvents>
  implements MessageConsumer
{
  /**
   * The Node request handler, bound: `http.createServer(consumer.handler)`,
   * `app.post('/hooks/:topic', consumer.handler)` (before any JSON body parser; `express.raw()` is
   * fine). Path-agnostic: mount it where the sender's `url` points.
   */
  readonly handler: WebhookRequestListener;
  readonly #options: Readonly<ResolvedWebhookConsumerOptions>;
  readonly #runner: ReturnType<typeof handlerRunner>;
  readonly #lanes: HandlerLanes;
  #state: 'idle' | 'starting' | 'running' | 'stopping' = 'idle';
  #everStarted = false;
  #starting: Promise<void> | undefined;
  #stopping: Promise<void> | undefined;
  #server: Server | undefined;
  readonly #sockets = new Set<Socket>();
  #address: WebhookConsumerAddress | undefined;
  /** Requests admitted (verified, under `concurrency`) and not yet done, with their work. */
  readonly #exchanges = new Map<Exchange, Promise<void>>();
  #pruneTimer: ReturnType<typeof setTimeout> | undefined;
  #pruning: Promise<void> | undefined;

  constructor(options: WebhookConsumerOptions<Tx>) {
    const resolved = resolveWebhookConsumerOptions(options);
    super(resolved.logger);
    this.#options = Object.freeze(resolved);
    this.#runner = handlerRunner(options, ackNeedsInboxError, 'webhook');
    this.#lanes = new HandlerLanes(resolved.concurrency);
    this.handler = (req, res) => void this.handle(req, res);
  }

  /** True between a successful start() and stop(). */
  get running(): boolean {
    return this.#state === 'running';
  }

  /** True while running (and, with `listen`, while its server listens). */
  get connected(): boolean {
    return (
      this.#state === 'running' && (this.#options.listen === undefined || this.#server?.listening === true)
    );
  }

  /** Where its own server listens (`listen`), after start(); undefined otherwise. */
  get address(): WebhookConsumerAddress | undefined {
    return this.#address;
  }

  /** Requests being handled now (waiting for their key included). */
  get inFlight(): number {
    return this.#exchanges.size;
  }

  /**
   * Handles one request, as {@link handler} does, and resolves once it is answered (never
   * rejects). `body`: the raw body when a framework read it already (Fastify's
   * `addContentTypeParser('*', { parseAs: 'buffer' }, …)`); otherwise it is read from `req`.
   */
  async handle(req: IncomingMessage, res: ServerResponse, body?: Buffer): Promise<void> {
    try {
      await this.#serve(req, res, body);
    } catch (err) {
      this.#refused(req, err);
      answerError(req, res, err, this.logger, 'webhook consumer');
    }
  }

  /**
   * Starts handling requests: with `listen`, opens its server first (a `TransportError`
   * `listen_failed` naming the address when it cannot, such as a port in use). Idempotent; starts
   * a stopped consumer again. Prunes the inbox right away, then every `pruneIntervalMs`.
   */
  async start(): Promise<void> {
    if (this.#stopping) await this.#stopping;
    if (this.#state === 'running') return;
    this.#starting ??= this.#start().finally(() => (this.#starting = undefined));
    return this.#starting;
  }

  /**
   * Stops taking requests (answered 503 with `Retry-After` from now on), waits up to `timeoutMs`
   * (default `stopTimeoutMs`) for those being handled, answers any still running 503 (the sender
   * sends them again; one whose handler commits after all is a duplicate then), and closes its own
   * server. Idempotent; never rejects.
   */
  stop(options: { timeoutMs?: number } = {}): Promise<void> {
    if (this.#state === 'idle' && !this.#starting) return this.#stopping ?? Promise.resolve();
    this.#stopping ??= this.#shutdown(options.timeoutMs ?? this.#options.stopTimeoutMs).finally(
      () => (this.#stopping = undefined),
    );
    return this.#stopping;
  }

  /** `await using consumer = new WebhookConsumer(…)`: stops it (default deadline) at the scope's end. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  async #start(): Promise<void> {
    this.#state = 'starting';
    try {
      if (this.#options.listen !== undefined) await this.#listen(this.#options.listen);
    } catch (err) {
      this.#state = 'idle';
      throw err;
    }
    this.#state = 'running';
    this.#everStarted = true;
    const url = this.#address?.url ?? null;
    this.logger.info('webhook consumer started', { url });
    this.emit('consumer:started', { url });
    this.#schedulePrune(0);
  }

  async #listen(at: { port: number; host: string }): Promise<void> {
    const server = createServer(this.handler);
    server.on('connection', (socket: Socket) => {
      this.#sockets.add(socket);
      socket.on('close', () => this.#sockets.delete(socket));
    });
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(at.port, at.host, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } catch (err) {
      const error = toError(err);
      throw new TransportError(
        'listen_failed',
        `WebhookConsumer could not listen on ${at.host}:${at.port} (${error.message}); choose a free port ` +
          '(listen.port, 0 for any) or stop what holds it, and check that listen.host is an address of this machine',
        { cause: error, details: { host: at.host, port: at.port } },
      );
    }
    // Errors after listening (none expected for a listening server) are logged, not thrown.
    server.on('error', (err) => this.logger.error('webhook consumer server error', { error: err.message }));
    const { port } = server.address() as AddressInfo;
    const host = at.host.includes(':') ? `[${at.host}]` : at.host;
    this.#server = server;
    this.#address = { host: at.host, port, url: `http://${host}:${port}` };
  }

  async #shutdown(timeoutMs: number): Promise<void> {
    // Without a start under way, no await comes first: requests are refused from the call on.
    if (this.#starting) await this.#starting.catch(() => {});
    if (this.#state === 'idle') return;
    this.#state = 'stopping';
    clearTimeout(this.#pruneTimer);
    this.#pruneTimer = undefined;
    const server = this.#server;
    // No new connections, idle kept-alive ones closed; requests on the busy ones are answered 503
    // from now on.
    const closed = server && new Promise<void>((resolve) => server.close(() => resolve()));
    const drained = await within(Promise.allSettled([...this.#exchanges.values()]), timeoutMs);
    let abandoned = 0;
    if (!drained) {
      for (const exchange of this.#exchanges.keys()) {
        if (this.#answer(exchange, 503, { error: 'stopping', message: STOPPING }, this.#retryAfter())) {
          abandoned++;
        }
      }
      this.logger.warn('webhook consumer stop deadline passed with requests being handled; answered 503', {
        abandoned,
        timeoutMs,
      });
    }
    // A prune under way finishes: its batches are short, and the store may close after stop().
    await this.#pruning;
    if (server && closed) {
      // The answers above go out before the connections are cut.
      await new Promise((resolve) => setImmediate(resolve));
      server.closeAllConnections();
      for (const socket of this.#sockets) socket.destroy();
      await closed;
      this.#server = undefined;
      this.#address = undefined;
    }
    this.#state = 'idle';
    this.logger.info('webhook consumer stopped', { abandoned });
    this.emit('consumer:stopped', { abandoned });
  }

  /** Runs `inbox.prune()` after `delayMs`, then every `pruneIntervalMs`, while running. */
  #schedulePrune(delayMs: number): void {
    const interval = this.#options.pruneIntervalMs;
    const prune = this.#runner.prune;
    if (prune === undefined || interval === 0 || this.#state !== 'running') return;
    this.#pruneTimer = setTimeout(() => {
      this.#pruneTimer = undefined;
      this.#pruning = this.#pruneOnce(prune).finally(() => {
        this.#pruning = undefined;
        this.#schedulePrune(interval);
      });
    }, delayMs);
    // Pruning alone never keeps the process alive.
    this.#pruneTimer.unref();
  }

  async #pruneOnce(prune: () => Promise<number>): Promise<void> {
    const started = performance.now();
    try {
      const deleted = await prune();
      this.emit('consumer:inbox:pruned', { deleted, durationMs: performance.now() - started });
    } catch (err) {
      const error = toError(err);
      this.logger.warn('inbox prune failed; trying again at the next interval', { error: error.message });
      this.emit('consumer:error', { phase: 'prune', id: null, error });
    }
  }

  #retryAfter(): Record<string, string> {
    return { 'retry-after': String(this.#options.retryAfterSec) };
  }

  /** Throws the 503 of a consumer that does not take requests now. */
  #requireRunning(): void {
    if (this.#state === 'running') return;
    if (this.#state === 'stopping' || this.#everStarted) {
      throw new HttpError(503, 'stopping', STOPPING, this.#retryAfter());
    }
    throw new HttpError(
      503,
      'not_started',
      'the webhook consumer is not started; call consumer.start() before routing requests to it',
      this.#retryAfter(),
    );
  }

  async #serve(req: IncomingMessage, res: ServerResponse, body: Buffer | undefined): Promise<void> {
    this.#requireRunning();
    const { secret: keys, maxBodyBytes, toleranceSec, concurrency } = this.#options;
    const verified = await readVerifiedRequest(req, {
      keys,
      maxBodyBytes,
      toleranceSec,
      ...(body === undefined ? {} : { body }),
    });
    // The state may have changed while the body arrived.
    this.#requireRunning();
    if (this.#exchanges.size >= concurrency) {
      throw new HttpError(
        503,
        'busy',
        `${concurrency} requests are being handled (concurrency); send this one again after the Retry-After`,
        this.#retryAfter(),
      );
    }
    const exchange: Exchange = { req, res, answered: false };
    const work = this.#process(exchange, verified);
    this.#exchanges.set(exchange, work);
    try {
      await work;
    } finally {
      this.#exchanges.delete(exchange);
    }
  }

  /** Runs the request's messages in order and answers what they came to. */
  async #process(exchange: Exchange, verified: VerifiedWebhookRequest): Promise<void> {
    const { webhookId, messages } = verified;
    const batch = readHeader(exchange.req.headers, BATCH_HEADER) !== undefined;
    let processed = 0;
    let duplicates = 0;
    /** A batch's messages refused for good: the rest still run, the answer is the refusal. */
    const refused: Array<{ id: string; status: number; message: string }> = [];
    for (const message of messages) {
      // Answered already (stop's deadline), or the sender hung up (it sends the request again):
      // the batch's remaining messages are left for that copy.
      if (exchange.answered || exchange.res.destroyed) return;
      const key = this.#options.serialByKey ? message.key : null;
      const outcome = await this.#inLane(key, () =>
        exchange.answered ? Promise.resolve({ kind: 'skipped' as const }) : this.#runOne(message),
      );
      if (outcome === 'busy') {
        this.#answer(
          exchange,
          503,
          {
            error: 'key_busy',
            message:
              `messages of key ${JSON.stringify(key)} ahead of message ${message.id} ran longer than ` +
              `keyWaitMs (${this.#options.keyWaitMs} ms); send it again after the Retry-After`,
          },
          this.#retryAfter(),
        );
        this.emit('consumer:request:refused', { status: 503, code: 'key_busy', webhookId });
        return;
      }
      if (outcome.kind === 'skipped') return;
      if (outcome.kind === 'processed') processed++;
      else if (outcome.kind === 'duplicate') duplicates++;
      else {
        const { status, code, headers } = this.#statusOf(outcome.error);
        // A 500's error stays in the logs; a status the handler chose says what it chose to say.
        const text =
          status < 500 || isWebhookStatusError(outcome.error) ? outcome.error.message : HANDLER_FAILED;
        if (isRefusal(status)) {
          this.logger.error('handler refused the message; the sender dead-letters it', {
            id: message.id,
            topic: message.topic,
            status,
            error: outcome.error.message,
          });
          this.emit('consumer:message:dead', {
            id: message.id,
            topic: message.topic,
            message,
            reason: 'handler_failed',
            error: outcome.error,
            failedAttempts: message.attempt,
            status,
          });
          // In a batch the answer is every message's outcome: the others still run (each once,
          // through the inbox), so that only the refused ones are lost to the dead letters.
          if (batch) {
            refused.push({ id: message.id, status, message: outcome.error.message });
            continue;
          }
        } else {
          this.logger.warn(`handler failed; answered ${status}, the sender sends the message again`, {
            id: message.id,
            topic: message.topic,
            attempt: message.attempt,
            error: outcome.error.message,
          });
          this.emit('consumer:message:failed', {
            message,
            error: outcome.error,
            attempt: message.attempt,
            status,
          });
        }
        // A batch stops here too: its later messages (maybe of the same key) must not overtake
        // this one; the sender sends them all again, and those that ran are duplicates then.
        this.#answer(
          exchange,
          status,
          { error: code, message: text, ...(batch ? { processed, duplicates } : {}) },
          headers,
        );
        return;
      }
    }
    const first = refused[0];
    if (first !== undefined) {
      this.#answer(exchange, first.status, {
        error: 'refused',
        message:
          `${refused.length} of the batch's ${messages.length} messages were refused (the others were handled): ` +
          refused.map((r) => `${r.id}: ${r.message}`).join('; '),
        refused: refused.map((r) => r.id),
        processed,
        duplicates,
      });
      return;
    }
    const outcome = processed === 0 ? 'duplicate' : 'processed';
    this.#answer(exchange, 200, batch ? { outcome, processed, duplicates } : { outcome });
  }

  /** The answer to a handler's error: its status, the error code, and the headers. */
  #statusOf(error: Error): { status: number; code: string; headers: Record<string, string> } {
    if (isWebhookStatusError(error)) {
      const { status, retryAfterSec } = error;
      return {
        status,
        code: isRefusal(status) ? 'refused' : 'handler_failed',
        headers: retryAfterSec === undefined ? {} : { 'retry-after': String(retryAfterSec) },
      };
    }
    // The handler's word that this message can never be handled (a payload that is not JSON, a
    // refusal of its own): 422, so the sender dead-letters it instead of retrying.
    if (isPermanentDeliveryError(error)) return { status: 422, code: 'refused', headers: {} };
    return { status: 500, code: 'handler_failed', headers: {} };
  }

  /** One handler run through the inbox; never throws. */
  async #runOne(message: ReceivedMessage): Promise<Outcome> {
    const started = performance.now();
    try {
      // The inbox transaction committed (or there is none) once this returns.
      const status = await this.#runner.run(message);
      if (status === 'duplicate') {
        this.logger.debug('duplicate message acknowledged', { id: message.id, topic: message.topic });
        this.emit('consumer:message:duplicate', { message });
        return { kind: 'duplicate' };
      }
      const durationMs = performance.now() - started;
      this.logger.debug('message handled', { id: message.id, topic: message.topic, durationMs });
      this.emit('consumer:message:handled', { message, attempt: message.attempt, durationMs });
      return { kind: 'processed' };
    } catch (err) {
      return { kind: 'failed', error: toError(err) };
    }
  }

  /**
   * Runs `work` once every message of `key` admitted before has finished (at once when `key` is
   * null); `'busy'` when that takes longer than `keyWaitMs`. A request that gives up keeps its
   * place until the one ahead is done, so the key's later requests still wait for that one.
   */
  async #inLane(key: string | null, work: () => Promise<Outcome>): Promise<Outcome | 'busy'> {
    if (key === null) return work();
    let state: 'waiting' | 'running' | 'gave-up' = 'waiting';
    let result: Promise<Outcome> | undefined;
    let began: () => void = () => {};
    const started = new Promise<void>((resolve) => (began = resolve));
    void this.#lanes.run(key, () => {
      if (state === 'gave-up') return Promise.resolve();
      state = 'running';
      result = work();
      began();
      return result.then(() => undefined);
    });
    if (state === 'waiting' && !(await within(started, this.#options.keyWaitMs)) && state === 'waiting') {
      state = 'gave-up';
      return 'busy';
    }
    return result as Promise<Outcome>;
  }

  /** Answers the exchange unless it was answered already; true when this call answered it. */
  #answer(exchange: Exchange, status: number, body: object, headers: Record<string, string> = {}): boolean {
    if (exchange.answered) return false;
    exchange.answered = true;
    sendJson(exchange.res, status, body, headers);
    return true;
  }

  /** Reports a request answered before any handler ran. */
  #refused(req: IncomingMessage, err: unknown): void {
    const idText = readHeader(req.headers, 'webhook-id') ?? null;
    if (!(err instanceof HttpError)) return;
    if (err.status === 400) {
      const id = idText !== null && isUuid(idText) ? idText.toLowerCase() : null;
      let topic = readHeader(req.headers, TOPIC_HEADER) ?? '';
      try {
        topic = decodeURIComponent(topic);
      } catch {
        // Shown as sent.
      }
      this.logger.warn('request malformed; answered 400, the sender dead-letters it', {
        id: idText,
        error: err.message,
      });
      this.emit('consumer:message:dead', {
        id,
        topic,
        message: null,
        reason: 'malformed',
        error: new Error(err.message),
        failedAttempts: 0,
        status: 400,
      });
      return;
    }
    if (err.status === 401) this.logger.warn('request refused', { status: err.status, code: err.code });
    this.emit('consumer:request:refused', { status: err.status, code: err.code, webhookId: idText });
  }
}

const STOPPING = 'the webhook consumer is stopping; send the request again after the Retry-After';

/** `context.ack()` on a consumer without an inbox. */
function ackNeedsInboxError(messageId: string): ConfigError {
  return new ConfigError(
    'inbox',
    `context.ack() for message ${messageId} needs an inbox: an acknowledgement is enqueued in the inbox ` +
      'transaction; give the WebhookConsumer an inbox, or do not acknowledge from this handler',
  );
}
