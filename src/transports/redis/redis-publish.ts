/**
 * One batch as one pipeline: an `XADD` per message (with `MAXLEN ~` when trimming), then `WAIT`
 * when replicas must confirm, written together on the transport's connection; the replies read
 * as one outcome per message.
 *
 * @module
 */
import type { PublishOutcome } from '../../core/ports.js';
import type { OutboxMessage } from '../../core/types.js';
import type { PipelineReply, RedisArgument, RedisClient } from './redis-client.js';
import {
  invalidStreamError,
  isReplyError,
  notAnsweredError,
  OUTAGE_REPLIES,
  payloadTooLargeError,
  publishAbortedError,
  refusedError,
  replicasNotConfirmedError,
  replyCode,
  replyTimeoutError,
  serverRefusingError,
  wrongTypeError,
} from './redis-errors.js';
import {
  MAX_STREAM_KEY_BYTES,
  streamFor,
  type ResolvedRedisStreamsTransportOptions,
} from './redis-options.js';
import { entryFields } from './redis-wire.js';

/** What a batch came to: an outcome per message, and whether the server left some unanswered. */
export interface BatchResult {
  outcomes: PublishOutcome[];
  /** True when the wait ended (deadline or signal) with replies missing: drop the connection. */
  unanswered: boolean;
}

/**
 * A `permanent` outcome for a message the transport will not send: a payload over
 * `maxPayloadBytes` (Redis would close the connection over `proto-max-bulk-len`, failing every
 * message in flight with it), or a stream key that is empty, too long or has control characters.
 */
export function refuseBeforeSending(
  message: OutboxMessage,
  stream: string,
  maxPayloadBytes: number,
): PublishOutcome | undefined {
  if (message.payload.length > maxPayloadBytes) {
    return { status: 'permanent', error: payloadTooLargeError(message, stream, maxPayloadBytes) };
  }
  if (message.topic === '')
    return { status: 'permanent', error: invalidStreamError(message, stream, 'comes from an empty topic') };
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(stream)) {
    return {
      status: 'permanent',
      error: invalidStreamError(message, stream, 'contains a control character'),
    };
  }
  if (Buffer.byteLength(stream) > MAX_STREAM_KEY_BYTES) {
    return {
      status: 'permanent',
      error: invalidStreamError(message, stream, `is longer than ${MAX_STREAM_KEY_BYTES} bytes`),
    };
  }
  return undefined;
}

/** The `XADD` arguments of `message` to `stream`. */
export function xaddArguments(
  message: OutboxMessage,
  stream: string,
  maxLen: number | undefined,
): RedisArgument[] {
  return [
    stream,
    ...(maxLen === undefined ? [] : ['MAXLEN', '~', String(maxLen)]),
    '*',
    ...entryFields(message),
  ];
}

/**
 * The outcome of one `XADD` reply. An error reply is a refusal by a server that is up: WRONGTYPE
 * (the key holds no stream) is `permanent`; replies that say the server takes no writes at all
 * (OOM, READONLY, LOADING…, see `OUTAGE_REPLIES`) are `unavailable`; any other is `retry`. An
 * error of the client (connection closed, not writable) is `unavailable`.
 */
export function replyOutcome(
  safeUrl: string,
  message: OutboxMessage,
  stream: string,
  [error]: PipelineReply,
): PublishOutcome {
  if (error === null) return { status: 'ok' };
  if (!isReplyError(error)) {
    return { status: 'unavailable', error: notAnsweredError(safeUrl, message, stream, error) };
  }
  const code = replyCode(error);
  if (code === 'WRONGTYPE')
    return { status: 'permanent', error: wrongTypeError(safeUrl, message, stream, error) };
  if (OUTAGE_REPLIES.has(code)) {
    return { status: 'unavailable', error: serverRefusingError(safeUrl, message, stream, error) };
  }
  return { status: 'retry', error: refusedError(safeUrl, message, stream, error) };
}

/**
 * Sends the batch as one pipeline on `client` and waits for its replies, at most
 * `replyTimeoutMs` (+ `waitReplicas.timeoutMs`) and until `signal` aborts. Never throws.
 *
 * One pipeline on one connection: Redis runs a connection's commands in the order it reads them,
 * so when it added a message it had run every earlier `XADD` of the call (added, or refused with
 * an error reply). That is what `ordering: true` promises the relay.
 */
