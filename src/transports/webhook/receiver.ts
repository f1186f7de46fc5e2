/**
 * The receiving end of the webhook transport: verifies a request's Standard Webhooks signature
 * and timestamp, refuses replays, and decodes the message (or a batch's messages) for a handler.
 *
 * @module
 */
import type { IncomingMessage, ServerResponse } from 'node:http';

import { HttpError, readRawBody, SeenIds, sendJson, succeeded } from '../../callbacks/http-receive.js';
import { secretField, webhookKeys, type WebhookSecret } from '../../callbacks/webhook-secret.js';
import { readHeader, verifyWebhookWithKeys, type HeaderSource } from '../../callbacks/webhook-signature.js';
import {
  isPermanentDeliveryError,
  PermanentDeliveryError,
} from '../../core/errors/permanent-delivery-error.js';
import { isWebhookVerificationError } from '../../core/errors/webhook-verification-error.js';
import { silentLogger, type Logger } from '../../core/logger.js';
import { custom, hasMethods, integer, optionsSchema } from '../../core/options-schema.js';
import type { ReceivedMessage } from '../../core/types.js';
import { decodeWebhookRequest } from './webhook-decode.js';
import { BATCH_HEADER, ID_HEADER } from './webhook-wire.js';

/** What the handler learns about the request besides the message. */
export interface WebhookRequestInfo {
  /** The request's `webhook-id`: the message id, or `batch_…` for a batch. */
  webhookId: string;
  /** Its `webhook-timestamp`, Unix seconds. */
  timestamp: number;
  /** For a batch, this message's place in it and the batch's size; else index 0 of 1. */
  index: number;
  count: number;
}

/**
 * Handles one received message. Throwing answers the request 500, so the sender tries again; a
 * `PermanentDeliveryError` answers 422, so the sender dead-letters the message.
 */
export type WebhookMessageHandler = (message: ReceivedMessage, info: WebhookRequestInfo) => unknown;

/** Options of {@link createWebhookReceiver}. */
export interface WebhookReceiverOptions {
  /** The secret the sender signs with (or several, during a key rotation: any one matches). */
  secret: WebhookSecret;
  /**
   * Called for each message of a verified request, in order (a batch's one after another). It
   * must be idempotent, as delivery is at least once: hand the message to `inbox.handle`.
   */
  handler: WebhookMessageHandler;
  /**
   * Largest difference between a request's `webhook-timestamp` and this server's clock, either
   * way, in seconds; outside it the request is refused (401) as a possible replay. @default 300
   */
  toleranceSec?: number;
  /** Largest request body; a larger one is answered 413. Match the sender's `maxBodyBytes`. @default 1048576 */
  maxBodyBytes?: number;
  /**
   * How many handled message ids are remembered: a copy of a handled message (a replayed request
   * inside the tolerance, the sender's retry after a lost answer, a batch repeating a message) is
   * not handed to the handler again; a request with nothing new is answered 200 `duplicate`. 0
   * turns this off. In memory and per process: the inbox remains what makes effects happen once.
   * @default 10000
   */
  replayCacheSize?: number;
  /** Receives handler failures (answered 500). @default silent */
  logger?: Logger;
}

/** Options of {@link verifyWebhookRequest}. */
export interface VerifyWebhookRequestOptions {
  /** The shared secret, or several. */
  secret: WebhookSecret;
  /** The request's headers: `req.headers` (Node), `request.headers` (fetch), or a plain object. */
  headers: HeaderSource;
  /** The raw body, before any parsing. */
  body: Uint8Array;
  /** @default 300 */
  toleranceSec?: number;
  /** The receiver's time, for tests: a `Date` or Unix seconds. @default now */
  now?: Date | number;
}

/** A verified request: its id and timestamp, and the messages it carries. */
export interface VerifiedWebhookRequest {
  webhookId: string;
  timestamp: number;
  messages: ReceivedMessage[];
}

/**
 * Verifies a request the webhook transport sent and decodes its messages, for any framework
 * (fetch `Request`, Fastify, Hono…): read the raw body, pass the headers. Throws a
 * `WebhookVerificationError` (answer 401) for a missing or bad signature or a timestamp outside
 * the tolerance, a `PermanentDeliveryError` with `details.reason === 'malformed'` (answer 400) for
 * a request that carries no message Mailroom's transport would send. Replays inside the tolerance
 * pass: remember the `webhookId`s you answered (as {@link createWebhookReceiver} does).
 *
 * @example
 * ```ts
 * const body = new Uint8Array(await request.arrayBuffer());
 * const { messages } = verifyWebhookRequest({ secret, headers: request.headers, body });
 * for (const m of messages) await inbox.handle(m, (tx) => apply(tx, m.payload));
 * ```
 */
