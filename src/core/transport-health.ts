import type { Clock } from './clock.js';
import type { Logger } from './logger.js';
import type { Transport } from './ports.js';
import type { RelayEmit } from './relay-events.js';

export interface TransportHealthOptions {
  transport: Transport;
  clock: Clock;
  logger: Logger;
  emit: RelayEmit;
  probeMinDelayMs: number;
  probeMaxDelayMs: number;
  /** Deadline of one probe. */
  probeTimeoutMs: number;
  random?: () => number;
}

interface Outage {
  since: number;
  error: Error;
  probes: number;
}

/**
 * The relay's view of its transport: up, or unavailable since some time. An outage is not a
 * message failure (guarantee 7): while the transport is unavailable the relay claims nothing,
 * so no message spends an attempt; this object probes the transport with backoff and says when
 * claims may resume. It logs once per change of state, not once per message.
 */
export class TransportHealth {
  readonly #o: TransportHealthOptions;
  #outage: Outage | undefined;
  /**
   * Failed probes since the transport last took a message. Not reset by a probe that
   * succeeds: a transport that passes probes but fails every publish would otherwise be probed
   * at the shortest delay forever.
   */
  #failures = 0;

  constructor(options: TransportHealthOptions) {
    this.#o = options;
  }

  get available(): boolean {
    return this.#outage === undefined;
  }

  /** The error that started the current outage, if any. */
  get error(): Error | undefined {
    return this.#outage?.error;
  }

  /** A publish came back `unavailable`: pause claims. Idempotent during an outage. */
  markUnavailable(error: Error): void {
    if (this.#outage) return;
    this.#outage = { since: this.#o.clock.now(), error, probes: 0 };
    this.#o.logger.warn(
      'transport unavailable; claims paused until a probe succeeds (no attempts are spent)',
      // `error` as the error itself: the logger writes { name, code, message, cause }.
      { event: 'transport_unavailable', transport: this.#o.transport.name, error },
    );
    this.#o.emit('relay:transport:unavailable', { error });
  }

  /** The broker answered for a message (ok, nack, reject): the backoff starts over next time. */
  markHealthy(): void {
    this.#failures = 0;
  }

  /** Delay before the next probe: exponential from the minimum, "equal jitter" (half fixed, half random). */
  nextDelayMs(): number {
    const { probeMinDelayMs, probeMaxDelayMs } = this.#o;
    const cap = Math.min(probeMaxDelayMs, probeMinDelayMs * 2 ** Math.min(this.#failures, 30));
    const random = this.#o.random ?? Math.random;
    return Math.max(1, Math.round(cap / 2 + (random() * cap) / 2));
  }

  /**
   * Probes, with backoff, until the transport answers or `signal` aborts. Returns true when it
   * is available again.
   */
  async waitUntilAvailable(signal: AbortSignal): Promise<boolean> {
    const { clock, transport } = this.#o;
    while (this.#outage && !signal.aborted) {
      const outage = this.#outage;
      if (!(await clock.sleep(this.nextDelayMs(), signal))) return false;
      outage.probes++;
      try {
        await this.#probe(signal);
      } catch (err) {
        if (signal.aborted) return false;
        this.#failures++;
        const error = err instanceof Error ? err : new Error(String(err));
        this.#o.emit('relay:transport:probe-failed', { error, nextProbeMs: this.nextDelayMs() });
        continue;
      }
      const downMs = Math.round(clock.now() - outage.since);
      this.#outage = undefined;
      this.#o.logger.info('transport available again; claims resume', {
        event: 'transport_available',
        transport: transport.name,
        durationMs: downMs,
        downMs,
        probes: outage.probes,
      });
      this.#o.emit('relay:transport:available', { downMs, probes: outage.probes });
    }
    return this.#outage === undefined;
  }

  /** One probe under its deadline; a probe that does not answer is a failed probe. */
  async #probe(signal: AbortSignal): Promise<void> {
    const { clock, transport, probeTimeoutMs } = this.#o;
    const abort = new AbortController();
    const cut = () => abort.abort();
    signal.addEventListener('abort', cut, { once: true });
    const timer = new AbortController();
    const deadline = clock.sleep(probeTimeoutMs, timer.signal).then((full) => {
      if (!full) return;
      abort.abort();
      throw new Error(`probe of transport ${transport.name} did not answer within ${probeTimeoutMs} ms`);
    });
    try {
      await Promise.race([transport.probe({ signal: abort.signal }), deadline]);
    } finally {
      timer.abort();
      signal.removeEventListener('abort', cut);
      deadline.catch(() => undefined);
    }
  }
}
