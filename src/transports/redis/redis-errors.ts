/**
 * Every error the Redis Streams transport reports, built in one place so that each says what went
 * wrong, with which value, and what to do; and the table that sorts Redis's error replies into
 * outage, message failure and permanent refusal. URLs passed in are the redacted ones.
 *
 * @module
 */
import { isMailroomError } from '../../core/errors/mailroom-error.js';
import { PermanentDeliveryError } from '../../core/errors/permanent-delivery-error.js';
import { TransportError } from '../../core/errors/transport-error.js';
import type { OutboxMessage } from '../../core/types.js';
import { portHint } from '../../core/well-known-ports.js';

/** The message of an error, or the value itself as text. */
export function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function messageDetails(message: OutboxMessage, stream: string): Record<string, unknown> {
  return { messageId: message.id, topic: message.topic, stream };
}

/** `host:port` of a redacted Redis URL. */
function endpointOf(safeUrl: string): { endpoint: string; port: number | undefined } {
  try {
    const url = new URL(safeUrl);
    const port = Number(url.port || 6379);
    return { endpoint: `${url.hostname}:${port}`, port };
  } catch {
    return { endpoint: safeUrl, port: undefined };
  }
}

/**
 * True for an error reply of the Redis server (ioredis's `ReplyError`), as opposed to an error of
 * the client or the connection (closed, not writable, timed out).
 */
export function isReplyError(err: unknown): err is Error {
  return err instanceof Error && err.name === 'ReplyError';
}

/** The first word of an error reply: `WRONGTYPE`, `OOM`, `ERR`… */
export function replyCode(err: Error): string {
  return /^[A-Z][A-Z_-]*/.exec(err.message)?.[0] ?? 'ERR';
}

/**
 * Error replies that say the server takes no writes right now, whatever the message: an outage
 * (`unavailable`: the relay pauses and spends no attempt), not a failure of the message.
 *
 * - `OOM`: over `maxmemory` with a policy that does not evict.
 * - `READONLY`: the connection reached a replica (after a failover, or a wrong address).
 * - `LOADING`: the server is loading its data set after a restart.
 * - `BUSY`: a script or function runs longer than `busy-reply-threshold`.
 * - `MISCONF`: `stop-writes-on-bgsave-error` while snapshots fail.
 * - `NOREPLICAS`: fewer good replicas than `min-replicas-to-write`.
 * - `MASTERDOWN`: a replica with `replica-serve-stale-data no` lost its primary.
 * - `CLUSTERDOWN`, `TRYAGAIN`, `MOVED`, `ASK`: Redis Cluster in trouble or resharding (the
 *   transport speaks to one node; use a cluster-aware `createClient` for a cluster).
 * - `NOAUTH`, `WRONGPASS`: the connection is not logged in (a password changed since).
 */
export const OUTAGE_REPLIES: ReadonlySet<string> = new Set([
  'OOM',
  'READONLY',
  'LOADING',
  'BUSY',
  'MISCONF',
  'NOREPLICAS',
  'MASTERDOWN',
  'CLUSTERDOWN',
  'TRYAGAIN',
  'MOVED',
  'ASK',
  'NOAUTH',
  'WRONGPASS',
]);

/** Turns a connect failure into an error that says what went wrong and what to do. */
export function connectError(err: unknown, safeUrl: string, connectTimeoutMs: number): Error {
  if (isMailroomError(err)) return err;
  const message = describe(err);
  const { endpoint, port } = endpointOf(safeUrl);
  if (/WRONGPASS|NOAUTH|invalid password|invalid username/i.test(message)) {
    return new TransportError(
      'auth_failed',
      `the Redis server at ${safeUrl} refused the login (${message}); check the user name and password in the ` +
        "URL (redis://user:password@host:6379, percent-encode special characters) and the server's ACL",
      { cause: err, details: { url: safeUrl } },
    );
  }
  if (/NOPERM/.test(message)) {
    return new TransportError(
      'auth_failed',
      `the Redis server at ${safeUrl} refused a command of the connection handshake (${message}); the user ` +
        'needs at least the commands HELLO, AUTH, SELECT, INFO, CLIENT, PING, ROLE, XADD and WAIT',
      { cause: err, details: { url: safeUrl } },
    );
  }
  const hint = portHint(port, [6379, 6380]);
  const timedOut = /ETIMEDOUT|timed out/i.test(message) && !/connectTimeoutMs/.test(message);
  return new TransportError(
    'unreachable',
    `cannot connect to the Redis server at ${safeUrl}: ${message}` +
      (timedOut ? ` (no answer within connectTimeoutMs, ${connectTimeoutMs} ms)` : '') +
      `; check that Redis is running and reachable from this host at ${endpoint}, and the scheme ` +
      `(rediss:// for a TLS port)${hint ? `; ${hint}` : ''}`,
    { cause: err, details: { url: safeUrl } },
  );
}

