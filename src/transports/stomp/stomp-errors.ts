/**
 * Every error the STOMP transport and consumer report, built in one place so that each says what
 * went wrong, with which value, and what to do. URLs passed in are the redacted ones.
 *
 * @module
 */
import { isMailroomError } from '../../core/errors/mailroom-error.js';
import { PermanentDeliveryError } from '../../core/errors/permanent-delivery-error.js';
import { TransportError } from '../../core/errors/transport-error.js';
import type { OutboxMessage } from '../../core/types.js';
import { portHint } from '../../core/well-known-ports.js';
import type { StompFrame } from './stomp-frame.js';

/** The message of an error, or the value itself as text. */
export function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function messageDetails(message: OutboxMessage): Record<string, unknown> {
  return { messageId: message.id, topic: message.topic };
}

/** `host:port` of a redacted STOMP URL, the port defaulted by scheme. */
export function endpointOf(safeUrl: string): { endpoint: string; port: number | undefined } {
  try {
    const url = new URL(safeUrl);
    const port = Number(url.port || (url.protocol === 'stomps:' ? 61614 : 61613));
    return { endpoint: `${url.hostname}:${port}`, port };
  } catch {
    return { endpoint: safeUrl, port: undefined };
  }
}

function isItStomp(safeUrl: string): string {
  const { endpoint, port } = endpointOf(safeUrl);
  const hint = portHint(port, [61613, 61614, 61623]);
  return `is ${endpoint} a STOMP broker (RabbitMQ's STOMP plugin, ActiveMQ)?${hint ? ` ${hint}.` : ''}`;
}

/** What an ERROR frame says: its `message` header and, when short, its body. */
export function errorFrameText(frame: StompFrame): string {
  const summary = frame.headers['message'] ?? 'no message header';
  const body = frame.body.toString('utf8').trim().replace(/\s+/g, ' ');
  return body === '' || body === summary ? summary : `${summary}: ${body.slice(0, 500)}`;
}

/**
 * The broker answered a frame with an ERROR frame (a refusal of that frame: a destination it
 * does not know, no permission, a frame too large, a transaction it does not know). Code
 * `refused`; `inferred` when the ERROR named no receipt and the transport took the oldest frame
 * still waiting for one as its cause.
 */
export class StompRefusal extends TransportError {
  constructor(
    readonly brokerMessage: string,
    readonly inferred: boolean,
    safeUrl: string,
  ) {
    super('refused', `STOMP broker at ${safeUrl} refused the frame: ${brokerMessage}`, {
      details: { url: safeUrl, brokerMessage, inferred },
    });
  }
}

export function isStompRefusal(err: unknown): err is StompRefusal {
  return err instanceof StompRefusal;
}

/** Broker messages that say a message can never be taken as it is (its size). */
const PERMANENT_REFUSAL = /too large|too big|exceed|max.?(frame|message|data)|frame size/i;

/** True when a refusal is about the message itself and will not change by retrying. */
export function isPermanentRefusal(refusal: StompRefusal): boolean {
  return !refusal.inferred && PERMANENT_REFUSAL.test(refusal.brokerMessage);
}

export function refusedMessageError(
  safeUrl: string,
  message: OutboxMessage,
  destination: string,
  refusal: StompRefusal,
): Error {
  const text =
    `STOMP broker at ${safeUrl} refused message ${message.id} (topic ${JSON.stringify(message.topic)}, ` +
    `destination ${JSON.stringify(destination)}) with an ERROR frame: ${refusal.brokerMessage}` +
    (refusal.inferred
      ? '; the ERROR named no receipt, so it is taken to be about the oldest message still waiting for one'
      : '');
  const details = { ...messageDetails(message), destination, brokerMessage: refusal.brokerMessage };
  if (isPermanentRefusal(refusal)) {
    return new PermanentDeliveryError(
      `${text}; the message cannot be delivered as it is: store large data elsewhere and send a reference, ` +
        "or raise the broker's frame size limit and maxMessageBytes together and replay the dead letter",
      { cause: refusal, details },
    );
  }
  return new TransportError(
    'refused',
    `${text}; the broker stays reachable, so this comes from what was published (a destination it does ` +
      'not allow, no write permission on it); the message spends an attempt: fix the cause (the ' +
      'destination template, the permission) and replay the dead letters',
    { cause: refusal, details },
  );
}

/** Turns a connect failure into an error that says what went wrong and what to do. */
export function connectError(err: unknown, safeUrl: string): Error {
  if (isMailroomError(err)) return err;
  const message = describe(err);
  return new TransportError(
    'unreachable',
    `cannot connect to the STOMP broker at ${safeUrl}: ${message}; check that the broker is running and ` +
      'reachable from this host, and the host, port and scheme (stomp/stomps) in the URL',
    { cause: err, details: { url: safeUrl } },
  );
}

