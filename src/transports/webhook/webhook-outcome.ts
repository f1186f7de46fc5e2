/**
 * What an HTTP exchange means for the message(s) it carried: the classification of answers and
 * failures into publish outcomes (docs/transports/webhook.md, "Outcomes"), and the per-call state
 * that stops sending after an outage, and a key's later messages after its failure.
 *
 * @module
 */
import { createHash } from 'node:crypto';

import type { PublishOutcome } from '../../core/ports.js';
import { redactUrl } from '../../core/redact.js';
import type { OutboxMessage } from '../../core/types.js';
import {
  abortedError,
  answeredText,
  connectionLostError,
  redirectError,
  refusedError,
  statusError,
  timeoutError,
  unavailableStatusError,
  unreachableError,
  unsendableError,
} from './webhook-errors.js';
import type { PostResult } from './webhook-post.js';

/** `Retry-After` in ms from now: delay seconds or an HTTP date; undefined when absent or unreadable. */
export function parseRetryAfter(
  value: string | string[] | undefined,
  nowMs = Date.now(),
): number | undefined {
  const text = (Array.isArray(value) ? value[0] : value)?.trim();
  if (!text) return undefined;
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  const at = Date.parse(text);
  return Number.isNaN(at) ? undefined : Math.max(0, at - nowMs);
}

/** The `webhook-id` of a batch: the same for the same messages, so a retried batch is recognisable. */
export function batchWebhookId(ids: readonly string[]): string {
  return `batch_${createHash('sha256').update(ids.join('\n')).digest('hex').slice(0, 32)}`;
}

/** Within one publish call: after an outage nothing more is sent; after a key's failure, not its later messages. */
export class CallState {
  outage: Error | undefined;
  readonly stopped = new Map<string, string>();

  note(message: OutboxMessage, outcome: PublishOutcome): void {
    if (outcome.status === 'unavailable') this.outage ??= outcome.error;
    else if (outcome.status === 'retry' && message.key !== null && !this.stopped.has(message.key)) {
      this.stopped.set(message.key, message.id);
    }
  }
}

/** An outcome, and the `Retry-After` (ms) of a 429 or 503 that asks the sender to pause. */
export interface Classified {
  outcome: PublishOutcome;
  retryAfterMs?: number;
  status?: number;
}

/**
 * The outcome of one exchange. 2xx `ok`; a 503 with `Retry-After` `unavailable` (the endpoint as
 * a whole); redirects, 408, 429, other 5xx and a deadline passed on an open connection `retry`;
 * other 4xx `permanent`; no connection, or one that broke before the answer, `unavailable`.
 */
export function classifyResult(
  result: PostResult,
  what: string,
  origin: string,
  timeoutMs: number,
): Classified {
  switch (result.kind) {
    case 'failed':
      return {
        outcome: {
          status: 'unavailable',
          error: result.connected
            ? connectionLostError(origin, what, result.error)
            : unreachableError(origin, what, result.error),
        },
      };
    case 'timeout':
      return { outcome: { status: 'retry', error: timeoutError(what, timeoutMs) } };
    case 'aborted':
      return { outcome: { status: 'unavailable', error: abortedError(origin, what, result.connected) } };
    case 'invalid':
      return { outcome: { status: 'permanent', error: unsendableError(what, result.error) } };
    case 'answered':
      break;
  }
  const { status } = result;
  if (status >= 200 && status < 300) return { outcome: { status: 'ok' }, status };
  const text = answeredText(what, status, result.statusText, result.snippet);
  const retryAfterMs =
    status === 429 || status === 503 ? parseRetryAfter(result.headers['retry-after']) : undefined;
  const pause = retryAfterMs === undefined ? {} : { retryAfterMs, status };
  if (status === 503 && retryAfterMs !== undefined) {
    return {
      outcome: { status: 'unavailable', error: unavailableStatusError(origin, text, retryAfterMs) },
      ...pause,
    };
  }
  if (status >= 300 && status < 400) {
    const location = result.headers.location;
    return {
      outcome: {
        status: 'retry',
        error: redirectError(text, location === undefined ? undefined : redactUrl(location)),
      },
      status,
    };
  }
  if (status >= 400 && status < 500 && status !== 408 && status !== 429) {
    return { outcome: { status: 'permanent', error: refusedError(text, status) }, status };
  }
  return { outcome: { status: 'retry', error: statusError(text, status, retryAfterMs) }, status, ...pause };
}
