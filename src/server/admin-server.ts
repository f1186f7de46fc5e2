import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { ConfigError } from '../core/errors/config-error.js';
import { isStoreError } from '../core/errors/store-error.js';
import { silentLogger, type Logger } from '../core/logger.js';
import type {
  AckCounts,
  AckPort,
  DeadLetterFilter,
  OutboxStats,
  OutboxStore,
  RelayInfo,
  Transport,
} from '../core/ports.js';
import { AdminRequestError, isAdminRequestError } from './admin-request-error.js';
import { ackRow, deadLetterDetail, deadLetterRow, relayRowJson, statsJson } from './api-json.js';
import type {
  AcksResponse,
  DeadLettersResponse,
  HealthResponse,
  HistoryResponse,
  PurgeResponse,
  ReadinessResponse,
  RelaysResponse,
  ReplayResponse,
  StatusResponse,
  TopicsResponse,
  TransportState,
} from './api-types.js';
import { DASHBOARD_ASSETS } from './dashboard/assets.js';
import { HistoryBuffer } from './history.js';
import { HTML_HEADERS, readJsonBody, send, sendError, sendJson } from './http.js';
import { RelayView, type AdminRelay } from './relay-view.js';
import {
  MAX_IDS_PER_REQUEST,
  deadLetterSelection,
  limitParam,
  messageId,
  queryParams,
  shown,
  type DeadLetterSelection,
} from './validate.js';

/** A dashboard file the server serves: `/`, `/assets/dashboard.css`, `/assets/dashboard.js`. */
export interface DashboardAsset {
  contentType: string;
  body: string;
}

/** A Prometheus registry (prom-client's `Registry`, or anything with these two members). */
export interface MetricsRegistry {
  readonly contentType: string;
  metrics(): Promise<string>;
}

/** One database (and schema) the server reports on. */
export interface AdminSource {
  /** The source's name (`default` for one source); `?source=` selects it. */
  name: string;
  store: OutboxStore;
}

/** Options of {@link AdminServer}. */
export interface AdminServerOptions {
  /**
   * Address to listen on. Anything but a loopback address needs a `token`, and then every
   * `/api/*` request needs it too.
   *
   * @default '127.0.0.1'
   */
  host?: string;
  /** Port to listen on; 0 picks a free one (read it from `start()`'s result). */
  port: number;
  /**
   * The bearer token POST requests (replay, purge) must carry, at least 16 characters. Without
   * it the API is read-only. Compared in constant time; never logged or echoed.
   */
  token?: string | undefined;
  /** The databases to report on, at least one, names unique. */
  stores: readonly AdminSource[];
  /** Served at `/metrics`; without it `/metrics` answers 404. */
  registry?: MetricsRegistry;
  /**
   * The relay (or group) running in this process: its transport state feeds `/readyz`, its
   * events the history (delivered counts, latency). A group's source names must be `stores`' names.
   */
  relay?: AdminRelay;
  /**
   * The relay's transport: its name appears in `/api/status`. Without a `relay`, `/readyz` probes
   * it (at most every {@link AdminServerOptions.probeIntervalMs}).
   */
  transport?: Transport;
  /**
   * The dashboard's files by path. Default: the dashboard built into the package
   * (`src/server/dashboard/assets.ts`); an empty map serves none.
   */
  dashboard?: ReadonlyMap<string, DashboardAsset>;
  /**
   * Host names (without port) a browser may reach a loopback-bound server by, besides
   * `localhost`, `127.0.0.1` and `[::1]`: requests naming another `Host` are refused, which
   * keeps a web page that rebinds its DNS name to 127.0.0.1 out.
   *
   * @default []
   */
  allowedHosts?: readonly string[];
  /** @default 5000 */
  historyIntervalMs?: number;
  /** Points kept per source (5 s × 720 = one hour). @default 720 */
  historyPoints?: number;
  /** Deadline of one store call (stats, check, lists); past it the request answers 503. @default 5000 */
  storeTimeoutMs?: number;
  /** Without a relay: least time between two probes of `transport`. @default 5000 */
  probeIntervalMs?: number;
  /** Largest request body. @default 65536 */
  maxBodyBytes?: number;
  /** Time a request's headers and body get to arrive; then 408. @default 10000 */
  requestTimeoutMs?: number;
  /** Reported in `/api/status`. @default the package's version */
  version?: string;
  logger?: Logger;
}

/** Where a started server listens. */
export interface AdminServerAddress {
  host: string;
  port: number;
  /** `http://host:port`, for people and tests. */
  url: string;
}

/** Store results younger than this are reused: no source is asked more than once a second. */
const CACHE_MS = 1000;
const MAX_URL_LENGTH = 2048;
const LOOPBACK_NAMES = ['localhost', '127.0.0.1', '::1', '[::1]'];

