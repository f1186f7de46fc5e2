/**
 * Options of the relay's publish spans. Typed without `@opentelemetry/api`, so that the relay's
 * options compile in projects that do not install it; any `TracerProvider` fits.
 *
 * @module
 */

/** The part of an OpenTelemetry `TracerProvider` Mailroom calls. */
export interface TracerProviderLike {
  getTracer(name: string, version?: string): object;
}

/** Options of {@link tracedTransport} (and the relay's `tracing` option). */
export interface TracingOptions {
  /**
   * Where the spans go.
   *
   * @default the global provider (`trace.getTracerProvider()`), which is the one your SDK
   *   registered, or a no-op while none is
   */
  tracerProvider?: TracerProviderLike;
  /**
   * How a publish span relates to the span that was active at `enqueue` (the context carried in
   * the message's `traceparent`):
   * - `'parent'`: its child, with a link to it as well. Producer, publish and consumer spans form
   *   one trace.
   * - `'link'`: the root of a trace of its own, with a link to it. For messages that wait long
   *   (delays, outages), where one trace spanning hours is unwelcome, or when the producer's
   *   trace is sampled separately.
   *
   * @default 'parent'
   */
  relation?: 'parent' | 'link';
}