export function closedError(safeUrl: string): TransportError {
  return new TransportError(
    'closed',
    `RedisStreamsTransport for ${safeUrl} is closed; call start() to open it again`,
  );
}

/** The connection ended: socket closed or reset, a reply not in time, or our own drop. */
export function connectionLostError(safeUrl: string, reason: string, cause?: unknown): TransportError {
  return new TransportError(
    'connection_lost',
    `the connection to the Redis server at ${safeUrl} was lost (${reason})`,
    {
      ...(cause === undefined ? {} : { cause }),
      details: { url: safeUrl },
    },
  );
}

/** A command failed in the client or on the way (not an error reply): the connection's fault. */
export function notAnsweredError(
  safeUrl: string,
  message: OutboxMessage,
  stream: string,
  cause: unknown,
): TransportError {
  return new TransportError(
    'reply_lost',
    `no reply from the Redis server at ${safeUrl} to XADD of message ${message.id} to stream ` +
      `${JSON.stringify(stream)} (${describe(cause)}); it may or may not have been added; the next publish ` +
      'reconnects and adds it again with the same mailroom-id, so consumers may see it twice',
    { cause, details: messageDetails(message, stream) },
  );
}

export function replyTimeoutError(
  safeUrl: string,
  timeoutMs: number,
  message: OutboxMessage,
  stream: string,
): TransportError {
  return new TransportError(
    'reply_timeout',
    `no reply from the Redis server at ${safeUrl} to XADD of message ${message.id} to stream ` +
      `${JSON.stringify(stream)} within ${timeoutMs} ms (replyTimeoutMs, plus waitReplicas.timeoutMs when ` +
      'set); the server does not answer, so the connection was dropped and the next publish reconnects; ' +
      'the message will be added again with the same mailroom-id (the stream may have it already)',
    { details: { ...messageDetails(message, stream), timeoutMs } },
  );
}

function abortReason(signal: AbortSignal): string {
  const reason: unknown = signal.reason;
  return reason instanceof Error ? reason.message : String(reason);
}

/** The caller gave up (publish deadline, relay stopping) before Redis replied. */
export function publishAbortedError(
  safeUrl: string,
  message: OutboxMessage,
  stream: string,
  signal: AbortSignal,
  stage: 'connecting' | 'unanswered',
): TransportError {
  const what =
    stage === 'connecting'
      ? 'while connecting, so nothing was sent'
      : `before the server's reply to XADD of message ${message.id}; the connection was dropped`;
  return new TransportError(
    'publish_timeout',
    `publish to the Redis server at ${safeUrl} was aborted (${abortReason(signal)}) ${what} ` +
      `(stream ${JSON.stringify(stream)}); the message will be published again with the same mailroom-id ` +
      '(the stream may have it already)',
    { details: { ...messageDetails(message, stream), url: safeUrl, stage } },
  );
}

export function probeAbortedError(safeUrl: string, signal: AbortSignal): TransportError {
  return new TransportError(
    'probe_aborted',
    `probe of the Redis server at ${safeUrl} was aborted (${abortReason(signal)}) before it answered; ` +
      'check that Redis is running and reachable from this host',
    { details: { url: safeUrl } },
  );
}

export function probeTimeoutError(safeUrl: string, timeoutMs: number): TransportError {
  return new TransportError(
    'reply_timeout',
    `the Redis server at ${safeUrl} did not answer the probe within ${timeoutMs} ms (replyTimeoutMs); the ` +
      'connection was dropped',
    { details: { url: safeUrl, timeoutMs } },
  );
}

/** The key exists and holds another type than a stream: Redis will refuse every XADD to it. */
export function wrongTypeError(
  safeUrl: string,
  message: OutboxMessage,
  stream: string,
  reply: Error,
): PermanentDeliveryError {
  return new PermanentDeliveryError(
    `the Redis server at ${safeUrl} refused message ${message.id} (topic ${JSON.stringify(message.topic)}): key ` +
      `${JSON.stringify(stream)} exists and is not a stream (${reply.message}); every XADD to it fails the same ` +
      'way; rename or delete that key (or change the stream template), then replay the dead letter',
    { cause: reply, details: { ...messageDetails(message, stream), reply: reply.message } },
  );
}

