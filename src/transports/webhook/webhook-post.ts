/**
 * One HTTP request to the endpoint, on the transport's keep-alive pool (`node:http` / `node:https`
 * Agent), and what came of it, with the phase it ended in: whether the connection was ever open
 * decides between an outage and a failure of this message.
 *
 * @module
 */
import { request as httpRequest, type Agent as HttpAgent, type IncomingHttpHeaders } from 'node:http';
import { request as httpsRequest, type Agent as HttpsAgent } from 'node:https';

/** What one request came to. */
export type PostResult =
  /** The endpoint answered; `snippet` is the first bytes of its body, one line. */
  | { kind: 'answered'; status: number; statusText: string; headers: IncomingHttpHeaders; snippet: string }
  /**
   * No answer: the connection could not be opened (refused, no such host, TLS failure, connect
   * deadline) or broke before the status line came (reset, closed).
   */
  | { kind: 'failed'; connected: boolean; error: Error & { code?: string } }
  /** The connection was open and the answer did not come within `timeoutMs`. */
  | { kind: 'timeout' }
  /** The caller's signal aborted first. */
  | { kind: 'aborted'; connected: boolean }
  /** Node refused to build the request (a header or path it cannot encode): nothing was sent. */
  | { kind: 'invalid'; error: Error };

export interface PostRequest {
  tls: boolean;
  agent: HttpAgent | HttpsAgent;
  host: string;
  port: number;
  method: 'POST' | 'GET' | 'HEAD';
  path: string;
  headers: Record<string, string>;
  body?: Buffer;
  timeoutMs: number;
  connectTimeoutMs: number;
  signal: AbortSignal | undefined;
}

/** Enough of an answer to say why it refused; more would bloat the dead letter's error. */
const SNIPPET_BYTES = 300;
/** A body beyond this is not drained for the connection's sake: the socket is dropped instead. */
const DRAIN_BYTES = 1024 * 1024;
/** Errors of a kept-alive socket the server closed just as it was reused: send again on a new one. */
const STALE_SOCKET_CODES = new Set(['ECONNRESET', 'EPIPE', 'ECONNABORTED']);
/** Sends on stale kept-alive sockets before giving up (the pool may hold several dead ones). */
const MAX_STALE_RETRIES = 4;

class ConnectTimeoutError extends Error {
  readonly code = 'ETIMEDOUT';
}

function once(request: PostRequest): Promise<PostResult & { stale?: boolean }> {
  return new Promise((resolve) => {
    const send = request.tls ? httpsRequest : httpRequest;
    let connected = false;
    let settled = false;
    let connectTimer: ReturnType<typeof setTimeout> | undefined;
    const finish = (result: PostResult & { stale?: boolean }): void => {
      if (settled) return;
      settled = true;
      clearTimeout(connectTimer);
      clearTimeout(timer);
      request.signal?.removeEventListener('abort', onAbort);
      resolve(result);
    };
    let req: ReturnType<typeof send>;
    try {
      req = send({
        host: request.host,
        port: request.port,
        method: request.method,
        path: request.path,
        headers:
          request.body === undefined
            ? request.headers
            : { ...request.headers, 'content-length': String(request.body.length) },
        agent: request.agent,
      });
    } catch (err) {
      // Node refuses the request before sending (a header value or path it cannot encode).
      resolve({ kind: 'invalid', error: err instanceof Error ? err : new Error(String(err)) });
      return;
    }
    const onAbort = (): void => {
      finish({ kind: 'aborted', connected });
      req.destroy();
    };
    /** Set once the status line came: the deadline then ends the body's wait, not the answer. */
    let answered: (() => void) | undefined;
    const timer = setTimeout(() => {
      if (answered) answered();
      else if (!connected)
        finish({
          kind: 'failed',
          connected,
          error: new ConnectTimeoutError(`no connection within ${request.timeoutMs} ms`),
        });
      else finish({ kind: 'timeout' });
      req.destroy();
    }, request.timeoutMs);
    request.signal?.addEventListener('abort', onAbort, { once: true });
    req.on('socket', (socket) => {
      if (req.reusedSocket || !socket.connecting) {
        connected = true;
        return;
      }
      connectTimer = setTimeout(() => {
        finish({
          kind: 'failed',
          connected: false,
          error: new ConnectTimeoutError(
            `no connection within connectTimeoutMs (${request.connectTimeoutMs} ms)`,
          ),
        });
        req.destroy();
      }, request.connectTimeoutMs);
      socket.once(request.tls ? 'secureConnect' : 'connect', () => {
        connected = true;
        clearTimeout(connectTimer);
      });
    });
    req.on('error', (error: Error & { code?: string }) => {
      const stale = req.reusedSocket && STALE_SOCKET_CODES.has(error.code ?? '');
      finish({ kind: 'failed', connected, error, stale });
    });
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      let collected = 0;
      const answer = (): void => {
        const text = Buffer.concat(chunks).subarray(0, SNIPPET_BYTES).toString('utf8');
        finish({
          kind: 'answered',
          status: res.statusCode ?? 0,
          statusText: res.statusMessage ?? '',
          headers: res.headers,
          // eslint-disable-next-line no-control-regex
          snippet: text.replace(/[\x00-\x1f\x7f]+/g, ' ').trim(),
        });
      };
      res.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (collected < SNIPPET_BYTES) {
          chunks.push(chunk);
          collected += chunk.length;
        }
        if (size > DRAIN_BYTES) {
          // Not worth reading for the sake of keep-alive: the socket goes.
          answer();
          res.destroy();
        }
      });
      answered = answer;
      res.on('end', answer);
      res.on('error', answer);
      res.on('aborted', answer);
      // A 2xx is the confirmation, whatever the body: answered at once, the body drains behind.
      if ((res.statusCode ?? 0) >= 200 && (res.statusCode ?? 0) < 300) answer();
    });
    req.end(request.body);
  });
}

/**
 * Sends the request and waits for the status line (and, for an answer other than 2xx, the first
 * bytes of its body). Never throws. A kept-alive socket that turns out dead (the server closed it
 * as it was reused) does not count: the request goes again on another socket, as Node's
 * documentation advises; the receiver deduplicates on `webhook-id` should the first copy have
 * arrived after all.
 */
export async function sendRequest(request: PostRequest): Promise<PostResult> {
  for (let stale = 0; ; stale++) {
    const result = await once(request);
    if (
      result.kind === 'failed' &&
      result.stale === true &&
      stale < MAX_STALE_RETRIES &&
      !request.signal?.aborted
    )
      continue;
    if (result.kind === 'failed') return { kind: 'failed', connected: result.connected, error: result.error };
    return result;
  }
}
