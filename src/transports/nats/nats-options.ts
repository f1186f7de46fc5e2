/**
 * Options of the NATS JetStream transport: the schema with its defaults, the server URL, and
 * the subject a topic is published to.
 *
 * @module
 */
import { ConfigError } from '../../core/errors/config-error.js';
import {
  custom,
  integer,
  MAX_TIMER_MS,
  optionsSchema,
  string,
  type ResolvedOptions,
} from '../../core/options-schema.js';
import { redactUrl } from '../../core/redact.js';

/** A stream the transport creates, or updates to capture `subjects`, each time it connects. */
export interface NatsEnsureStream {
  /** Stream name: letters, digits, `-` and `_`. @example 'ORDERS' */
  name: string;
  /**
   * Subjects the stream captures, wildcards allowed. They should cover every subject the
   * transport publishes to (`subjectPrefix` + topic).
   *
   * @example ['orders.>']
   */
  subjects: string[];
}

/** The NATS client's TLS options (PEM strings or file paths). */
export interface NatsTlsOptions {
  ca?: string;
  caFile?: string;
  cert?: string;
  certFile?: string;
  key?: string;
  keyFile?: string;
}

const TLS_KEYS = ['ca', 'caFile', 'cert', 'certFile', 'key', 'keyFile'];

function isTlsOptions(value: unknown): value is NatsTlsOptions {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  return Object.entries(value).every(([k, v]) => TLS_KEYS.includes(k) && typeof v === 'string');
}

/** Options of {@link NatsTransport}. Only `url` is required. */
export interface NatsTransportOptions {
  /**
   * Server address, `nats://` (TLS when the server asks for it) or `tls://` (TLS required), with
   * optional credentials: `nats://user:password@host:4222`, or a token as the user part
   * (`nats://s3cret@host:4222`). Neither password nor token appears in errors.
   *
   * @example 'nats://127.0.0.1:4222'
   * @example 'tls://relay:s3cret@nats.internal:4222'
   */
  url: string;
  /**
   * Prepended to every topic, with a `.` between, to make the subject: prefix `events` and topic
   * `order.created` publish to `events.order.created`. No prefix: the subject is the topic.
   *
   * @default undefined
   * @example 'events'
   */
  subjectPrefix?: string;
  /**
   * A stream to create (or update, when it exists with other subjects) on connecting, for setups
   * where the relay owns its stream. Off by default: streams are usually the operator's, with
   * retention, replicas and limits chosen for them; a missing one is then reported per message.
   *
   * @default undefined
   * @example { name: 'ORDERS', subjects: ['orders.>'] }
   */
  ensureStream?: NatsEnsureStream;
  /**
   * How long to wait for the PubAck of each message. Messages without one by then report
   * `unavailable` and the connection is dropped; they may still have been stored (a later copy
   * carries the same `Nats-Msg-Id` and is dropped within the stream's duplicate window).
   *
   * @default 10000
   */
  ackTimeoutMs?: number;
  /**
   * Largest payload, in bytes, to send; a bigger one reports `permanent` without being sent.
   * Whatever this says, a message whose headers and payload together exceed the server's
   * `max_payload` (1 MiB by default, from the server's INFO) is `permanent` too, before sending.
   * Set it to keep payloads below a stream's `max_msg_size`, which JetStream enforces only after
   * the message was sent.
   *
   * @default undefined (the server's max_payload alone)
   */
  maxMessageBytes?: number;
  /** Limit for connecting, the JetStream account check and `ensureStream`. @default 10000 */
  connectTimeoutMs?: number;
  /** How long `close()` waits for batches in flight before closing the connection. @default 10000 */
  closeTimeoutMs?: number;
  /**
   * TLS settings, passed to the NATS client: `ca`/`caFile` for a private CA, `cert`/`key`
   * (or `certFile`/`keyFile`) for client certificates. Given, the connection uses TLS whatever the
   * scheme; `tls://` alone uses TLS with the system's CAs.
   *
   * @default undefined
   * @example { caFile: '/etc/nats/ca.pem' }
   */
  tls?: NatsTlsOptions;
  /** Client name the server shows in its connection list (`nats server report connections`). @default 'mailroom' */
  name?: string;
}

