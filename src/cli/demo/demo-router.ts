import type { PublishOptions, PublishOutcome, Transport } from '../../core/ports.js';
import type { OutboxMessage } from '../../core/types.js';

/**
 * One relay, two destinations, as a relay publishing to a broker with several queues: orders
 * go over HTTP to the demo's receiver, everything else (payment requests, acknowledgements,
 * cancellations) to the in-process broker the payment and order services consume from.
 * Declares no `ordering`, like the HTTP transport, so the relay keeps one message per key in a
 * batch.
 */
export class DemoRouter implements Transport {
  readonly name = 'demo-router';
  readonly #http: Transport;
  readonly #broker: Transport;
  readonly #toHttp: (topic: string) => boolean;

  /**
   * @param broker - shared by every relay of the demo, as a broker is: `close()` leaves it open.
   */
  constructor(options: { http: Transport; broker: Transport; toHttp: (topic: string) => boolean }) {
    this.#http = options.http;
    this.#broker = options.broker;
    this.#toHttp = options.toHttp;
  }

  async start(): Promise<void> {
    await Promise.all([this.#http.start(), this.#broker.start()]);
  }

  async probe(options?: PublishOptions): Promise<void> {
    await Promise.all([this.#http.probe(options), this.#broker.probe(options)]);
  }

  /** Publishes each part to its transport at once; the outcomes come back in the batch's order. */
  async publish(messages: readonly OutboxMessage[], options?: PublishOptions): Promise<PublishOutcome[]> {
    const http: OutboxMessage[] = [];
    const broker: OutboxMessage[] = [];
    for (const m of messages) (this.#toHttp(m.topic) ? http : broker).push(m);
    const [httpOutcomes, brokerOutcomes] = await Promise.all([
      http.length ? this.#http.publish(http, options) : [],
      broker.length ? this.#broker.publish(broker, options) : [],
    ]);
    let h = 0;
    let b = 0;
    return messages.map(
      (m) => (this.#toHttp(m.topic) ? httpOutcomes[h++] : brokerOutcomes[b++]) as PublishOutcome,
    );
  }

  /** Closes this relay's HTTP connections; the broker belongs to the whole demo. */
  async close(): Promise<void> {
    await this.#http.close();
  }
}
