import { randomUUID } from 'node:crypto';
import type { CallbackEvent, CallbackPort } from '../../src/core/ports.js';
import type { JsonValue } from '../../src/core/types.js';
import { uuidv7 } from '../../src/core/uuid.js';

/** A callback as the in-memory store keeps it. */
export interface StoredCallback {
  id: string;
  messageId: string;
  topic: string;
  event: CallbackEvent['event'];
  url: string;
  detail: Record<string, JsonValue>;
  occurredAt: Date;
  attempts: number;
  dueAt: number;
  lease: { token: string; until: number } | null;
  lastError: string | null;
  state: 'pending' | 'delivered' | 'dead';
}

/**
 * The CallbackPort in memory, with the semantics the PostgreSQL store has: a claim takes due,
 * unleased callbacks in due order and counts an attempt; a settle applies only to callbacks still
 * held by its lease token. It records every settle, so tests can assert on what the dispatcher
 * told the store.
 */
export class MemoryCallbackStore implements CallbackPort {
  readonly callbacks = new Map<string, StoredCallback>();
  readonly settlements: Array<Parameters<CallbackPort['settleCallbacks']>[0]> = [];
  claims = 0;
  /** Makes the next claims or settles fail, to test the dispatcher's resilience. */
  failClaims = 0;
  failSettles = 0;

  add(input: {
    url: string;
    event?: CallbackEvent['event'];
    topic?: string;
    detail?: Record<string, JsonValue>;
    messageId?: string;
    delayMs?: number;
  }): StoredCallback {
    const callback: StoredCallback = {
      id: uuidv7(),
      messageId: input.messageId ?? randomUUID(),
      topic: input.topic ?? 'order.placed',
      event: input.event ?? 'delivered',
      url: input.url,
      detail: input.detail ?? {},
      occurredAt: new Date(),
      attempts: 0,
      dueAt: Date.now() + (input.delayMs ?? 0),
      lease: null,
      lastError: null,
      state: 'pending',
    };
    this.callbacks.set(callback.id, callback);
    return callback;
  }

  get(id: string): StoredCallback {
    const callback = this.callbacks.get(id);
    if (!callback) throw new Error(`no callback ${id}`);
    return callback;
  }

  async claimCallbacks(request: { owner: string; limit: number; leaseMs: number }) {
    this.claims++;
    if (this.failClaims > 0) {
      this.failClaims--;
      throw new Error('claim failed (injected)');
    }
    const now = Date.now();
    const token = randomUUID();
    const due = [...this.callbacks.values()]
      .filter((c) => c.state === 'pending' && c.dueAt <= now && (c.lease === null || c.lease.until <= now))
      .sort((a, b) => a.dueAt - b.dueAt)
      .slice(0, request.limit);
    for (const c of due) {
      c.attempts++;
      c.lease = { token, until: now + request.leaseMs };
    }
    return {
      leaseToken: token,
      callbacks: due.map((c): CallbackEvent => ({
        id: c.id,
        messageId: c.messageId,
        topic: c.topic,
        event: c.event,
        url: c.url,
        attempts: c.attempts,
        detail: c.detail,
        occurredAt: c.occurredAt,
      })),
    };
  }

  async settleCallbacks(settlement: Parameters<CallbackPort['settleCallbacks']>[0]): Promise<void> {
    if (this.failSettles > 0) {
      this.failSettles--;
      throw new Error('settle failed (injected)');
    }
    this.settlements.push(structuredClone(settlement));
    const held = (id: string) => {
      const c = this.callbacks.get(id);
      return c && c.lease?.token === settlement.leaseToken ? c : undefined;
    };
    for (const id of settlement.delivered) {
      const c = held(id);
      if (c) Object.assign(c, { state: 'delivered', lease: null });
    }
    for (const { id, delayMs, error } of settlement.retry) {
      const c = held(id);
      if (c) Object.assign(c, { lease: null, dueAt: Date.now() + delayMs, lastError: error });
    }
    for (const { id, error } of settlement.dead) {
      const c = held(id);
      if (c) Object.assign(c, { state: 'dead', lease: null, lastError: error });
    }
  }

  async nextCallbackDueInMs(): Promise<number | null> {
    const now = Date.now();
    let next: number | null = null;
    for (const c of this.callbacks.values()) {
      if (c.state !== 'pending') continue;
      const at = c.lease === null ? c.dueAt : Math.max(c.dueAt, c.lease.until);
      next = next === null ? at : Math.min(next, at);
    }
    return next === null ? null : Math.max(0, next - now);
  }
}
