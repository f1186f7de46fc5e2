/**
 * One batch on the publishing connection: every message a JetStream publish (a request whose
 * answer is the stream's PubAck), written back to back in array order, then the PubAcks awaited
 * under `ackTimeoutMs` and the caller's signal; and the outcome of each failure.
 *
 * @module
 */
import type { PubAck } from '@nats-io/jetstream';

import type { PublishOutcome } from '../../core/ports.js';
import type { OutboxMessage } from '../../core/types.js';
import {
  ackTimeoutError,
  connectionLostError,
  describe,
  invalidSubjectError,
  messageTooLargeError,
  noRespondersError,
  publishAbortedError,
  refusedError,
  streamMissingError,
  streamUnavailableError,
} from './nats-errors.js';
import {
  isValidSubject,
  subjectFor,
  subjectProblem,
  type ResolvedNatsTransportOptions,
} from './nats-options.js';
import type { NatsSession } from './nats-session.js';
import { messageHeaders } from './nats-wire.js';

/** What a batch came to: an outcome per message, and whether the connection should be dropped. */
export interface BatchResult {
  outcomes: PublishOutcome[];
  /** True when PubAcks went missing (deadline or signal): the connection is not worth keeping. */
  unanswered: boolean;
}

/** Errors along `err`'s cause chain, `err` first. */
function causes(err: unknown): unknown[] {
  const chain: unknown[] = [];
  for (let e: unknown = err; e !== undefined && e !== null && chain.length < 8;) {
    chain.push(e);
    e = (e as { cause?: unknown }).cause;
  }
  return chain;
}

function hasErrorNamed(err: unknown, ...names: string[]): boolean {
  return causes(err).some((e) => names.includes((e as { name?: string })?.name ?? ''));
}

/** NATS answered the publish with status 503: no subscriber (no stream) on the subject. */
export function isNoResponders(err: unknown): boolean {
  return causes(err).some(
    (e) => (e as { name?: string })?.name === 'NoRespondersError' || /^no responders/i.test(describe(e)),
  );
}

/** A JetStream API error in the PubAck: `{ error: { code, err_code, description } }`. */
function apiError(err: unknown): { code: number | undefined; status: number | undefined } | undefined {
  const e = causes(err).find(
    (c) =>
      (c as { name?: string })?.name === 'JetStreamApiError' ||
      (c as { name?: string })?.name === 'StreamNotFoundError',
  );
  if (e === undefined) return undefined;
  const api = e as { code?: unknown; status?: unknown };
  return {
    code: typeof api.code === 'number' ? api.code : undefined,
    status: typeof api.status === 'number' ? api.status : undefined,
  };
}

/**
 * Publishes the batch on `session` and waits for its PubAcks. Never throws. Messages the
 * transport refuses itself (invalid subject or header, larger than `max_payload`) are `permanent`
 * and not sent.
 */