export function connectTimeoutError(
  safeUrl: string,
  connectTimeoutMs: number,
  stage: string,
): TransportError {
  const { endpoint } = endpointOf(safeUrl);
  return new TransportError(
    'unreachable',
    `cannot connect to the STOMP broker at ${safeUrl}: ${endpoint} did not answer ${stage} within ` +
      `${connectTimeoutMs} ms (connectTimeoutMs): ${isItStomp(safeUrl)} If it is, check that it is ` +
      'reachable from this host (firewall, proxy) and the scheme (stomps:// for a TLS port)',
    { details: { url: safeUrl, connectTimeoutMs } },
  );
}

/** The peer answered, but not as STOMP. */
export function notStompError(safeUrl: string, why: string, cause?: unknown): TransportError {
  return new TransportError(
    'not_stomp',
    `cannot connect to the STOMP broker at ${safeUrl}: the answer was not STOMP (${why}): ${isItStomp(safeUrl)} ` +
      'If it is, check the scheme: stomps:// for a TLS port, stomp:// for a plain one',
    { ...(cause === undefined ? {} : { cause }), details: { url: safeUrl } },
  );
}

/** The peer hung up during the handshake. */
export function handshakeClosedError(safeUrl: string): TransportError {
  return new TransportError(
    'unreachable',
    `cannot connect to the STOMP broker at ${safeUrl}: the connection closed before the broker answered ` +
      `CONNECT: ${isItStomp(safeUrl)} If it is, check that it is running (one that is starting or ` +
      'stopping hangs up like this, and so does a proxy in front of one that is down)',
    { details: { url: safeUrl } },
  );
}

/** The broker refused CONNECT with an ERROR frame. */
export function connectRefusedError(safeUrl: string, frame: StompFrame, vhost: string): TransportError {
  const text = errorFrameText(frame);
  if (/virtual host|vhost/i.test(text)) {
    return new TransportError(
      'vhost_refused',
      `the STOMP broker at ${safeUrl} refused virtual host ${JSON.stringify(vhost)} (${text}); the URL's path ` +
        'names it (stomp://user:password@host:61613/vhost; none means "/"): check that it exists and the ' +
        'user has permissions on it',
      { details: { url: safeUrl, vhost, brokerMessage: text } },
    );
  }
  return new TransportError(
    'auth_failed',
    `the STOMP broker at ${safeUrl} refused the login (${text}); check the user name and password in the ` +
      'URL (percent-encode special characters) and that the user exists on the broker',
    { details: { url: safeUrl, brokerMessage: text } },
  );
}

export function closedError(safeUrl: string): TransportError {
  return new TransportError(
    'closed',
    `StompTransport for ${safeUrl} is closed; call start() to open it again`,
  );
}

/** The last connect failure, repeated while the reconnect backoff runs. */
export function backoffError(last: Error, waitMs: number): TransportError {
  return new TransportError(
    isMailroomError(last) ? last.code : 'unreachable',
    `${last.message} (next reconnect attempt in ${waitMs} ms)`,
    { cause: last },
  );
}

/** The connection ended: socket closed or reset, heart-beats missing, an ERROR frame, or our own drop. */
export function connectionLostError(safeUrl: string, reason: string, cause?: unknown): TransportError {
  return new TransportError(
    'connection_lost',
    `the connection to the STOMP broker at ${safeUrl} was lost (${reason})`,
    { ...(cause === undefined ? {} : { cause }), details: { url: safeUrl } },
  );
}

/** A SEND the broker did not answer with a RECEIPT before the connection ended. */
export function receiptLostError(
  safeUrl: string,
  message: OutboxMessage,
  lost: Error,
  sent: boolean,
): TransportError {
  return new TransportError(
    sent ? 'receipt_lost' : 'not_sent',
    sent
      ? `the connection to the STOMP broker at ${safeUrl} was lost before its RECEIPT for message ${message.id} ` +
          `(topic ${JSON.stringify(message.topic)}): ${lost.message}; the next publish reconnects and sends it ` +
          'again with the same mailroom-id, so consumers may see it twice'
      : `message ${message.id} was not sent: the connection to the STOMP broker at ${safeUrl} was lost during ` +
          `the batch (${lost.message}); the next publish reconnects`,
    { cause: lost, details: messageDetails(message) },
  );
}

export function receiptTimeoutError(
  safeUrl: string,
  receiptTimeoutMs: number,
  message: OutboxMessage,
): TransportError {
  return new TransportError(
    'receipt_timeout',
    `no RECEIPT from the STOMP broker at ${safeUrl} for message ${message.id} within ${receiptTimeoutMs} ms ` +
      '(receiptTimeoutMs); the broker does not answer, so the connection was dropped and the next publish ' +
      'reconnects; it will be published again with the same mailroom-id (the broker may have it already)',
    { details: { ...messageDetails(message), receiptTimeoutMs } },
  );
}

