/**
 * The consumer side: a CONSUMER span, `process <topic>`, around each run of a handler, a child of
 * (and linked to) the publish span whose context the message carries, with the handler running
 * inside it so that its own spans and database calls nest under it.
 *
 * @module
 */
import type { Attributes, Context, Link } from '@opentelemetry/api';

import type { ReceivedMessage } from '../core/types.js';
import { otelApi, type OtelApiModule } from './otel-api.js';
import {
  ATTR_ERROR_TYPE,
  ATTR_MAILROOM_ATTEMPT,
  ATTR_MAILROOM_INBOX_STATUS,
  ATTR_MESSAGING_CONSUMER_GROUP_NAME,
  ATTR_MESSAGING_DESTINATION_NAME,
  ATTR_MESSAGING_MESSAGE_BODY_SIZE,
  ATTR_MESSAGING_MESSAGE_ID,
  ATTR_MESSAGING_OPERATION_NAME,
  ATTR_MESSAGING_OPERATION_TYPE,
  ATTR_MESSAGING_SYSTEM,
  messagingSystem,
} from './semconv.js';
import { extractTraceContext } from './trace-headers.js';
import { TRACER_NAME } from './traced-transport.js';

/** What the process span says besides the message. */
export interface ProcessSpanInfo {
  /** The consumer's transport (`rabbitmq`, `nats`…), for `messaging.system`. */
  system?: string | undefined;
  /** The inbox's consumer name, for `messaging.consumer.group.name`. */
  consumer?: string | undefined;
}

/**
 * Marks the context of a process span with the id of its message: an `Inbox.handle` inside a
 * consumer's run finds it and starts no second span for the same message.
 */
let processingKey: symbol | undefined;
function processingContextKey(api: OtelApiModule): symbol {
  processingKey ??= api.createContextKey('mailroom.processing');
  return processingKey;
}

/**
 * Runs `fn` (one handler run for `message`) inside a process span, and returns what it returns.
 * The span records what `fn` threw (error status, `error.type`, the exception); `status` names
 * what the run did (`processed`, `duplicate`) when it returned. Without `@opentelemetry/api`,
 * or inside a process span of the same message already, only runs `fn`.
 */
export async function withProcessSpan<T>(
  message: ReceivedMessage,
  info: ProcessSpanInfo,
  fn: () => Promise<T>,
  status?: (result: T) => string | undefined,
): Promise<T> {
  const api = otelApi();
  if (api === undefined) return fn();
  const active = api.context.active();
  const key = processingContextKey(api);
  if (active.getValue(key) === message.id) return fn();

  const carried = extractTraceContext(message.headers);
  const links: Link[] = [];
  let parent: Context = active;
  if (carried !== undefined) {
    const spanContext = api.trace.getSpanContext(carried);
    if (spanContext !== undefined) links.push({ context: spanContext });
    parent = carried;
  }
  const attributes: Attributes = {
    [ATTR_MESSAGING_OPERATION_TYPE]: 'process',
    [ATTR_MESSAGING_OPERATION_NAME]: 'process',
    [ATTR_MESSAGING_DESTINATION_NAME]: message.topic,
    [ATTR_MESSAGING_MESSAGE_ID]: message.id,
  };
  if (info.system !== undefined) attributes[ATTR_MESSAGING_SYSTEM] = messagingSystem(info.system);
  if (info.consumer !== undefined) attributes[ATTR_MESSAGING_CONSUMER_GROUP_NAME] = info.consumer;
  // Messages built by hand (tests, foreign decoders) may lack these.
  if (typeof message.attempt === 'number') attributes[ATTR_MAILROOM_ATTEMPT] = message.attempt;
  if (Buffer.isBuffer(message.body)) attributes[ATTR_MESSAGING_MESSAGE_BODY_SIZE] = message.body.length;

  const tracer = api.trace.getTracer(TRACER_NAME);
  const span = tracer.startSpan(
    `process ${message.topic}`,
    { kind: api.SpanKind.CONSUMER, attributes, links },
    parent,
  );
  const inside = api.trace.setSpan(parent, span).setValue(key, message.id);
  try {
    const result = await api.context.with(inside, fn);
    const said = status?.(result);
    if (said !== undefined) span.setAttribute(ATTR_MAILROOM_INBOX_STATUS, said);
    return result;
  } catch (err) {
    const error = err instanceof Error ? err : new Error(String(err));
    const code = (error as { code?: unknown }).code;
    span.setAttribute(ATTR_ERROR_TYPE, typeof code === 'string' && code !== '' ? code : error.name);
    span.recordException(error);
    span.setStatus({ code: api.SpanStatusCode.ERROR, message: error.message });
    throw err;
  } finally {
    span.end();
  }
}
