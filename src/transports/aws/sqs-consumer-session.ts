/**
 * What the SQS consumer does at SQS: its calls (with a time limit each; deletes and visibility
 * changes gathered into batches of 10), and its session: the queue looked up, a long-polling
 * `ReceiveMessage` loop keeping at most `prefetch` messages in hand, and the heartbeat that
 * extends their visibility while they are held. SQS has no connection to lose: a session ends
 * when a `ReceiveMessage` fails (an outage, throttling, the queue gone), and the core opens a
 * new one with backoff.
 *
 * @module
 */
import type * as SqsSdk from '@aws-sdk/client-sqs';

import { ConfigError } from '../../core/errors/config-error.js';
import { TransportError } from '../../core/errors/transport-error.js';
import type { DeadLetterReason } from '../../consumer/consumer-events.js';
import type { AwsClientLike } from './aws-client.js';
import { awsErrorCode, classifyAwsError, probeFailedError } from './aws-errors.js';
import type { QueueRef, ResolvedSqsConsumerOptions } from './sqs-consumer-options.js';

type SqsModule = typeof SqsSdk;
let sqsModule: Promise<SqsModule> | undefined;

/** The SDK's SQS module, loaded on first use; a ConfigError when it is not installed. */
export function loadSqs(): Promise<SqsModule> {
  sqsModule ??= import('@aws-sdk/client-sqs').catch((err: unknown) => {
    sqsModule = undefined;
    throw new ConfigError(
      'client',
      'SqsConsumer needs the AWS SDK: npm install @aws-sdk/client-sqs (or give a client)',
      { cause: err },
    );
  });
  return sqsModule;
}

/** A message as `ReceiveMessage` returns it. */
export type SqsMessage = SqsSdk.Message;

/** One received message, held until it is deleted or released. */
export interface SqsDelivery {
  readonly session: SqsConsumerSession;
  readonly message: SqsMessage;
  /** `queued`: waiting for a lane or a retry; `running`: its handler runs; `done`: deleted or released. */
  state: 'queued' | 'running' | 'done';
  /** Its visibility could not be extended: SQS may have handed it to another consumer meanwhile. */
  expired: boolean;
}

/** Dead-letter info travels as one JSON message attribute: SQS allows 10 attributes. */
export const DEAD_ATTRIBUTE = 'mailroom-dead';
/** SQS's limit of message attributes. */
const MAX_ATTRIBUTES = 10;
/** Cut the error to this many characters, as the other consumers do. */
export const MAX_ERROR_CHARS = 1000;

/** Per-entry codes that mean the receipt handle no longer holds the message. */
const GONE_CODES: ReadonlySet<string> = new Set([
  'ReceiptHandleIsInvalid',
  'MessageNotInflight',
  'AWS.SimpleQueueService.MessageNotInflight',
  'InvalidParameterValue',
]);

/** True when a per-entry error says the message is no longer held by this receipt. */
export function isGone(error: Error): boolean {
  return GONE_CODES.has((error as { code?: string }).code ?? '');
}

interface BatchItem {
  handle: string;
  resolve: (error: Error | undefined) => void;
}

/**
 * The consumer's calls to SQS: one client (built on first use unless given), each call limited in
 * time, and `DeleteMessageBatch` / `ChangeMessageVisibilityBatch` gathering what is asked within
 * one turn of the event loop into batches of at most 10, with a result per entry.
 */
export class SqsCalls {
  #client: AwsClientLike | undefined;
  #own = false;
  #building: Promise<AwsClientLike> | undefined;
  /** Batches waiting to be sent, by `delete <queueUrl>` or `visibility <seconds> <queueUrl>`. */
  readonly #pending = new Map<string, BatchItem[]>();
  #flushTimer: ReturnType<typeof setImmediate> | undefined;
  /** Calls under way that stop() waits for. */
  readonly #inFlight = new Set<Promise<unknown>>();

  constructor(private readonly options: Readonly<ResolvedSqsConsumerOptions>) {
    this.#client = options.client;
  }

  /**
   * True once the consumer stopped: a handler that finishes after stop()'s deadline does not
   * delete its message (the copy SQS hands out again is a duplicate for the inbox), and no client
   * is built again until the next start.
   */
  #stopped = false;

