// A fake Amazon SQS endpoint for tests: an HTTP server speaking the JSON protocol (AmazonSQS.*
// targets) the AWS SDK v3 uses, with enough of SQS's behaviour for a consumer: long polling,
// visibility timeouts, receive counts, receipt handles, FIFO groups (a group with a message in
// flight hands out no other) and deduplication, redrive policies (a message received more than
// maxReceiveCount times moves to the dead-letter queue), and faults to inject. No SQS endpoint
// (nor LocalStack or ElasticMQ) runs on this machine or in this project's CI.
import { createHash, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

type Attribute = { DataType: string; StringValue?: string; BinaryValue?: string };

interface FakeMessage {
  messageId: string;
  body: string;
  attributes: Record<string, Attribute>;
  groupId: string | undefined;
  receiveCount: number;
  /** Epoch ms from which it can be received. */
  visibleAt: number;
  /** The handle of its latest receive; older ones no longer change its visibility. */
  handle: string | undefined;
  /** Every handle it was received with: any of them deletes it, as SQS's may. */
  handles: Set<string>;
}

interface FakeQueue {
  name: string;
  fifo: boolean;
  visibilityTimeout: number;
  redrive: { target: string; maxReceiveCount: number } | undefined;
  messages: FakeMessage[];
  /** FIFO: deduplication ids seen, with when. */
  dedup: Map<string, number>;
}

/** An error the fake answers a call with. */
export interface FakeFault {
  status: number;
  type: string;
  message?: string;
}

const ACCOUNT = '000000000000';
const REGION = 'eu-west-1';

export const md5 = (text: string): string => createHash('md5').update(text, 'utf8').digest('hex');

export class FakeSqs {
  readonly queues = new Map<string, FakeQueue>();
  /** Every call, by operation name. */
  readonly calls: Array<{ op: string; body: Record<string, unknown> }> = [];
  /** Whole-call faults to answer the next calls of an operation with. */
  readonly #faults = new Map<string, FakeFault[]>();
  /** Entries of batch operations to refuse next, by operation. */
  readonly #refusals = new Map<string, number>();
  readonly #waiters = new Set<() => void>();
  #closed = false;

  private constructor(
    readonly server: Server,
    readonly url: string,
  ) {}

  static async start(): Promise<FakeSqs> {
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    const fake = new FakeSqs(server, `http://127.0.0.1:${port}`);
    server.on('request', (req, res) => void fake.#serve(req, res));
    return fake;
  }

  /** The next `times` calls of `op` (e.g. 'ReceiveMessage') fail with `fault`. */
  fail(op: string, fault: FakeFault, times = 1): void {
    const list = this.#faults.get(op) ?? [];
    for (let i = 0; i < times; i++) list.push(fault);
    this.#faults.set(op, list);
  }

  /** The next `entries` entries of batch operation `op` are refused (per-entry failure). */
  refuseEntries(op: string, entries: number): void {
    this.#refusals.set(op, (this.#refusals.get(op) ?? 0) + entries);
  }

  /** Messages in `name` (visible or not), oldest first. */
  messages(name: string): FakeMessage[] {
    return this.queues.get(name)?.messages ?? [];
  }

  /** Calls of `op` so far. */
  count(op: string): number {
    return this.calls.filter((c) => c.op === op).length;
  }

  async close(): Promise<void> {
    this.#closed = true;
    for (const wake of this.#waiters) wake();
    this.server.closeAllConnections();
    await new Promise((resolve) => this.server.close(resolve));
  }

  async #serve(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const body = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}') as Record<string, unknown>;
    const op = String(req.headers['x-amz-target'] ?? '').replace(/^AmazonSQS\./, '');
    this.calls.push({ op, body });
    res.setHeader('content-type', 'application/x-amz-json-1.0');
    const fault = this.#faults.get(op)?.shift();
    if (fault !== undefined)
      return this.#error(res, fault.status, fault.type, fault.message ?? `${fault.type} (injected)`);
    try {
      const answer = await this.#answer(op, body, String(req.headers.host), res);
      if (answer === undefined || res.destroyed) return;
      res.end(JSON.stringify(answer));
    } catch (err) {
      const e = err as FakeFault;
      this.#error(res, e.status ?? 400, e.type ?? 'InvalidParameterValue', e.message ?? String(err));
    }
  }

  #error(res: ServerResponse, status: number, type: string, message: string): void {
    if (res.destroyed) return;
    res.statusCode = status;
    if (type === 'QueueDoesNotExist')
      res.setHeader('x-amzn-query-error', 'AWS.SimpleQueueService.NonExistentQueue;Sender');
    res.end(JSON.stringify({ __type: `com.amazonaws.sqs#${type}`, message }));
  }

  #queue(body: Record<string, unknown>): FakeQueue {
    const url = String(body['QueueUrl'] ?? '');
    const name = url.split('/').at(-1) ?? '';
    const queue = this.queues.get(name);
    if (queue === undefined)
      throw { status: 400, type: 'QueueDoesNotExist', message: 'The specified queue does not exist.' };
    return queue;
  }

  #refuse(op: string): boolean {
    const left = this.#refusals.get(op) ?? 0;
    if (left <= 0) return false;
    this.#refusals.set(op, left - 1);
    return true;
  }

  async #answer(
    op: string,
    body: Record<string, unknown>,
    host: string,
    res: ServerResponse,
  ): Promise<unknown> {
    const urlOf = (name: string) => `http://${host}/${ACCOUNT}/${name}`;
    switch (op) {
      case 'CreateQueue': {
        const name = String(body['QueueName']);
        const attributes = (body['Attributes'] ?? {}) as Record<string, string>;
        if (!this.queues.has(name)) {
          const redrive = attributes['RedrivePolicy']
            ? (JSON.parse(attributes['RedrivePolicy']) as {
                deadLetterTargetArn: string;
                maxReceiveCount: number;
              })
            : undefined;
          this.queues.set(name, {
            name,
            fifo: name.endsWith('.fifo'),
            visibilityTimeout: Number(attributes['VisibilityTimeout'] ?? 30),
            redrive: redrive && {
              target: redrive.deadLetterTargetArn.split(':').at(-1) ?? '',
              maxReceiveCount: Number(redrive.maxReceiveCount),
            },
            messages: [],
            dedup: new Map(),
          });
        }
        return { QueueUrl: urlOf(name) };
      }
      case 'DeleteQueue':
        this.queues.delete(this.#queue(body).name);
        return {};
      case 'GetQueueUrl': {
        const name = String(body['QueueName']);
        if (!this.queues.has(name))
          throw { status: 400, type: 'QueueDoesNotExist', message: 'The specified queue does not exist.' };
        return { QueueUrl: urlOf(name) };
      }
      case 'GetQueueAttributes': {
        const queue = this.#queue(body);
        const now = Date.now();
        const all: Record<string, string> = {
          QueueArn: `arn:aws:sqs:${REGION}:${ACCOUNT}:${queue.name}`,
          VisibilityTimeout: String(queue.visibilityTimeout),
          ApproximateNumberOfMessages: String(queue.messages.filter((m) => m.visibleAt <= now).length),
          ApproximateNumberOfMessagesNotVisible: String(
            queue.messages.filter((m) => m.visibleAt > now).length,
          ),
        };
        if (queue.redrive) {
          all['RedrivePolicy'] = JSON.stringify({
            deadLetterTargetArn: `arn:aws:sqs:${REGION}:${ACCOUNT}:${queue.redrive.target}`,
            maxReceiveCount: queue.redrive.maxReceiveCount,
          });
        }
        const names = (body['AttributeNames'] ?? []) as string[];
        const wanted = names.includes('All') ? Object.keys(all) : names;
        return { Attributes: Object.fromEntries(wanted.filter((n) => n in all).map((n) => [n, all[n]])) };
      }
      case 'SendMessage': {
        const queue = this.#queue(body);
        const id = this.#enqueue(queue, body);
        return { MessageId: id, MD5OfMessageBody: md5(String(body['MessageBody'])) };
      }
      case 'SendMessageBatch': {
        const queue = this.#queue(body);
        const entries = body['Entries'] as Array<Record<string, unknown>>;
        const Successful: unknown[] = [];
        const Failed: unknown[] = [];
        for (const entry of entries) {
          if (this.#refuse(op)) {
            Failed.push({
              Id: entry['Id'],
              SenderFault: false,
              Code: 'InternalError',
              Message: 'refused by the fake',
            });
            continue;
          }
          const id = this.#enqueue(queue, entry);
          Successful.push({
            Id: entry['Id'],
            MessageId: id,
            MD5OfMessageBody: md5(String(entry['MessageBody'])),
          });
        }
        return { Successful, Failed };
      }
      case 'ReceiveMessage':
        return this.#receive(this.#queue(body), body, res);
      case 'DeleteMessage': {
        const queue = this.#queue(body);
        this.#delete(queue, String(body['ReceiptHandle']));
        return {};
      }
      case 'DeleteMessageBatch':
      case 'ChangeMessageVisibilityBatch': {
        const queue = this.#queue(body);
        const entries = body['Entries'] as Array<Record<string, unknown>>;
        const Successful: unknown[] = [];
        const Failed: unknown[] = [];
        for (const entry of entries) {
          if (this.#refuse(op)) {
            Failed.push({
              Id: entry['Id'],
              SenderFault: false,
              Code: 'InternalError',
              Message: 'refused by the fake',
            });
            continue;
          }
          try {
            if (op === 'DeleteMessageBatch') this.#delete(queue, String(entry['ReceiptHandle']));
            else
              this.#changeVisibility(
                queue,
                String(entry['ReceiptHandle']),
                Number(entry['VisibilityTimeout']),
              );
            Successful.push({ Id: entry['Id'] });
          } catch (err) {
            const e = err as FakeFault;
            Failed.push({ Id: entry['Id'], SenderFault: true, Code: e.type, Message: e.message });
          }
        }
        return { Successful, Failed };
      }
      case 'ChangeMessageVisibility':
        this.#changeVisibility(
          this.#queue(body),
          String(body['ReceiptHandle']),
          Number(body['VisibilityTimeout']),
        );
        return {};
      default:
        throw { status: 400, type: 'InvalidAction', message: `the fake does not know ${op}` };
    }
  }

  #enqueue(queue: FakeQueue, entry: Record<string, unknown>): string {
    const dedupId = entry['MessageDeduplicationId'] as string | undefined;
    const now = Date.now();
    if (queue.fifo) {
      if (entry['MessageGroupId'] === undefined)
        throw {
          status: 400,
          type: 'MissingParameter',
          message: 'MessageGroupId is required for FIFO queues',
        };
      if (dedupId !== undefined) {
        const seen = queue.dedup.get(dedupId);
        if (seen !== undefined && now - seen < 300_000) return randomUUID(); // dropped, as SQS does
        queue.dedup.set(dedupId, now);
      }
    }
    const messageId = randomUUID();
    queue.messages.push({
      messageId,
      body: String(entry['MessageBody']),
      attributes: (entry['MessageAttributes'] ?? {}) as Record<string, Attribute>,
      groupId: entry['MessageGroupId'] as string | undefined,
      receiveCount: 0,
      visibleAt: now,
      handle: undefined,
      handles: new Set(),
    });
    for (const wake of this.#waiters) wake();
    return messageId;
  }

  /** Messages that can be received now (FIFO: the first of each group, when none of it is in flight). */
  #available(queue: FakeQueue, max: number): FakeMessage[] {
    const now = Date.now();
    const out: FakeMessage[] = [];
    const blocked = new Set<string>();
    for (const m of queue.messages) {
      if (out.length >= max) break;
      if (queue.fifo && m.groupId !== undefined) {
        if (blocked.has(m.groupId)) continue;
        if (m.visibleAt > now) {
          blocked.add(m.groupId);
          continue;
        }
      } else if (m.visibleAt > now) continue;
      out.push(m);
    }
    return out;
  }

  async #receive(queue: FakeQueue, body: Record<string, unknown>, res: ServerResponse): Promise<unknown> {
    const max = Number(body['MaxNumberOfMessages'] ?? 1);
    if (!(max >= 1 && max <= 10))
      throw { status: 400, type: 'InvalidParameterValue', message: `MaxNumberOfMessages ${max}` };
    const wait = Number(body['WaitTimeSeconds'] ?? 0);
    const visibility = Number(body['VisibilityTimeout'] ?? queue.visibilityTimeout);
    const until = Date.now() + wait * 1000;
    let gone = false;
    let wakeNow: (() => void) | undefined;
    res.once('close', () => {
      gone = true;
      wakeNow?.();
    });
    for (;;) {
      if (gone || res.destroyed || this.#closed) return undefined;
      // Redrive: a message received maxReceiveCount times already moves instead of being received.
      if (queue.redrive) {
        const target = this.queues.get(queue.redrive.target);
        for (const m of this.#available(queue, Number.MAX_SAFE_INTEGER)) {
          if (target && m.receiveCount >= queue.redrive.maxReceiveCount) {
            queue.messages.splice(queue.messages.indexOf(m), 1);
            target.messages.push({
              ...m,
              receiveCount: 0,
              visibleAt: Date.now(),
              handle: undefined,
              handles: new Set(),
            });
          }
        }
      }
      const found = this.#available(queue, max);
      if (found.length > 0 || Date.now() >= until) {
        const now = Date.now();
        return {
          Messages: found.map((m) => {
            m.receiveCount++;
            m.visibleAt = now + visibility * 1000;
            m.handle = randomUUID();
            m.handles.add(m.handle);
            return {
              MessageId: m.messageId,
              ReceiptHandle: m.handle,
              MD5OfBody: md5(m.body),
              Body: m.body,
              Attributes: {
                ApproximateReceiveCount: String(m.receiveCount),
                ...(m.groupId === undefined ? {} : { MessageGroupId: m.groupId }),
              },
              MessageAttributes: m.attributes,
            };
          }),
        };
      }
      await new Promise<void>((resolve) => {
        const wake = () => {
          clearTimeout(timer);
          this.#waiters.delete(wake);
          wakeNow = undefined;
          resolve();
        };
        const timer = setTimeout(wake, Math.max(1, Math.min(20, until - Date.now())));
        this.#waiters.add(wake);
        wakeNow = wake;
      });
    }
  }

  #find(queue: FakeQueue, handle: string): FakeMessage {
    const message = queue.messages.find((m) => m.handles.has(handle));
    if (message === undefined)
      throw { status: 400, type: 'ReceiptHandleIsInvalid', message: `receipt handle ${handle} is not valid` };
    return message;
  }

  #delete(queue: FakeQueue, handle: string): void {
    const message = queue.messages.find((m) => m.handles.has(handle));
    // SQS answers success for a message already deleted.
    if (message !== undefined) queue.messages.splice(queue.messages.indexOf(message), 1);
  }

  #changeVisibility(queue: FakeQueue, handle: string, seconds: number): void {
    const message = this.#find(queue, handle);
    if (message.handle !== handle || message.visibleAt <= Date.now())
      throw { status: 400, type: 'MessageNotInflight', message: 'the message is not in flight' };
    message.visibleAt = Date.now() + seconds * 1000;
    for (const wake of this.#waiters) wake();
  }
}
