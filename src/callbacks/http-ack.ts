import type { IncomingMessage, ServerResponse } from 'node:http';
import { isWebhookVerificationError } from '../core/errors/webhook-verification-error.js';
import { silentLogger, type Logger } from '../core/logger.js';
import { custom, hasMethods, integer, optionsSchema } from '../core/options-schema.js';
import type { AckOutcome, AckPort } from '../core/ports.js';
import { showValue } from '../core/show-value.js';
import type { AckReceipt, JsonValue } from '../core/types.js';
import { isUuid } from '../core/uuid.js';
import {
  HttpError,
  isJsonContentType,
  readRawBody,
  SeenIds,
  sendJson as send,
  succeeded,
} from './http-receive.js';
import { secretField, type WebhookSecret } from './webhook-secret.js';
import { verifyWebhookWithKeys } from './webhook-signature.js';

/** Options of {@link createAckHandler}. */
export interface AckHandlerOptions {
  /** Where acknowledgements are recorded: the sender's store (`applyAck`). */
  store: Pick<AckPort, 'applyAck'>;
  /**
   * The secret receivers sign their acknowledgements with (see `WebhookSecret`); an array accepts
   * a signature made with any of them, for a key rotation.
   */
  secret: WebhookSecret;
  /**
   * Largest difference between a request's `webhook-timestamp` and this server's clock, either
   * way, in seconds; outside it the request is refused (401) as a possible replay. @default 300
   */
  toleranceSec?: number;
  /** Largest request body accepted; a larger one is answered 413. @default 65536 (64 KiB) */
  maxBodyBytes?: number;
  /**
   * How many recently acknowledged `webhook-id`s are remembered: a replayed request inside the
   * tolerance is answered `duplicate` without a store call. 0 turns this off (`applyAck` is
   * idempotent anyway). @default 10000
   */
  replayCacheSize?: number;
  /** Receives store failures (answered 500). @default silent */
  logger?: Logger;
}

/** A Node request handler: mount it in `http.createServer`, express, or any Node HTTP server. */
export type AckHandler = (req: IncomingMessage, res: ServerResponse) => void;

/** The JSON body of an HTTP acknowledgement. */
export interface HttpAckBody {
  /** The id of the message acknowledged (a UUID). */
  id: string;
  /** The receiving service that acknowledges it: 1 to 255 bytes. */
  consumer: string;
  /** A small result the sender reads back with `outbox.status(id)`. */
  result?: JsonValue;
}

const ackHandlerSchema = optionsSchema<AckHandlerOptions>()('createAckHandler', {
  store: custom('an ack store (applyAck)', hasMethods<Pick<AckPort, 'applyAck'>>('applyAck'), {
    required: true,
  }),
  secret: secretField(),
  toleranceSec: integer({ min: 1, max: 86_400, default: 300 }),
  maxBodyBytes: integer({ min: 256, max: 16 * 1024 * 1024, default: 64 * 1024 }),
  replayCacheSize: integer({ min: 0, max: 1_000_000, default: 10_000 }),
  logger: custom(
    'a Logger (debug, info, warn, error)',
    hasMethods<Logger>('debug', 'info', 'warn', 'error'),
    {
      default: silentLogger,
    },
  ),
});

const BODY_FIELDS = ['id', 'consumer', 'result'];
/** What a client hears of a failure on this side: the cause goes to the logger only. */
const STORE_FAILED = 'the acknowledgement could not be recorded; send it again later';
const MAX_CONSUMER_BYTES = 255;

function badRequest(message: string): HttpError {
  return new HttpError(400, 'bad_request', message);
}

/** The acknowledgement a body carries, or a 400 naming the field and its value. */
function parseHttpAckBody(body: Uint8Array): AckReceipt {
  let parsed: unknown;
  try {
    parsed = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(body));
  } catch (err) {
    throw badRequest(
      `the body is not JSON (${(err as Error).message}); send { "id": "<message id>", "consumer": "<name>" }`,
    );
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw badRequest(`the body must be a JSON object { id, consumer, result? }, got ${showValue(parsed)}`);
  }
  const fields = parsed as Record<string, unknown>;
  for (const key of Object.keys(fields)) {
    if (!BODY_FIELDS.includes(key)) {
      throw badRequest(`unknown field ${showValue(key)} in the body; allowed: ${BODY_FIELDS.join(', ')}`);
    }
  }
  const { id, consumer } = fields;
  if (!isUuid(id)) {
    throw badRequest(`field id must be the acknowledged message's id (a UUID), got ${showValue(id)}`);
  }
  if (
    typeof consumer !== 'string' ||
    consumer === '' ||
    Buffer.byteLength(consumer, 'utf8') > MAX_CONSUMER_BYTES
  ) {
    throw badRequest(
      `field consumer must be the receiving service's name, 1 to ${MAX_CONSUMER_BYTES} bytes, got ${showValue(consumer)}`,
    );
  }
  const receipt: AckReceipt = { id: id.toLowerCase(), consumer };
  if (Object.hasOwn(fields, 'result')) receipt.result = fields.result as JsonValue;
  return receipt;
}