function abortReason(signal: AbortSignal): string {
  const reason: unknown = signal.reason;
  return reason instanceof Error ? reason.message : String(reason);
}

/** The caller gave up (publish deadline, relay stopping) before the broker's RECEIPT. */
export function publishAbortedError(
  safeUrl: string,
  message: OutboxMessage,
  signal: AbortSignal,
  stage: 'connecting' | 'unsent' | 'unanswered',
): TransportError {
  const what =
    stage === 'connecting'
      ? 'while connecting, so nothing was sent'
      : stage === 'unsent'
        ? `before message ${message.id} was sent; the connection was dropped`
        : `before the broker's RECEIPT for message ${message.id}; the connection was dropped`;
  return new TransportError(
    'publish_timeout',
    `publish to the STOMP broker at ${safeUrl} was aborted (${abortReason(signal)}) ${what} ` +
      `(topic ${JSON.stringify(message.topic)}); the message will be published again with the same ` +
      'mailroom-id (the broker may have it already)',
    { details: { ...messageDetails(message), url: safeUrl, stage } },
  );
}

export function probeAbortedError(safeUrl: string, signal: AbortSignal): TransportError {
  return new TransportError(
    'probe_aborted',
    `probe of the STOMP broker at ${safeUrl} was aborted (${abortReason(signal)}) before the connection was open; ` +
      'check that the broker is running and reachable from this host',
    { details: { url: safeUrl } },
  );
}

/** A message over `maxMessageBytes`, refused before sending. */
export function messageTooLargeError(message: OutboxMessage, limit: number): PermanentDeliveryError {
  return new PermanentDeliveryError(
    `message ${message.id} (topic ${JSON.stringify(message.topic)}) has a body of ${message.payload.length} bytes, ` +
      `over maxMessageBytes (${limit}); the broker would refuse the frame and drop the connection with everything ` +
      'in flight on it, so it was not sent; store large data elsewhere and send a reference, or raise the ' +
      "broker's frame size limit and maxMessageBytes together and replay the dead letter",
    { details: { ...messageDetails(message), size: message.payload.length, limit } },
  );
}

/** A user header STOMP or the broker reads itself (`destination`, `receipt`, `persistent`…). */
export function reservedHeaderError(message: OutboxMessage, header: string): PermanentDeliveryError {
  return new PermanentDeliveryError(
    `message ${message.id} (topic ${JSON.stringify(message.topic)}) has a header named ${JSON.stringify(header)}, ` +
      'which STOMP or the broker reads itself (it would change where or how the message is delivered), so it ' +
      'was not sent; rename the header and enqueue the message again',
    { details: { ...messageDetails(message), header } },
  );
}

/** A header with a NUL character, which STOMP frames cannot carry. */
export function unencodableHeaderError(message: OutboxMessage, header: string): PermanentDeliveryError {
  return new PermanentDeliveryError(
    `message ${message.id} (topic ${JSON.stringify(message.topic)}) has a header ${JSON.stringify(header)} with ` +
      'a NUL character, which a STOMP frame cannot carry; it was not sent',
    { details: { ...messageDetails(message), header } },
  );
}

/** The transaction was committed or rolled back already, or its connection is gone. */
export function transactionClosedError(what: string, state: string): TransportError {
  return new TransportError(
    'transaction_closed',
    `StompTransport: ${what} on a transaction already ${state}`,
  );
}

/** The connection was lost after COMMIT was sent and before its RECEIPT: the outcome is unknown. */
export function commitUnknownError(safeUrl: string, transaction: string, cause: Error): TransportError {
  return new TransportError(
    'commit_unknown',
    `the connection to the STOMP broker at ${safeUrl} was lost after COMMIT of transaction ${transaction} was ` +
      `sent and before its RECEIPT (${cause.message}): the broker may or may not have committed it; publishing ` +
      'the messages again may deliver them twice, with the same mailroom-id',
    { cause, details: { url: safeUrl, transaction } },
  );
}

/** The broker refused COMMIT (an ERROR frame naming it): nothing of the transaction was delivered. */
export function commitRefusedError(safeUrl: string, transaction: string, refusal: StompRefusal): Error {
  const text = `the STOMP broker at ${safeUrl} refused COMMIT of transaction ${transaction}: ${refusal.brokerMessage}`;
  if (isPermanentRefusal(refusal)) {
    return new PermanentDeliveryError(`${text}; a message of it cannot be delivered as it is`, {
      cause: refusal,
      details: { url: safeUrl, transaction },
    });
  }
  const error = new Error(`${text}; nothing of it was delivered, and the transaction may be tried again`, {
    cause: refusal,
  });
  error.name = 'StompCommitRefused';
  return error;
}