const STREAM_NAME = /^[A-Za-z0-9_-]{1,255}$/;

function isEnsureStream(value: unknown): value is NatsEnsureStream {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const v = value as Record<string, unknown>;
  return (
    Object.keys(v).every((k) => k === 'name' || k === 'subjects') &&
    typeof v['name'] === 'string' &&
    STREAM_NAME.test(v['name']) &&
    Array.isArray(v['subjects']) &&
    v['subjects'].length > 0 &&
    v['subjects'].every((s) => typeof s === 'string' && isValidSubject(s, true))
  );
}

const natsOptionsSchema = optionsSchema<NatsTransportOptions>()('NatsTransport', {
  url: string({ expected: 'a nats:// or tls:// URL string', secret: true, required: true }),
  subjectPrefix: custom(
    "a subject prefix such as 'events' (dot-separated tokens, no spaces, no '*' or '>')",
    (v): v is string => typeof v === 'string' && isValidSubject(v, false),
  ),
  ensureStream: custom(
    "{ name, subjects }: a stream name of letters, digits, '-' and '_', and a non-empty list of subjects",
    isEnsureStream,
  ),
  ackTimeoutMs: integer({ min: 1, max: MAX_TIMER_MS, default: 10_000 }),
  maxMessageBytes: integer({ min: 1, max: 2 ** 31 - 1 }),
  connectTimeoutMs: integer({ min: 1, max: MAX_TIMER_MS, default: 10_000 }),
  closeTimeoutMs: integer({ min: 0, max: MAX_TIMER_MS, default: 10_000 }),
  tls: custom(`an object with string keys among ${TLS_KEYS.join(', ')}`, isTlsOptions),
  name: string({ default: 'mailroom' }),
});

/** Where to connect, from the URL; `safeUrl` is the one to show. */
export interface NatsEndpoint {
  /** `host:port` (IPv6 in brackets), as the client's `servers` takes it. */
  server: string;
  /** Host (IPv6 without brackets) and port, for the transport's own handshake check. */
  host: string;
  port: number;
  tls: boolean;
  user: string | undefined;
  pass: string | undefined;
  token: string | undefined;
  safeUrl: string;
}

/** Options after defaults and validation. */
export interface ResolvedNatsTransportOptions extends Omit<
  ResolvedOptions<typeof natsOptionsSchema.fields>,
  'url'
> {
  endpoint: NatsEndpoint;
}

/**
 * A URL fit for messages: the password masked, and a token (a user part without password) too.
 */
export function redactNatsUrl(value: string): string {
  const safe = redactUrl(value);
  try {
    const url = new URL(safe);
    if (url.username !== '' && url.password === '') url.username = '***';
    return url.toString();
  } catch {
    return safe.replace(/\/\/[^@/]*@/, '//***@');
  }
}

/**
 * True for a subject a message can be published to (`wildcards` false) or a stream can capture
 * (`wildcards` true): dot-separated non-empty tokens without whitespace or control characters,
 * and `*`/`>` only as whole tokens (`>` last) when wildcards are allowed.
 */
export function isValidSubject(subject: string, wildcards: boolean): boolean {
  if (subject === '') return false;
  // eslint-disable-next-line no-control-regex
  if (/[\s\u0000-\u001f\u007f]/u.test(subject)) return false;
  const tokens = subject.split('.');
  return tokens.every((token, i) => {
    if (token === '') return false;
    if (!/[*>]/.test(token)) return true;
    if (!wildcards) return false;
    return token === '*' || (token === '>' && i === tokens.length - 1);
  });
}

/** Why a subject is not one to publish to, for messages. */
export function subjectProblem(subject: string): string {
  if (subject === '') return 'is empty';
  // eslint-disable-next-line no-control-regex
  if (/[\s\u0000-\u001f\u007f]/u.test(subject)) return 'contains whitespace or a control character';
  if (/[*>]/.test(subject)) return "contains a wildcard ('*' or '>'), which cannot be published to";
  return "has an empty token (a leading, trailing or doubled '.')";
}

/** The subject of a topic: `prefix.topic`, or the topic alone. */
export function subjectFor(prefix: string | undefined, topic: string): string {
  return prefix === undefined ? topic : `${prefix}.${topic}`;
}

