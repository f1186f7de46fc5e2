/**
 * Publish spans around a transport: a decorator (as metrics are), so neither the relay nor any
 * transport knows about tracing. docs/tracing.md says what the spans hold and why they relate
 * to the producer's span as they do.
 *
 * @module
 */
import type { Attributes, Context, Link, Span, Tracer } from '@opentelemetry/api';

import {
  isTransactionalTransport,
  toOutboxMessages,
  type BrokerTransaction,
  type TransactionalTransport,
} from '../core/broker-transaction.js';
import { isPermanentDeliveryError } from '../core/errors/permanent-delivery-error.js';
import { isTransportError } from '../core/errors/transport-error.js';
import type { PublishOptions, PublishOutcome, Transport } from '../core/ports.js';
import type { MessageInput, OutboxMessage } from '../core/types.js';
import { otelApi, type OtelApiModule } from './otel-api.js';
import {
  ATTR_ERROR_TYPE,
  ATTR_MAILROOM_ATTEMPT,
  ATTR_MAILROOM_OUTCOME,
  ATTR_MAILROOM_TRANSACTION,
  ATTR_MESSAGING_DESTINATION_NAME,
  ATTR_MESSAGING_MESSAGE_BODY_SIZE,
  ATTR_MESSAGING_MESSAGE_ID,
  ATTR_MESSAGING_OPERATION_NAME,
  ATTR_MESSAGING_OPERATION_TYPE,
  ATTR_MESSAGING_SYSTEM,
  messagingSystem,
} from './semconv.js';
import { extractTraceContext, headerSetter, replaceTraceHeaders } from './trace-headers.js';
import type { TracingOptions } from './tracing-options.js';

/** The instrumentation scope name of Mailroom's spans. */
export const TRACER_NAME = 'mailroom';

/** Marks a transport this module wrapped, so that wrapping twice gives one span per publish. */
const TRACED = Symbol.for('mailroom.tracedTransport');

/** True when `transport` is one {@link tracedTransport} returned. */
export function isTracedTransport(transport: Transport): boolean {
  return (transport as unknown as Record<symbol, unknown>)[TRACED] === true;
}

/** One message's publish span, and the copy of the message that carries the span's context. */
interface Started {
  span: Span;
  message: OutboxMessage;
}

/**
 * Wraps `transport` so that every message it publishes gets a PRODUCER span, `publish <topic>`,
 * with the messaging semantic conventions' attributes, a child of (and linked to) the context
 * the message carries from `enqueue` (`traceparent`). The transport is handed a copy of each
 * message whose `traceparent`/`tracestate` name the publish span instead, so the consumer's span
 * is a child of the publish. Each span ends with the transport's answer for its message: nothing
 * set for `ok`, an error status with `mailroom.publish.outcome` and `error.type` otherwise.
 *
 * Everything else passes through unchanged: `name`, `ordering`, `start`, `probe`, `close`,
 * capability flags and any method of the transport's own (the wrapper is a `Proxy`, and
 * `instanceof` still holds). The messages keep their ids, and one call's messages are handed on
 * in one call in their order, so per-key order and dedupe are untouched. Broker transactions
 * (`begin`, `transaction`) get the same spans, ended when the transaction commits or not.
 *
 * Returns `transport` itself when `@opentelemetry/api` is not installed, or when it is wrapped
 * already. The relay wraps its transport this way unless its `tracing` option is `false`.
 *
 * @example
 * ```ts
 * import { tracedTransport } from 'mailroom/tracing';
 * const transport = tracedTransport(new RabbitMqTransport({ url, exchange }));
 * ```
 */
