/**
 * What Mailroom's signed HTTP endpoints share (the HTTP acknowledgement endpoint, the webhook
 * transport's receiver): reading a raw body within a limit, answering in JSON, and remembering the
 * `webhook-id`s recently answered so that a replay inside the timestamp tolerance is not acted on
 * twice.
 *
 * @module
 */
import type { IncomingMessage, ServerResponse } from 'node:http';

/** A `webhook-id`'s request was answered 2xx and need not be acted on again. Least recently used goes first. */
export class SeenIds {
  readonly #ids = new Map<string, true>();
  readonly #capacity: number;

  constructor(capacity: number) {
    this.#capacity = capacity;
  }

  has(id: string): boolean {
    if (!this.#ids.has(id)) return false;
    // Least recently used goes first: a hit moves the id to the young end.
    this.#ids.delete(id);
    this.#ids.set(id, true);
    return true;
  }

  add(id: string): void {
    if (this.#capacity === 0) return;
    this.#ids.delete(id);
    this.#ids.set(id, true);
    if (this.#ids.size > this.#capacity) this.#ids.delete(this.#ids.keys().next().value as string);
  }
}

/** An answer other than 2xx; `log` set for the ones the operator must hear of (500s). */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly headers: Record<string, string> = {},
    readonly log?: Record<string, unknown>,
  ) {
    super(message);
  }
}

/** Answers with a JSON body (or just ends a response whose head already went out). */
export function sendJson(
  res: ServerResponse,
  status: number,
  body: object,
  headers: Record<string, string> = {},
): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': String(Buffer.byteLength(text)),
    'cache-control': 'no-store',
    ...headers,
  });
  res.end(text);
}

/** `application/json`, or any `application/…+json`. */
export function isJsonContentType(contentType: string | undefined): boolean {
  const type = contentType?.split(';')[0]?.trim().toLowerCase() ?? '';
  return type === 'application/json' || (type.startsWith('application/') && type.endsWith('+json'));
}

function tooLarge(size: number | string, max: number, hint: string): HttpError {
  return new HttpError(
    413,
    'too_large',
    `the body is ${size} bytes, over the limit of ${max}${hint ? `; ${hint}` : ''}`,
    // The rest of the body is not read: the connection cannot be reused.
    { connection: 'close' },
  );
}

/**
 * The raw body, within `max` bytes (413 beyond, `hint` saying what to do); also one a raw body
 * parser (`express.raw`) already read into `req.body`. A body a JSON parser already consumed is
 * a 500 naming the cause: the signature covers the raw bytes.
 */
export async function readRawBody(req: IncomingMessage, max: number, hint = ''): Promise<Buffer> {
  const parsed = (req as IncomingMessage & { body?: unknown }).body;
  if (Buffer.isBuffer(parsed)) {
    if (parsed.length > max) throw tooLarge(parsed.length, max, hint);
    return parsed;
  }
  if (req.readableEnded) {
    const message =
      'the request body was already read, by a body parser mounted before this handler; the ' +
      'signature covers the raw bytes, so mount the handler before express.json() (or use express.raw())';
    throw new HttpError(500, 'body_consumed', message, {}, { error: message });
  }
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > max) throw tooLarge(declared, max, hint);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > max) throw tooLarge(`over ${max}`, max, hint);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, size);
}

/** Resolves true when `promise` fulfils, false when it rejects. */
export function succeeded(promise: Promise<unknown>): Promise<boolean> {
  return promise.then(
    () => true,
    () => false,
  );
}
