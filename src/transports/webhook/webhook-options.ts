import type { ConnectionOptions } from 'node:tls';
import { validateHeaderName, validateHeaderValue } from 'node:http';

import { secretField, type WebhookSecret } from '../../callbacks/webhook-secret.js';
import { ConfigError } from '../../core/errors/config-error.js';
import {
  boolean,
  custom,
  integer,
  MAX_TIMER_MS,
  optionsSchema,
  string,
  type ResolvedOptions,
} from '../../core/options-schema.js';
import { redactUrl } from '../../core/redact.js';
import { showValue } from '../../core/show-value.js';

/** Options of {@link WebhookTransport}. `url` and `secret` are required. */
export interface WebhookTransportOptions {
  /**
   * Where messages are POSTed: an `http://` or `https://` URL template. `{topic}`, `{key}` and
   * `{type}` in its path or query are replaced by the message's fields, percent-encoded
   * (`encodeURIComponent`; a null key or type gives an empty string). The scheme, host and port
   * take no placeholder: one transport talks to one endpoint, so it keeps one connection pool
   * and one outage state, and no message can choose the host. Credentials in the URL
   * (`https://user:pass@host/…`) go as a Basic `authorization` header, never in errors.
   *
   * @example 'https://orders.internal/hooks/mailroom'
   * @example 'https://hooks.example.com/in/{topic}?key={key}'
   */
  url: string;
  /**
   * The Standard Webhooks signing secret (`whsec_<base64>`, or a plain string of at least 16
   * bytes); an array signs with each (one `v1,…` signature per secret), for a key rotation. Keep
   * it out of the URL: the CLI reads it from `MAILROOM_WEBHOOK_SECRET`.
   */
  secret: WebhookSecret;
  /**
   * POST one JSON array per run of messages for the same URL instead of one POST per message.
   * The receiver's answer is the outcome of every message in that POST.
   *
   * @default false
   */
  batch?: boolean;
  /**
   * Most POSTs in flight at once per `publish` call (per-message mode). Messages of one key are
   * POSTed one after another, in order, whatever this says.
   *
   * @default 16
   */
  concurrency?: number;
  /**
   * Deadline of one POST, from its start until the response's status line. A POST on a
   * connection that was open by then and had no answer reports `retry` (the endpoint is up but
   * slow on this message); one still connecting reports `unavailable`.
   *
   * @default 10000
   */
  timeoutMs?: number;
  /** Deadline for opening a connection (TCP, and TLS for https). Past it: `unavailable`. @default 5000 */
  connectTimeoutMs?: number;
  /**
   * Largest request body: a message payload (or a batch's JSON) over it reports `permanent`
   * without being sent. Set it to the receiver's limit (`createWebhookReceiver`'s
   * `maxBodyBytes`).
   *
   * @default 1048576 (1 MiB)
   */
  maxBodyBytes?: number;
  /**
   * Headers sent with every POST (an `authorization: Bearer …` for the receiver's gateway, say).
   * A message header of the same name is refused (`permanent`).
   *
   * @default {}
   */
  headers?: Record<string, string>;
  /**
   * A URL on the same endpoint that `probe()` GETs, expecting a 2xx (a health check). Without
   * it, `probe()` opens a connection to the endpoint (TCP, and TLS for https) and closes it.
   */
  probeUrl?: string;
  /**
   * Longest pause a `Retry-After` on a 429 or 503 answer can impose: until then nothing more is
   * POSTed to the endpoint (publishes report `unavailable`, `probe()` throws). `0`: never pause.
   *
   * @default 600000 (10 minutes)
   */
  maxRetryAfterMs?: number;
  /** TLS options for `https://` (`ca`, `cert`, `key`, `servername`, `rejectUnauthorized`). @default {} */
  tls?: ConnectionOptions;
  /** How long `close()` waits for POSTs in flight before it destroys the connections. @default 10000 */
  closeTimeoutMs?: number;
}

/** Placeholders a URL template may hold. */
export const PLACEHOLDERS = ['topic', 'key', 'type'] as const;