/** True for an address only this machine can reach. */
export function isLoopbackHost(host: string): boolean {
  return LOOPBACK_NAMES.includes(host.toLowerCase()) || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

function packageVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
      version?: unknown;
    };
    return typeof pkg.version === 'string' ? pkg.version : 'unknown';
  } catch {
    return 'unknown';
  }
}

function sha256(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Rejects with a 503 `store_timeout` when `promise` takes longer than `ms`. */
function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new AdminRequestError(
            503,
            'store_timeout',
            `${what} did not answer within ${ms} ms; check the database`,
          ),
        ),
      ms,
    );
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

interface Cached<T> {
  at: number;
  value: Promise<T>;
}

type Handler = (
  req: IncomingMessage,
  res: ServerResponse,
  url: URL,
  match: RegExpMatchArray,
) => Promise<void>;

interface Route {
  pattern: RegExp;
  /** `/api/*`: cross-site checks, and the token on a non-loopback bind. */
  api: boolean;
  methods: Partial<Record<'GET' | 'POST', Handler>>;
}

/**
 * The admin HTTP server (docs/admin.md): `/healthz`, `/readyz`, `/metrics`, a JSON API over the
 * outbox (status, history, topics, relays, dead letters, acknowledgements) and the dashboard.
 * Node's `http` only. Binds 127.0.0.1 by default; replay and purge need a bearer token and refuse
 * cross-site requests; every bad request gets a 4xx JSON error, never a crash.
 *
 * @example
 * ```ts
 * const admin = new AdminServer({ port: 9464, stores: [{ name: 'default', store }], relay, transport,
 *   registry: metrics.registry, token: process.env.MAILROOM_ADMIN_TOKEN });
 * const { url } = await admin.start();
 * // … on shutdown, before the relay stops:
 * await admin.close();
 * ```
 */
export class AdminServer {
  readonly #host: string;
  readonly #port: number;
  readonly #tokenDigest: Buffer | undefined;
  readonly #loopback: boolean;
  readonly #sources: Map<string, OutboxStore>;
  readonly #registry: MetricsRegistry | undefined;
  readonly #relay: RelayView | undefined;
  readonly #transport: Transport | undefined;
  readonly #dashboard: ReadonlyMap<string, DashboardAsset>;
  readonly #allowedHosts: Set<string>;
  readonly #historyIntervalMs: number;
  readonly #history: HistoryBuffer;
  readonly #storeTimeoutMs: number;
  readonly #probeIntervalMs: number;
  readonly #maxBodyBytes: number;
  readonly #requestTimeoutMs: number;
  readonly #version: string;
  readonly #logger: Logger;
  readonly #routes: Route[];
  readonly #cache = new Map<string, Cached<unknown>>();
  /** Transport state per source (from relay events), or the probe's. */
  readonly #transportState = new Map<string, { available: boolean; since: Date; error: string | null }>();
  #probe: { at: number; value: Promise<{ ok: boolean; error: string | null }> } | undefined;
  #probeState: { available: boolean; since: Date; error: string | null } | undefined;
  #server: Server | undefined;
  #address: AdminServerAddress | undefined;
  #sampler: NodeJS.Timeout | undefined;
  #sampling = false;
  #closing: Promise<void> | undefined;

