import { createServer, type IncomingHttpHeaders, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { verifyWebhook, type WebhookSecret } from '../../src/callbacks/index.js';

/** One request as the test receiver saw it. */
export interface Received {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  body: string;
  /** `true` when verifyWebhook accepted it, else the WebhookVerificationError's code. */
  verified: true | string;
}

/** A real HTTP server on 127.0.0.1 that records what it receives and answers as told. */
export interface Receiver {
  /** `http://127.0.0.1:<port>/hooks` */
  url: string;
  port: number;
  received: Received[];
  close(): Promise<void>;
}

/**
 * Starts a receiver that verifies every request with `secret` (as a user's receiver would) and
 * lets `respond` answer the n-th request (1-based).
 */
export async function startReceiver(
  secret: WebhookSecret,
  respond: (n: number, request: Received, res: ServerResponse) => void,
): Promise<Receiver> {
  const received: Received[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      let verified: true | string = true;
      try {
        verifyWebhook({ secret, headers: req.headers, body });
      } catch (err) {
        verified = (err as { code?: string }).code ?? String(err);
      }
      const request: Received = {
        method: req.method ?? '',
        path: req.url ?? '',
        headers: req.headers,
        body: body.toString('utf8'),
        verified,
      };
      received.push(request);
      respond(received.length, request, res);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/hooks`,
    port,
    received,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** A port nothing listens on (bound, then released). */
export async function unusedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

export function answer(
  res: ServerResponse,
  status: number,
  body = '',
  headers: Record<string, string> = {},
): void {
  res.writeHead(status, headers).end(body);
}