const webhookOptionsSchema = optionsSchema<WebhookTransportOptions>()('WebhookTransport', {
  url: string({ expected: 'an http:// or https:// URL template', secret: true, required: true }),
  secret: secretField(),
  batch: boolean({ default: false }),
  concurrency: integer({ min: 1, max: 1024, default: 16 }),
  timeoutMs: integer({ min: 1, max: MAX_TIMER_MS, default: 10_000 }),
  connectTimeoutMs: integer({ min: 1, max: MAX_TIMER_MS, default: 5_000 }),
  maxBodyBytes: integer({ min: 1, max: 2 ** 31 - 1, default: 1024 * 1024 }),
  headers: custom(
    'an object of header names to string values',
    (v): v is Record<string, string> =>
      typeof v === 'object' &&
      v !== null &&
      !Array.isArray(v) &&
      Object.values(v).every((x) => typeof x === 'string'),
    { default: () => ({}) },
  ),
  probeUrl: string({ expected: 'an http:// or https:// URL on the same endpoint', secret: true }),
  maxRetryAfterMs: integer({ min: 0, max: MAX_TIMER_MS, default: 600_000 }),
  tls: custom(
    'an object of TLS options',
    (v): v is ConnectionOptions => typeof v === 'object' && v !== null && !Array.isArray(v),
    { default: () => ({}) },
  ),
  closeTimeoutMs: integer({ min: 0, max: MAX_TIMER_MS, default: 10_000 }),
});

/** The endpoint a template names: everything but the path and query, which vary per message. */
export interface WebhookEndpoint {
  tls: boolean;
  /** Host name or address, IPv6 without brackets. */
  host: string;
  port: number;
  /** `Basic …` from credentials in the URL, when there were any. */
  authorization: string | undefined;
  /** The template with the password masked: for errors and logs. */
  safeUrl: string;
  /** `https://host:port`, for messages. */
  origin: string;
}

/** Options after defaults and validation. */
export interface ResolvedWebhookTransportOptions extends Omit<
  ResolvedOptions<typeof webhookOptionsSchema.fields>,
  'url' | 'probeUrl'
> {
  /** The URL template, credentials removed. */
  template: string;
  endpoint: WebhookEndpoint;
  /** Path and query of `probeUrl`, when given. */
  probePath: string | undefined;
}

/** Header names the transport sets itself, or HTTP reads itself: refused in `headers`. */
export const FRAMING_HEADERS: ReadonlySet<string> = new Set([
  'host',
  'content-length',
  'content-type',
  'content-encoding',
  'transfer-encoding',
  'connection',
  'keep-alive',
  'proxy-connection',
  'upgrade',
  'te',
  'trailer',
  'expect',
]);

function fail(key: string, safe: string, why: string, cause?: unknown): never {
  throw new ConfigError(
    key,
    `WebhookTransport ${key} ${JSON.stringify(safe)} ${why}`,
    { value: safe },
    cause,
  );
}

/**
 * Checks a URL template: http(s), a host, placeholders only among {@link PLACEHOLDERS} and only in
 * the path and query, no fragment. Returns the endpoint and the template without credentials.
 */
