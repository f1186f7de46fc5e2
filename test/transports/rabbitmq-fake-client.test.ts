// The RabbitMQ transport against a scripted client, for what a real broker will not do on cue:
// withhold confirms, fill the write buffer, emit errors, fail to connect in a set pattern, block
// publishers, close a channel with an exception, leave a close unanswered.
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { describe, it } from 'node:test';

import { isPermanentDeliveryError } from '../../src/core/errors/permanent-delivery-error.js';
import { isTransportError } from '../../src/core/errors/transport-error.js';
import type { PublishOutcome } from '../../src/core/ports.js';
import { testMessage } from '../../src/testkit/transport-conformance.js';
import {
  RabbitMqTransport,
  type AmqpConfirmChannel,
  type AmqpConnection,
  type AmqpPublishOptions,
  type AmqpReturnedMessage,
  type RabbitMqTransportOptions,
} from '../../src/transports/rabbitmq/index.js';

interface Sent {
  routingKey: string;
  content: Buffer;
  options: AmqpPublishOptions;
  callback: (err: unknown) => void;
}

class FakeChannel extends EventEmitter implements AmqpConfirmChannel {
  sent: Sent[] = [];
  /** publish() returns false on these send numbers (1-based), as a full buffer would. */
  fullAt = new Set<number>();
  /**
   * Send numbers (1-based) the broker acks on its own, in a microtask: before any timer can fire,
   * so tests with short timeouts do not depend on machine load.
   */
  autoAck = new Set<number>();
  /** The next publish throws this instead of sending. */
  throwNext: Error | undefined;
  closed = false;

  async assertExchange(): Promise<unknown> {
    return {};
  }

  publish(
    _exchange: string,
    routingKey: string,
    content: Buffer,
    options: AmqpPublishOptions,
    callback: (err: unknown) => void,
  ): boolean {
    if (this.closed) throw Object.assign(new Error('Channel closed'), { name: 'IllegalOperationError' });
    if (this.throwNext) {
      const err = this.throwNext;
      this.throwNext = undefined;
      throw err;
    }
    this.sent.push({ routingKey, content, options, callback });
    if (this.autoAck.has(this.sent.length)) queueMicrotask(() => callback(null));
    return !this.fullAt.has(this.sent.length);
  }

  ack(index: number): void {
    this.sent[index]?.callback(null);
  }

  nack(index: number): void {
    this.sent[index]?.callback(new Error('message nacked'));
  }

  returnMessage(index: number): void {
    const sent = this.sent[index] as Sent;
    const returned: AmqpReturnedMessage = {
      fields: { replyCode: 312, replyText: 'NO_ROUTE', exchange: 'mailroom', routingKey: sent.routingKey },
      properties: { messageId: sent.options.messageId },
    };
    this.emit('return', returned);
  }

  /**
   * As amqplib when the broker closes the channel with a channel-level exception: 'error' with
   * the reply code first, then the channel closes; the connection stays up.
   */
  exception(code: number, text: string): void {
    this.emit('error', Object.assign(new Error(`Channel closed by server: ${code} (${text})`), { code }));
    this.die();
  }

  /** As amqplib: unconfirmed callbacks get 'channel closed', then 'close' is emitted. */
  die(): void {
    if (this.closed) return;
    this.closed = true;
    for (const sent of this.sent) sent.callback(new Error('channel closed'));
    this.emit('close');
  }

  async close(): Promise<void> {
    this.die();
  }
}

class FakeConnection extends EventEmitter implements AmqpConnection {
  channel = new FakeChannel();
  closed = false;
  /** close() is never answered, as on a black-holed socket; only destroying the socket ends it. */
  hangOnClose = false;
  closeCalls = 0;
  /** amqplib's inner connection with its socket: destroying it fails the connection. */
  readonly connection = {
    stream: {
      destroyed: false,
      destroy: (err?: Error) => {
        this.connection.stream.destroyed = true;
        if (!this.closed) this.fail(err ?? new Error('socket destroyed'));
      },
    },
  };

  async createConfirmChannel(): Promise<AmqpConfirmChannel> {
    return this.channel;
  }

