/**
 * `mailroom/tracing`: OpenTelemetry traces across the outbox (docs/tracing.md). Mailroom uses
 * only `@opentelemetry/api` (an optional peer dependency) and never an SDK: register yours, and
 * - `Outbox.enqueue` copies the active trace context into the message headers (`traceparent`,
 *   `tracestate`);
 * - the relay wraps its transport with {@link tracedTransport}: a PRODUCER span `publish <topic>`
 *   per message, continuing the producer's trace;
 * - consumers and `Inbox.handle` run handlers in a CONSUMER span `process <topic>`, a child of
 *   the publish span.
 *
 * @module
 */
export { tracedTransport, isTracedTransport, TRACER_NAME } from './traced-transport.js';
export type { TracingOptions, TracerProviderLike } from './tracing-options.js';
export { withProcessSpan, type ProcessSpanInfo } from './process-span.js';
export { withTraceContext } from './enqueue-context.js';
export {
  activeTraceHeaders,
  extractTraceContext,
  hasTraceparent,
  TRACEPARENT_HEADER,
  TRACESTATE_HEADER,
} from './trace-headers.js';
export * from './semconv.js';