export function parseUrlTemplate(
  value: string,
  key = 'url',
): { endpoint: WebhookEndpoint; template: string } {
  const safeUrl = redactUrl(value);
  if (/[^\x21-\x7e]/.test(value)) {
    fail(key, safeUrl, 'contains a space, a control character or a non-ASCII character; percent-encode it');
  }
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(value);
  if (!scheme) fail(key, safeUrl, 'is not an absolute URL; expected e.g. https://host/hooks/{topic}');
  const afterScheme = scheme[0].length;
  const authorityEnd = value.slice(afterScheme).search(/[/?#]/);
  const authority =
    authorityEnd === -1 ? value.slice(afterScheme) : value.slice(afterScheme, afterScheme + authorityEnd);
  if (/[{}]/.test(authority)) {
    fail(
      key,
      safeUrl,
      'has a placeholder or brace in its host part; placeholders go in the path or query only ' +
        '(one transport, one endpoint)',
    );
  }
  const rest = authorityEnd === -1 ? '' : value.slice(afterScheme + authorityEnd);
  if (rest.includes('#')) fail(key, safeUrl, 'has a fragment (#…), which is never sent; remove it');
  const stripped = rest.replace(/\{(topic|key|type)\}/g, '');
  if (/[{}]/.test(stripped)) {
    fail(key, safeUrl, `has a brace outside the placeholders {topic}, {key} and {type}`);
  }
  let url: URL;
  try {
    // Placeholders replaced by a plain word, so that URL parsing judges the rest.
    url = new URL(value.replace(/\{(topic|key|type)\}/g, 'x'));
  } catch (err) {
    return fail(key, safeUrl, 'is not a valid URL (percent-encode special characters in credentials)', err);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    fail(
      key,
      safeUrl,
      `has scheme ${JSON.stringify(url.protocol.replace(/:$/, ''))}; use http:// or https://`,
    );
  }
  if (url.hostname === '') fail(key, safeUrl, 'has no host');
  let authorization: string | undefined;
  if (url.username !== '' || url.password !== '') {
    let user: string;
    try {
      user = `${decodeURIComponent(url.username)}:${decodeURIComponent(url.password)}`;
    } catch (err) {
      return fail(key, safeUrl, 'has credentials that are not valid percent-encoding', err);
    }
    authorization = `Basic ${Buffer.from(user, 'utf8').toString('base64')}`;
  }
  const tls = url.protocol === 'https:';
  const port = url.port === '' ? (tls ? 443 : 80) : Number(url.port);
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  const origin = `${url.protocol}//${url.host}`;
  return {
    endpoint: { tls, host, port, authorization, safeUrl, origin },
    template: `${origin}${rest === '' ? '/' : rest}`,
  };
}

/** The path and query a template gives for a message's fields. */
export function resolvePath(
  template: string,
  origin: string,
  fields: { topic: string; key: string | null; type: string | null },
): string {
  const filled = template.replace(/\{(topic|key|type)\}/g, (_, name: 'topic' | 'key' | 'type') =>
    encodeURIComponent(fields[name] ?? ''),
  );
  return filled.slice(origin.length);
}

/** Applies defaults and validates; throws a {@link ConfigError} naming the option at fault. */
export function resolveWebhookOptions(options: WebhookTransportOptions): ResolvedWebhookTransportOptions {
  const { url, probeUrl, ...resolved } = webhookOptionsSchema.resolve(options);
  const { endpoint, template } = parseUrlTemplate(url);
  for (const [name, value] of Object.entries(resolved.headers)) {
    try {
      validateHeaderName(name);
      validateHeaderValue(name, value);
    } catch (err) {
      throw new ConfigError(
        `headers.${name}`,
        `WebhookTransport option headers has ${showValue(name)}, which is not a legal HTTP header name and value ` +
          "(names are tokens: letters, digits and !#$%&'*+-.^_`|~; values have no control characters)",
        { value: name },
        err,
      );
    }
    if (FRAMING_HEADERS.has(name.toLowerCase()) || /^(mailroom|webhook)-/i.test(name)) {
      throw new ConfigError(
        `headers.${name}`,
        `WebhookTransport option headers may not set ${showValue(name)}: the transport sets it (or HTTP does)`,
        { value: name },
      );
    }
  }
  let probePath: string | undefined;
  if (probeUrl !== undefined) {
    const probe = parseUrlTemplate(probeUrl, 'probeUrl');
    if (probe.template !== probe.template.replace(/\{(topic|key|type)\}/g, '')) {
      fail('probeUrl', probe.endpoint.safeUrl, 'takes no placeholders');
    }
    if (probe.endpoint.origin !== endpoint.origin) {
      fail(
        'probeUrl',
        probe.endpoint.safeUrl,
        `is on ${probe.endpoint.origin}, not on the endpoint messages go to (${endpoint.origin}); a probe says whether that one is up`,
      );
    }
    probePath = probe.template.slice(probe.endpoint.origin.length);
  }
  return { ...resolved, template, endpoint, probePath };
}
