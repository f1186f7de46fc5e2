import type { Logger } from './logger.js';

type Listener<T> = (payload: T) => void;

/**
 * A small event emitter with a typed event map. A listener that throws is logged and
 * skipped: observers must never be able to break the relay.
 */
export class TypedEmitter<Events extends { [K in keyof Events]: unknown }> {
  readonly #listeners = new Map<keyof Events, Set<Listener<never>>>();
  protected logger: Logger;

  constructor(logger: Logger) {
    this.logger = logger;
  }

  on<K extends keyof Events>(event: K, listener: Listener<Events[K]>): () => void {
    let set = this.#listeners.get(event);
    if (!set) this.#listeners.set(event, (set = new Set()));
    set.add(listener as Listener<never>);
    return () => this.off(event, listener);
  }

  once<K extends keyof Events>(event: K, listener: Listener<Events[K]>): () => void {
    const off = this.on(event, (payload) => {
      off();
      listener(payload);
    });
    return off;
  }

  off<K extends keyof Events>(event: K, listener: Listener<Events[K]>): void {
    this.#listeners.get(event)?.delete(listener as Listener<never>);
  }

  /** True when someone listens; lets hot paths skip building payloads nobody reads. */
  protected listens(event: keyof Events): boolean {
    return (this.#listeners.get(event)?.size ?? 0) > 0;
  }

  protected emit<K extends keyof Events>(event: K, payload: Events[K]): void {
    const set = this.#listeners.get(event);
    if (!set) return;
    for (const listener of [...set]) {
      try {
        (listener as Listener<Events[K]>)(payload);
      } catch (err) {
        // `event` is the log's stable id; the emitter's event name goes in `relayEvent`.
        this.logger.error('event listener threw; ignored', {
          event: 'listener_threw',
          relayEvent: String(event),
          error: err,
        });
      }
    }
  }
}
