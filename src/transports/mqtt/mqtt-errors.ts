/**
 * Every error the MQTT transport reports, built in one place so that each says what went wrong,
 * with which value, and what to do. URLs passed in are the redacted ones.
 *
 * @module
 */
import { isMailroomError } from '../../core/errors/mailroom-error.js';
import { PermanentDeliveryError } from '../../core/errors/permanent-delivery-error.js';
import { TransportError } from '../../core/errors/transport-error.js';
import type { OutboxMessage } from '../../core/types.js';
import { portHint } from '../../core/well-known-ports.js';
import { AUTH_REASON_CODES, classifyReasonCode, hex } from './mqtt-reason-codes.js';

export function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function messageDetails(message: OutboxMessage): Record<string, unknown> {
  return { messageId: message.id, topic: message.topic };
}

function what(message: OutboxMessage): string {
  return `message ${message.id} (topic ${JSON.stringify(message.topic)})`;
}

function endpointOf(safeUrl: string): { endpoint: string; port: number | undefined } {
  try {
    const url = new URL(safeUrl);
    const port = Number(url.port || (url.protocol === 'mqtts:' ? 8883 : 1883));
    return { endpoint: `${url.hostname}:${port}`, port };
  } catch {
    return { endpoint: safeUrl, port: undefined };
  }
}

function isItMqtt(safeUrl: string): string {
  const { endpoint, port } = endpointOf(safeUrl);
  const hint = portHint(port, [1883, 8883]);
  return `is ${endpoint} an MQTT 5 broker?${hint ? ` ${hint}.` : ''}`;
}

/** Turns a connect failure into an error that says what went wrong and what to do. */
export function connectError(err: unknown, safeUrl: string): Error {
  if (isMailroomError(err)) return err;
  const code = (err as { code?: unknown } | undefined)?.code;
  if (typeof code === 'number') return connackRefusedError(safeUrl, code, describe(err));
  return new TransportError(
    'unreachable',
    `cannot connect to the MQTT broker at ${safeUrl}: ${describe(err)}; check that the broker is running and ` +
      'reachable from this host, and the host, port and scheme (mqtt/mqtts) in the URL',
    { cause: err, details: { url: safeUrl } },
  );
}

export function connectTimeoutError(safeUrl: string, connectTimeoutMs: number): TransportError {
  return new TransportError(
    'unreachable',
    `cannot connect to the MQTT broker at ${safeUrl}: no CONNACK within ${connectTimeoutMs} ms ` +
      `(connectTimeoutMs): ${isItMqtt(safeUrl)} If it is, check that it is reachable from this host ` +
      '(firewall, proxy) and the scheme (mqtts:// for a TLS port)',
    { details: { url: safeUrl, connectTimeoutMs } },
  );
}

/** The connection closed before the CONNACK. */
export function handshakeClosedError(safeUrl: string): TransportError {
  return new TransportError(
    'unreachable',
    `cannot connect to the MQTT broker at ${safeUrl}: the connection closed before the broker answered ` +
      `CONNECT: ${isItMqtt(safeUrl)} A broker that speaks only MQTT 3.1.1 hangs up like this, and so does ` +
      'one that is starting or stopping',
    { details: { url: safeUrl } },
  );
}

/** The broker refused CONNECT with a reason code. */
export function connackRefusedError(safeUrl: string, code: number, text: string): TransportError {
  if (AUTH_REASON_CODES.has(code)) {
    return new TransportError(
      'auth_failed',
      `the MQTT broker at ${safeUrl} refused the login (${hex(code)}: ${text}); check the user name and ` +
        'password in the URL (percent-encode special characters) and that the user may connect',
      { details: { url: safeUrl, reasonCode: code } },
    );
  }
  if (code === 0x01 || code === 0x84) {
    return new TransportError(
      'not_mqtt5',
      `the MQTT broker at ${safeUrl} does not accept MQTT 5 (${hex(code)}: ${text}); the transport needs ` +
        'MQTT 5 (user properties carry the headers): upgrade the broker (Mosquitto 1.6 or later) or enable MQTT 5',
      { details: { url: safeUrl, reasonCode: code } },
    );
  }
  return new TransportError(
    'connect_refused',
    `the MQTT broker at ${safeUrl} refused the connection (${hex(code)}: ${text})` +
      (code === 0x85 || code === 0x02 ? '; check the clientId option' : ''),
    { details: { url: safeUrl, reasonCode: code } },
  );
}