export function verifyWebhookRequest(options: VerifyWebhookRequestOptions): VerifiedWebhookRequest {
  return verifyWithKeys(webhookKeys(options.secret), options);
}

function verifyWithKeys(
  keys: readonly Uint8Array[],
  options: Omit<VerifyWebhookRequestOptions, 'secret'>,
): VerifiedWebhookRequest {
  const { id, timestamp } = verifyWebhookWithKeys(keys, options);
  const body = Buffer.isBuffer(options.body) ? options.body : Buffer.from(options.body);
  const messages = decodeWebhookRequest(options.headers, body);
  // The signature covers the webhook-id and the body, not the other headers: a single POST's
  // message id is taken as signed only because it must equal the webhook-id.
  const single = readHeader(options.headers, BATCH_HEADER) === undefined;
  if (single && messages[0]?.id !== id.toLowerCase()) {
    throw new PermanentDeliveryError(
      `${ID_HEADER} ${JSON.stringify(messages[0]?.id)} differs from webhook-id ${JSON.stringify(id)}; the ` +
        'webhook transport sends the message id as both (the signature covers only the webhook-id)',
      { details: { reason: 'malformed', field: ID_HEADER } },
    );
  }
  return { webhookId: id, timestamp, messages };
}

const receiverSchema = optionsSchema<WebhookReceiverOptions>()('createWebhookReceiver', {
  secret: secretField(),
  handler: custom(
    'a function (message, info) => …',
    (v): v is WebhookMessageHandler => typeof v === 'function',
    { required: true },
  ),
  toleranceSec: integer({ min: 1, max: 86_400, default: 300 }),
  maxBodyBytes: integer({ min: 256, max: 2 ** 31 - 1, default: 1024 * 1024 }),
  replayCacheSize: integer({ min: 0, max: 1_000_000, default: 10_000 }),
  logger: custom(
    'a Logger (debug, info, warn, error)',
    hasMethods<Logger>('debug', 'info', 'warn', 'error'),
    {
      default: silentLogger,
    },
  ),
});

/** A Node request handler: mount it in `http.createServer`, express, or any Node HTTP server. */
export type WebhookReceiver = (req: IncomingMessage, res: ServerResponse) => void;

const HANDLER_FAILED = 'the message could not be handled; it will be sent again';

/**
 * A Node request handler for the webhook transport's POSTs, path-agnostic. Answers:
 * - 200 `{ outcome: 'processed', count }` once the handler returned for every new message of the
 *   request; 200 `{ outcome: 'duplicate' }` when every message in it was handled before (within
 *   `replayCacheSize`), without calling the handler.
 * - 401 a missing or bad signature, or a timestamp outside `toleranceSec` (stale or in the future).
 * - 400 a request without Mailroom's headers or with a malformed batch; 405 not a POST;
 *   413 a body over `maxBodyBytes`.
 * - 422 the handler threw a `PermanentDeliveryError` (or read the `payload` of a JSON message
 *   whose body is not JSON): the transport dead-letters the message.
 * - 500 the handler threw anything else (the error goes to the logger, not to the client): the
 *   transport retries the message.
 *
 * Error bodies are `{ error, message }`. The signature covers the raw body, so no body parser may
 * run before it (`express.raw()` is fine: it leaves a Buffer in `req.body`).
 *
 * @example
 * ```ts
 * const inbox = new Inbox({ store, consumer: 'billing' });
 * const receive = createWebhookReceiver({
 *   secret: process.env.MAILROOM_WEBHOOK_SECRET!,
 *   handler: (message) => inbox.handle(message, (tx) => bill(tx, message.payload)),
 * });
 * http.createServer(receive).listen(8080);
 * ```
 */
