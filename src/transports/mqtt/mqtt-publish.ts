/**
 * One batch on the connection: every message a QoS 1 (or 2) PUBLISH, handed to MQTT.js in order
 * as inflight slots free up, then the PUBACKs (PUBCOMPs) awaited under `ackTimeoutMs` and the
 * caller's signal; and the outcome of each failure.
 *
 * @module
 */
import type { PublishOutcome } from '../../core/ports.js';
import type { OutboxMessage } from '../../core/types.js';
import { MqttRefusal, type MqttConnection } from './mqtt-connection.js';
import {
  ackLostError,
  ackTimeoutError,
  messageTooLargeError,
  payloadTooLargeError,
  publishAbortedError,
  refusedMessageError,
} from './mqtt-errors.js';
import type { ResolvedMqttTransportOptions } from './mqtt-options.js';
import { classifyReasonCode } from './mqtt-reason-codes.js';
import { publicationOf } from './mqtt-wire.js';

export interface BatchResult {
  outcomes: PublishOutcome[];
  /** True when the wait ended (deadline or signal) with acknowledgements missing: drop the connection. */
  unanswered: boolean;
}

/**
 * Publishes the batch on `connection` and waits for the acknowledgements. Never throws. Messages
 * the transport refuses itself (a topic name or header MQTT cannot carry, a packet over the
 * limit) are `permanent` and not sent; a reason code ≥ 0x80 is `permanent` or `retry` by
 * {@link classifyReasonCode}; a connection that ends or does not answer makes the messages
 * without an acknowledgement `unavailable`.
 */
export async function publishBatch(
  connection: MqttConnection,
  messages: readonly OutboxMessage[],
  options: Readonly<ResolvedMqttTransportOptions>,
  signal: AbortSignal | undefined,
): Promise<BatchResult> {
  const { safeUrl } = options.endpoint;
  const outcomes = new Array<PublishOutcome | undefined>(messages.length);
  const requests: Array<{ sent: boolean } | undefined> = new Array<{ sent: boolean } | undefined>(
    messages.length,
  );
  const answers: Array<Promise<void>> = [];
  const stop = AbortSignal.any([connection.ended, ...(signal ? [signal] : [])]);

  for (const [i, message] of messages.entries()) {
    if (stop.aborted) break;
    const { maxPayloadBytes } = options;
    if (maxPayloadBytes !== undefined && message.payload.length > maxPayloadBytes) {
      outcomes[i] = { status: 'permanent', error: payloadTooLargeError(message, maxPayloadBytes) };
      continue;
    }
    let publication;
    try {
      publication = publicationOf(message, options.topic, options.prefix);
    } catch (err) {
      outcomes[i] = { status: 'permanent', error: err as Error };
      continue;
    }
    if (publication.packetBytes > connection.maxPacketBytes) {
      outcomes[i] = {
        status: 'permanent',
        error: messageTooLargeError(
          message,
          publication.packetBytes,
          connection.maxPacketBytes,
          connection.maxPacketAnnounced,
        ),
      };
      continue;
    }
    const request = connection.request(
      publication.topicName,
      message.payload,
      options.qos,
      publication.properties,
    );
    requests[i] = request;
    answers.push(
      request.answered.then(
        () => {
          outcomes[i] ??= { status: 'ok' };
        },
        (err: unknown) => {
          if (err instanceof MqttRefusal) {
            const error = refusedMessageError(safeUrl, message, publication.topicName, err.reasonCode);
            outcomes[i] ??=
              classifyReasonCode(err.reasonCode).class === 'permanent'
                ? { status: 'permanent', error }
                : { status: 'retry', error };
          } else {
            const lost = err instanceof Error ? err : new Error(String(err));
            outcomes[i] ??= {
              status: 'unavailable',
              error: ackLostError(safeUrl, message, lost, request.sent),
            };
          }
        },
      ),
    );
    // The inflight window: the next PUBLISH waits for a slot, so the order of the batch holds.
    if (!(await settledBefore(request.written, stop))) break;
  }

  const timedOut = new AbortController();
  const timer = setTimeout(() => timedOut.abort(), options.ackTimeoutMs);
  const done = await settledBefore(
    Promise.all(answers),
    AbortSignal.any([timedOut.signal, ...(signal ? [signal] : [])]),
  );
  clearTimeout(timer);

  const result = messages.map((message, i): PublishOutcome => {
    const outcome = outcomes[i];
    if (outcome !== undefined) return outcome;
    const sent = requests[i]?.sent ?? false;
    if (signal?.aborted) {
      return {
        status: 'unavailable',
        error: publishAbortedError(safeUrl, message, signal, sent ? 'unanswered' : 'unsent'),
      };
    }
    if (!done && sent && connection.open) {
      return { status: 'unavailable', error: ackTimeoutError(safeUrl, options.ackTimeoutMs, message) };
    }
    const lost = connection.lostReason ?? new Error('the batch ended before this message was sent');
    return { status: 'unavailable', error: ackLostError(safeUrl, message, lost, sent) };
  });
  return { outcomes: result, unanswered: !done };
}

/** True when `promise` settled (either way) before `signal` aborted; false otherwise. Never rejects. */
export function settledBefore(promise: Promise<unknown>, signal: AbortSignal): Promise<boolean> {
  if (signal.aborted) return Promise.resolve(false);
  return new Promise<boolean>((resolve) => {
    const onAbort = () => resolve(false);
    signal.addEventListener('abort', onAbort, { once: true });
    const done = () => {
      signal.removeEventListener('abort', onAbort);
      resolve(true);
    };
    promise.then(done, done);
  });
}
