/**
 * W3C trace context in message headers: what `enqueue` captures (`traceparent`, `tracestate`,
 * and whatever else the registered propagator writes), and how the relay and consumers read it
 * back. Headers are a message's plain string map, so they travel through every transport.
 *
 * @module
 */
import type { Context, TextMapGetter, TextMapSetter } from '@opentelemetry/api';

import { otelApi } from './otel-api.js';

/** The W3C Trace Context header naming the trace and the parent span. */
export const TRACEPARENT_HEADER = 'traceparent';
/** The W3C Trace Context header with vendor-specific trace state. */
export const TRACESTATE_HEADER = 'tracestate';

type Headers = Record<string, string>;

/** Writes into a plain header object. */
export const headerSetter: TextMapSetter<Headers> = {
  set(carrier, key, value) {
    carrier[key] = value;
  },
};

/**
 * Reads a plain header object. Header names are compared without case, as HTTP does: a message
 * enqueued with `Traceparent` is read like one with `traceparent`.
 */
export const headerGetter: TextMapGetter<Headers> = {
  keys(carrier) {
    return Object.keys(carrier);
  },
  get(carrier, key) {
    if (Object.hasOwn(carrier, key)) return carrier[key];
    const lower = key.toLowerCase();
    for (const name of Object.keys(carrier)) {
      if (name.toLowerCase() === lower) return carrier[name];
    }
    return undefined;
  },
};

/** True when `headers` has a `traceparent` header, in any case. */
export function hasTraceparent(headers: Readonly<Headers>): boolean {
  if (Object.hasOwn(headers, TRACEPARENT_HEADER)) return true;
  for (const name of Object.keys(headers)) {
    if (name.length === TRACEPARENT_HEADER.length && name.toLowerCase() === TRACEPARENT_HEADER) return true;
  }
  return false;
}

/**
 * The headers the registered propagator writes for the active context (with the W3C propagator:
 * `traceparent` and, when there is state, `tracestate`), or `undefined` when there is nothing to
 * carry: `@opentelemetry/api` is not installed, no span is active, or no propagator is
 * registered.
 */
export function activeTraceHeaders(): Headers | undefined {
  const api = otelApi();
  if (api === undefined) return undefined;
  const active = api.context.active();
  const span = api.trace.getSpanContext(active);
  if (span === undefined || !api.trace.isSpanContextValid(span)) return undefined;
  const carrier: Headers = {};
  api.propagation.inject(active, carrier, headerSetter);
  for (const _ in carrier) return carrier;
  return undefined;
}

/**
 * The context carried in `headers` (its remote span as the parent), or `undefined` when the API
 * is not installed or the headers carry no valid span context.
 */
export function extractTraceContext(headers: Readonly<Headers> | undefined): Context | undefined {
  const api = otelApi();
  if (api === undefined || headers === undefined) return undefined;
  const extracted = api.propagation.extract(api.ROOT_CONTEXT, headers, headerGetter);
  const span = api.trace.getSpanContext(extracted);
  return span !== undefined && api.trace.isSpanContextValid(span) ? extracted : undefined;
}

/**
 * `headers` without the trace context headers (`traceparent`, `tracestate`, in any case), plus
 * `injected`: what a publish span hands on in place of the producer's context. When `injected`
 * is empty, a copy of `headers` as they are.
 */
export function replaceTraceHeaders(headers: Readonly<Headers>, injected: Readonly<Headers>): Headers {
  // Nothing injected (no propagator registered): the producer's context goes on as it was.
  if (Object.keys(injected).length === 0) return { ...headers };
  const out: Headers = {};
  for (const [name, value] of Object.entries(headers)) {
    const lower = name.toLowerCase();
    if (lower === TRACEPARENT_HEADER || lower === TRACESTATE_HEADER) continue;
    out[name] = value;
  }
  return Object.assign(out, injected);
}