export function createWebhookReceiver(options: WebhookReceiverOptions): WebhookReceiver {
  const {
    secret: keys,
    handler,
    toleranceSec,
    maxBodyBytes,
    replayCacheSize,
    logger,
  } = receiverSchema.resolve(options);
  const seen = new SeenIds(replayCacheSize);
  /** Requests whose handler runs right now, by webhook-id: a concurrent copy waits for it. */
  const pending = new Map<string, Promise<unknown>>();

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const verified = await readVerifiedRequest(req, { keys, maxBodyBytes, toleranceSec });
    const { webhookId, timestamp, messages } = verified;
    // Messages already handled (this request replayed, or a copy of a message that came before):
    // not handled again. The ids are the messages' own, so a batch that repeats a message skips it.
    const fresh = messages
      .map((message, index) => ({ message, index }))
      .filter(({ message }) => !seen.has(message.id));
    if (fresh.length === 0) return sendJson(res, 200, { outcome: 'duplicate' });
    // A copy of a request still being handled: answered once that one succeeded; if it failed,
    // this copy runs the handler itself.
    const earlier = pending.get(webhookId);
    if (earlier && (await succeeded(earlier))) return sendJson(res, 200, { outcome: 'duplicate' });
    const running = (async () => {
      for (const { message, index } of fresh) {
        await handler(message, { webhookId, timestamp, index, count: messages.length });
        seen.add(message.id);
      }
    })();
    pending.set(webhookId, running);
    try {
      await running;
    } catch (err) {
      // The handler's word that this message can never be handled (a payload that is not JSON, a
      // refusal of its own): 422, so the sender dead-letters it instead of retrying.
      if (isPermanentDeliveryError(err)) throw new HttpError(422, 'refused', err.message);
      throw new HttpError(500, 'handler_failed', HANDLER_FAILED, {}, { error: String(err), webhookId });
    } finally {
      if (pending.get(webhookId) === running) pending.delete(webhookId);
    }
    sendJson(res, 200, { outcome: 'processed', count: fresh.length });
  }

  return (req, res) => {
    handle(req, res).catch((err: unknown) => answerError(req, res, err, logger, 'webhook receiver'));
  };
}

/**
 * Reads a request's raw body (or takes `body`, read already by a framework) and verifies it, as
 * {@link createWebhookReceiver} and `WebhookConsumer` do. Throws the `HttpError` to answer: 405
 * not a POST, 413 a body over `maxBodyBytes`, 401 a bad signature or timestamp, 400 a request
 * Mailroom's transport would not send.
 *
 * @internal
 */
export async function readVerifiedRequest(
  req: IncomingMessage,
  options: { keys: readonly Uint8Array[]; maxBodyBytes: number; toleranceSec: number; body?: Buffer },
): Promise<VerifiedWebhookRequest> {
  if (req.method !== 'POST') {
    throw new HttpError(405, 'method_not_allowed', `use POST, not ${req.method ?? 'no method'}`, {
      allow: 'POST',
    });
  }
  const { keys, maxBodyBytes, toleranceSec } = options;
  const hint = 'raise maxBodyBytes here and on the sender';
  let body: Buffer;
  if (options.body === undefined) body = await readRawBody(req, maxBodyBytes, hint);
  else if (options.body.length > maxBodyBytes) {
    throw new HttpError(
      413,
      'too_large',
      `the body is ${options.body.length} bytes, over the limit of ${maxBodyBytes}; ${hint}`,
    );
  } else body = options.body;
  try {
    return verifyWithKeys(keys, { headers: req.headers, body, toleranceSec });
  } catch (err) {
    if (isWebhookVerificationError(err)) throw new HttpError(401, err.code, err.message);
    if (isPermanentDeliveryError(err)) throw new HttpError(400, 'malformed', err.message);
    throw err;
  }
}

/**
 * Answers a failed request: an `HttpError` with its status, code and headers (logged when it
 * carries `log`), anything else 500 (logged, not shown). Whatever of the body is left unread is
 * thrown away, so the response can go out.
 *
 * @internal
 */
export function answerError(
  req: IncomingMessage,
  res: ServerResponse,
  err: unknown,
  logger: Logger,
  who: string,
): void {
  if (err instanceof HttpError) {
    if (err.log) logger.error(`${who} answered ${err.status}`, { code: err.code, ...err.log });
    sendJson(res, err.status, { error: err.code, message: err.message }, err.headers);
  } else {
    logger.error(`${who} answered 500`, { code: 'internal', error: String(err) });
    sendJson(res, 500, { error: 'internal', message: HANDLER_FAILED });
  }
  if (!req.readableEnded) req.resume();
}