  constructor(options: AdminServerOptions) {
    this.#host = options.host ?? '127.0.0.1';
    if (typeof this.#host !== 'string' || this.#host === '') {
      throw new ConfigError(
        'host',
        `AdminServer option host ${shown(options.host)} is not an address; give e.g. '127.0.0.1'`,
      );
    }
    if (!Number.isInteger(options.port) || options.port < 0 || options.port > 65535) {
      throw new ConfigError(
        'port',
        `AdminServer option port ${shown(options.port)} is not a port from 0 to 65535`,
      );
    }
    this.#port = options.port;
    if (options.token !== undefined) {
      // The token is never shown, not even in this message.
      if (
        typeof options.token !== 'string' ||
        options.token.length < 16 ||
        // eslint-disable-next-line no-control-regex
        /[\s\x00-\x1f\x7f]/.test(options.token)
      ) {
        throw new ConfigError(
          'token',
          'AdminServer option token must be at least 16 characters without spaces or control characters; generate one with `openssl rand -hex 32`',
        );
      }
      this.#tokenDigest = sha256(options.token);
    }
    this.#loopback = isLoopbackHost(this.#host);
    if (!this.#loopback && this.#tokenDigest === undefined) {
      throw new ConfigError(
        'host',
        `AdminServer option host is ${shown(this.#host)}, which other machines can reach, and no token is set: set a token (MAILROOM_ADMIN_TOKEN) or bind 127.0.0.1`,
      );
    }
    if (!Array.isArray(options.stores) || options.stores.length === 0) {
      throw new ConfigError(
        'stores',
        'AdminServer option stores must list at least one store: [{ name: "default", store }]',
      );
    }
    this.#sources = new Map();
    for (const source of options.stores) {
      if (
        typeof source?.name !== 'string' ||
        source.name === '' ||
        typeof source.store?.stats !== 'function'
      ) {
        throw new ConfigError(
          'stores',
          `AdminServer option stores has an entry without a name or store: ${shown(source?.name)}`,
        );
      }
      if (this.#sources.has(source.name)) {
        throw new ConfigError(
          'stores',
          `AdminServer option stores names ${shown(source.name)} twice; give each store its own name`,
        );
      }
      this.#sources.set(source.name, source.store);
    }
    if (options.relay) {
      this.#relay = new RelayView(options.relay, [...this.#sources.keys()][0] as string);
      const unknown = this.#relay.sources.filter((name) => !this.#sources.has(name));
      if (unknown.length > 0) {
        throw new ConfigError(
          'stores',
          `AdminServer: the relay serves ${unknown.map((n) => shown(n)).join(', ')}, which stores does not name; name each store as its relay source`,
        );
      }
    }
    this.#registry = options.registry;
    this.#transport = options.transport;
    this.#dashboard = options.dashboard ?? DASHBOARD_ASSETS;
    this.#allowedHosts = new Set((options.allowedHosts ?? []).map((h) => h.toLowerCase()));
    this.#historyIntervalMs = positive('historyIntervalMs', options.historyIntervalMs, 5000);
    this.#history = new HistoryBuffer(
      [...this.#sources.keys()],
      positive('historyPoints', options.historyPoints, 720),
    );
    this.#storeTimeoutMs = positive('storeTimeoutMs', options.storeTimeoutMs, 5000);
    this.#probeIntervalMs = positive('probeIntervalMs', options.probeIntervalMs, 5000);
    this.#maxBodyBytes = positive('maxBodyBytes', options.maxBodyBytes, 64 * 1024);
    this.#requestTimeoutMs = positive('requestTimeoutMs', options.requestTimeoutMs, 10_000);
    this.#version = options.version ?? packageVersion();
    this.#logger = options.logger ?? silentLogger;
    this.#routes = this.#buildRoutes();
  }

  /** Where the server listens, once started. */
  get address(): AdminServerAddress | undefined {
    return this.#address;
  }