  /** A network fault: 'error' then 'close', channels closed first, as amqplib does. */
  fail(err: Error): void {
    this.emit('error', err);
    this.channel.die();
    this.closed = true;
    this.emit('close', err);
  }

  async close(): Promise<void> {
    this.closeCalls++;
    if (this.closed) throw new Error('Connection closed (by client)');
    if (this.hangOnClose) return new Promise<void>(() => {});
    this.channel.die();
    this.closed = true;
    this.emit('close');
  }
}

/** A transport whose connect hands out fake connections, or fails while `down` is set. */
function fakeTransport(options: Partial<RabbitMqTransportOptions> = {}) {
  const state = {
    down: false as false | Error,
    connections: [] as FakeConnection[],
    attempts: 0,
    /** Scripts each new connection before the transport uses it. */
    onConnect: undefined as ((connection: FakeConnection) => void) | undefined,
  };
  const transport = new RabbitMqTransport({
    url: 'amqp://user:pw@fake-host:5672',
    connect: async () => {
      state.attempts++;
      if (state.down) throw state.down;
      const connection = new FakeConnection();
      state.onConnect?.(connection);
      state.connections.push(connection);
      return connection;
    },
    ...options,
  });
  const current = () => state.connections[state.connections.length - 1] as FakeConnection;
  return { transport, state, current };
}

function statuses(outcomes: PublishOutcome[]): string[] {
  return outcomes.map((o) => o.status);
}

function codes(outcomes: PublishOutcome[]): Array<string | undefined> {
  return outcomes.map((o) => (o.status !== 'ok' && isTransportError(o.error) ? o.error.code : undefined));
}

/** Lets pending promise callbacks run (the transport's send loop resumes in microtasks). */
const flush = () => new Promise<void>((resolve) => setImmediate(resolve));