export async function publishBatch(
  session: NatsSession,
  messages: readonly OutboxMessage[],
  options: Readonly<ResolvedNatsTransportOptions>,
  signal: AbortSignal | undefined,
): Promise<BatchResult> {
  const { safeUrl } = options.endpoint;
  const outcomes = new Array<PublishOutcome | undefined>(messages.length);
  const subjects = new Array<string>(messages.length);
  const acks: Array<Promise<void>> = [];
  const failures: Array<{ i: number; err: unknown }> = [];

  // Written synchronously in array order: the client appends each request to its outbound buffer
  // before `publish` first awaits, so the server reads them in this order.
  for (const [i, message] of messages.entries()) {
    const subject = subjectFor(options.subjectPrefix, message.topic);
    subjects[i] = subject;
    if (!isValidSubject(subject, false)) {
      outcomes[i] = {
        status: 'permanent',
        error: invalidSubjectError(message, subject, subjectProblem(subject)),
      };
      continue;
    }
    let headers;
    try {
      headers = messageHeaders(message);
    } catch (err) {
      outcomes[i] = { status: 'permanent', error: err as Error };
      continue;
    }
    if (options.maxMessageBytes !== undefined && message.payload.length > options.maxMessageBytes) {
      outcomes[i] = {
        status: 'permanent',
        error: messageTooLargeError(
          safeUrl,
          message,
          message.payload.length,
          options.maxMessageBytes,
          'maxMessageBytes',
        ),
      };
      continue;
    }
    // The server's max_payload bounds a message's headers and payload together.
    // MsgHdrsImpl.toString() is the header block exactly as sent (UTF-8 encoded on the wire).
    const size = Buffer.byteLength(headers.toString()) + message.payload.length;
    if (size > session.maxPayload) {
      outcomes[i] = {
        status: 'permanent',
        error: messageTooLargeError(safeUrl, message, size, session.maxPayload, 'max_payload'),
      };
      continue;
    }
    let ack: Promise<PubAck>;
    try {
      ack = session.js.publish(subject, message.payload, { headers, timeout: options.ackTimeoutMs });
    } catch (err) {
      ack = Promise.reject(err);
    }
    acks.push(
      ack.then(
        // A duplicate (this id stored within the stream's duplicate window) is in the stream: ok.
        () => {
          outcomes[i] ??= { status: 'ok' };
        },
        (err: unknown) => {
          failures.push({ i, err });
        },
      ),
    );
  }

  const done = await settledBefore(Promise.all(acks), signal);
  let unanswered = !done;

  // "No responders": look up, once per subject, whether a stream captures it.
  const lookups = new Map<string, Promise<string[]>>();
  const streamsFor = (subject: string): Promise<string[]> => {
    let lookup = lookups.get(subject);
    if (lookup === undefined) {
      lookup = session.jsm.streams
        .names(subject)
        .next()
        .then((names) => names ?? []);
      lookup.catch(() => undefined); // handled where awaited; not left unhandled when abandoned
      lookups.set(subject, lookup);
    }
    return lookup;
  };

  await Promise.all(
    failures.map(async ({ i, err }) => {
      const message = messages[i] as OutboxMessage;
      const subject = subjects[i] as string;
      if (outcomes[i] !== undefined) return;
      if (hasErrorNamed(err, 'TimeoutError')) {
        unanswered = true;
        outcomes[i] = {
          status: 'unavailable',
          error: ackTimeoutError(safeUrl, options.ackTimeoutMs, message, subject),
        };
        return;
      }
      if (
        session.ended.aborted ||
        session.nc.isClosed() ||
        hasErrorNamed(err, 'ClosedConnectionError', 'ConnectionError')
      ) {
        outcomes[i] = {
          status: 'unavailable',
          error: connectionLostError(
            safeUrl,
            message,
            subject,
            session.ended.aborted ? session.ended.reason : err,
          ),
        };
        return;
      }
      if (isNoResponders(err)) {
        try {
          // The lookup waits at most for the caller's signal: an aborted publish answers at once.
          const lookup = streamsFor(subject);
          if (signal && !(await settledBefore(lookup, signal))) {
            throw new Error('the publish signal aborted before the stream lookup answered');
          }
          const streams = await lookup;
          outcomes[i] =
            streams.length === 0
              ? { status: 'permanent', error: streamMissingError(safeUrl, message, subject) }
              : {
                  status: 'unavailable',
                  error: streamUnavailableError(safeUrl, message, subject, streams[0] as string),
                };
        } catch (lookupErr) {
          outcomes[i] = {
            status: 'unavailable',
            error: noRespondersError(safeUrl, message, subject, lookupErr),
          };
        }
        return;
      }
      const api = apiError(err);
      outcomes[i] = refusedError(safeUrl, message, subject, api?.code, api?.status, err);
    }),
  );

  const result = messages.map((message, i): PublishOutcome => {
    const outcome = outcomes[i];
    if (outcome !== undefined) return outcome;
    // Only when the signal ended the wait: this message's PubAck had not come.
    return {
      status: 'unavailable',
      error: publishAbortedError(safeUrl, message, signal as AbortSignal, 'unanswered'),
    };
  });
  return { outcomes: result, unanswered };
}

/** True when `promise` settled (either way) before `signal` aborted; false otherwise. Never rejects. */
export function settledBefore(promise: Promise<unknown>, signal: AbortSignal | undefined): Promise<boolean> {
  if (signal === undefined)
    return promise.then(
      () => true,
      () => true,
    );
  if (signal.aborted) return Promise.resolve(false);
  return new Promise<boolean>((resolve) => {
    const onAbort = () => resolve(false);
    signal.addEventListener('abort', onAbort, { once: true });
    const settle = () => {
      signal.removeEventListener('abort', onAbort);
      resolve(true);
    };
    promise.then(settle, settle);
  });
}
