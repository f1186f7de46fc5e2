import type { Clock } from '../core/clock.js';
import type { CallbackEvent } from '../core/ports.js';
import { redactUrl } from '../core/redact.js';
import type { JsonValue } from '../core/types.js';
import { webhookSignature } from './webhook-signature.js';

/** The JSON body of a callback: what a receiver parses after verifying the signature. */
export interface CallbackPayload {
  /** `message.delivered`, `message.acknowledged`, `message.expired` or `message.dead`. */
  type: `message.${CallbackEvent['event']}`;
  /** When the event happened (database clock), ISO 8601. The same on every attempt. */
  timestamp: string;
  data: {
    /** The message's id. */
    id: string;
    topic: string;
    event: CallbackEvent['event'];
    /** `acknowledged`: `consumer` and `result`; `dead`: `error`; and whatever the store adds. */
    [detail: string]: JsonValue;
  };
}

/** What one POST came to. */
export type PostOutcome =
  | { kind: 'delivered'; status: number }
  /** A failure worth another attempt; `retryAfterMs` when the receiver said when (429, 503). */
  | { kind: 'retry'; error: string; status?: number; retryAfterMs?: number }
  /** The receiver refuses this callback (a 4xx other than 408 and 429), or its URL is unusable. */
  | { kind: 'dead'; error: string; status?: number }
  /** `stop()` cut the POST short: no answer, not the receiver's fault. */
  | { kind: 'aborted'; error: string };

/** What a POST needs from its dispatcher. */
export interface PostContext {
  fetch: typeof fetch;
  keys: readonly Uint8Array[];
  timeoutMs: number;
  clock: Clock;
  /** Aborted when `stop()` gives up waiting. */
  signal: AbortSignal;
}

/** Enough of a receiver's answer to say why it refused; more would bloat `last_error`. */
const SNIPPET_BYTES = 300;
const RESERVED = new Set(['id', 'topic', 'event']);

/** The body of a callback; the event's detail cannot override the ids. */
export function callbackPayload(event: CallbackEvent): CallbackPayload {
  const data: CallbackPayload['data'] = { id: event.messageId, topic: event.topic, event: event.event };
  for (const [key, value] of Object.entries(event.detail ?? {})) {
    if (!RESERVED.has(key) && value !== undefined) data[key] = value;
  }
  return { type: `message.${event.event}`, timestamp: event.occurredAt.toISOString(), data };
}

/** Why a fetch threw, in words: the socket's error (`ECONNREFUSED`, `ENOTFOUND`…), not `fetch failed`. */
function describeFailure(err: unknown): string {
  let cause: unknown = err;
  // Node's fetch wraps network errors in TypeError('fetch failed'), the socket's error as cause;
  // a connect to a name with several addresses fails with an AggregateError of each.
  if (cause instanceof TypeError && cause.cause !== undefined) cause = cause.cause;
  if (cause instanceof AggregateError && cause.errors.length > 0) cause = cause.errors[0];
  const code = (cause as { code?: unknown } | null)?.code;
  const message = cause instanceof Error ? cause.message : String(cause);
  return typeof code === 'string' && !message.includes(code) ? `${code}: ${message}` : message;
}

/** The first bytes of a response body as one line of text; drains or cancels the rest. */
async function snippet(response: Response): Promise<string> {
  const reader = response.body?.getReader();
  if (!reader) return '';
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    while (size < SNIPPET_BYTES) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      size += value.length;
    }
    if (size >= SNIPPET_BYTES) await reader.cancel();
  } catch {
    // What was read is still worth showing.
  }
  const text = Buffer.concat(chunks).subarray(0, SNIPPET_BYTES).toString('utf8');
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\x00-\x1f\x7f]+/g, ' ').trim();
}

/** A redirect's target as an absolute URL, redacted (a relative `location` resolves against the request's). */
function absolute(location: string | null, base: URL): string | null {
  if (!location) return null;
  try {
    return redactUrl(new URL(location, base).toString());
  } catch {
    return redactUrl(location);
  }
}

