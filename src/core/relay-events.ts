import type { OutboxMessage } from './types.js';

/** Events a relay emits. Listeners that throw are logged and ignored. */
export interface RelayEvents {
  'relay:started': { owner: string; wakeup: 'notify' | 'poll' | 'replication' };
  'relay:stopped': { owner: string; abandoned: number };
  'relay:batch:claimed': {
    count: number;
    leaseToken: string;
    /**
     * How long the claim statement took, in milliseconds; null for a batch the message source
     * (the transaction log) leased ahead of time.
     */
    claimMs: number | null;
  };
  /** A claim found nothing due (polls while idle, the backstop claim). Emitted only to listeners. */
  'relay:claim:empty': { claimMs: number };
  'relay:batch:settled': {
    count: number;
    delivered: number;
    /** Given back without spending an attempt: the transport was unavailable. */
    released: number;
    retried: number;
    dead: number;
    publishMs: number;
    /** Delivered messages of this batch (references, do not mutate). */
    messages: readonly OutboxMessage[];
  };
  'relay:message:retry': { message: OutboxMessage; error: Error; delayMs: number };
  'relay:message:dead': { message: OutboxMessage; error: Error };
  /** The transport cannot publish: claims pause until a probe succeeds. Once per outage. */
  'relay:transport:unavailable': { error: Error };
  /** A probe succeeded after an outage: claims resume. */
  'relay:transport:available': { downMs: number; probes: number };
  /** A probe of an unavailable transport failed; the next one follows after `nextProbeMs`. */
  'relay:transport:probe-failed': { error: Error; nextProbeMs: number };
  /** Messages with `ack` whose deadline passed: resent (same id) or expired (cancellation enqueued). */
  'relay:acks:swept': { resent: number; expired: number };
  /**
   * `log`: the message source (the transaction log) has a batch ready; `table`: it left rows in
   * the table for a claim to deliver in order.
   */
  'relay:wakeup': { source: 'notify' | 'poll' | 'settled' | 'due' | 'available' | 'log' | 'table' };
  'relay:error': {
    phase:
      | 'claim'
      | 'publish'
      | 'settle'
      | 'lease'
      | 'listen'
      | 'start'
      | 'ack'
      | 'callback'
      | 'source'
      | 'presence';
    error: unknown;
  };
}

/** Emits and logs on behalf of the relay's parts (heartbeat, wake-up, outage state). */
export interface RelayEmit {
  <K extends keyof RelayEvents>(event: K, payload: RelayEvents[K]): void;
}
