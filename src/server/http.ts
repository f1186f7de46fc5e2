import type { IncomingMessage, ServerResponse } from 'node:http';
import { AdminRequestError } from './admin-request-error.js';

/** Headers on every response: no MIME sniffing, nothing cached (counts and payloads change). */
export const COMMON_HEADERS: Readonly<Record<string, string>> = {
  'X-Content-Type-Options': 'nosniff',
  'Cache-Control': 'no-store',
};

/**
 * Headers on the dashboard's HTML: its own scripts and styles only (no inline code, no CDN), never
 * framed, no referrer sent with its requests.
 */
export const HTML_HEADERS: Readonly<Record<string, string>> = {
  'Content-Security-Policy': "default-src 'self'; frame-ancestors 'none'",
  'X-Frame-Options': 'DENY',
  'Referrer-Policy': 'no-referrer',
};

export const JSON_TYPE = 'application/json; charset=utf-8';

/** Writes a complete response, unless one was already started (a timeout answered first). */
export function send(
  res: ServerResponse,
  status: number,
  contentType: string,
  body: string,
  headers: Record<string, string> = {},
): void {
  if (res.headersSent || res.writableEnded || res.destroyed) return;
  res.writeHead(status, {
    ...COMMON_HEADERS,
    ...headers,
    'Content-Type': contentType,
    'Content-Length': Buffer.byteLength(body),
  });
  res.end(body);
}

export function sendJson(
  res: ServerResponse,
  status: number,
  value: unknown,
  headers: Record<string, string> = {},
): void {
  send(res, status, JSON_TYPE, JSON.stringify(value), headers);
}

export function sendError(
  res: ServerResponse,
  err: AdminRequestError,
  extra: Record<string, string> = {},
): void {
  sendJson(
    res,
    err.status,
    { error: { code: err.code, message: err.message } },
    { ...err.headers, ...extra },
  );
}

/**
 * Reads a JSON request body of at most `limit` bytes, within `timeoutMs` of the call (a body that
 * never ends is answered 408, not waited on). Rejects with an {@link AdminRequestError}: 413 for a
 * bigger body (announced or sent), 408 when the body is late, 400 for one that is not JSON.
 */
export function readJsonBody(req: IncomingMessage, limit: number, timeoutMs: number): Promise<unknown> {
  const announced = req.headers['content-length'];
  if (announced !== undefined && Number(announced) > limit) {
    return Promise.reject(tooLarge(limit, `${announced} bytes were announced`));
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let finished = false;
    const finish = (err: AdminRequestError | null, value?: unknown) => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      if (err) reject(err);
      else resolve(value);
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) finish(tooLarge(limit, 'more was sent'));
      else chunks.push(chunk);
    };
    const onEnd = () => {
      const text = Buffer.concat(chunks).toString('utf8');
      if (text.trim() === '') {
        finish(new AdminRequestError(400, 'invalid_json', 'the request body is empty; send a JSON object'));
        return;
      }
      try {
        finish(null, JSON.parse(text));
      } catch (err) {
        finish(
          new AdminRequestError(
            400,
            'invalid_json',
            `the request body is not valid JSON (${(err as Error).message}); send a JSON object such as {"ids":["<uuid>"]}`,
          ),
        );
      }
    };
    const onError = () =>
      finish(
        new AdminRequestError(
          400,
          'bad_request',
          'the request body could not be read (the client went away)',
        ),
      );
    const timer = setTimeout(
      () =>
        finish(
          new AdminRequestError(
            408,
            'request_timeout',
            `the request body did not arrive within ${timeoutMs} ms; send it whole, with its Content-Length`,
          ),
        ),
      timeoutMs,
    );
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
  });
}

function tooLarge(limit: number, what: string): AdminRequestError {
  return new AdminRequestError(
    413,
    'body_too_large',
    `the request body is larger than ${limit} bytes (${what}); replay or purge many dead letters by topic or {"all":true}, not by listing ids`,
  );
}