export function tracedTransport<T extends Transport>(transport: T, options: TracingOptions = {}): T {
  const api = otelApi();
  if (api === undefined || isTracedTransport(transport)) return transport;
  const tracer = (options.tracerProvider?.getTracer(TRACER_NAME) ??
    api.trace.getTracer(TRACER_NAME)) as Tracer;
  const spans = new PublishSpans(api, tracer, messagingSystem(transport.name), options.relation ?? 'parent');

  const overrides = new Map<PropertyKey, unknown>();
  overrides.set(TRACED, true);
  overrides.set('publish', async (messages: readonly OutboxMessage[], publishOptions?: PublishOptions) => {
    const started = messages.map((m) => spans.start(m, false));
    let outcomes: PublishOutcome[];
    try {
      outcomes = await transport.publish(
        started.map((s) => s.message),
        publishOptions,
      );
    } catch (err) {
      for (const s of started) spans.fail(s.span, outcomeOf(err), err);
      throw err;
    }
    // The relay checks the answer's shape; a missing outcome is an error here too.
    started.forEach((s, i) => spans.end(s.span, Array.isArray(outcomes) ? outcomes[i] : undefined));
    return outcomes;
  });
  if (isTransactionalTransport(transport)) {
    const tx: TransactionalTransport = transport;
    overrides.set('begin', async (beginOptions?: PublishOptions) => {
      const traced = new TracedTransaction(await tx.begin(beginOptions), spans);
      return traced.forCaller();
    });
    overrides.set(
      'transaction',
      async <R>(fn: (t: BrokerTransaction) => Promise<R>, txOptions?: PublishOptions): Promise<R> => {
        let traced: TracedTransaction | undefined;
        try {
          const value = await tx.transaction((inner) => {
            traced = new TracedTransaction(inner, spans);
            return fn(traced.inFunction());
          }, txOptions);
          traced?.settle(undefined);
          return value;
        } catch (err) {
          traced?.settle(err);
          throw err;
        }
      },
    );
  }

  // Methods of the transport run on the transport itself, not the proxy: private fields
  // (`#session`) are reachable only through the real object. Bound once per method.
  const bound = new Map<PropertyKey, { original: unknown; fn: unknown }>();
  return new Proxy(transport, {
    get(target, prop) {
      if (overrides.has(prop)) return overrides.get(prop);
      const value: unknown = Reflect.get(target, prop, target);
      if (typeof value !== 'function') return value;
      const known = bound.get(prop);
      if (known !== undefined && known.original === value) return known.fn;
      const fn = (value as (...args: unknown[]) => unknown).bind(target);
      bound.set(prop, { original: value, fn });
      return fn;
    },
    has(target, prop) {
      return overrides.has(prop) || Reflect.has(target, prop);
    },
  });
}

/** Starts and ends publish spans for one transport. */
class PublishSpans {
  constructor(
    readonly api: OtelApiModule,
    readonly tracer: Tracer,
    readonly system: string,
    readonly relation: 'parent' | 'link',
  ) {}

  /** Starts `message`'s span; returns it with the copy of the message to hand the transport. */
  start(message: OutboxMessage, transaction: boolean): Started {
    const { api } = this;
    const carried = extractTraceContext(message.headers);
    const links: Link[] = [];
    let parent: Context = api.context.active();
    if (carried !== undefined) {
      const spanContext = api.trace.getSpanContext(carried);
      if (spanContext !== undefined) links.push({ context: spanContext });
      parent = carried;
    }
    const attributes: Attributes = {
      [ATTR_MESSAGING_SYSTEM]: this.system,
      [ATTR_MESSAGING_OPERATION_TYPE]: 'send',
      [ATTR_MESSAGING_OPERATION_NAME]: 'publish',
      [ATTR_MESSAGING_DESTINATION_NAME]: message.topic,
      [ATTR_MESSAGING_MESSAGE_ID]: message.id,
      [ATTR_MESSAGING_MESSAGE_BODY_SIZE]: message.payload.length,
      [ATTR_MAILROOM_ATTEMPT]: message.attempts,
    };
    if (transaction) attributes[ATTR_MAILROOM_TRANSACTION] = true;
    const span = this.tracer.startSpan(
      `publish ${message.topic}`,
      { kind: api.SpanKind.PRODUCER, attributes, links, root: this.relation === 'link' },
      parent,
    );
    const injected: Record<string, string> = {};
    api.propagation.inject(api.trace.setSpan(parent, span), injected, headerSetter);
    const headers = replaceTraceHeaders(message.headers, injected);
    return { span, message: { ...message, headers } };
  }

