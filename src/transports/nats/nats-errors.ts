/**
 * Every error the NATS transport reports, built in one place so that each says what went wrong,
 * with which value, and what to do. URLs passed in are the redacted ones.
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

function messageDetails(message: OutboxMessage, subject?: string): Record<string, unknown> {
  return { messageId: message.id, topic: message.topic, ...(subject === undefined ? {} : { subject }) };
}

function hostHint(server: string): string {
  const port = Number(server.slice(server.lastIndexOf(':') + 1));
  const hint = portHint(Number.isFinite(port) ? port : undefined, [4222]);
  return hint ? ` ${hint}.` : '';
}

/** Connecting failed: the server is down, unreachable, or refused the login. */
export function connectError(err: unknown, safeUrl: string, server: string): Error {
  if (isMailroomError(err)) return err;
  const text = describe(err);
  if (/authorization|authentication|auth/i.test(text)) {
    return new TransportError(
      'auth_failed',
      `NATS server at ${safeUrl} refused the login: ${text}; check the user and password (or token) in the URL`,
      { cause: err, details: { url: safeUrl } },
    );
  }
  return new TransportError(
    'unreachable',
    `cannot connect to the NATS server at ${safeUrl}: ${text}; check that nats-server is running and ` +
      `reachable from this host, and the host and port in the URL.${hostHint(server)}`,
    { cause: err, details: { url: safeUrl } },
  );
}

/** Something answered at the address but sent no NATS `INFO` in time. */
export function notNatsError(
  safeUrl: string,
  server: string,
  connectTimeoutMs: number,
  received: string,
): TransportError {
  const what =
    received === ''
      ? `accepted the connection but sent nothing within connectTimeoutMs (${connectTimeoutMs} ms)`
      : `answered ${JSON.stringify(received.slice(0, 40))} instead of a NATS INFO line`;
  return new TransportError(
    'not_nats',
    `${server} (${safeUrl}) ${what}: is it a NATS server's client port (4222 by default, not the ` +
      `monitoring port 8222 or the cluster port 6222), and is the server responsive?${hostHint(server)}`,
    { details: { url: safeUrl, connectTimeoutMs } },
  );
}

/** The server has no JetStream for this account (started without `-js`, or the account has none). */
export function jetStreamDisabledError(safeUrl: string, cause: unknown): TransportError {
  return new TransportError(
    'jetstream_disabled',
    `NATS server at ${safeUrl} does not offer JetStream to this account (${describe(cause)}); start ` +
      'nats-server with -js (or jetstream {} in its config) and enable JetStream for the account',
    { cause, details: { url: safeUrl } },
  );
}

/** `ensureStream` could not create or update the stream. */
export function ensureStreamError(
  safeUrl: string,
  name: string,
  subjects: readonly string[],
  cause: unknown,
): TransportError {
  return new TransportError(
    'stream_setup_failed',
    `cannot create or update the JetStream stream ${JSON.stringify(name)} with subjects ` +
      `${JSON.stringify(subjects)} on ${safeUrl}: ${describe(cause)}; a subject may overlap another ` +
      "stream's, or the account may lack the rights or the storage",
    { cause, details: { url: safeUrl, stream: name, subjects } },
  );
}

export function closedError(safeUrl: string): TransportError {
  return new TransportError(
    'closed',
    `the NATS transport for ${safeUrl} is closed; call start() to open it again`,
    { details: { url: safeUrl } },
  );
}

export function probeAbortedError(safeUrl: string, signal: AbortSignal): TransportError {
  return new TransportError('probe_aborted', `probe of the NATS server at ${safeUrl} was aborted`, {
    cause: signal.reason,
    details: { url: safeUrl },
  });
}

