/**
 * What the SNS and SQS transports share: messages mapped to entries, grouped by queue or topic,
 * sent in batches of at most 10 (and at most `maxMessageBytes`), each entry's answer mapped back
 * to its message; outages, timeouts and `close()` handled once. The subclasses say how to find a
 * queue or topic, how to send a batch and how to probe.
 *
 * @module
 */
import { isTransportError } from '../../core/errors/transport-error.js';
import type { PublishOptions, PublishOutcome, Transport } from '../../core/ports.js';
import type { OutboxMessage } from '../../core/types.js';
import type { AwsBatchAnswer, AwsClientLike } from './aws-client.js';
import {
  callFailedError,
  classifyAwsError,
  classifyFailedEntry,
  closedError,
  entryFailedError,
  invalidNameError,
  noAnswerError,
  probeFailedError,
  publishTimeoutError,
  type AwsErrorClass,
} from './aws-errors.js';
import { awsNameFor, awsNameProblem, type ResolvedAwsTransportOptions } from './aws-options.js';
import { chunkEntries, entryOf, type AwsEntry } from './aws-wire.js';

const noop = (): void => {};

/** An entry with the message it came from and its place in the call. */
export interface PreparedEntry {
  index: number;
  message: OutboxMessage;
  entry: AwsEntry;
}

/** The batch entry id of the `i`th entry of a batch (unique within it, as AWS wants). */
export function entryId(i: number): string {
  return `m${i}`;
}

/** The base of {@link SqsTransport} and {@link SnsTransport}. */
export abstract class AwsTransport implements Transport {
  abstract readonly name: string;
  /**
   * False: a batch's entries are taken or refused one by one (a FIFO queue may take a group's
   * later entry after refusing an earlier one), and standard queues and topics do not keep order
   * at all. The relay then sends one message per key per batch, which keeps a key's order on
   * FIFO queues and topics.
   */
  readonly ordering = false;
  protected readonly options: Readonly<ResolvedAwsTransportOptions>;
  protected readonly service: 'sqs' | 'sns';
  #client: AwsClientLike | undefined;
  #ownClient = false;
  #building: Promise<AwsClientLike> | undefined;
  /** Queue URLs or topic ARNs by name; a failed lookup is not kept. */
  readonly #destinations = new Map<string, Promise<string>>();
  #closed = false;
  #closing: Promise<void> | undefined;
  readonly #inFlight = new Set<Promise<unknown>>();

  protected constructor(options: Readonly<ResolvedAwsTransportOptions>, service: 'sqs' | 'sns') {
    this.options = options;
    this.service = service;
    this.#client = options.client;
  }

  /** Builds the SDK client (the SDK package is loaded here, on first use). */
  protected abstract createClient(): Promise<AwsClientLike>;
  /** The queue URL or topic ARN of a queue or topic name. */
  protected abstract lookUp(
    client: AwsClientLike,
    name: string,
    signal: AbortSignal | undefined,
  ): Promise<string>;
  /** Sends one batch (at most 10 entries, ids from {@link entryId}). */
  protected abstract sendBatch(
    client: AwsClientLike,
    destination: string,
    entries: readonly AwsEntry[],
    signal: AbortSignal,
  ): Promise<AwsBatchAnswer>;
  /** A cheap call that proves the service answers to these credentials; throws a TransportError. */
  protected abstract probeCall(client: AwsClientLike, signal: AbortSignal | undefined): Promise<void>;

  /** The redacted URL, for messages. */
  protected get where(): string {
    return this.options.destination.safeUrl;
  }