  /** Ends `span` with the transport's answer for its message. */
  end(span: Span, outcome: PublishOutcome | undefined): void {
    if (outcome?.status === 'ok') {
      span.setAttribute(ATTR_MAILROOM_OUTCOME, 'ok');
      span.end();
      return;
    }
    if (outcome === undefined || typeof outcome !== 'object') {
      this.fail(span, 'retry', new Error('the transport gave no outcome for this message'));
      return;
    }
    this.fail(span, outcome.status, outcome.error);
  }

  /** Ends `span` as failed: error status, the outcome, `error.type` and the exception. */
  fail(span: Span, outcome: string, err: unknown): void {
    const error = err instanceof Error ? err : new Error(String(err));
    span.setAttribute(ATTR_MAILROOM_OUTCOME, outcome);
    span.setAttribute(ATTR_ERROR_TYPE, errorType(error));
    span.recordException(error);
    span.setStatus({ code: this.api.SpanStatusCode.ERROR, message: error.message });
    span.end();
  }
}

/**
 * A broker transaction whose `publish` starts a span per message; the spans end when the
 * transaction's outcome is known (commit or rollback, or `transaction(fn)` settling).
 */
class TracedTransaction {
  readonly #inner: BrokerTransaction;
  readonly #spans: PublishSpans;
  #open: Span[] = [];

  constructor(inner: BrokerTransaction, spans: PublishSpans) {
    this.#inner = inner;
    this.#spans = spans;
  }

  async #publish(messages: ReadonlyArray<OutboxMessage | MessageInput>): Promise<void> {
    // Inputs are encoded as the transaction would encode them (same errors, before any span).
    const started = toOutboxMessages(messages).map((m) => this.#spans.start(m, true));
    this.#open.push(...started.map((s) => s.span));
    await this.#inner.publish(started.map((s) => s.message));
  }

  /** Ends the spans of everything published: delivered when `error` is undefined. */
  settle(error: unknown): void {
    const open = this.#open;
    this.#open = [];
    for (const span of open) {
      if (error === undefined) this.#spans.end(span, { status: 'ok' });
      else this.#spans.fail(span, outcomeOf(error), error);
    }
  }

  /** The transaction as `begin()` returns it: commit and rollback end the spans. */
  forCaller(): BrokerTransaction {
    return {
      publish: (messages) => this.#publish(messages),
      commit: async () => {
        try {
          await this.#inner.commit();
        } catch (err) {
          this.settle(err);
          throw err;
        }
        this.settle(undefined);
      },
      rollback: async () => {
        try {
          await this.#inner.rollback();
        } finally {
          this.settle(new Error('the broker transaction was rolled back'));
        }
      },
    };
  }

  /** The transaction as `transaction(fn)` hands it to `fn`: the outer call ends the spans. */
  inFunction(): BrokerTransaction {
    return {
      publish: (messages) => this.#publish(messages),
      commit: () => this.#inner.commit(),
      rollback: () => this.#inner.rollback(),
    };
  }
}

/**
 * The outcome a failure amounts to, as the relay classifies a failed broker transaction: a
 * `TransportError` is an outage, a `PermanentDeliveryError` a dead letter, anything else a retry.
 */
function outcomeOf(err: unknown): PublishOutcome['status'] {
  if (isTransportError(err)) return 'unavailable';
  if (isPermanentDeliveryError(err)) return 'permanent';
  return 'retry';
}

/** `error.type`: the error's stable code when it has one (`unroutable`), else its name. */
function errorType(error: Error): string {
  const code = (error as { code?: unknown }).code;
  return typeof code === 'string' && code !== '' ? code : error.name;
}