export function publishAbortedError(
  safeUrl: string,
  message: OutboxMessage,
  signal: AbortSignal,
  stage: 'connecting' | 'unanswered',
): TransportError {
  const where =
    stage === 'connecting'
      ? 'while connecting, before it was sent'
      : 'before its PubAck came; it may have been stored (a later copy carries the same Nats-Msg-Id)';
  return new TransportError(
    'publish_timeout',
    `publish of message ${message.id} to ${safeUrl} was aborted ${where}`,
    {
      cause: signal.reason,
      details: { url: safeUrl, ...messageDetails(message) },
    },
  );
}

export function ackTimeoutError(
  safeUrl: string,
  ackTimeoutMs: number,
  message: OutboxMessage,
  subject: string,
): TransportError {
  return new TransportError(
    'ack_timeout',
    `no PubAck from the NATS server at ${safeUrl} for message ${message.id} (subject ${JSON.stringify(subject)}) ` +
      `within ackTimeoutMs (${ackTimeoutMs} ms); it may have been stored (a later copy carries the same ` +
      'Nats-Msg-Id); the connection is dropped and the next publish reconnects',
    { details: { url: safeUrl, ackTimeoutMs, ...messageDetails(message, subject) } },
  );
}

export function connectionLostError(
  safeUrl: string,
  message: OutboxMessage,
  subject: string,
  cause: unknown,
): TransportError {
  return new TransportError(
    'connection_lost',
    `the connection to the NATS server at ${safeUrl} ended before the PubAck of message ${message.id} ` +
      `(subject ${JSON.stringify(subject)}) came: ${describe(cause)}; it may have been stored`,
    { cause, details: { url: safeUrl, ...messageDetails(message, subject) } },
  );
}

/**
 * No stream captures the subject: NATS answered "no responders" and the stream lookup by subject
 * found none. A configuration error; the message is dead-lettered (docs/transports/nats.md says why).
 */
export function streamMissingError(
  safeUrl: string,
  message: OutboxMessage,
  subject: string,
): PermanentDeliveryError {
  return new PermanentDeliveryError(
    `no JetStream stream on ${safeUrl} captures subject ${JSON.stringify(subject)} (message ${message.id}, ` +
      `topic ${JSON.stringify(message.topic)}): NATS answered "no responders"; create a stream for it ` +
      `(e.g. nats stream add --subjects '${subject.split('.')[0] ?? subject}.>'), or let the transport ` +
      'create one with the ensureStream option, then replay the dead letters',
    { details: { url: safeUrl, ...messageDetails(message, subject) } },
  );
}

/** "No responders" while a stream for the subject exists: it has no leader right now. */
export function streamUnavailableError(
  safeUrl: string,
  message: OutboxMessage,
  subject: string,
  stream: string,
): TransportError {
  return new TransportError(
    'stream_unavailable',
    `JetStream stream ${JSON.stringify(stream)} on ${safeUrl} captures subject ${JSON.stringify(subject)} ` +
      `but did not answer the publish of message ${message.id} ("no responders": no stream leader now, ` +
      'e.g. during a leader election or with too few servers of its replicas up)',
    { details: { url: safeUrl, stream, ...messageDetails(message, subject) } },
  );
}

/** The stream lookup after "no responders" failed itself. */
export function noRespondersError(
  safeUrl: string,
  message: OutboxMessage,
  subject: string,
  cause: unknown,
): TransportError {
  return new TransportError(
    'no_responders',
    `NATS at ${safeUrl} had no responders for subject ${JSON.stringify(subject)} (message ${message.id}) and ` +
      `the stream lookup failed: ${describe(cause)}`,
    { cause, details: { url: safeUrl, ...messageDetails(message, subject) } },
  );
}

/** JetStream error codes that say the message can never be stored as it is. */
const PERMANENT_API_CODES: ReadonlySet<number> = new Set([
  10054, // JSStreamMessageExceedsMaximumErr: larger than the stream's max_msg_size
]);