  /** The client, built on first use unless one was given (once, also for concurrent calls). */
  protected async client(): Promise<AwsClientLike> {
    if (this.#client !== undefined) return this.#client;
    this.#building ??= this.createClient().finally(() => (this.#building = undefined));
    const client = await this.#building;
    if (this.#client === undefined) {
      this.#client = client;
      this.#ownClient = true;
    }
    return this.#client;
  }

  /** Looks a name up once (per open transport); lookups that fail are tried again next time. */
  protected destinationOf(
    client: AwsClientLike,
    name: string,
    signal: AbortSignal | undefined,
  ): Promise<string> {
    let found = this.#destinations.get(name);
    if (found === undefined) {
      found = this.lookUp(client, name, signal);
      this.#destinations.set(name, found);
      found.catch(() => {
        if (this.#destinations.get(name) === found) this.#destinations.delete(name);
      });
    }
    return found;
  }

  /** Builds the client when needed and probes. Idempotent; reopens a closed transport. */
  async start(): Promise<void> {
    if (this.#closing) {
      await this.#closing;
      this.#closing = undefined;
      this.#closed = false;
    }
    await this.probe();
  }

  /**
   * Resolves when the service answers to these credentials (and, for a URL without `{topic}`,
   * the queue or topic exists). Throws a TransportError: `unreachable`, `destination_missing`,
   * `region_missing`, `closed`, `probe_aborted`.
   */
  async probe(options: PublishOptions = {}): Promise<void> {
    if (this.#closed) throw closedError(this.service, this.where);
    const { signal } = options;
    if (signal?.aborted)
      throw probeFailedError(this.service, this.where, { name: 'probe_aborted', message: 'aborted' });
    try {
      await this.probeCall(await this.client(), signal);
    } catch (err) {
      throw isTransportError(err) ? err : probeFailedError(this.service, this.where, err);
    }
  }

  /**
   * Sends the messages in batches of up to 10 per queue or topic (queues and topics at once, a
   * queue's batches one after another) and maps each entry's answer to its message. Never
   * throws; one outcome per message, in order.
   */
  publish(messages: readonly OutboxMessage[], options: PublishOptions = {}): Promise<PublishOutcome[]> {
    if (messages.length === 0) return Promise.resolve([]);
    const call = this.#publish(messages, options.signal);
    this.#inFlight.add(call);
    void call.finally(() => this.#inFlight.delete(call));
    return call;
  }

  /**
   * Waits up to `closeTimeoutMs` for publish calls in flight, then destroys the client the
   * transport built (a given one is left alone). Idempotent.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#closed = true;
      if (this.#inFlight.size > 0) {
        let timer: ReturnType<typeof setTimeout> | undefined;
        await Promise.race([
          Promise.allSettled([...this.#inFlight]),
          new Promise<void>((resolve) => (timer = setTimeout(resolve, this.options.closeTimeoutMs))),
        ]);
        clearTimeout(timer);
      }
      this.#destinations.clear();
      if (this.#ownClient) {
        this.#client?.destroy?.();
        this.#client = undefined;
        this.#ownClient = false;
      }
    })();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  async #publish(
    messages: readonly OutboxMessage[],
    signal: AbortSignal | undefined,
  ): Promise<PublishOutcome[]> {
    const { service, where } = this;
    if (this.#closed) {
      const error = closedError(service, where);
      return messages.map(() => ({ status: 'unavailable', error }));
    }
    const outcomes = new Array<PublishOutcome>(messages.length);
    const groups = new Map<string, PreparedEntry[]>();
    for (const [index, message] of messages.entries()) {
      const name = awsNameFor(this.options.destination.nameTemplate, message.topic);
      const problem = awsNameProblem(service, name);
      if (problem !== undefined) {
        outcomes[index] = { status: 'permanent', error: invalidNameError(service, message, name, problem) };
        continue;
      }
      const mapped = entryOf(message, {
        fifo: name.endsWith('.fifo'),
        keylessGroupId: this.options.keylessGroupId,
        maxMessageBytes: this.options.maxMessageBytes,
      });
      if ('error' in mapped) {
        outcomes[index] = { status: 'permanent', error: mapped.error };
        continue;
      }
      const group = groups.get(name);
      const prepared = { index, message, entry: mapped.entry };
      if (group) group.push(prepared);
      else groups.set(name, [prepared]);
    }
    if (groups.size === 0) return outcomes;

    const deadline = new AbortController();
    const timer = setTimeout(() => deadline.abort(), this.options.publishTimeoutMs);
    const stop = signal ? AbortSignal.any([signal, deadline.signal]) : deadline.signal;
    const timedOut = (p: PreparedEntry): PublishOutcome => ({
      status: 'unavailable',
      error: publishTimeoutError(
        service,
        where,
        p.message,
        signal?.aborted ? 'aborted' : 'timeout',
        this.options.publishTimeoutMs,
      ),
    });
    const set = (p: PreparedEntry, outcome: PublishOutcome) => (outcomes[p.index] = outcome);
    try {
      let client: AwsClientLike;
      try {
        client = await this.client();
      } catch (err) {
        const error = probeFailedError(service, where, err);
        for (const group of groups.values()) for (const p of group) set(p, { status: 'unavailable', error });
        return outcomes;
      }
      // An outage seen by one queue's batch ends every queue's remaining batches.
      const outage: { error?: unknown } = {};
      await Promise.all(
        [...groups].map(([name, group]) =>
          this.#publishGroup(client, name, group, stop, outage, timedOut, set),
        ),
      );
    } finally {
      clearTimeout(timer);
    }
    return outcomes;
  }

  /** One queue's or topic's messages: look it up, then its batches in order. */
  async #publishGroup(
    client: AwsClientLike,
    name: string,
    group: PreparedEntry[],
    stop: AbortSignal,
    outage: { error?: unknown },
    timedOut: (p: PreparedEntry) => PublishOutcome,
    set: (p: PreparedEntry, outcome: PublishOutcome) => void,
  ): Promise<void> {
    const fail = (entries: readonly PreparedEntry[], err: unknown, kind: AwsErrorClass) => {
      for (const p of entries) {
        const error = callFailedError(this.service, this.where, p.message, name, err, kind);
        set(p, { status: kind === 'missing' ? 'retry' : kind, error });
      }
    };
    let destination: string;
    try {
      const looking = this.destinationOf(client, name, stop);
      looking.catch(noop);
      if (!(await settledBefore(looking, stop))) {
        group.forEach((p) => set(p, timedOut(p)));
        return;
      }
      destination = await looking;
    } catch (err) {
      const kind = classifyAwsError(err);
      if (kind === 'unavailable') outage.error = err;
      fail(group, err, kind);
      return;
    }
    const chunks = chunkEntries(
      group.map((p) => p.entry.size),
      this.options.maxMessageBytes,
    ).map((indices) => indices.map((i) => group[i] as PreparedEntry));
    for (const [c, chunk] of chunks.entries()) {
      const rest = chunks.slice(c).flat();
      if (stop.aborted) {
        rest.forEach((p) => set(p, timedOut(p)));
        return;
      }
      if (outage.error !== undefined) {
        fail(rest, outage.error, 'unavailable');
        return;
      }
      const result = await this.#sendChunk(client, destination, chunk, stop);
      if (result === 'stopped') {
        rest.forEach((p) => set(p, timedOut(p)));
        return;
      }
      if ('answer' in result) {
        this.#mapAnswer(name, chunk, result.answer, set);
        continue;
      }
      const kind = classifyAwsError(result.error);
      if (kind === 'unavailable') {
        outage.error = result.error;
        fail(rest, result.error, kind);
        return;
      }
      if (kind === 'missing') {
        // Deleted since it was looked up: forget the URL, and let the relay try again later.
        this.#destinations.delete(name);
        fail(rest, result.error, kind);
        return;
      }
      if (kind === 'permanent' && chunk.length > 1) {
        // A refusal of the whole call (a 4xx) names no entry: send each alone, so that only the
        // message at fault is refused.
        for (const p of chunk) {
          if (stop.aborted) {
            set(p, timedOut(p));
            continue;
          }
          const single = await this.#sendChunk(client, destination, [p], stop);
          if (single === 'stopped') set(p, timedOut(p));
          else if ('answer' in single) this.#mapAnswer(name, [p], single.answer, set);
          else fail([p], single.error, classifyAwsError(single.error));
        }
        continue;
      }
      fail(chunk, result.error, kind);
    }
  }

  async #sendChunk(
    client: AwsClientLike,
    destination: string,
    chunk: readonly PreparedEntry[],
    stop: AbortSignal,
  ): Promise<'stopped' | { answer: AwsBatchAnswer } | { error: unknown }> {
    let sending: Promise<AwsBatchAnswer>;
    try {
      sending = this.sendBatch(
        client,
        destination,
        chunk.map((p) => p.entry),
        stop,
      );
    } catch (err) {
      return { error: err };
    }
    sending.catch(noop);
    if (!(await settledBefore(sending, stop))) return 'stopped';
    try {
      return { answer: await sending };
    } catch (err) {
      return stop.aborted ? 'stopped' : { error: err };
    }
  }

  /** Each entry's outcome from a batch answer, by entry id. */
  #mapAnswer(
    name: string,
    chunk: readonly PreparedEntry[],
    answer: AwsBatchAnswer,
    set: (p: PreparedEntry, outcome: PublishOutcome) => void,
  ): void {
    const taken = new Set((answer.Successful ?? []).map((s) => s.Id));
    const refused = new Map((answer.Failed ?? []).map((f) => [f.Id, f]));
    chunk.forEach((p, i) => {
      const id = entryId(i);
      const failure = refused.get(id);
      if (failure !== undefined) {
        const kind = classifyFailedEntry(failure);
        set(p, { status: kind, error: entryFailedError(this.service, p.message, name, failure, kind) });
      } else if (taken.has(id)) {
        set(p, { status: 'ok' });
      } else {
        set(p, { status: 'retry', error: noAnswerError(this.service, p.message, name) });
      }
    });
  }
}

/** True when `promise` settled (either way) before `signal` aborted; false otherwise. Never rejects. */
export function settledBefore(promise: Promise<unknown>, signal: AbortSignal): Promise<boolean> {
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