  /**
   * Listens, starts the history sampler and subscribes to the relay's events. Resolves with the
   * bound address; rejects with a {@link ConfigError} when the address cannot be bound.
   */
  async start(): Promise<AdminServerAddress> {
    if (this.#address) return this.#address;
    if (this.#closing) throw new ConfigError('start', 'this AdminServer was closed; create a new one');
    const server = createServer({
      requestTimeout: this.#requestTimeoutMs + 5000,
      headersTimeout: this.#requestTimeoutMs,
      connectionsCheckingInterval: 1000,
    });
    server.keepAliveTimeout = 5000;
    server.maxConnections = 256;
    server.on('request', (req: IncomingMessage, res: ServerResponse) => void this.#handle(req, res));
    server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => clientError(err, socket));
    await new Promise<void>((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException) => {
        server.off('listening', onListening);
        reject(
          new ConfigError(
            'port',
            `the admin server cannot listen on ${this.#host}:${this.#port} (${err.code ?? err.message}); choose another port or host`,
            {},
            err,
          ),
        );
      };
      const onListening = () => {
        server.off('error', onError);
        resolve();
      };
      server.once('error', onError);
      server.once('listening', onListening);
      server.listen(this.#port, this.#host);
    });
    server.on('error', (err) => this.#logger.error('admin server error', { error: errorText(err) }));
    this.#server = server;
    const bound = server.address() as AddressInfo;
    const shownHost = bound.family === 'IPv6' ? `[${bound.address}]` : bound.address;
    this.#address = { host: bound.address, port: bound.port, url: `http://${shownHost}:${bound.port}` };
    if (this.#relay) {
      const now = new Date();
      for (const source of this.#relay.sources) {
        this.#transportState.set(source, {
          available: this.#relay.transportState === 'up',
          since: now,
          error: null,
        });
      }
      this.#relay.listen({
        settled: (source, counts, messages) => {
          const now = Date.now();
          this.#history.settled(
            source,
            counts,
            messages.map((m) => Math.max(0, now - m.createdAt.getTime())),
          );
        },
        transport: (source, available, error) => {
          const previous = this.#transportState.get(source);
          if (previous?.available === available && available) return;
          this.#transportState.set(source, {
            available,
            since: previous?.available === available ? previous.since : new Date(),
            error,
          });
        },
        started: () => undefined,
      });
    }
    this.#sampler = setInterval(() => void this.#sample(), this.#historyIntervalMs);
    this.#sampler.unref();
    void this.#sample();
    this.#logger.debug('admin server listening', {
      url: this.#address.url,
      mutations: this.#tokenDigest !== undefined,
    });
    return this.#address;
  }

  /** Stops listening and sampling, ends open connections. Closes no store. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      clearInterval(this.#sampler);
      this.#relay?.close();
      const server = this.#server;
      if (!server) return;
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    })();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  // ---------------------------------------------------------------- store reads (cached)

  /** `fn`'s result for `key`, reused for a second (also while it is under way). */
  #cached<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const now = Date.now();
    const hit = this.#cache.get(key) as Cached<T> | undefined;
    if (hit && now - hit.at < CACHE_MS) return hit.value;
    const value = fn();
    value.catch(() => undefined);
    this.#cache.set(key, { at: now, value });
    return value;
  }

  #stats(source: string): Promise<OutboxStats> {
    const store = this.#sources.get(source) as OutboxStore;
    return this.#cached(`stats:${source}`, () =>
      within(store.stats(), this.#storeTimeoutMs, `the database of source ${shown(source)}`),
    );
  }

  #ackCounts(source: string): Promise<AckCounts | null> {
    const store = this.#sources.get(source) as OutboxStore & Partial<AckPort>;
    if (typeof store.ackCounts !== 'function') return Promise.resolve(null);
    return this.#cached(`acks:${source}`, () =>
      within(
        (store.ackCounts as () => Promise<AckCounts>).call(store),
        this.#storeTimeoutMs,
        `the database of source ${shown(source)}`,
      ),
    );
  }

  async #sample(): Promise<void> {
    if (this.#sampling) return;
    this.#sampling = true;
    try {
      const time = new Date();
      await Promise.all(
        [...this.#sources.keys()].map(async (source) => {
          const stats = await this.#stats(source).catch(() => null);
          this.#history.record(source, time, stats);
        }),
      );
    } finally {
      this.#sampling = false;
    }
  }

  #transportStatus(): { state: TransportState; since: Date | null; error: string | null } {
    if (this.#relay) {
      const states = [...this.#transportState.values()];
      const down = states.filter((s) => !s.available);
      if (down.length > 0) {
        const first = down.reduce((a, b) => (a.since <= b.since ? a : b));
        return { state: 'unavailable', since: first.since, error: first.error };
      }
      const since = states.reduce<Date | null>((a, s) => (a === null || s.since > a ? s.since : a), null);
      return { state: 'up', since, error: null };
    }
    if (this.#probeState) {
      return {
        state: this.#probeState.available ? 'up' : 'unavailable',
        since: this.#probeState.since,
        error: this.#probeState.error,
      };
    }
    return { state: 'none', since: null, error: null };
  }

  /** Without a relay: probes the transport, at most every probeIntervalMs. */
  #probeTransport(): Promise<unknown> {
    const transport = this.#transport;
    if (this.#relay || !transport) return Promise.resolve();
    const now = Date.now();
    if (this.#probe && now - this.#probe.at < this.#probeIntervalMs) return this.#probe.value;
    const value = transport
      .probe({ signal: AbortSignal.timeout(this.#storeTimeoutMs) })
      .then(
        () => ({ ok: true, error: null }),
        (err: unknown) => ({ ok: false, error: errorText(err) }),
      )
      .then((result) => {
        if (this.#probeState?.available !== result.ok) {
          this.#probeState = { available: result.ok, since: new Date(), error: result.error };
        } else this.#probeState.error = result.error;
        return result;
      });
    this.#probe = { at: now, value };
    return value;
  }

  // ---------------------------------------------------------------- request handling

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      await this.#route(req, res);
    } catch (err) {
      if (isAdminRequestError(err)) {
        sendError(res, err, err.status === 413 || err.status === 408 ? { Connection: 'close' } : {});
        if (err.status === 408) res.once('finish', () => req.destroy());
      } else if (isStoreError(err)) {
        sendError(
          res,
          new AdminRequestError(503, 'store_unavailable', `the database did not answer: ${err.message}`),
        );
      } else {
        this.#logger.error('admin request failed', {
          method: req.method,
          path: safePath(req.url),
          error: errorText(err),
        });
        sendError(
          res,
          new AdminRequestError(
            500,
            'internal_error',
            `the request failed: ${errorText(err)}; see the server's log`,
          ),
        );
      }
    }
  }

  async #route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const raw = req.url ?? '/';
    if (raw.length > MAX_URL_LENGTH) {
      throw new AdminRequestError(414, 'uri_too_long', `the URL is longer than ${MAX_URL_LENGTH} characters`);
    }
    const rawPath = raw.split('?')[0] as string;
    // Only exact paths are served; a path that climbs or hides its dots is refused outright
    // rather than normalised into another route.
    if (!rawPath.startsWith('/') || /\/\.\.?(\/|$)|%2e|%2f|%5c|\\|%00/i.test(rawPath)) {
      throw new AdminRequestError(
        400,
        'invalid_path',
        `the path ${shown(rawPath)} is not one this server serves; see docs/admin.md for the routes`,
      );
    }
    this.#checkHost(req);
    let url: URL;
    try {
      url = new URL(raw, 'http://admin.invalid');
    } catch {
      throw new AdminRequestError(400, 'invalid_path', `the URL ${shown(raw)} cannot be parsed`);
    }
    const path = url.pathname;
    if (path === '/' || path.startsWith('/assets/')) {
      this.#asset(req, res, path);
      return;
    }
    for (const route of this.#routes) {
      const match = route.pattern.exec(path);
      if (!match) continue;
      const method = req.method === 'HEAD' ? 'GET' : req.method;
      const handler = route.methods[method as 'GET' | 'POST'];
      const allow = Object.keys(route.methods)
        .flatMap((m) => (m === 'GET' ? ['GET', 'HEAD'] : [m]))
        .join(', ');
      if (!handler) {
        throw new AdminRequestError(
          405,
          'method_not_allowed',
          `${shown(req.method)} is not allowed on ${path}; use ${allow}`,
          {
            Allow: allow,
          },
        );
      }
      if (route.api) this.#checkApiRequest(req);
      if (method === 'POST') this.#checkMutation(req);
      await handler(req, res, url, match);
      return;
    }
    throw new AdminRequestError(404, 'not_found', `no route ${path}; see docs/admin.md for the routes`);
  }

  /** A loopback-bound server answers only to loopback names (and allowedHosts): DNS rebinding. */
  #checkHost(req: IncomingMessage): void {
    if (!this.#loopback) return;
    const host = req.headers.host;
    if (host === undefined) return;
    const name = host.replace(/:\d+$/, '').toLowerCase();
    if (isLoopbackHost(name) || this.#allowedHosts.has(name)) return;
    throw new AdminRequestError(
      403,
      'host_not_allowed',
      `this server listens on a loopback address and does not answer to Host ${shown(name)}; add it to allowedHosts (behind a proxy) or use 127.0.0.1`,
    );
  }

  #checkApiRequest(req: IncomingMessage): void {
    if (req.headers['sec-fetch-site'] === 'cross-site') {
      throw new AdminRequestError(
        403,
        'cross_site',
        'cross-site requests are refused; open the dashboard from this server',
      );
    }
    const origin = req.headers.origin;
    if (origin !== undefined) {
      // The page's host must be the one the request was sent to. The scheme is not compared: a
      // proxy in front may terminate TLS (the page is https://, the server sees plain HTTP).
      let host: string | undefined;
      try {
        const parsed = new URL(origin);
        host = parsed.protocol === 'http:' || parsed.protocol === 'https:' ? parsed.host : undefined;
      } catch {
        host = undefined;
      }
      const own = (req.headers.host ?? '').toLowerCase();
      const same = host !== undefined && [own, own.replace(/:(80|443)$/, '')].includes(host.toLowerCase());
      if (!same || own === '') {
        throw new AdminRequestError(
          403,
          'cross_site',
          `requests from origin ${shown(origin)} are refused; only this server's own pages may call the API`,
        );
      }
    }
    if (!this.#loopback) this.#authorize(req);
  }

  #checkMutation(req: IncomingMessage): void {
    if (this.#tokenDigest === undefined) {
      throw new AdminRequestError(
        403,
        'mutations_disabled',
        'replay and purge are disabled: start the server with a token (MAILROOM_ADMIN_TOKEN or --admin-token-file) and send it as Authorization: Bearer <token>',
      );
    }
    this.#authorize(req);
    const type = (req.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase();
    if (type !== 'application/json') {
      throw new AdminRequestError(
        415,
        'unsupported_media_type',
        `the body must be sent as Content-Type: application/json (got ${shown(req.headers['content-type'] ?? 'none')})`,
      );
    }
  }

  #authorize(req: IncomingMessage): void {
    const digest = this.#tokenDigest as Buffer;
    const header = req.headers.authorization;
    const match = header === undefined ? null : /^Bearer[ ]+(\S+)[ ]*$/i.exec(header);
    if (!match || !timingSafeEqual(sha256(match[1] as string), digest)) {
      throw new AdminRequestError(
        401,
        'unauthorized',
        header === undefined
          ? 'this request needs the admin token: send Authorization: Bearer <token>'
          : 'the token sent is not the admin token (or the Authorization header is not "Bearer <token>")',
        { 'WWW-Authenticate': 'Bearer realm="mailroom"' },
      );
    }
  }

  #asset(req: IncomingMessage, res: ServerResponse, path: string): void {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      throw new AdminRequestError(
        405,
        'method_not_allowed',
        `${shown(req.method)} is not allowed on ${path}; use GET`,
        {
          Allow: 'GET, HEAD',
        },
      );
    }
    const asset = this.#dashboard.get(path);
    if (!asset) {
      throw new AdminRequestError(
        404,
        'not_found',
        path === '/' ? 'this server has no dashboard; the JSON API is under /api' : `no asset ${path}`,
      );
    }
    send(res, 200, asset.contentType, asset.body, /html/i.test(asset.contentType) ? HTML_HEADERS : {});
  }

  /** The source a request names, or the only one; 400 when it names none of several or an unknown one. */
  #source(name: string | undefined): { name: string; store: OutboxStore } {
    if (name === undefined) {
      if (this.#sources.size === 1) {
        const [only] = this.#sources;
        return { name: only?.[0] as string, store: only?.[1] as OutboxStore };
      }
      throw new AdminRequestError(
        400,
        'source_required',
        `this server has several sources; say which with source=<name> (one of ${[...this.#sources.keys()].join(', ')})`,
      );
    }
    const store = this.#sources.get(name);
    if (!store) {
      throw new AdminRequestError(
        400,
        'unknown_source',
        `unknown source ${shown(name)}; the sources are ${[...this.#sources.keys()].join(', ')}`,
      );
    }
    return { name, store };
  }

  #buildRoutes(): Route[] {
    const route = (pattern: RegExp, api: boolean, methods: Route['methods']): Route => ({
      pattern,
      api,
      methods,
    });
    return [
      route(/^\/healthz$/, false, {
        GET: async (_req, res, url) => {
          queryParams(url.searchParams, []);
          const body: HealthResponse = { status: 'ok' };
          sendJson(res, 200, body);
        },
      }),
      route(/^\/readyz$/, false, { GET: (_req, res, url) => this.#readyz(res, url) }),
      route(/^\/metrics$/, false, {
        GET: async (_req, res, url) => {
          queryParams(url.searchParams, []);
          if (!this.#registry) {
            throw new AdminRequestError(
              404,
              'no_metrics',
              'this server has no metrics registry; start it with registry',
            );
          }
          send(res, 200, this.#registry.contentType, await this.#registry.metrics());
        },
      }),
      route(/^\/api\/status$/, true, { GET: (_req, res, url) => this.#status(res, url) }),
      route(/^\/api\/history$/, true, {
        GET: async (_req, res, url) => {
          const params = queryParams(url.searchParams, ['source']);
          const source = params.has('source') ? this.#source(params.get('source')).name : undefined;
          const body: HistoryResponse = {
            intervalMs: this.#historyIntervalMs,
            points: this.#history.points(source),
          };
          sendJson(res, 200, body);
        },
      }),
      route(/^\/api\/topics$/, true, {
        GET: async (_req, res, url) => {
          const source = this.#source(queryParams(url.searchParams, ['source']).get('source'));
          const stats = await this.#stats(source.name);
          const body: TopicsResponse = {
            topics: statsJson(stats).topics,
            truncated: stats.topicsTruncated === true,
          };
          sendJson(res, 200, body);
        },
      }),
      route(/^\/api\/relays$/, true, { GET: (_req, res, url) => this.#relays(res, url) }),
      route(/^\/api\/dead-letters$/, true, { GET: (_req, res, url) => this.#deadLetters(res, url) }),
      route(/^\/api\/dead-letters\/replay$/, true, {
        POST: (req, res, url) => this.#deadLetterAction(req, res, url, 'replay'),
      }),
      route(/^\/api\/dead-letters\/purge$/, true, {
        POST: (req, res, url) => this.#deadLetterAction(req, res, url, 'purge'),
      }),
      route(/^\/api\/dead-letters\/([^/]+)$/, true, {
        GET: async (_req, res, url, match) => {
          const source = this.#source(queryParams(url.searchParams, ['source']).get('source'));
          const id = messageId(decodePathSegment(match[1] as string));
          const [letter] = await within(
            source.store.listDeadLetters({ ids: [id], limit: 1 }),
            this.#storeTimeoutMs,
            `the database of source ${shown(source.name)}`,
          );
          if (!letter) {
            throw new AdminRequestError(
              404,
              'not_found',
              `no dead letter ${id} in source ${shown(source.name)}; it may have been replayed or purged`,
            );
          }
          sendJson(res, 200, deadLetterDetail(letter));
        },
      }),
      route(/^\/api\/acks$/, true, { GET: (_req, res, url) => this.#acks(res, url) }),
    ];
  }

  async #readyz(res: ServerResponse, url: URL): Promise<void> {
    queryParams(url.searchParams, []);
    const names = [...this.#sources.keys()];
    const [checks] = await Promise.all([
      Promise.all(
        names.map((name) =>
          this.#cached(`check:${name}`, () =>
            within(
              (this.#sources.get(name) as OutboxStore).check(),
              this.#storeTimeoutMs,
              `the database of source ${shown(name)}`,
            ),
          ).then(
            () => null,
            (err: unknown) => `${names.length > 1 ? `${name}: ` : ''}${errorText(err)}`,
          ),
        ),
      ),
      this.#probeTransport(),
    ]);
    const dbErrors = checks.filter((e): e is string => e !== null);
    const transport = this.#transportStatus();
    const transportOk = transport.state !== 'unavailable';
    const body: ReadinessResponse = {
      ready: dbErrors.length === 0 && transportOk,
      checks: {
        database: dbErrors.length === 0 ? { ok: true } : { ok: false, error: dbErrors.join('; ') },
        transport: {
          ok: transportOk,
          state: transport.state,
          ...(transport.since ? { since: transport.since.toISOString() } : {}),
          ...(transport.error && !transportOk ? { error: transport.error } : {}),
        },
      },
    };
    sendJson(res, body.ready ? 200 : 503, body);
  }

  async #status(res: ServerResponse, url: URL): Promise<void> {
    queryParams(url.searchParams, []);
    const transport = this.#transportStatus();
    const sources = await Promise.all(
      [...this.#sources.keys()].map(async (name) => {
        try {
          const [stats, acks] = await Promise.all([this.#stats(name), this.#ackCounts(name)]);
          return { name, stats: statsJson(stats), acks, error: null };
        } catch (err) {
          return { name, stats: null, acks: null, error: errorText(err) };
        }
      }),
    );
    const body: StatusResponse = {
      version: this.#version,
      time: new Date().toISOString(),
      owner: this.#relay?.owner ?? null,
      wakeup: this.#relay?.wakeup ?? null,
      transport: {
        name: this.#transport?.name ?? (this.#relay ? 'transport' : 'none'),
        state: transport.state,
        since: transport.since?.toISOString() ?? null,
        error: transport.state === 'unavailable' ? transport.error : null,
      },
      mutations: this.#tokenDigest !== undefined,
      sources,
    };
    sendJson(res, 200, body);
  }

  async #relays(res: ServerResponse, url: URL): Promise<void> {
    const source = this.#source(queryParams(url.searchParams, ['source']).get('source'));
    const store = source.store;
    // This process's relay always shows, also before (or without) its presence row.
    const own = this.#relay?.rows(source.name, this.#version) ?? [];
    let relays = own;
    if (typeof store.listRelays === 'function') {
      const rows = await this.#cached(`relays:${source.name}`, () =>
        within(
          (store.listRelays as () => Promise<RelayInfo[]>).call(store),
          this.#storeTimeoutMs,
          `the database of source ${shown(source.name)}`,
        ),
      );
      const listed = rows.map(relayRowJson);
      relays = [...listed, ...own.filter((r) => !listed.some((l) => l.owner === r.owner))];
    }
    const body: RelaysResponse = { relays };
    sendJson(res, 200, body);
  }

  async #deadLetters(res: ServerResponse, url: URL): Promise<void> {
    const params = queryParams(url.searchParams, ['source', 'topic', 'key', 'limit']);
    const source = this.#source(params.get('source'));
    const limit = limitParam(params.get('limit'), 500, 50);
    const filter: DeadLetterFilter = {};
    for (const name of ['topic', 'key'] as const) {
      const value = params.get(name);
      if (value === undefined) continue;
      if (value === '' || value.length > 255) {
        throw new AdminRequestError(
          400,
          'invalid_parameter',
          `${name} ${shown(value)} must be 1 to 255 characters`,
        );
      }
      filter[name] = value;
    }
    const what = `the database of source ${shown(source.name)}`;
    const [letters, counted] = await Promise.all([
      within(source.store.listDeadLetters({ ...filter, limit }), this.#storeTimeoutMs, what),
      within(source.store.countDeadLetters(filter), this.#storeTimeoutMs, what),
    ]);
    const body: DeadLettersResponse = { items: letters.map(deadLetterRow), count: counted.count };
    sendJson(res, 200, body);
  }

  async #deadLetterAction(
    req: IncomingMessage,
    res: ServerResponse,
    url: URL,
    action: 'replay' | 'purge',
  ): Promise<void> {
    queryParams(url.searchParams, []);
    const selection: DeadLetterSelection = deadLetterSelection(
      await readJsonBody(req, this.#maxBodyBytes, this.#requestTimeoutMs),
    );
    const source = this.#source(selection.source);
    const filter: DeadLetterFilter = selection.ids
      ? { ids: selection.ids }
      : selection.topic !== undefined
        ? { topic: selection.topic }
        : {};
    // As `mailroom dlq`: only letters dead when the request came, not those dying during the run.
    const { asOf } = await within(
      source.store.countDeadLetters(filter),
      this.#storeTimeoutMs,
      `the database of source ${shown(source.name)}`,
    );
    filter.deadBefore = new Date(asOf.getTime() + 1);
    const results =
      action === 'replay'
        ? await source.store.replayDeadLetters(filter)
        : await source.store.purgeDeadLetters(filter);
    this.#cache.delete(`stats:${source.name}`);
    // Every id of a small request; of a big one (a topic, all), the first ones: the count is whole.
    const ids = results.slice(0, MAX_IDS_PER_REQUEST).map((r) => r.id);
    this.#logger.info(`dead letters ${action === 'replay' ? 'replayed' : 'purged'} through the admin API`, {
      source: source.name,
      count: results.length,
      ...(selection.topic !== undefined ? { topic: selection.topic } : {}),
      ...(selection.all ? { all: true } : {}),
    });
    const body: ReplayResponse | PurgeResponse =
      action === 'replay' ? { replayed: results.length, ids } : { purged: results.length, ids };
    sendJson(res, 200, body);
  }

  async #acks(res: ServerResponse, url: URL): Promise<void> {
    const params = queryParams(url.searchParams, ['source', 'state', 'limit']);
    const source = this.#source(params.get('source'));
    const store = source.store as OutboxStore & Partial<AckPort>;
    if (typeof store.listAcks !== 'function') {
      throw new AdminRequestError(
        404,
        'no_acks',
        `the store of source ${shown(source.name)} does not track acknowledged delivery`,
      );
    }
    const states = {
      awaiting: 'awaiting-ack',
      resending: 'resending',
      acknowledged: 'acknowledged',
      expired: 'expired',
    } as const;
    const stateParam = params.get('state');
    let state: (typeof states)[keyof typeof states] | undefined;
    if (stateParam !== undefined) {
      state = states[stateParam as keyof typeof states];
      if (!Object.hasOwn(states, stateParam) || state === undefined) {
        throw new AdminRequestError(
          400,
          'invalid_parameter',
          `state ${shown(stateParam)} is not one of ${Object.keys(states).join(', ')}`,
        );
      }
    }
    const limit = limitParam(params.get('limit'), 500, 50);
    const records = await within(
      store.listAcks({ ...(state ? { state } : {}), limit }),
      this.#storeTimeoutMs,
      `the database of source ${shown(source.name)}`,
    );
    const body: AcksResponse = { items: records.map(ackRow) };
    sendJson(res, 200, body);
  }
}

function positive(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || value < 1) {
    throw new ConfigError(
      name,
      `AdminServer option ${name} ${shown(value)} must be a whole number of 1 or more`,
    );
  }
  return value;
}

function decodePathSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}

/** The path of a URL for a log line, without its query (which may hold anything). */
function safePath(url: string | undefined): string {
  return (url ?? '').split('?')[0]?.slice(0, 200) ?? '';
}

/** Answers a request Node could not parse (bad header, too large) with a JSON 4xx, then closes. */
function clientError(err: NodeJS.ErrnoException, socket: Socket): void {
  if (!socket.writable || (socket as Socket & { _httpMessage?: unknown })._httpMessage) {
    socket.destroy();
    return;
  }
  const [status, code, text] =
    err.code === 'HPE_HEADER_OVERFLOW'
      ? [431, 'headers_too_large', 'the request headers are too large']
      : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? [408, 'request_timeout', 'the request did not arrive in time']
        : [400, 'bad_request', 'the request is not valid HTTP/1.1'];
  const body = JSON.stringify({ error: { code, message: text } });
  socket.end(
    `HTTP/1.1 ${status} ${status === 431 ? 'Request Header Fields Too Large' : status === 408 ? 'Request Timeout' : 'Bad Request'}\r\n` +
      'Content-Type: application/json; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\nCache-Control: no-store\r\n' +
      `Connection: close\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  );
}