export async function publishBatch(
  client: RedisClient,
  messages: readonly OutboxMessage[],
  options: Readonly<ResolvedRedisStreamsTransportOptions>,
  signal: AbortSignal | undefined,
): Promise<BatchResult> {
  const { safeUrl } = options.endpoint;
  const outcomes = new Array<PublishOutcome | undefined>(messages.length).fill(undefined);
  const streams = messages.map((m) => streamFor(options.stream, m.topic));
  /** For each queued XADD, the index of its message. */
  const sent: number[] = [];
  const pipeline = client.pipeline();
  for (const [i, message] of messages.entries()) {
    const stream = streams[i] as string;
    const refused = refuseBeforeSending(message, stream, options.maxPayloadBytes);
    if (refused) {
      outcomes[i] = refused;
      continue;
    }
    pipeline.call('XADD', ...xaddArguments(message, stream, options.maxLen));
    sent.push(i);
  }
  if (sent.length === 0) return { outcomes: outcomes as PublishOutcome[], unanswered: false };
  const wait = options.waitReplicas;
  if (wait) pipeline.call('WAIT', String(wait.count), String(wait.timeoutMs));

  const timeoutMs = options.replyTimeoutMs + (wait?.timeoutMs ?? 0);
  const replies = await repliesBefore(pipeline.exec(), timeoutMs, signal);

  if (replies.status !== 'done') {
    for (const i of sent) {
      const message = messages[i] as OutboxMessage;
      const stream = streams[i] as string;
      outcomes[i] = {
        status: 'unavailable',
        error:
          replies.status === 'failed'
            ? notAnsweredError(safeUrl, message, stream, replies.error)
            : replies.status === 'aborted' && signal
              ? publishAbortedError(safeUrl, message, stream, signal, 'unanswered')
              : replyTimeoutError(safeUrl, timeoutMs, message, stream),
      };
    }
    return { outcomes: outcomes as PublishOutcome[], unanswered: replies.status !== 'failed' };
  }

  for (const [j, i] of sent.entries()) {
    const reply: PipelineReply = replies.value[j] ?? [
      new Error('the pipeline returned no reply for it'),
      null,
    ];
    outcomes[i] = replyOutcome(safeUrl, messages[i] as OutboxMessage, streams[i] as string, reply);
  }
  if (wait) {
    // WAIT answers how many replicas acknowledged every write of the connection so far, which
    // includes this batch's entries. Fewer than asked (or no answer): not confirmed as the user
    // asked, so not `ok`; an outage of the replicas, not a failure of the messages.
    const [error, acked] = replies.value[sent.length] ?? [new Error('no reply to WAIT'), null];
    const confirmed = error === null && typeof acked === 'number' && acked >= wait.count;
    if (!confirmed) {
      const shown = error === null ? String(acked) : `none (${error.message})`;
      for (const i of sent) {
        if (outcomes[i]?.status !== 'ok') continue;
        const message = messages[i] as OutboxMessage;
        outcomes[i] = {
          status: 'unavailable',
          error: replicasNotConfirmedError(
            safeUrl,
            message,
            streams[i] as string,
            shown,
            wait.count,
            wait.timeoutMs,
          ),
        };
      }
    }
  }
  return { outcomes: outcomes as PublishOutcome[], unanswered: false };
}

type Replies =
  | { status: 'done'; value: PipelineReply[] }
  | { status: 'failed'; error: unknown }
  | { status: 'timeout' }
  | { status: 'aborted' };

/** The pipeline's replies, or why there are none: it failed, `timeoutMs` passed, or `signal` aborted. */
function repliesBefore(
  exec: Promise<PipelineReply[] | null>,
  timeoutMs: number,
  signal: AbortSignal | undefined,
): Promise<Replies> {
  if (signal?.aborted) {
    exec.catch(() => {});
    return Promise.resolve({ status: 'aborted' });
  }
  return new Promise<Replies>((resolve) => {
    const finish = (result: Replies): void => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      resolve(result);
    };
    const onAbort = (): void => finish({ status: 'aborted' });
    const timer = setTimeout(() => finish({ status: 'timeout' }), timeoutMs);
    signal?.addEventListener('abort', onAbort, { once: true });
    exec.then(
      (value) =>
        finish(
          value === null
            ? { status: 'failed', error: new Error('the pipeline was discarded') }
            : { status: 'done', value },
        ),
      (error: unknown) => finish({ status: 'failed', error }),
    );
  });
}

/** True when `promise` settled (either way) before `signal` aborted; false otherwise. Never rejects. */
export function settledBefore(promise: Promise<unknown>, signal: AbortSignal): Promise<boolean> {
  if (signal.aborted) return Promise.resolve(false);
  return new Promise<boolean>((resolve) => {
    const onAbort = () => resolve(false);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      () => {
        signal.removeEventListener('abort', onAbort);
        resolve(true);
      },
      () => {
        signal.removeEventListener('abort', onAbort);
        resolve(true);
      },
    );
  });
}
