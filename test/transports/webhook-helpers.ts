// Local HTTP servers for the webhook transport's tests: a receiver built with
// createWebhookReceiver that records what it handled, and a scripted server that answers each
// request as a test says (status, headers, delay, reset) and records what it got.
import { createServer, type IncomingHttpHeaders, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

import type { ReceivedMessage } from '../../src/core/types.js';
import type { ConformanceConsumer } from '../../src/testkit/transport-conformance.js';
import { createWebhookReceiver, type WebhookReceiverOptions } from '../../src/transports/webhook/index.js';

/** A message carrying this header is answered 422 by {@link startReceiver}'s server. */
export const REFUSE_HEADER = 'x-conformance-refuse';

/** A listening server whose sockets are all destroyed on close (kept-alive ones included). */
export interface TestServer {
  server: Server;
  port: number;
  url: string;
  /** TCP connections accepted since start. */
  connections: number;
  close(): Promise<void>;
}

export async function listen(server: Server, port = 0): Promise<TestServer> {
  const sockets = new Set<Socket>();
  const result: TestServer = {
    server,
    port: 0,
    url: '',
    connections: 0,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  server.on('connection', (socket: Socket) => {
    result.connections++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
  });
  result.port = (server.address() as AddressInfo).port;
  result.url = `http://127.0.0.1:${result.port}`;
  return result;
}

/** A receiver that records every message it handled, with the request path. */
export interface TestReceiver extends TestServer {
  received: Array<{ message: ReceivedMessage; path: string; webhookId: string }>;
  /** Set to make the handler throw for a message (answered 500). */
  fail: (message: ReceivedMessage) => boolean;
  consumer(topics: readonly string[]): ConformanceConsumer;
}

export async function startReceiver(
  options: Omit<WebhookReceiverOptions, 'handler'>,
  port = 0,
): Promise<TestReceiver> {
  let current: { path: string } = { path: '' };
  const received: TestReceiver['received'] = [];
  const waiters = new Set<() => void>();
  const state: { fail: (m: ReceivedMessage) => boolean } = { fail: () => false };
  const receive = createWebhookReceiver({
    ...options,
    handler: (message, info) => {
      if (state.fail(message)) throw new Error(`handler refuses ${message.id}`);
      received.push({ message, path: current.path, webhookId: info.webhookId });
      for (const wake of waiters) wake();
    },
  });
  const server = createServer((req, res) => {
    current = { path: req.url ?? '' };
    // For the conformance check of a message the endpoint refuses on its own.
    if (req.headers[REFUSE_HEADER] !== undefined) {
      req.resume();
      res.writeHead(422).end('refused by the test receiver');
      return;
    }
    receive(req, res);
  });
  const base = await listen(server, port);
  const receiver = Object.assign(base, {
    received,
    consumer(topics: readonly string[]): ConformanceConsumer {
      const wanted = new Set(topics);
      const start = received.length;
      const mine = () => received.slice(start).filter((r) => wanted.has(r.message.topic));
      /** Takes still waiting: close() ends them, so no timer outlives the test. */
      const open = new Set<() => void>();
      return {
        take(count, timeoutMs) {
          return new Promise((resolve, reject) => {
            const end = () => {
              waiters.delete(check);
              open.delete(stop);
              clearTimeout(timer);
            };
            const stop = () => {
              end();
              reject(new Error('consumer closed'));
            };
            const check = () => {
              const got = mine();
              if (got.length < count) return false;
              end();
              resolve(
                got.slice(0, count).map(({ message: m }) => ({
                  id: m.id,
                  topic: m.topic,
                  key: m.key,
                  type: m.type,
                  contentType: m.contentType,
                  headers: m.headers,
                  payload: m.body,
                })),
              );
              return true;
            };
            const timer = setTimeout(() => {
              end();
              reject(new Error(`received ${mine().length} of ${count} messages within ${timeoutMs} ms`));
            }, timeoutMs);
            open.add(stop);
            if (!check()) waiters.add(check);
          });
        },
        close: async () => {
          for (const stop of [...open]) stop();
        },
      };
    },
  });
  Object.defineProperty(receiver, 'fail', {
    get: () => state.fail,
    set: (f: (m: ReceivedMessage) => boolean) => (state.fail = f),
  });
  return receiver as TestReceiver;
}

/** What a scripted server got. */
export interface Recorded {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  /** Raw header pairs, names as sent. */
  rawHeaders: string[];
  body: Buffer;
}

/** How to answer one request: a status with headers, or `hang` (never answer), or `reset`. */
export type Script =
  { status: number; headers?: Record<string, string>; body?: string; delayMs?: number } | 'hang' | 'reset';

export interface ScriptedServer extends TestServer {
  requests: Recorded[];
  inFlight: number;
  maxInFlight: number;
}

/** A server answering each request with `script(request)`. */
export async function startScripted(script: (request: Recorded) => Script): Promise<ScriptedServer> {
  const requests: Recorded[] = [];
  const hanging = new Set<ServerResponse>();

  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const recorded: Recorded = {
        method: req.method ?? '',
        path: req.url ?? '',
        headers: req.headers,
        rawHeaders: req.rawHeaders,
        body: Buffer.concat(chunks),
      };
      requests.push(recorded);
      const answer = script(recorded);
      if (answer === 'hang') {
        hanging.add(res);
        return;
      }
      if (answer === 'reset') {
        req.socket.destroy();
        return;
      }
      scripted.inFlight++;
      scripted.maxInFlight = Math.max(scripted.maxInFlight, scripted.inFlight);
      setTimeout(() => {
        scripted.inFlight--;
        res.writeHead(answer.status, answer.headers ?? {});
        res.end(answer.body ?? '');
      }, answer.delayMs ?? 0);
    });
  });
  const base = await listen(server);
  const scripted: ScriptedServer = Object.assign(base, { requests, inFlight: 0, maxInFlight: 0 });
  return scripted;
}

/** A port nothing listens on (bound, then released). */
export async function closedPort(): Promise<number> {
  const s = await listen(createServer());
  const { port } = s;
  await s.close();
  return port;
}