/** An error reply that says the server takes no writes now: an outage, not the message's fault. */
export function serverRefusingError(
  safeUrl: string,
  message: OutboxMessage,
  stream: string,
  reply: Error,
): TransportError {
  const code = replyCode(reply);
  return new TransportError(
    'server_refusing',
    `the Redis server at ${safeUrl} takes no writes right now (${reply.message}), so message ${message.id} was ` +
      `not added to stream ${JSON.stringify(stream)}; ${code} is about the server, not the message (out of ` +
      'memory, a replica or loading, snapshots failing, too few replicas): the relay pauses and publishes ' +
      'it again once a probe succeeds',
    { cause: reply, details: { ...messageDetails(message, stream), reply: reply.message, replyCode: code } },
  );
}

/** Any other error reply to XADD: a failure of this message, retried with backoff. */
export function refusedError(
  safeUrl: string,
  message: OutboxMessage,
  stream: string,
  reply: Error,
): TransportError {
  return new TransportError(
    'refused',
    `the Redis server at ${safeUrl} refused XADD of message ${message.id} to stream ${JSON.stringify(stream)}: ` +
      `${reply.message}; the server stays reachable, so this comes from what was published (NOPERM: the ` +
      "user's ACL does not allow XADD on that key); the message spends an attempt: fix the cause and replay " +
      'the dead letters',
    { cause: reply, details: { ...messageDetails(message, stream), reply: reply.message } },
  );
}

/** `WAIT` saw fewer replicas acknowledge the batch than asked. */
export function replicasNotConfirmedError(
  safeUrl: string,
  message: OutboxMessage,
  stream: string,
  acked: number | string,
  count: number,
  timeoutMs: number,
): TransportError {
  return new TransportError(
    'replicas_not_confirmed',
    `message ${message.id} was added to stream ${JSON.stringify(stream)} on the Redis server at ${safeUrl}, but ` +
      `only ${acked} of the ${count} replicas asked for (waitReplicas.count) acknowledged it within ${timeoutMs} ms ` +
      '(waitReplicas.timeoutMs); it is not counted as delivered: the relay pauses until a probe sees enough ' +
      'replicas, then publishes it again (consumers may see the entry twice, with the same mailroom-id)',
    { details: { ...messageDetails(message, stream), acked, count, timeoutMs } },
  );
}

/** A payload over `maxPayloadBytes`, refused before sending. */
export function payloadTooLargeError(
  message: OutboxMessage,
  stream: string,
  limit: number,
): PermanentDeliveryError {
  return new PermanentDeliveryError(
    `message ${message.id} (topic ${JSON.stringify(message.topic)}) has a payload of ${message.payload.length} ` +
      `bytes, over maxPayloadBytes (${limit}), so it was not added to stream ${JSON.stringify(stream)}; store ` +
      'large data elsewhere and send a reference, or raise maxPayloadBytes (at most proto-max-bulk-len, 512 MiB ' +
      'by default) and replay the dead letter',
    { details: { ...messageDetails(message, stream), size: message.payload.length, limit } },
  );
}

/** A stream key the transport refuses to write to (empty topic, control characters, too long). */
export function invalidStreamError(
  message: OutboxMessage,
  stream: string,
  why: string,
): PermanentDeliveryError {
  return new PermanentDeliveryError(
    `message ${message.id} (topic ${JSON.stringify(message.topic)}) maps to stream key ${JSON.stringify(stream)}, ` +
      `which ${why}, so it was not sent; fix the topic (or the stream template) and enqueue the message again`,
    { details: messageDetails(message, stream) },
  );
}

/** The server is a replica: it refuses writes. */
export function readOnlyError(safeUrl: string, role: string): TransportError {
  return new TransportError(
    'read_only',
    `the Redis server at ${safeUrl} is a ${role}, which refuses writes; point the URL at the primary (after a ` +
      'failover: the new primary)',
    { details: { url: safeUrl, role } },
  );
}

/** Fewer replicas connected than `waitReplicas.count`. */
export function replicasMissingError(safeUrl: string, connected: number, count: number): TransportError {
  return new TransportError(
    'replicas_missing',
    `the Redis server at ${safeUrl} has ${connected} replica${connected === 1 ? '' : 's'} connected, fewer than ` +
      `waitReplicas.count (${count}); no batch could be confirmed; bring the replicas back, or lower ` +
      'waitReplicas.count',
    { details: { url: safeUrl, connected, count } },
  );
}
