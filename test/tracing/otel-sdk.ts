// The OpenTelemetry SDK as an application registers it, for the tracing tests: an in-memory
// exporter, AsyncLocalStorage context and the W3C propagator. Registration is process-wide, so
// only the files under test/tracing that mean to trace call this (each file is its own process).
import { context, propagation, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
  type ReadableSpan,
} from '@opentelemetry/sdk-trace-base';

export interface TestSdk {
  exporter: InMemorySpanExporter;
  provider: BasicTracerProvider;
  /** Finished spans named `name`. */
  spans(name: string): ReadableSpan[];
  /** The one finished span named `name` (fails when there is not exactly one). */
  span(name: string): ReadableSpan;
  shutdown(): Promise<void>;
}

export function registerTestSdk(): TestSdk {
  const exporter = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
  const contextManager = new AsyncLocalStorageContextManager().enable();
  trace.setGlobalTracerProvider(provider);
  context.setGlobalContextManager(contextManager);
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  const spans = (name: string) => exporter.getFinishedSpans().filter((s) => s.name === name);
  return {
    exporter,
    provider,
    spans,
    span(name) {
      const found = spans(name);
      if (found.length !== 1) {
        const names = exporter.getFinishedSpans().map((s) => s.name);
        throw new Error(`expected one span named ${name}, found ${found.length}; spans: ${names.join(', ')}`);
      }
      return found[0] as ReadableSpan;
    },
    async shutdown() {
      await provider.shutdown();
      contextManager.disable();
      trace.disable();
      context.disable();
      propagation.disable();
    },
  };
}

/** The `traceparent` a span's context gives: `00-<trace>-<span>-<flags>`. */
export function traceparentOf(span: {
  spanContext(): { traceId: string; spanId: string; traceFlags: number };
}): string {
  const c = span.spanContext();
  return `00-${c.traceId}-${c.spanId}-0${c.traceFlags.toString(16)}`;
}