  /** The consumer starts (again). */
  reopen(): void {
    this.#stopped = false;
  }

  async client(): Promise<AwsClientLike> {
    if (this.#stopped) {
      throw new TransportError(
        'closed',
        `the SqsConsumer for ${this.options.safeUrl} is stopped; start() it again to call SQS`,
        { details: { url: this.options.safeUrl } },
      );
    }
    if (this.#client !== undefined) return this.#client;
    this.#building ??= (async () => {
      const { SQSClient } = await loadSqs();
      const { queue, endpoint } = this.options;
      const region = this.options.region ?? (queue.kind === 'name' ? queue.region : regionOfUrl(queue.url));
      return new SQSClient({
        ...(region === undefined ? {} : { region }),
        ...(endpoint === undefined ? {} : { endpoint }),
      }) as AwsClientLike;
    })().finally(() => (this.#building = undefined));
    const client = await this.#building;
    if (this.#client === undefined) {
      this.#client = client;
      this.#own = true;
    }
    return this.#client;
  }

  /** Sends `command` within `timeoutMs` (and `signal`); tracked so that `settle()` waits for it. */
  async send<T>(command: unknown, timeoutMs: number, signal?: AbortSignal): Promise<T> {
    const client = await this.client();
    const limit = AbortSignal.timeout(timeoutMs);
    const call = client.send(command, {
      abortSignal: signal ? AbortSignal.any([limit, signal]) : limit,
    }) as Promise<T>;
    this.#inFlight.add(call);
    try {
      return await call;
    } finally {
      this.#inFlight.delete(call);
    }
  }

  /** Deletes one message (batched); resolves with the entry's error, or undefined once deleted. */
  delete(queueUrl: string, handle: string): Promise<Error | undefined> {
    return this.#add(`delete ${queueUrl}`, handle);
  }

  /** Sets one message's visibility timeout (batched); `0` makes it visible again at once. */
  changeVisibility(queueUrl: string, handle: string, seconds: number): Promise<Error | undefined> {
    return this.#add(`visibility ${seconds} ${queueUrl}`, handle);
  }

  #add(key: string, handle: string): Promise<Error | undefined> {
    return new Promise((resolve) => {
      const items = this.#pending.get(key) ?? [];
      items.push({ handle, resolve });
      this.#pending.set(key, items);
      this.#flushTimer ??= setImmediate(() => this.#flush());
    });
  }

  #flush(): void {
    this.#flushTimer = undefined;
    const pending = [...this.#pending];
    this.#pending.clear();
    for (const [key, items] of pending) {
      for (let i = 0; i < items.length; i += 10) {
        const batch = this.#sendBatch(key, items.slice(i, i + 10));
        this.#inFlight.add(batch);
        void batch.finally(() => this.#inFlight.delete(batch));
      }
    }
  }

  async #sendBatch(key: string, items: BatchItem[]): Promise<void> {
    const [kind, ...rest] = key.split(' ');
    let answer: {
      Successful?: Array<{ Id?: string }>;
      Failed?: Array<{ Id?: string; Code?: string; Message?: string; SenderFault?: boolean }>;
    };
    try {
      const sqs = await loadSqs();
      const entries = items.map((item, i) => ({ Id: `e${i}`, ReceiptHandle: item.handle }));
      if (kind === 'delete') {
        const queueUrl = rest.join(' ');
        answer = await this.send(
          new sqs.DeleteMessageBatchCommand({ QueueUrl: queueUrl, Entries: entries }),
          this.options.requestTimeoutMs,
        );
      } else {
        const seconds = Number(rest[0]);
        const queueUrl = rest.slice(1).join(' ');
        answer = await this.send(
          new sqs.ChangeMessageVisibilityBatchCommand({
            QueueUrl: queueUrl,
            Entries: entries.map((e) => ({ ...e, VisibilityTimeout: seconds })),
          }),
          this.options.requestTimeoutMs,
        );
      }
    } catch (err) {
      const error = callError(kind === 'delete' ? 'DeleteMessageBatch' : 'ChangeMessageVisibilityBatch', err);
      for (const item of items) item.resolve(error);
      return;
    }
    const ok = new Set((answer?.Successful ?? []).map((e) => e.Id));
    const failed = new Map((answer?.Failed ?? []).map((e) => [e.Id, e]));
    items.forEach((item, i) => {
      const id = `e${i}`;
      const refused = failed.get(id);
      if (refused !== undefined) {
        item.resolve(
          new TransportError(
            refused.Code ?? 'refused',
            `SQS refused the entry: ${refused.Code ?? 'no code'}: ${refused.Message ?? ''}`,
            {
              details: { awsError: refused.Code, senderFault: refused.SenderFault },
            },
          ),
        );
      } else if (ok.has(id)) item.resolve(undefined);
      else
        item.resolve(new TransportError('no_answer', 'SQS answered the batch without a word on this entry'));
    });
  }

