import { groupOf } from './atomic-group.js';
import { ACK_TO_HEADER } from './message.js';
import type { OutboxMessage, ReceivedMessage } from './types.js';

/** Headers Mailroom adds on the wire; a consumer hands the sender's headers on without them. */
export const MAILROOM_HEADER_PREFIX = 'mailroom-';

function isJson(contentType: string): boolean {
  const base = contentType.split(';')[0]?.trim().toLowerCase() ?? '';
  return base === 'application/json' || base.endsWith('+json');
}

/**
 * A message as a receiver sees it, from the outbox message a transport was given: what an
 * in-process transport (`MemoryTransport`) delivers, and what consumers of other transports
 * decode from the wire. The JSON payload is parsed; bytes stay bytes.
 *
 * @example
 * ```ts
 * for (const m of memory.messagesFor('order.created')) await inbox.handle(toReceivedMessage(m), handler);
 * ```
 */
export function toReceivedMessage(message: OutboxMessage): ReceivedMessage {
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(message.headers)) {
    if (!name.startsWith(MAILROOM_HEADER_PREFIX)) headers[name] = value;
  }
  return {
    id: message.id,
    topic: message.topic,
    key: message.key,
    type: message.type,
    headers,
    contentType: message.contentType,
    body: message.payload,
    payload: isJson(message.contentType)
      ? (JSON.parse(message.payload.toString('utf8')) as unknown)
      : message.payload,
    ackTo: message.headers[ACK_TO_HEADER] ?? null,
    attempt: message.attempts,
    createdAt: message.createdAt,
    group: groupOf(message.headers),
  };
}
