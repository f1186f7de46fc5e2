/**
 * The public face every core-driven consumer shares: the {@link MessageConsumer} lifecycle,
 * forwarded to its {@link ConsumerCore}, and the typed events.
 *
 * @module
 */
import { TypedEmitter } from '../core/typed-emitter.js';
import type { MessageConsumer } from './consumer.js';
import type { ConsumerEvents } from './consumer-events.js';

/** The part of a {@link ConsumerCore} its consumer forwards to. */
export interface ConsumerLifecycle {
  readonly running: boolean;
  readonly connected: boolean;
  start(): Promise<void>;
  stop(options?: { timeoutMs?: number }): Promise<void>;
}

/**
 * A consumer driven by a {@link ConsumerCore}, which the subclass makes in its constructor. The
 * subclass's TSDoc says what start() sets up at the broker and which errors it throws.
 */
export abstract class CoreDrivenConsumer<Events extends ConsumerEvents<object, object>>
  extends TypedEmitter<Events>
  implements MessageConsumer
{
  /** The core this consumer forwards to, made by the subclass's constructor. */
  protected abstract readonly core: ConsumerLifecycle;

  /** True between a successful start() and stop(), also while reconnecting. */
  get running(): boolean {
    return this.core.running;
  }

  /** True while a connection is open and consuming. */
  get connected(): boolean {
    return this.core.connected;
  }

  /**
   * Connects, sets up what is consumed and starts consuming. Idempotent; starts a stopped
   * consumer again. Throws a `TransportError` naming the redacted URL and what to do (or a
   * `ConfigError` when the broker's client library is missing). Later losses are not thrown: the
   * consumer reconnects.
   */
  start(): Promise<void> {
    return this.core.start();
  }

  /**
   * Stops taking deliveries, waits for running handlers up to `timeoutMs` (default
   * `stopTimeoutMs`) and disconnects. Deliveries not yet started or waiting for a retry are left
   * unacknowledged: the broker redelivers them. A handler still running at the deadline may
   * commit, but its acknowledgement is lost; with an inbox its redelivery is a duplicate.
   * Idempotent; never rejects.
   */
  stop(options: { timeoutMs?: number } = {}): Promise<void> {
    return this.core.stop(options);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}
