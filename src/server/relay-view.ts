import { hostname } from 'node:os';
import type { Relay } from '../core/relay.js';
import type { RelayGroup } from '../core/relay-group.js';
import type { OutboxMessage } from '../core/types.js';
import type { RelayRow, TransportState } from './api-types.js';

/** The relay an admin server reports on: one {@link Relay}, or a {@link RelayGroup} of several sources. */
export type AdminRelay = Relay | RelayGroup;

function isGroup(relay: AdminRelay): relay is RelayGroup {
  return (
    typeof (relay as RelayGroup).relay === 'function' && Array.isArray((relay as RelayGroup).sourceNames)
  );
}

/** What the server hears from the relay, per source. */
export interface RelayListener {
  settled(
    source: string,
    counts: { delivered: number; retried: number; dead: number },
    messages: readonly OutboxMessage[],
  ): void;
  transport(source: string, available: boolean, error: string | null): void;
  started(source: string): void;
}

/**
 * The relay (or group) behind an admin server, seen the same way whichever it is: its owner,
 * wake-up and transport state, and its events per source name.
 */
export class RelayView {
  readonly #relay: AdminRelay;
  /** The one source's name, for a single relay (its events carry none). */
  readonly #single: string;
  readonly #unsubscribe: Array<() => void> = [];
  readonly #startedAt = new Map<string, Date>();

  constructor(relay: AdminRelay, singleSource: string) {
    this.#relay = relay;
    this.#single = singleSource;
  }

  /** Source names the relay serves (the one source's name for a single relay). */
  get sources(): string[] {
    return isGroup(this.#relay) ? this.#relay.sourceNames : [this.#single];
  }

  #relayOf(source: string): Relay | undefined {
    if (!isGroup(this.#relay)) return source === this.#single ? this.#relay : undefined;
    return this.#relay.sourceNames.includes(source) ? this.#relay.relay(source) : undefined;
  }

  /**
   * The relay's owner name; for a group, the owners' common prefix (each source's relay is
   * `<prefix>:<source>`).
   */
  get owner(): string {
    if (!isGroup(this.#relay)) return this.#relay.options.owner;
    const [first] = this.#relay.sourceNames;
    const owner = this.#relay.relay(first as string).options.owner;
    const suffix = `:${first as string}`;
    return owner.endsWith(suffix) ? owner.slice(0, -suffix.length) : owner;
  }

  get wakeup(): 'notify' | 'poll' | 'replication' {
    const [first] = this.sources;
    return (this.#relayOf(first as string) as Relay).options.wakeup;
  }

  /** `up` when every source's relay can publish. */
  get transportState(): TransportState {
    return this.sources.every((s) => this.#relayOf(s)?.transportAvailable !== false) ? 'up' : 'unavailable';
  }

  /** The processes's own relays, one row per source, for stores without a presence table. */
  rows(source: string, version: string): RelayRow[] {
    const relay = this.#relayOf(source);
    if (!relay) return [];
    const group = isGroup(this.#relay) ? this.#relay.status().find((s) => s.name === source) : undefined;
    const running = group ? group.state === 'running' : relay.running;
    return [
      {
        owner: relay.options.owner,
        host: hostname(),
        pid: process.pid,
        version,
        wakeup: relay.options.wakeup,
        state: group ? group.state : running ? 'running' : 'stopped',
        startedAt: this.#startedAt.get(source)?.toISOString() ?? null,
        // It is this process: its heartbeat is now.
        heartbeatAt: running ? new Date().toISOString() : null,
        alive: running,
        inFlight: relay.inFlightBatches,
      },
    ];
  }

  /** Subscribes `listener` to the relay's events until {@link close}. */
  listen(listener: RelayListener): void {
    const now = new Date();
    for (const source of this.sources) if (this.#relayOf(source)?.running) this.#startedAt.set(source, now);
    const started = (source: string) => {
      this.#startedAt.set(source, new Date());
      listener.started(source);
    };
    if (isGroup(this.#relay)) {
      const group = this.#relay;
      this.#unsubscribe.push(
        group.on('relay:batch:settled', (p) => listener.settled(p.source, p, p.messages)),
        group.on('relay:transport:unavailable', (p) => listener.transport(p.source, false, p.error.message)),
        group.on('relay:transport:available', (p) => listener.transport(p.source, true, null)),
        group.on('relay:started', (p) => started(p.source)),
      );
    } else {
      const relay = this.#relay;
      const name = this.#single;
      this.#unsubscribe.push(
        relay.on('relay:batch:settled', (p) => listener.settled(name, p, p.messages)),
        relay.on('relay:transport:unavailable', (p) => listener.transport(name, false, p.error.message)),
        relay.on('relay:transport:available', () => listener.transport(name, true, null)),
        relay.on('relay:started', () => started(name)),
      );
    }
  }

  close(): void {
    for (const off of this.#unsubscribe.splice(0)) off();
  }
}