/**
 * Reads a `nats://` or `tls://` URL. Parsing here turns a typo into a ConfigError at
 * construction instead of a vague connect failure on the first publish.
 */
export function resolveNatsUrl(value: string, owner = 'NatsTransport'): NatsEndpoint {
  const safeUrl = redactNatsUrl(value);
  const fail = (why: string, cause?: unknown): never => {
    throw new ConfigError('url', `${owner} url ${JSON.stringify(safeUrl)} ${why}`, { value: safeUrl }, cause);
  };
  let url: URL;
  try {
    url = new URL(value);
  } catch (err) {
    return fail(
      'is not a valid URL; expected nats://host:4222 or nats://user:password@host:4222 ' +
        '(percent-encode special characters in the password)',
      err,
    );
  }
  if (url.protocol !== 'nats:' && url.protocol !== 'tls:') {
    fail(
      `has scheme ${JSON.stringify(url.protocol.replace(/:$/, ''))}; use nats:// or tls:// (TLS required)`,
    );
  }
  if (url.hostname === '') fail('has no host; expected nats://host:4222');
  if (url.pathname !== '' && url.pathname !== '/') fail('has a path; NATS URLs take none');
  if (url.search !== '' || url.hash !== '') {
    fail(
      'has a query or fragment; give the subject prefix and the stream as options ' +
        '(natsOptionsFromUrl reads ?prefix= and ?stream=&subjects= for the command line)',
    );
  }
  const decode = (text: string): string | undefined => {
    if (text === '') return undefined;
    try {
      return decodeURIComponent(text);
    } catch (err) {
      return fail('has credentials that are not valid percent-encoding', err);
    }
  };
  const user = decode(url.username);
  const pass = decode(url.password);
  return {
    server: `${url.hostname}:${url.port === '' ? 4222 : url.port}`,
    host: url.hostname.replace(/^\[(.*)\]$/, '$1'),
    port: url.port === '' ? 4222 : Number(url.port),
    tls: url.protocol === 'tls:',
    user: pass === undefined ? undefined : user,
    pass,
    token: pass === undefined ? user : undefined,
    safeUrl,
  };
}

/** Applies defaults and validates; throws a {@link ConfigError} naming the option at fault. */
export function resolveNatsOptions(options: NatsTransportOptions): ResolvedNatsTransportOptions {
  const { url, ...resolved } = natsOptionsSchema.resolve(options);
  return { ...resolved, endpoint: resolveNatsUrl(url) };
}

/**
 * Splits a command-line URL into {@link NatsTransportOptions}: `?prefix=events` sets
 * `subjectPrefix`; `?stream=ORDERS&subjects=orders.>,audit.>` sets `ensureStream` (subjects
 * default to `<prefix>.>`, or `>` without a prefix). Other parameters are a ConfigError.
 *
 * @example natsOptionsFromUrl('nats://127.0.0.1:4222?prefix=events&stream=EVENTS')
 */
export function natsOptionsFromUrl(value: string): NatsTransportOptions {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return { url: value }; // the transport's own check names the problem
  }
  const params = url.searchParams;
  for (const key of params.keys()) {
    if (!['prefix', 'stream', 'subjects'].includes(key)) {
      throw new ConfigError(
        'transport',
        `unknown query parameter ${JSON.stringify(key)} in the NATS URL ${redactNatsUrl(value)}; ` +
          'allowed: prefix, stream, subjects',
      );
    }
  }
  const prefix = params.get('prefix') ?? undefined;
  const stream = params.get('stream') ?? undefined;
  const subjects = params.get('subjects')?.split(',');
  if (subjects !== undefined && stream === undefined) {
    throw new ConfigError(
      'transport',
      `the NATS URL ${redactNatsUrl(value)} has subjects= without stream=; name the stream to create`,
    );
  }
  url.search = '';
  url.hash = '';
  return {
    url: url.toString(),
    ...(prefix === undefined ? {} : { subjectPrefix: prefix }),
    ...(stream === undefined
      ? {}
      : {
          ensureStream: { name: stream, subjects: subjects ?? [prefix === undefined ? '>' : `${prefix}.>`] },
        }),
  };
}
