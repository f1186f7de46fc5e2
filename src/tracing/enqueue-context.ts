/**
 * What `Outbox.enqueue` does for tracing: copy the active trace context into the headers of the
 * messages it writes, so the relay's publish span (in another process, maybe much later) can
 * continue the trace.
 *
 * @module
 */
import type { MessageInput } from '../core/types.js';
import { activeTraceHeaders, hasTraceparent } from './trace-headers.js';

/**
 * `messages` with the active trace context's headers added (`traceparent`, `tracestate`), or
 * `messages` itself when there is none to add (`@opentelemetry/api` not installed, no span
 * active, no propagator registered). A message whose headers name a `traceparent` already (in
 * any case) keeps its own headers untouched; on any other, the caller's headers win over the
 * captured ones. Messages are copied, never changed. A message whose `headers` is not an object
 * is left for the validation to refuse.
 */
export function withTraceContext(messages: readonly MessageInput[]): readonly MessageInput[] {
  const captured = activeTraceHeaders();
  if (captured === undefined) return messages;
  return messages.map((m) => {
    if (typeof m !== 'object' || m === null) return m;
    const own = m.headers;
    if (own === undefined) return { ...m, headers: { ...captured } };
    if (typeof own !== 'object' || own === null || Array.isArray(own)) return m;
    if (hasTraceparent(own)) return m;
    return { ...m, headers: { ...captured, ...own } };
  });
}
