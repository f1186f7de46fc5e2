/**
 * Atomic message groups (issue 15): messages enqueued together with `{ atomic: true }` reach
 * consumers all or none. The outbox stores a group as one message (one row, or one table-less
 * log message) whose payload holds the members, so claims, leases, retries, dead letters and
 * per-key order treat the group as one unit; the relay expands it and publishes the members in
 * one broker transaction. docs/design.md, "Atomic groups".
 *
 * @module
 */
import { InvalidMessageError } from './errors/invalid-message-error.js';
import type { EncodedMessage, OutboxMessage } from './types.js';

/** The content type that marks a stored message as an atomic group. */
export const ATOMIC_GROUP_CONTENT_TYPE = 'application/vnd.mailroom.atomic-group+json';
/** Headers the relay adds to each member, so a consumer can check a group is complete. */
export const GROUP_ID_HEADER = 'mailroom-group';
export const GROUP_SIZE_HEADER = 'mailroom-group-size';
export const GROUP_INDEX_HEADER = 'mailroom-group-index';
/** Most messages in a group. */
export const MAX_GROUP_MESSAGES = 1000;
/** Most bytes a group's stored form may take (members and their payloads). */
export const MAX_GROUP_BYTES = 16 * 1024 * 1024;

interface StoredMember {
  id: string;
  topic: string;
  key: string | null;
  type: string | null;
  ct: string;
  h: Record<string, string>;
  p: string;
}

/**
 * One stored message for a group of encoded messages: the first member's id and topic, the
 * members' common key, the members in the payload. Throws an `InvalidMessageError` for a group
 * the outbox cannot keep atomic: empty or too big, members with different keys (a group is
 * ordered as one message, under one key), or with `delayMs`, `ack` or `callback`.
 */
export function encodeGroup(members: readonly EncodedMessage[]): EncodedMessage {
  const first = members[0];
  if (first === undefined)
    throw new InvalidMessageError('messages', 'an atomic group needs at least one message');
  if (members.length > MAX_GROUP_MESSAGES) {
    throw new InvalidMessageError(
      'messages',
      `an atomic group holds at most ${MAX_GROUP_MESSAGES} messages, got ${members.length}; split the work`,
    );
  }
  const keys = [...new Set(members.map((m) => m.key))];
  if (keys.length > 1) {
    throw new InvalidMessageError(
      'key',
      `the messages of an atomic group must share one key (or all have none), since the group is delivered ` +
        `and ordered as one message; got keys ${keys
          .slice(0, 3)
          .map((k) => JSON.stringify(k))
          .join(', ')}${keys.length > 3 ? ', …' : ''}`,
    );
  }
  for (const m of members) {
    if (m.delayMs > 0 || m.delivery !== null) {
      const field = m.delayMs > 0 ? 'delayMs' : m.delivery?.ack ? 'ack' : 'callback';
      throw new InvalidMessageError(
        field,
        `message ${m.id} of an atomic group has ${field}; a group is published at once and as a whole: ` +
          'enqueue that message on its own',
      );
    }
  }
  const stored: StoredMember[] = members.map((m) => ({
    id: m.id,
    topic: m.topic,
    key: m.key,
    type: m.type,
    ct: m.contentType,
    h: m.headers,
    p: m.payload.toString('base64'),
  }));
  const payload = Buffer.from(JSON.stringify({ v: 1, members: stored }), 'utf8');
  if (payload.length > MAX_GROUP_BYTES) {
    throw new InvalidMessageError(
      'payload',
      `an atomic group of ${members.length} messages takes ${payload.length} bytes, over the limit of ${MAX_GROUP_BYTES}; ` +
        'send fewer or smaller messages in one group',
    );
  }
  return {
    id: first.id,
    topic: first.topic,
    key: first.key,
    type: 'mailroom.atomic-group',
    payload,
    contentType: ATOMIC_GROUP_CONTENT_TYPE,
    headers: { [GROUP_SIZE_HEADER]: String(members.length) },
    delayMs: 0,
    delivery: null,
  };
}

/** True for a stored atomic group (see {@link encodeGroup}). */
export function isGroup(message: Pick<OutboxMessage, 'contentType'>): boolean {
  return message.contentType === ATOMIC_GROUP_CONTENT_TYPE;
}

/**
 * The members of a stored group, as the messages a transport publishes: each with its own id,
 * topic, key, type, content type and headers, plus the group headers (`mailroom-group`, the
 * group's id; `mailroom-group-size`; `mailroom-group-index`, from 0); seq, attempts and
 * createdAt of the group. Throws an Error saying what is wrong with a payload that is not a group.
 */
export function decodeGroup(group: OutboxMessage): OutboxMessage[] {
  let parsed: { v?: unknown; members?: unknown };
  try {
    parsed = JSON.parse(group.payload.toString('utf8')) as typeof parsed;
  } catch {
    throw new Error(`atomic group ${group.id} is not JSON`);
  }
  if (parsed.v !== 1 || !Array.isArray(parsed.members) || parsed.members.length === 0) {
    throw new Error(`atomic group ${group.id} is not a version 1 group with members`);
  }
  const members = parsed.members as StoredMember[];
  return members.map((m, i) => {
    if (typeof m?.id !== 'string' || typeof m.topic !== 'string' || typeof m.p !== 'string') {
      throw new Error(`atomic group ${group.id}: member ${i} lacks id, topic or payload`);
    }
    return {
      seq: group.seq,
      id: m.id,
      topic: m.topic,
      key: m.key ?? null,
      type: m.type ?? null,
      payload: Buffer.from(m.p, 'base64'),
      contentType: typeof m.ct === 'string' ? m.ct : 'application/json',
      headers: {
        ...(m.h ?? {}),
        [GROUP_ID_HEADER]: group.id,
        [GROUP_SIZE_HEADER]: String(members.length),
        [GROUP_INDEX_HEADER]: String(i),
      },
      createdAt: group.createdAt,
      attempts: group.attempts,
    };
  });
}

/** The group a received message came in, from its headers (see {@link decodeGroup}), or null. */
export function groupOf(
  headers: Readonly<Record<string, string>>,
): { id: string; size: number; index: number } | null {
  const id = headers[GROUP_ID_HEADER];
  const size = Number(headers[GROUP_SIZE_HEADER]);
  const index = Number(headers[GROUP_INDEX_HEADER]);
  if (id === undefined || !Number.isInteger(size) || !Number.isInteger(index) || size < 1 || index < 0)
    return null;
  return { id, size, index };
}