export function closedError(safeUrl: string): TransportError {
  return new TransportError(
    'closed',
    `MqttTransport for ${safeUrl} is closed; call start() to open it again`,
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

/** The connection ended: socket closed, keep-alive missed, the broker's DISCONNECT, or our drop. */
export function connectionLostError(safeUrl: string, reason: string, cause?: unknown): TransportError {
  return new TransportError(
    'connection_lost',
    `the connection to the MQTT broker at ${safeUrl} was lost (${reason})`,
    {
      ...(cause === undefined ? {} : { cause }),
      details: { url: safeUrl },
    },
  );
}

/** A PUBLISH without PUBACK/PUBCOMP when the connection ended, or one never sent. */
export function ackLostError(
  safeUrl: string,
  message: OutboxMessage,
  lost: Error,
  sent: boolean,
): TransportError {
  return new TransportError(
    sent ? 'ack_lost' : 'not_sent',
    sent
      ? `the connection to the MQTT broker at ${safeUrl} was lost before the acknowledgement of ${what(message)}: ` +
          `${lost.message}; the next publish reconnects and sends it again with the same mailroom-id, so ` +
          'subscribers may see it twice'
      : `${what(message)} was not sent: the connection to the MQTT broker at ${safeUrl} was lost during the ` +
          `batch (${lost.message}); the next publish reconnects`,
    { cause: lost, details: messageDetails(message) },
  );
}

export function ackTimeoutError(
  safeUrl: string,
  ackTimeoutMs: number,
  message: OutboxMessage,
): TransportError {
  return new TransportError(
    'ack_timeout',
    `no acknowledgement from the MQTT broker at ${safeUrl} for ${what(message)} within ${ackTimeoutMs} ms ` +
      '(ackTimeoutMs); the broker does not answer, so the connection was dropped and the next publish ' +
      'reconnects; it will be published again with the same mailroom-id (the broker may have it already)',
    { details: { ...messageDetails(message), ackTimeoutMs } },
  );
}

function abortReason(signal: AbortSignal): string {
  const reason: unknown = signal.reason;
  return reason instanceof Error ? reason.message : String(reason);
}

/** The caller gave up (publish deadline, relay stopping) before the broker's acknowledgement. */
export function publishAbortedError(
  safeUrl: string,
  message: OutboxMessage,
  signal: AbortSignal,
  stage: 'connecting' | 'unsent' | 'unanswered',
): TransportError {
  const when =
    stage === 'connecting'
      ? 'while connecting, so nothing was sent'
      : stage === 'unsent'
        ? `before ${what(message)} was sent; the connection was dropped`
        : `before the broker's acknowledgement of ${what(message)}; the connection was dropped`;
  return new TransportError(
    'publish_timeout',
    `publish to the MQTT broker at ${safeUrl} was aborted (${abortReason(signal)}) ${when}; the message ` +
      'will be published again with the same mailroom-id (the broker may have it already)',
    { details: { ...messageDetails(message), url: safeUrl, stage } },
  );
}

export function probeAbortedError(safeUrl: string, signal: AbortSignal): TransportError {
  return new TransportError(
    'probe_aborted',
    `probe of the MQTT broker at ${safeUrl} was aborted (${abortReason(signal)}) before the connection was ` +
      'open; check that the broker is running and reachable from this host',
    { details: { url: safeUrl } },
  );
}

/** The broker refused a PUBLISH with a reason code of 0x80 or above in its PUBACK/PUBREC. */
export function refusedMessageError(
  safeUrl: string,
  message: OutboxMessage,
  topicName: string,
  code: number,
): Error {
  const info = classifyReasonCode(code);
  const text =
    `the MQTT broker at ${safeUrl} refused ${what(message)} on MQTT topic ${JSON.stringify(topicName)} ` +
    `with reason code ${hex(code)} (${info.name})`;
  const details = { ...messageDetails(message), topicName, reasonCode: code, reasonName: info.name };
  if (info.class === 'permanent') {
    return new PermanentDeliveryError(
      `${text}; the message cannot be delivered as it is: fix the topic mapping or the message (store large ` +
        "data elsewhere and send a reference, or raise the broker's limit) and replay the dead letter",
      { details },
    );
  }
  return new TransportError(
    'refused',
    `${text}; the broker stays reachable, so this comes from what was published or the broker's rules for it ` +
      '(an ACL, a quota); the message spends an attempt: fix the cause and replay the dead letters',
    { details },
  );
}

/** A message whose PUBLISH packet is over the broker's Maximum Packet Size or `maxPacketBytes`. */
export function messageTooLargeError(
  message: OutboxMessage,
  packetBytes: number,
  limit: number,
  announced: boolean,
): PermanentDeliveryError {
  const source = announced
    ? "the broker's Maximum Packet Size (from its CONNACK)"
    : 'maxPacketBytes (the broker announced no limit)';
  return new PermanentDeliveryError(
    `${what(message)} makes a PUBLISH packet of ${packetBytes} bytes (payload ${message.payload.length}), over ` +
      `${source}, ${limit} bytes; the broker would drop the connection with everything in flight on it, so it ` +
      "was not sent; store large data elsewhere and send a reference, or raise the broker's limit and replay the dead letter",
    { details: { ...messageDetails(message), packetBytes, size: message.payload.length, limit } },
  );
}

/** A message whose payload is over `maxPayloadBytes`. */
export function payloadTooLargeError(message: OutboxMessage, limit: number): PermanentDeliveryError {
  return new PermanentDeliveryError(
    `${what(message)} has a payload of ${message.payload.length} bytes, over maxPayloadBytes (${limit}); the ` +
      'broker would drop the connection with everything in flight on it, so it was not sent; store large data ' +
      "elsewhere and send a reference, or raise the broker's limit and maxPayloadBytes together and replay the dead letter",
    { details: { ...messageDetails(message), size: message.payload.length, limit } },
  );
}

/** The mapped topic name cannot be published to. */
export function invalidTopicError(
  message: OutboxMessage,
  topicName: string,
  problem: string,
): PermanentDeliveryError {
  return new PermanentDeliveryError(
    `${what(message)} maps to the MQTT topic name ${JSON.stringify(topicName)}, which ${problem}; it was not ` +
      'sent; change the topic (or the topic/prefix options) and enqueue the message again',
    { details: { ...messageDetails(message), topicName } },
  );
}

/** The `topic` function threw or returned something other than a string. */
export function topicMapperError(message: OutboxMessage, err: unknown): PermanentDeliveryError {
  return new PermanentDeliveryError(
    `the topic option's function failed for ${what(message)}: ${describe(err)}; it was not sent`,
    { cause: err, details: messageDetails(message) },
  );
}

/** A header name or value that MQTT cannot carry as a user property. */
export function invalidHeaderError(
  message: OutboxMessage,
  header: string,
  problem: string,
): PermanentDeliveryError {
  return new PermanentDeliveryError(
    `${what(message)} has a header ${JSON.stringify(header)} whose name or value ${problem}; an MQTT user ` +
      'property cannot carry it, so it was not sent; change the header and enqueue the message again',
    { details: { ...messageDetails(message), header } },
  );
}
