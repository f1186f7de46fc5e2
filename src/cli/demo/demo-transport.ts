import { request, Agent, type ClientRequest } from 'node:http';
import { PermanentDeliveryError } from '../../core/errors/permanent-delivery-error.js';
import { TransportError } from '../../core/errors/transport-error.js';
import type { PublishOutcome, Transport } from '../../core/ports.js';
import type { OutboxMessage } from '../../core/types.js';

/** The body the demo transport POSTs for each message. */
export interface DemoDelivery {
  id: string;
  topic: string;
  key: string | null;
  type: string | null;
  headers: Record<string, string>;
  attempts: number;
  payload: unknown;
}

/**
 * The demo's own transport: one HTTP POST of JSON per message, pipelined over a small
 * keep-alive pool. 2xx is a confirmation, 5xx and network errors are retried, other answers
 * are permanent. Internal to `mailroom demo`; not the HTTP webhook transport.
 */
export class DemoHttpTransport implements Transport {
  readonly name = 'demo-http';
  readonly #url: URL;
  readonly #timeoutMs: number;
  #agent: Agent | undefined;
  readonly #requests = new Set<ClientRequest>();

  constructor(url: URL, timeoutMs = 2000) {
    this.#url = url;
    this.#timeoutMs = timeoutMs;
  }

  async start(): Promise<void> {
    this.#agent ??= new Agent({ keepAlive: true, maxSockets: 16 });
  }

  publish(messages: readonly OutboxMessage[]): Promise<PublishOutcome[]> {
    return Promise.all(messages.map((m) => this.#post(m)));
  }

  /** The receiver is in this process: reachable whenever the transport is started. */
  async probe(): Promise<void> {
    if (!this.#agent) throw new TransportError('closed', 'transport is closed; call start()');
  }

  /** Drops the connections, answered or not; in-flight requests report `retry`. */
  async close(): Promise<void> {
    // Requests still queued for a socket would wait forever on a destroyed agent: end each one.
    for (const req of this.#requests) req.destroy(new Error('connection closed'));
    this.#requests.clear();
    this.#agent?.destroy();
    this.#agent = undefined;
  }

  #post(message: OutboxMessage): Promise<PublishOutcome> {
    const agent = this.#agent;
    if (!agent) {
      return Promise.resolve({
        status: 'unavailable',
        error: new TransportError('closed', 'transport is closed'),
      });
    }
    const delivery: DemoDelivery = {
      id: message.id,
      topic: message.topic,
      key: message.key,
      type: message.type,
      headers: message.headers,
      attempts: message.attempts,
      payload:
        message.contentType === 'application/json'
          ? JSON.parse(message.payload.toString('utf8'))
          : message.payload.toString('base64'),
    };
    const body = Buffer.from(JSON.stringify(delivery));
    return new Promise((resolve) => {
      // A network error says nothing about the message: the receiver is unreachable. An answer
      // of 5xx/429/408 is the receiver failing this message.
      const unreachable = (err: Error) =>
        resolve({
          status: 'unavailable',
          error: new TransportError('unreachable', err.message, { cause: err }),
        });
      const fail = (err: Error) =>
        resolve({ status: 'retry', error: new TransportError('http_failed', err.message, { cause: err }) });
      const req = request(
        this.#url,
        {
          method: 'POST',
          agent,
          timeout: this.#timeoutMs,
          headers: {
            'content-type': 'application/json',
            'content-length': body.length,
            'idempotency-key': message.id,
          },
        },
        (res) => {
          res.resume();
          res.on('error', unreachable);
          res.on('end', () => {
            const status = res.statusCode ?? 0;
            if (status >= 200 && status < 300) resolve({ status: 'ok' });
            else if (status >= 500 || status === 429 || status === 408) {
              fail(new Error(`receiver answered ${status}`));
            } else {
              resolve({
                status: 'permanent',
                error: new PermanentDeliveryError(`receiver answered ${status}`),
              });
            }
          });
        },
      );
      this.#requests.add(req);
      req.on('close', () => this.#requests.delete(req));
      req.on('timeout', () => req.destroy(new Error(`no answer within ${this.#timeoutMs} ms`)));
      req.on('error', unreachable);
      req.end(body);
    });
  }
}
