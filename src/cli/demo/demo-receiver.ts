import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/** The receiver's fault settings; all can change while it runs. */
export interface ReceiverFaults {
  /** Share of requests answered 500 before being processed (the message is not taken). */
  failRate: number;
  /**
   * Share of requests processed and then answered 500, as when the answer is lost: the
   * sender retries a message the receiver already has.
   */
  lostAnswerRate: number;
  /** While true every request gets 503 (the receiver is down). */
  down: boolean;
}

/** What the receiver saw of one message id. */
export interface Receipt {
  key: string | null;
  /** `performance.now()` at the first accepted copy. */
  at: number;
}

/**
 * The demo's downstream service: an HTTP endpoint on 127.0.0.1 that takes the relay's POSTs,
 * processes each message id once (dedupes by the `idempotency-key` header, as an inbox does)
 * and misbehaves on request.
 */
export class DemoReceiver {
  readonly faults: ReceiverFaults;
  /** First accepted copy of each message id, in arrival order. */
  readonly receipts = new Map<string, Receipt>();
  duplicatesSuppressed = 0;
  /** 5xx answers sent (injected failures, lost answers, outage). */
  errorsSent = 0;
  requests = 0;
  readonly #random: () => number;
  readonly #server: Server;

  constructor(random: () => number, faults: ReceiverFaults) {
    this.#random = random;
    this.faults = faults;
    this.#server = createServer((req, res) => this.#handle(req, res));
    // Relays whose connections are cut mid-request (the crash) must not bring the demo down.
    this.#server.on('clientError', (_err, socket) => socket.destroy());
  }

  /** Listens on an ephemeral port of 127.0.0.1; resolves with the URL to POST to. */
  start(): Promise<URL> {
    return new Promise((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(0, '127.0.0.1', () => {
        const { port } = this.#server.address() as AddressInfo;
        resolve(new URL(`http://127.0.0.1:${port}/orders/events`));
      });
    });
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.#server.close(() => resolve());
      this.#server.closeAllConnections();
    });
  }

  #handle(req: IncomingMessage, res: ServerResponse): void {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('error', () => undefined);
    req.on('end', () => {
      this.requests++;
      const answer = (status: number) => {
        if (status >= 500) this.errorsSent++;
        res.writeHead(status, { 'content-type': 'text/plain' }).end(status < 300 ? 'ok' : 'failed');
      };
      const id = req.headers['idempotency-key'];
      let key: string | null;
      try {
        key = (JSON.parse(Buffer.concat(chunks).toString('utf8')) as { key: string | null }).key;
      } catch {
        return answer(400);
      }
      if (typeof id !== 'string' || id === '') return answer(400);
      if (this.faults.down) return answer(503);
      if (this.#random() < this.faults.failRate) return answer(500);
      if (this.receipts.has(id)) this.duplicatesSuppressed++;
      else this.receipts.set(id, { key, at: performance.now() });
      answer(this.#random() < this.faults.lostAnswerRate ? 500 : 200);
    });
  }
}