  /** Waits for every call under way (batches gathered are sent first). */
  async settle(): Promise<void> {
    if (this.#flushTimer !== undefined) {
      clearImmediate(this.#flushTimer);
      this.#flush();
    }
    while (this.#inFlight.size > 0) await Promise.allSettled([...this.#inFlight]);
  }

  /** The consumer stopped: destroys a client it built (never one it was given); calls fail until {@link reopen}. */
  destroy(): void {
    this.#stopped = true;
    if (this.#own) {
      this.#client?.destroy?.();
      this.#client = undefined;
    }
    this.#own = false;
  }
}

/** The region of an AWS queue URL (`https://sqs.<region>.amazonaws.com/…`), if it names one. */
function regionOfUrl(url: string): string | undefined {
  return /^https?:\/\/sqs[.-]([a-z]{2}(?:-[a-z0-9]+)+-\d+)\./i.exec(url)?.[1];
}

/** A failed call, as the error its entries get. */
function callError(call: string, err: unknown): TransportError {
  const code = awsErrorCode(err);
  return new TransportError(
    classifyAwsError(err) === 'unavailable' ? 'unavailable' : 'call_failed',
    `${call} failed: ${code}: ${err instanceof Error ? err.message : String(err)}`,
    { cause: err, details: { awsError: code } },
  );
}

/** The queue's own `RedrivePolicy`, when it has one. */
export interface RedrivePolicy {
  deadLetterTargetArn: string;
  maxReceiveCount: number;
}

/**
 * One session: the queue looked up (and the dead letters decided), the receive loop and the
 * heartbeat. Made by {@link openSession}.
 */
export class SqsConsumerSession {
  readonly #ended = new AbortController();
  /** Messages held (not deleted or released). */
  readonly deliveries = new Set<SqsDelivery>();
  #open = true;
  #polling = false;
  #loop: Promise<void> | undefined;
  #receive: AbortController | undefined;
  #heartbeat: ReturnType<typeof setInterval> | undefined;
  #wake: (() => void) | undefined;
  #onLost: ((error: Error) => void) | undefined;
  lostReason: Error | undefined;

  constructor(
    readonly queueUrl: string,
    /** Where dead letters are sent; undefined when the queue's redrive policy moves them. */
    readonly deadLetterQueueUrl: string | undefined,
    readonly redrive: RedrivePolicy | undefined,
    private readonly options: Readonly<ResolvedSqsConsumerOptions>,
    private readonly calls: SqsCalls,
    private readonly events: {
      deliver(delivery: SqsDelivery): void;
      visibilityLost(delivery: SqsDelivery, error: Error): void;
      releaseFailed(count: number, error: Error): void;
    },
  ) {}

  get open(): boolean {
    return this.#open;
  }

  /** Aborted when the session ends. */
  get ended(): AbortSignal {
    return this.#ended.signal;
  }

  /** Reports the loss to `lost` (at once when it happened already). */
  watch(lost: (error: Error) => void): void {
    if (this.lostReason !== undefined) lost(this.lostReason);
    else this.#onLost = lost;
  }

  /** Starts receiving and the heartbeat. */
  start(): void {
    this.#polling = true;
    this.#loop = this.#poll();
    const every = Math.max(100, Math.floor((this.options.visibilityTimeoutSeconds * 1000) / 3));
    this.#heartbeat = setInterval(() => this.#beat(), every);
  }

  /** The delivery was deleted or released: it no longer holds a prefetch slot nor gets a heartbeat. */
  finish(delivery: SqsDelivery): void {
    delivery.state = 'done';
    this.deliveries.delete(delivery);
    this.#wake?.();
  }

  /** Stops receiving: aborts a long poll under way (a message SQS hands out in it comes back after the visibility timeout). */
  async stopPolling(): Promise<void> {
    this.#polling = false;
    this.#receive?.abort();
    this.#wake?.();
    await this.#loop;
  }

  /** Ends the session after a failed receive; the consumer opens a new one. */
  lose(error: Error): void {
    if (!this.#open) return;
    this.lostReason = error;
    this.#end();
    this.#onLost?.(error);
  }

  /** Closes the session: stops receiving and the heartbeat, and makes the messages not yet started visible again. */
  async close(): Promise<void> {
    await this.stopPolling();
    this.#end();
    const queued = [...this.deliveries].filter((d) => d.state === 'queued');
    await this.release(queued);
  }

  /** Makes deliveries visible again at once (best effort: otherwise they come back after the visibility timeout). */
  async release(deliveries: readonly SqsDelivery[]): Promise<void> {
    const results = await Promise.all(
      deliveries.map(async (d) => {
        this.finish(d);
        return this.calls.changeVisibility(this.queueUrl, d.message.ReceiptHandle ?? '', 0);
      }),
    );
    const failed = results.filter((r): r is Error => r !== undefined);
    if (failed.length > 0 && failed[0] !== undefined) this.events.releaseFailed(failed.length, failed[0]);
  }

  #end(): void {
    this.#open = false;
    this.#polling = false;
    this.#receive?.abort();
    this.#wake?.();
    clearInterval(this.#heartbeat);
    this.#heartbeat = undefined;
    this.#ended.abort();
  }

  async #poll(): Promise<void> {
    const { ReceiveMessageCommand } = await loadSqs();
    const { prefetch, waitTimeSeconds, visibilityTimeoutSeconds, requestTimeoutMs } = this.options;
    while (this.#polling) {
      const room = prefetch - this.deliveries.size;
      if (room <= 0) {
        await new Promise<void>((resolve) => (this.#wake = resolve));
        this.#wake = undefined;
        continue;
      }
      const receive = new AbortController();
      this.#receive = receive;
      let messages: SqsMessage[];
      try {
        const answer = await this.calls.send<{ Messages?: SqsMessage[] }>(
          new ReceiveMessageCommand({
            QueueUrl: this.queueUrl,
            MaxNumberOfMessages: Math.min(10, room),
            WaitTimeSeconds: waitTimeSeconds,
            VisibilityTimeout: visibilityTimeoutSeconds,
            MessageSystemAttributeNames: ['ApproximateReceiveCount', 'MessageGroupId'],
            MessageAttributeNames: ['All'],
          }),
          waitTimeSeconds * 1000 + requestTimeoutMs,
          receive.signal,
        );
        messages = answer?.Messages ?? [];
      } catch (err) {
        if (!this.#polling) return;
        this.lose(receiveFailedError(this.options, err));
        return;
      } finally {
        this.#receive = undefined;
      }
      const received = messages.map((message): SqsDelivery => ({
        session: this,
        message,
        state: 'queued',
        expired: false,
      }));
      for (const delivery of received) this.deliveries.add(delivery);
      // Stopped meanwhile: close() makes them visible again.
      if (!this.#polling) return;
      for (const delivery of received) this.events.deliver(delivery);
    }
  }

  /** Extends the visibility of every message held. */
  #beat(): void {
    for (const delivery of this.deliveries) {
      if (delivery.expired) continue;
      void this.calls
        .changeVisibility(
          this.queueUrl,
          delivery.message.ReceiptHandle ?? '',
          this.options.visibilityTimeoutSeconds,
        )
        .then((error) => {
          if (error === undefined || delivery.state === 'done') return;
          if (isGone(error)) {
            delivery.expired = true;
            this.events.visibilityLost(delivery, error);
          }
          // A failed call is tried again at the next beat.
        });
    }
  }

  /** Sends a dead letter (confirmed: SQS answered with its message id); throws otherwise. */
  async sendDeadLetter(
    delivery: SqsDelivery,
    id: string | null,
    topic: string,
    why: DeadLetterReason,
  ): Promise<void> {
    const url = this.deadLetterQueueUrl;
    if (url === undefined) return;
    const { SendMessageCommand } = await loadSqs();
    const { message } = delivery;
    const input = deadLetterInput(message, url, this.options, id, topic, why);
    try {
      const answer = await this.calls.send<{ MessageId?: string }>(
        new SendMessageCommand(input),
        this.options.requestTimeoutMs,
      );
      if (typeof answer?.MessageId !== 'string') throw new Error('SendMessage answered without a MessageId');
    } catch (err) {
      throw new TransportError(
        'dead_letter_failed',
        `could not dead-letter message ${id ?? message.MessageId ?? '(no id)'} to ${this.options.deadLetterQueue.safe}: ` +
          `${awsErrorCode(err)}: ${err instanceof Error ? err.message : String(err)}; the message stays in the queue ` +
          'and is dead-lettered again after a pause (or received again, if the consumer stops)',
        { cause: err, details: { deadLetterQueue: this.options.deadLetterQueue.safe } },
      );
    }
  }
}

/** The `SendMessage` input of a dead letter: the body and attributes as they came, plus `mailroom-dead`. */
export function deadLetterInput(
  message: SqsMessage,
  deadLetterQueueUrl: string,
  options: Readonly<ResolvedSqsConsumerOptions>,
  id: string | null,
  topic: string,
  why: DeadLetterReason,
): SqsSdk.SendMessageRequest {
  const kept: Record<string, SqsSdk.MessageAttributeValue> = {};
  const overflow: Record<string, string> = {};
  const names = Object.keys(message.MessageAttributes ?? {})
    .filter((n) => n !== DEAD_ATTRIBUTE)
    .sort(
      (a, b) =>
        Number(b.startsWith('mailroom-') || b === 'content-type') -
        Number(a.startsWith('mailroom-') || a === 'content-type'),
    );
  for (const name of names) {
    const value = message.MessageAttributes?.[name];
    if (value === undefined) continue;
    if (Object.keys(kept).length < MAX_ATTRIBUTES - 1) {
      kept[name] = {
        DataType: value.DataType ?? 'String',
        ...(value.StringValue === undefined ? {} : { StringValue: value.StringValue }),
        ...(value.BinaryValue === undefined ? {} : { BinaryValue: value.BinaryValue }),
      };
    } else {
      overflow[name] =
        value.StringValue ?? (value.BinaryValue ? Buffer.from(value.BinaryValue).toString('base64') : '');
    }
  }
  const dead = {
    reason: why.reason,
    error: why.error.message.slice(0, MAX_ERROR_CHARS),
    failedAttempts: why.failedAttempts,
    deadAt: new Date().toISOString(),
    queue: options.queue.name,
    topic,
    id,
    sqsMessageId: message.MessageId ?? null,
    receiveCount: Number(message.Attributes?.ApproximateReceiveCount ?? 0),
    ...(Object.keys(overflow).length > 0 ? { attributes: overflow } : {}),
  };
  kept[DEAD_ATTRIBUTE] = { DataType: 'String', StringValue: JSON.stringify(dead) };
  const input: SqsSdk.SendMessageRequest = {
    QueueUrl: deadLetterQueueUrl,
    // SQS wants at least one character; a received body always has one.
    MessageBody: message.Body === undefined || message.Body === '' ? '-' : message.Body,
    MessageAttributes: kept,
  };
  if (options.fifo) {
    input.MessageGroupId = message.Attributes?.MessageGroupId ?? id ?? message.MessageId ?? 'mailroom-dead';
    // A second copy of the same dead letter (sent again after a lost answer) is dropped by SQS.
    input.MessageDeduplicationId = message.MessageId ?? id ?? undefined;
  }
  return input;
}

/** A `ReceiveMessage` failed: the session ends, and the core reconnects with backoff. */
function receiveFailedError(options: Readonly<ResolvedSqsConsumerOptions>, err: unknown): TransportError {
  const code = awsErrorCode(err);
  const kind = classifyAwsError(err);
  return new TransportError(
    'connection_lost',
    `ReceiveMessage from ${options.safeUrl} failed (${kind === 'missing' ? 'the queue does not exist' : kind}): ` +
      `${code}: ${err instanceof Error ? err.message : String(err)}; receiving again after a pause`,
    { cause: err, details: { url: options.safeUrl, awsError: code } },
  );
}

/** The queue URL of a queue option: as given, or from `GetQueueUrl`. */
async function queueUrlOf(calls: SqsCalls, ref: QueueRef, timeoutMs: number): Promise<string> {
  if (ref.kind === 'url') return ref.url;
  const { GetQueueUrlCommand } = await loadSqs();
  const answer = await calls.send<{ QueueUrl?: string }>(
    new GetQueueUrlCommand({
      QueueName: ref.name,
      ...(ref.account === undefined ? {} : { QueueOwnerAWSAccountId: ref.account }),
    }),
    timeoutMs,
  );
  if (typeof answer?.QueueUrl !== 'string')
    throw new Error(`GetQueueUrl for ${ref.name} returned no QueueUrl`);
  return answer.QueueUrl;
}

/**
 * Opens a session: looks the queue up, reads its redrive policy (unless `deadLetters: 'queue'`),
 * looks the dead-letter queue up when the consumer sends dead letters itself, and starts
 * receiving. Throws a `TransportError`: `unreachable`, `destination_missing`, `redrive_missing`.
 */
export async function openSession(
  options: Readonly<ResolvedSqsConsumerOptions>,
  calls: SqsCalls,
  events: ConstructorParameters<typeof SqsConsumerSession>[5],
  warn: (text: string, fields: Record<string, unknown>) => void,
): Promise<SqsConsumerSession> {
  const { connectTimeoutMs, safeUrl } = options;
  const fail = (err: unknown, ref: QueueRef): never => {
    if (err instanceof TransportError || err instanceof ConfigError) throw err;
    if (classifyAwsError(err) === 'missing') throw probeFailedError('sqs', safeUrl, err, ref.safe);
    throw probeFailedError('sqs', safeUrl, err);
  };
  const queueUrl = await queueUrlOf(calls, options.queue, connectTimeoutMs).catch((err: unknown) =>
    fail(err, options.queue),
  );
  let redrive: RedrivePolicy | undefined;
  if (options.deadLetters !== 'queue') {
    const { GetQueueAttributesCommand } = await loadSqs();
    try {
      const answer = await calls.send<{ Attributes?: Record<string, string> }>(
        new GetQueueAttributesCommand({ QueueUrl: queueUrl, AttributeNames: ['RedrivePolicy'] }),
        connectTimeoutMs,
      );
      redrive = parseRedrivePolicy(answer?.Attributes?.['RedrivePolicy']);
    } catch (err) {
      // A policy refusing GetQueueAttributes: in `auto`, the consumer sends dead letters itself.
      if (options.deadLetters === 'redrive' || classifyAwsError(err) !== 'permanent')
        fail(err, options.queue);
      warn("GetQueueAttributes refused; dead letters go to deadLetterQueueUrl (deadLetters: 'queue')", {
        url: safeUrl,
        error: awsErrorCode(err),
      });
    }
    if (options.deadLetters === 'redrive' && redrive === undefined) {
      throw new TransportError(
        'redrive_missing',
        `SQS queue ${safeUrl} has no RedrivePolicy, which deadLetters: 'redrive' leaves dead letters to; ` +
          "give the queue one (a dead-letter queue and maxReceiveCount), or use deadLetters: 'queue'",
        { details: { url: safeUrl } },
      );
    }
  }
  let deadLetterQueueUrl: string | undefined;
  if (redrive === undefined) {
    const ref = options.deadLetterQueue;
    deadLetterQueueUrl = await queueUrlOf(calls, ref, connectTimeoutMs).catch((err: unknown) =>
      fail(err, ref),
    );
  }
  const session = new SqsConsumerSession(queueUrl, deadLetterQueueUrl, redrive, options, calls, events);
  session.start();
  return session;
}

function parseRedrivePolicy(text: string | undefined): RedrivePolicy | undefined {
  if (text === undefined || text === '') return undefined;
  try {
    const policy = JSON.parse(text) as { deadLetterTargetArn?: unknown; maxReceiveCount?: unknown };
    const max = Number(policy.maxReceiveCount);
    if (typeof policy.deadLetterTargetArn !== 'string' || !Number.isInteger(max) || max < 1) return undefined;
    return { deadLetterTargetArn: policy.deadLetterTargetArn, maxReceiveCount: max };
  } catch {
    return undefined;
  }
}