/**
 * An HTTP endpoint for acknowledgements from receivers that do not run Mailroom: a Node request
 * handler, path-agnostic (mount it at any path, in any Node HTTP server).
 *
 * The request is a POST of JSON `{ id, consumer, result? }` with Standard Webhooks headers signed
 * with the shared secret (what {@link sendHttpAck} sends). Answers:
 * - 200 `{ outcome }`: what `applyAck` did (`acknowledged`, `duplicate`, `late`, `early`); a
 *   replayed `webhook-id` within the tolerance is answered `duplicate` without a store call.
 * - 400 malformed JSON or a bad field (the message names it), 401 a missing or bad signature or a
 *   timestamp outside `toleranceSec`, 405 not a POST, 413 a body over `maxBodyBytes`, 415 not
 *   JSON, 500 the store failed (the error goes to the logger, not to the client).
 *
 * Error bodies are `{ error, message }`. The signature covers the raw body, so no JSON body parser
 * may run before it (`express.raw({ type: 'application/json' })` is fine: it reads `req.body`).
 *
 * @example
 * ```ts
 * const acks = createAckHandler({ store, secret: process.env.MAILROOM_ACK_SECRET! });
 * http.createServer((req, res) => {
 *   if (req.url === '/mailroom/ack') return acks(req, res);
 *   res.writeHead(404).end();
 * }).listen(8080);
 * // express: app.post('/mailroom/ack', acks);
 * ```
 */
export function createAckHandler(options: AckHandlerOptions): AckHandler {
  const {
    store,
    secret: keys,
    toleranceSec,
    maxBodyBytes,
    replayCacheSize,
    logger,
  } = ackHandlerSchema.resolve(options);
  const seen = new SeenIds(replayCacheSize);
  /** Requests whose store call is under way, by webhook-id: a concurrent replay waits for it. */
  const pending = new Map<string, Promise<unknown>>();

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (req.method !== 'POST') {
      throw new HttpError(405, 'method_not_allowed', `use POST, not ${req.method ?? 'no method'}`, {
        allow: 'POST',
      });
    }
    if (!isJsonContentType(req.headers['content-type'])) {
      throw new HttpError(
        415,
        'unsupported_media_type',
        `the content-type must be application/json, got ${showValue(req.headers['content-type'] ?? 'none')}`,
      );
    }
    const body = await readRawBody(req, maxBodyBytes, "an acknowledgement's result must be small");
    let id: string;
    try {
      ({ id } = verifyWebhookWithKeys(keys, { headers: req.headers, body, toleranceSec }));
    } catch (err) {
      if (!isWebhookVerificationError(err)) throw err;
      throw new HttpError(401, err.code, err.message);
    }
    if (seen.has(id)) return send(res, 200, { outcome: 'duplicate' satisfies AckOutcome });
    // A copy of a request still at the store: answered once that one succeeded; if it failed,
    // this copy tries the store itself.
    const earlier = pending.get(id);
    if (earlier && (await succeeded(earlier)))
      return send(res, 200, { outcome: 'duplicate' satisfies AckOutcome });
    const receipt = parseHttpAckBody(body);
    const applying = store.applyAck(receipt);
    pending.set(id, applying);
    let outcome: AckOutcome;
    try {
      outcome = await applying;
    } catch (err) {
      const log = { error: String(err), id: receipt.id, consumer: receipt.consumer };
      throw new HttpError(500, 'internal', STORE_FAILED, {}, log);
    } finally {
      if (pending.get(id) === applying) pending.delete(id);
    }
    seen.add(id);
    send(res, 200, { outcome });
  }

  return (req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (err instanceof HttpError) {
        if (err.log) logger.error('http ack answered 500', { code: err.code, ...err.log });
        send(res, err.status, { error: err.code, message: err.message }, err.headers);
      } else {
        logger.error('http ack answered 500', { code: 'internal', error: String(err) });
        send(res, 500, { error: 'internal', message: STORE_FAILED });
      }
      // Whatever of the body is left unread is thrown away, so the response can go out.
      if (!req.readableEnded) req.resume();
    });
  };
}