/** `Retry-After` in ms: delay seconds or an HTTP date. */
function retryAfterMs(response: Response): number | undefined {
  const value = response.headers.get('retry-after')?.trim();
  if (!value) return undefined;
  if (/^\d+$/.test(value)) return Number(value) * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}

/**
 * POSTs one callback, signed, and says what came of it. Never throws. Redirects are not followed
 * (a 3xx is a failed attempt, retried): following one would send the signed outcome to a host
 * the message did not name. Credentials in the URL (`https://user:pass@host/…`) go as a Basic
 * `authorization` header; error texts show the URL redacted.
 */
export async function postCallback(event: CallbackEvent, context: PostContext): Promise<PostOutcome> {
  const shown = redactUrl(event.url);
  let target: URL;
  try {
    target = new URL(event.url);
  } catch {
    return { kind: 'dead', error: `callback URL ${shown} is not a URL` };
  }
  if (target.protocol !== 'http:' && target.protocol !== 'https:') {
    return { kind: 'dead', error: `callback URL ${shown} is not http:// or https://` };
  }
  const headers: Record<string, string> = { 'content-type': 'application/json', 'user-agent': 'mailroom' };
  if (target.username !== '' || target.password !== '') {
    const user = `${decodeURIComponent(target.username)}:${decodeURIComponent(target.password)}`;
    headers.authorization = `Basic ${Buffer.from(user, 'utf8').toString('base64')}`;
    target.username = '';
    target.password = '';
  }
  const body = Buffer.from(JSON.stringify(callbackPayload(event)), 'utf8');
  // Wall-clock seconds, as receivers compare them with theirs; a new one per attempt, so a retry
  // an hour later is still inside their tolerance. The id stays the callback's own.
  const timestamp = String(Math.floor(Date.now() / 1000));
  headers['webhook-id'] = event.id;
  headers['webhook-timestamp'] = timestamp;
  headers['webhook-signature'] = webhookSignature(context.keys, event.id, timestamp, body);

  if (context.signal.aborted) return { kind: 'aborted', error: 'the dispatcher stopped before the POST' };
  const attempt = new AbortController();
  const onStop = (): void => attempt.abort();
  context.signal.addEventListener('abort', onStop, { once: true });
  const timer = new AbortController();
  let timedOut = false;
  void context.clock.sleep(context.timeoutMs, timer.signal).then((full) => {
    if (!full) return;
    timedOut = true;
    attempt.abort();
  });
  try {
    const response = await context.fetch(target, {
      method: 'POST',
      headers,
      body,
      redirect: 'manual',
      signal: attempt.signal,
    });
    const { status } = response;
    const said = await snippet(response);
    const answered = `POST ${shown} answered ${status}${response.statusText ? ` ${response.statusText}` : ''}`;
    if (status >= 200 && status < 300) return { kind: 'delivered', status };
    if (status >= 300 && status < 400) {
      const location = absolute(response.headers.get('location'), target);
      return {
        kind: 'retry',
        status,
        error:
          `${answered}${location ? ` to ${location}` : ''}: redirects are not followed ` +
          '(the signed outcome would go to a host the message did not name); give the final URL',
      };
    }
    const detail = said ? `: ${said}` : '';
    if (status >= 400 && status < 500 && status !== 408 && status !== 429) {
      return {
        kind: 'dead',
        status,
        error: `${answered}${detail} (a 4xx other than 408 and 429 means the receiver refuses it: not retried)`,
      };
    }
    const after = status === 429 || status === 503 ? retryAfterMs(response) : undefined;
    return {
      kind: 'retry',
      status,
      error: `${answered}${detail}`,
      ...(after === undefined ? {} : { retryAfterMs: after }),
    };
  } catch (err) {
    if (timedOut) return { kind: 'retry', error: `POST ${shown} timed out after ${context.timeoutMs} ms` };
    if (context.signal.aborted) {
      return {
        kind: 'aborted',
        error: `POST ${shown} aborted: the dispatcher stopped before the receiver answered`,
      };
    }
    return { kind: 'retry', error: `POST ${shown} failed: ${describeFailure(err)}` };
  } finally {
    timer.abort();
    context.signal.removeEventListener('abort', onStop);
  }
}