/** JetStream error codes that say JetStream itself is out of service, not this message's stream. */
const OUTAGE_API_CODES: ReadonlySet<number> = new Set([
  10008, // JSClusterNotAvailErr: JetStream system temporarily unavailable
  10039, // JSNotEnabledForAccountErr: JetStream turned off for the account
]);

/** The stream refused the message with a JetStream API error (PubAck with `error`). */
export function refusedError(
  safeUrl: string,
  message: OutboxMessage,
  subject: string,
  apiCode: number | undefined,
  status: number | undefined,
  cause: unknown,
): { status: 'permanent' | 'retry' | 'unavailable'; error: Error } {
  const text =
    `JetStream on ${safeUrl} refused message ${message.id} (subject ${JSON.stringify(subject)}): ` +
    `${describe(cause)}${apiCode === undefined ? '' : ` (err_code ${apiCode})`}`;
  const details = { url: safeUrl, apiCode, status, ...messageDetails(message, subject) };
  if (apiCode !== undefined && PERMANENT_API_CODES.has(apiCode)) {
    return {
      status: 'permanent',
      error: new PermanentDeliveryError(
        `${text}; the stream's max_msg_size is smaller than the message: store large data elsewhere ` +
          'and send a reference, or raise the limit and replay the dead letter',
        { cause, details },
      ),
    };
  }
  // Not by HTTP-like status: JetStream answers 503 for a full stream too (10077 "maximum messages
  // exceeded", with `discard: new`), which is the stream's state, not an outage.
  if (apiCode !== undefined && OUTAGE_API_CODES.has(apiCode)) {
    return {
      status: 'unavailable',
      error: new TransportError('jetstream_unavailable', `${text}; JetStream is not available now`, {
        cause,
        details,
      }),
    };
  }
  return {
    status: 'retry',
    error: new TransportError(
      'refused',
      `${text}; the server stays reachable, so this comes from the stream (full with discard: new, ` +
        'limits, storage); the message spends an attempt',
      { cause, details },
    ),
  };
}

/** The subject made from the topic cannot be published to. */
export function invalidSubjectError(
  message: OutboxMessage,
  subject: string,
  why: string,
): PermanentDeliveryError {
  return new PermanentDeliveryError(
    `message ${message.id}: topic ${JSON.stringify(message.topic)} gives NATS subject ${JSON.stringify(subject)}, ` +
      `which ${why}; NATS subjects are dot-separated tokens without spaces or wildcards: fix the topic ` +
      'where the message is enqueued',
    { details: messageDetails(message, subject) },
  );
}

/** A header NATS cannot carry unchanged, or one reserved for the server. */
export function invalidHeaderError(
  message: OutboxMessage,
  name: string,
  why: string,
): PermanentDeliveryError {
  return new PermanentDeliveryError(
    `message ${message.id} has header ${JSON.stringify(name)}, which ${why}; remove or rename it where ` +
      'the message is enqueued',
    { details: { ...messageDetails(message), header: name } },
  );
}

/** A payload over `maxMessageBytes`, or headers and payload together over the server's `max_payload`. */
export function messageTooLargeError(
  safeUrl: string,
  message: OutboxMessage,
  size: number,
  limit: number,
  which: 'max_payload' | 'maxMessageBytes',
): PermanentDeliveryError {
  const what =
    which === 'max_payload'
      ? `is ${size} bytes with its headers, over the max_payload of ${limit} bytes of the NATS server at ${safeUrl}`
      : `has a payload of ${size} bytes, over the transport's maxMessageBytes of ${limit}`;
  const raise =
    which === 'max_payload'
      ? "raise the server's max_payload"
      : "raise maxMessageBytes (and the stream's max_msg_size)";
  return new PermanentDeliveryError(
    `message ${message.id} (topic ${JSON.stringify(message.topic)}) ${what}; store large data elsewhere ` +
      `and send a reference, or ${raise} and replay the dead letter`,
    { details: { url: safeUrl, size, limit, limitName: which, ...messageDetails(message) } },
  );
}