/** Resolves once `done()` holds, checking every few milliseconds; fails after `timeoutMs`. */
async function until(done: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const start = Date.now();
  while (!done()) {
    if (Date.now() - start > timeoutMs) assert.fail(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

function errorOf(outcome: PublishOutcome | undefined): Error {
  assert.ok(
    outcome !== undefined && outcome.status !== 'ok',
    `expected a failed outcome, got ${outcome?.status}`,
  );
  return outcome.error;
}

describe('rabbitmq transport with a scripted client', () => {
  it('reports ok only for messages the broker acked, in batch order, whatever order the acks come in', async () => {
    const { transport, current } = fakeTransport();
    await transport.start();
    const publishing = transport.publish([testMessage(), testMessage(), testMessage()]);
    await flush();
    const channel = current().channel;
    assert.equal(channel.sent.length, 3, 'all three sent before any confirm (pipelined)');
    channel.ack(2);
    channel.nack(1);
    channel.ack(0);
    const outcomes = await publishing;
    assert.deepEqual(statuses(outcomes), ['ok', 'retry', 'ok']);
    assert.deepEqual(codes(outcomes), [undefined, 'nacked', undefined]);
    await transport.close();
  });

  it('reports unavailable with confirm_timeout for messages whose confirm never came, drops the connection, and ignores a late ack', async () => {
    const { transport, state, current } = fakeTransport({ confirmTimeoutMs: 20 });
    await transport.start();
    const first = current();
    first.channel.autoAck.add(1);
    const outcomes = await transport.publish([testMessage(), testMessage()]);
    assert.deepEqual(statuses(outcomes), ['ok', 'unavailable']);
    assert.deepEqual(codes(outcomes), [undefined, 'confirm_timeout']);
    assert.match(errorOf(outcomes[1]).message, /within 20 ms/);
    assert.match(errorOf(outcomes[1]).message, /does not answer/);
    first.channel.ack(1); // late: must not throw or change anything
    assert.equal(outcomes[1]?.status, 'unavailable');
    assert.equal(first.closed, true, 'the silent connection is dropped');
    assert.equal(transport.connected, false);

    state.onConnect = (connection) => connection.channel.autoAck.add(1);
    assert.deepEqual(statuses(await transport.publish([testMessage()])), ['ok']);
    assert.equal(state.connections.length, 2, 'the next publish opened a new connection');
    await transport.close();
  });

  it('waits for drain when the client buffer is full before sending the rest of the batch', async () => {
    const { transport, current } = fakeTransport();
    await transport.start();
    const channel = current().channel;
    channel.fullAt.add(2);
    const publishing = transport.publish([testMessage(), testMessage(), testMessage(), testMessage()]);
    await flush();
    assert.equal(channel.sent.length, 2, 'kept sending although publish returned false');
    channel.emit('drain');
    await flush();
    assert.equal(channel.sent.length, 4);
    channel.sent.forEach((_, i) => channel.ack(i));
    assert.deepEqual(statuses(await publishing), ['ok', 'ok', 'ok', 'ok']);
    await transport.close();
  });

  it('stops waiting for drain when the connection is lost, reporting sent and unsent messages as unavailable', async () => {
    const { transport, current } = fakeTransport();
    await transport.start();
    const channel = current().channel;
    channel.fullAt.add(1);
    const publishing = transport.publish([testMessage(), testMessage(), testMessage()]);
    await flush();
    current().fail(new Error('ECONNRESET'));
    const outcomes = await publishing;
    assert.deepEqual(statuses(outcomes), ['unavailable', 'unavailable', 'unavailable']);
    assert.deepEqual(codes(outcomes), ['confirm_lost', 'channel_closed', 'channel_closed']);
    assert.match(errorOf(outcomes[0]).message, /ECONNRESET/);
    await transport.close();
  });

  it('turns a message the broker returned into permanent, matched by message id', async () => {
    const { transport, current } = fakeTransport({ mandatory: true });
    await transport.start();
    const batch = [testMessage({ topic: 'a' }), testMessage({ topic: 'b' })];
    const publishing = transport.publish(batch);
    await flush();
    const channel = current().channel;
    assert.equal(channel.sent[0]?.options.mandatory, true);
    channel.returnMessage(1); // RabbitMQ sends basic.return before the basic.ack
    channel.ack(0);
    channel.ack(1);
    const outcomes = await publishing;
    assert.deepEqual(statuses(outcomes), ['ok', 'permanent']);
    assert.ok(outcomes[1]?.status === 'permanent' && isPermanentDeliveryError(outcomes[1].error));
    await transport.close();
  });

  it('reports a message the client cannot encode as permanent and sends the rest', async () => {
    const { transport, current } = fakeTransport();
    await transport.start();
    const channel = current().channel;
    channel.throwNext = new RangeError('headers table exceeds 65536 bytes');
    const publishing = transport.publish([testMessage(), testMessage()]);
    await flush();
    channel.ack(0);
    const outcomes = await publishing;
    assert.deepEqual(statuses(outcomes), ['permanent', 'ok']);
    await transport.close();
  });

  it('survives error events from the connection and the channel without crashing', async () => {
    const { transport, current } = fakeTransport();
    await transport.start();
    // With no listener, EventEmitter would throw these out of emit().
    current().channel.emit('error', new Error('channel-level error'));
    current().emit('error', new Error('connection-level error'));
    await transport.close();
  });

  it('opens one connection for concurrent publishes while disconnected', async () => {
    const { transport, state } = fakeTransport();
    const a = transport.publish([testMessage()]);
    const b = transport.publish([testMessage()]);
    await flush();
    assert.equal(state.attempts, 1);
    const channel = state.connections[0]?.channel as FakeChannel;
    channel.ack(0);
    channel.ack(1);
    assert.deepEqual([...statuses(await a), ...statuses(await b)], ['ok', 'ok']);
    await transport.close();
  });

  it('reconnects at once after a loss, then backs off after a failed attempt', async () => {
    const { transport, state, current } = fakeTransport({
      reconnectDelayMs: 60_000,
      maxReconnectDelayMs: 60_000,
    });
    await transport.start();
    current().fail(new Error('ECONNRESET'));
    assert.equal(transport.connected, false);

    state.down = new Error('connect ECONNREFUSED fake-host:5672');
    const first = await transport.publish([testMessage()]);
    assert.deepEqual(codes(first), ['unreachable']);
    assert.equal(state.attempts, 2, 'the first attempt after a loss is immediate');

    state.down = false;
    const second = await transport.publish([testMessage()]);
    assert.deepEqual(codes(second), ['unreachable']);
    assert.equal(state.attempts, 2, 'no attempt during the backoff');

    await transport.start(); // explicit: ignores the backoff
    assert.equal(state.attempts, 3);
    assert.equal(transport.connected, true);
    await transport.close();
  });

  it('hands the heartbeat, connect timeout and connection name to the connect function', async () => {
    const calls: Array<{ url: string; socketOptions: Record<string, unknown> }> = [];
    const make = (options: Partial<RabbitMqTransportOptions>) =>
      new RabbitMqTransport({
        url: 'amqp://user:pw@fake-host:5672/orders?frameMax=131072',
        connect: async (url, socketOptions) => {
          calls.push({ url, socketOptions });
          return new FakeConnection();
        },
        ...options,
      });
    const a = make({ heartbeatSeconds: 5, connectTimeoutMs: 1234 });
    await a.start();
    await a.close();
    const b = make({
      socketOptions: { noDelay: true, clientProperties: { connection_name: 'orders-relay' } },
    });
    await b.start();
    await b.close();

    const [first, second] = calls as [(typeof calls)[0], (typeof calls)[0]];
    const url = new URL(first.url);
    assert.equal(url.searchParams.get('heartbeat'), '5');
    assert.equal(url.searchParams.get('frameMax'), '131072');
    assert.equal(url.pathname, '/orders');
    // A second past the connect deadline: the transport's own timer names a silent broker first.
    assert.equal(first.socketOptions['timeout'], 1234 + 1000);
    assert.deepEqual(first.socketOptions['clientProperties'], { connection_name: 'mailroom' });
    assert.equal(second.url, 'amqp://user:pw@fake-host:5672/orders?frameMax=131072');
    assert.equal(second.socketOptions['noDelay'], true);
    assert.deepEqual(second.socketOptions['clientProperties'], { connection_name: 'orders-relay' });
  });

  it('closes after the close deadline although confirms are missing, reporting them as unavailable', async () => {
    const { transport, current } = fakeTransport({ closeTimeoutMs: 10 });
    await transport.start();
    const publishing = transport.publish([testMessage()]);
    await flush();
    await transport.close();
    const outcomes = await publishing;
    assert.deepEqual(statuses(outcomes), ['unavailable']);
    assert.deepEqual(codes(outcomes), ['confirm_lost']);
    assert.equal(current().closed, true);
  });

  it('closes a connection that finished opening after close was called', async () => {
    let release: () => void = () => {};
    const gate = new Promise<void>((resolve) => (release = resolve));
    const connection = new FakeConnection();
    const transport = new RabbitMqTransport({
      url: 'amqp://fake-host',
      connect: async () => {
        await gate;
        return connection;
      },
    });
    const publishing = transport.publish([testMessage()]);
    const closing = transport.close();
    release();
    await closing;
    assert.deepEqual(statuses(await publishing), ['unavailable']);
    assert.equal(connection.closed, true);
  });

  it('reports retry (channel_exception) for every unconfirmed and unsent message when the broker closes the channel with a channel-level exception, and reconnects on the next publish', async () => {
    const { transport, state, current } = fakeTransport();
    await transport.start();
    const channel = current().channel;
    channel.fullAt.add(2); // the third message waits for drain when the channel dies
    const publishing = transport.publish([testMessage(), testMessage(), testMessage()]);
    await flush();
    assert.equal(channel.sent.length, 2);
    channel.ack(0);
    channel.exception(406, 'PRECONDITION-FAILED) with message "PRECONDITION_FAILED - invalid message');
    const outcomes = await publishing;
    assert.deepEqual(statuses(outcomes), ['ok', 'retry', 'retry']);
    assert.deepEqual(codes(outcomes), [undefined, 'channel_exception', 'channel_exception']);
    assert.match(errorOf(outcomes[1]).message, /406 \(PRECONDITION-FAILED/);
    assert.match(errorOf(outcomes[1]).message, /awaiting its confirm/);
    assert.match(errorOf(outcomes[2]).message, /waiting to be sent/);
    assert.match(errorOf(outcomes[1]).message, /spends an attempt/);
    assert.equal(current().closed, true, 'sessions are replaced whole: the connection is closed too');

    state.onConnect = (connection) => connection.channel.autoAck.add(1);
    assert.deepEqual(statuses(await transport.publish([testMessage()])), ['ok']);
    assert.equal(state.connections.length, 2, 'the next publish opened a new connection');
    await transport.close();
  });

  it('reports unavailable, not retry, when the channel closes with a connection-level error code', async () => {
    const { transport, current } = fakeTransport();
    await transport.start();
    const publishing = transport.publish([testMessage()]);
    await flush();
    // 505 UNEXPECTED_FRAME is a connection ("hard") error: not about the message.
    current().channel.exception(505, 'UNEXPECTED_FRAME');
    const outcomes = await publishing;
    assert.deepEqual(statuses(outcomes), ['unavailable']);
    assert.deepEqual(codes(outcomes), ['confirm_lost']);
    await transport.close();
  });

  it('reports unavailable (blocked) at once without writing while the broker blocks publishers, and probe names the alarm until it clears', async () => {
    const { transport, current } = fakeTransport();
    await transport.start();
    const connection = current();
    connection.emit('blocked', 'low on memory');

    const outcomes = await transport.publish([testMessage(), testMessage()]);
    assert.deepEqual(statuses(outcomes), ['unavailable', 'unavailable']);
    assert.deepEqual(codes(outcomes), ['blocked', 'blocked']);
    assert.match(errorOf(outcomes[0]).message, /low on memory/);
    assert.equal(connection.channel.sent.length, 0, 'nothing written into the blocked connection');
    await assert.rejects(transport.probe(), (err: unknown) => {
      assert.ok(isTransportError(err));
      assert.equal(err.code, 'blocked');
      assert.match(err.message, /blocking publishers \(low on memory\)/);
      return true;
    });

    connection.emit('unblocked');
    await transport.probe();
    connection.channel.autoAck.add(1);
    assert.deepEqual(statuses(await transport.publish([testMessage()])), ['ok']);
    assert.equal(current(), connection, 'the blocked connection was kept, not replaced');
    await transport.close();
  });

  it('keeps a blocked connection when its confirms time out, so the pending confirms can still come and probe reports the alarm', async () => {
    const { transport, state, current } = fakeTransport({ confirmTimeoutMs: 20 });
    await transport.start();
    const publishing = transport.publish([testMessage()]);
    await flush();
    current().emit('blocked', 'low on disk space');
    const outcomes = await publishing;
    assert.deepEqual(statuses(outcomes), ['unavailable']);
    assert.deepEqual(codes(outcomes), ['confirm_timeout']);
    assert.match(errorOf(outcomes[0]).message, /blocking publishers \(low on disk space\)/);
    assert.equal(current().closed, false);
    assert.equal(state.connections.length, 1);
    await assert.rejects(
      transport.probe(),
      (err: unknown) => isTransportError(err) && err.code === 'blocked',
    );
    await transport.close();
  });

  it('destroys the socket of a dropped connection whose close is never answered', async () => {
    const { transport, current } = fakeTransport({ confirmTimeoutMs: 20 });
    await transport.start();
    const connection = current();
    connection.hangOnClose = true;
    const outcomes = await transport.publish([testMessage()]);
    assert.deepEqual(codes(outcomes), ['confirm_timeout']);
    assert.equal(connection.closeCalls, 1, 'a polite close is tried first');
    await until(() => connection.connection.stream.destroyed, 'the socket to be destroyed');
    assert.equal(connection.closed, true);
    assert.equal(transport.connected, false);
    await transport.close();
  });

  it('reports a message over maxMessageBytes as permanent without sending it, and sends the rest', async () => {
    const { transport, current } = fakeTransport({ maxMessageBytes: 10 });
    await transport.start();
    const channel = current().channel;
    channel.autoAck.add(1);
    const big = testMessage({ payload: Buffer.alloc(11) });
    const outcomes = await transport.publish([big, testMessage({ payload: Buffer.alloc(10) })]);
    assert.deepEqual(statuses(outcomes), ['permanent', 'ok']);
    const error = errorOf(outcomes[0]);
    assert.ok(isPermanentDeliveryError(error));
    assert.match(error.message, /11 bytes, over maxMessageBytes \(10\)/);
    assert.equal(channel.sent.length, 1);
    await transport.close();
  });

  it('resolves at once with unavailable (publish_timeout) for unanswered messages when the signal aborts, drops the connection, ignores late confirms, and reconnects on the next publish', async () => {
    const { transport, state, current } = fakeTransport();
    await transport.start();
    const first = current();
    first.channel.fullAt.add(2); // the third message waits for drain, so it is never sent
    const controller = new AbortController();
    const publishing = transport.publish([testMessage(), testMessage(), testMessage()], {
      signal: controller.signal,
    });
    await flush();
    assert.equal(first.channel.sent.length, 2);
    first.channel.ack(0);
    controller.abort();
    const outcomes = await publishing;
    assert.deepEqual(statuses(outcomes), ['ok', 'unavailable', 'unavailable']);
    assert.deepEqual(codes(outcomes), [undefined, 'publish_timeout', 'publish_timeout']);
    assert.match(errorOf(outcomes[1]).message, /before the broker confirmed message/);
    assert.match(errorOf(outcomes[2]).message, /before message .* was sent/);
    assert.match(errorOf(outcomes[1]).message, /fake-host/);
    assert.doesNotMatch(errorOf(outcomes[1]).message, /:pw@/);
    assert.match(errorOf(outcomes[1]).message, /connection was dropped and the next publish reconnects/);
    await until(() => first.closed, 'the connection to be dropped');
    assert.equal(transport.connected, false);

    first.channel.sent[1]?.callback(null); // a late confirm: ignored, nothing changes or throws
    assert.deepEqual(statuses(outcomes), ['ok', 'unavailable', 'unavailable']);

    state.onConnect = (connection) => connection.channel.autoAck.add(1);
    assert.deepEqual(statuses(await transport.publish([testMessage()])), ['ok']);
    assert.equal(state.connections.length, 2);
    await transport.close();
  });

  it('reports unavailable (publish_timeout) without connecting when the signal is already aborted', async () => {
    const { transport, state } = fakeTransport();
    const outcomes = await transport.publish([testMessage()], { signal: AbortSignal.abort() });
    assert.deepEqual(statuses(outcomes), ['unavailable']);
    assert.deepEqual(codes(outcomes), ['publish_timeout']);
    assert.equal(state.attempts, 0);
    await transport.close();
  });

  it('stops waiting for a connect that does not finish when the signal aborts', async () => {
    let release: () => void = () => {};
    const gate = new Promise<void>((resolve) => (release = resolve));
    const connection = new FakeConnection();
    const transport = new RabbitMqTransport({
      url: 'amqp://fake-host',
      connect: async () => {
        await gate;
        return connection;
      },
    });
    const controller = new AbortController();
    const publishing = transport.publish([testMessage()], { signal: controller.signal });
    const probing = transport.probe({ signal: controller.signal });
    await flush();
    controller.abort();
    const outcomes = await publishing;
    assert.deepEqual(codes(outcomes), ['publish_timeout']);
    assert.match(errorOf(outcomes[0]).message, /while connecting, so nothing was sent/);
    await assert.rejects(probing, (err: unknown) => isTransportError(err) && err.code === 'probe_aborted');
    release();
    await transport.close();
    assert.equal(connection.closed, true, 'the connect that finished late is closed by close()');
  });

  it('probes by connecting, at once whatever the reconnect backoff says, and throws the connect error while the broker is down', async () => {
    const { transport, state } = fakeTransport({ reconnectDelayMs: 60_000, maxReconnectDelayMs: 60_000 });
    state.down = new Error('connect ECONNREFUSED fake-host:5672');
    await assert.rejects(
      transport.probe(),
      (err: unknown) => isTransportError(err) && err.code === 'unreachable',
    );
    await assert.rejects(
      transport.probe(),
      (err: unknown) => isTransportError(err) && err.code === 'unreachable',
    );
    assert.equal(state.attempts, 2, 'each probe tried to connect');
    state.down = false;
    await transport.probe();
    assert.equal(transport.connected, true);
    assert.equal(state.attempts, 3);
    await transport.probe(); // an open session answers without connecting again
    assert.equal(state.attempts, 3);
    await transport.close();
    await assert.rejects(transport.probe(), (err: unknown) => isTransportError(err) && err.code === 'closed');
    assert.equal(state.attempts, 3, 'a closed transport does not reconnect to probe');
  });
});
