/**
 * The errors of broker transactions on RabbitMQ (`begin()`, `commit()`, transacted receive),
 * each saying what happened to the messages: nothing committed, maybe committed, or committed
 * except those returned. The URLs passed in are the redacted ones.
 *
 * What the relay makes of each (`BrokerTransaction.commit`): a `TransportError` is an outage (no
 * attempt spent), a `PermanentDeliveryError` dead-letters the group, any other error retries it.
 *
 * @module
 */
import { ConfigError } from '../../core/errors/config-error.js';
import { MailroomError } from '../../core/errors/mailroom-error.js';
import { PermanentDeliveryError } from '../../core/errors/permanent-delivery-error.js';
import { TransportError } from '../../core/errors/transport-error.js';
import type { OutboxMessage } from '../../core/types.js';
import type { AmqpReturnedMessage } from './amqp-client.js';
import { describe } from './rabbitmq-errors.js';
import type { ChannelException } from './rabbitmq-session.js';

/** What an aborted signal says about why. */
function abortReason(signal: AbortSignal): string {
  const reason: unknown = signal.reason;
  return reason instanceof Error ? reason.message : String(reason);
}

/** The connection has no `createChannel` (a custom connect function's client). */
export function noPlainChannelError(safeUrl: string): ConfigError {
  return new ConfigError(
    'connect',
    `broker transactions on RabbitMQ at ${safeUrl} need a plain channel, and the connection your connect ` +
      'function returned has no createChannel(); return an amqplib connection (ChannelModel), or add ' +
      'createChannel() to yours',
    { url: safeUrl },
  );
}

/** The channel could not be opened or put in transaction mode (`tx.select`). */
export function beginFailedError(
  safeUrl: string,
  step: 'channel.open' | 'tx.select',
  err: unknown,
): TransportError {
  return new TransportError(
    'begin_failed',
    `could not start a transaction on RabbitMQ at ${safeUrl}: ${step} failed (${describe(err)}); nothing ` +
      'was sent; check the broker logs (channel_max reached?) and try again',
    { cause: err, details: { url: safeUrl, step } },
  );
}

/** The caller's signal aborted, or the broker did not answer, before the transaction began. */
export function beginAbortedError(safeUrl: string, why: AbortSignal | number): TransportError {
  const what =
    typeof why === 'number'
      ? `RabbitMQ did not answer within ${why} ms (confirmTimeoutMs), so its connection was dropped`
      : `it was aborted (${abortReason(why)})`;
  return new TransportError(
    'publish_timeout',
    `could not start a transaction on RabbitMQ at ${safeUrl}: ${what}; nothing was sent`,
    { details: { url: safeUrl } },
  );
}

/** `publish` or `commit` on a transaction already committed, rolled back or failed. */
export function transactionClosedError(what: string, state: string): TransportError {
  return new TransportError(
    'transaction_closed',
    `RabbitMQ transaction: ${what} on a transaction already ${state}; begin() a new one`,
    { details: { state } },
  );
}

/**
 * The connection (or the channel, without a channel exception) went away before the commit was
 * sent: the broker discards an open transaction with its channel, so nothing was committed.
 */
export function transactionLostError(
  safeUrl: string,
  reason: Error | undefined,
  stage: string,
): TransportError {
  return new TransportError(
    'transaction_lost',
    `the connection to RabbitMQ at ${safeUrl} was lost ${stage}${reason ? ` (${reason.message})` : ''}; ` +
      'nothing was committed (the broker discards an open transaction with its channel); begin a new ' +
      'transaction and publish again',
    { ...(reason === undefined ? {} : { cause: reason }), details: { url: safeUrl, stage } },
  );
}

/**
 * The broker closed the transaction's channel with a channel exception (404 exchange missing,
 * 403 access refused, 406 precondition failed): caused by what was published, so not an outage;
 * nothing was committed. A `MailroomError` of its own code rather than a `TransportError`, so
 * the relay spends an attempt on it (it retries, then dead-letters) instead of probing forever.
 */
export function transactionRefusedError(
  safeUrl: string,
  exchange: string,
  exception: ChannelException,
): MailroomError {
  return new MailroomError(
    'transaction_refused',
    `RabbitMQ at ${safeUrl} closed the transaction's channel (${exception.error.message}); nothing was ` +
      `committed; this comes from what was published on exchange ${JSON.stringify(exchange)} (a missing ` +
      "exchange, no write permission on it, a message over the broker's max_message_size): fix the " +
      'cause (create the exchange or turn declareExchange on, grant write permission, set ' +
      'maxMessageBytes) and publish again',
    { cause: exception.error, details: { url: safeUrl, exchange, replyCode: exception.code } },
  );
}

/** `tx.commit` was sent and no answer came: the broker may or may not have committed. */
export function commitUnknownError(
  safeUrl: string,
  why: { lost: Error | undefined } | { timeoutMs: number } | { aborted: AbortSignal },
  published: number,
): TransportError {
  const what =
    'timeoutMs' in why
      ? `RabbitMQ did not answer within ${why.timeoutMs} ms (confirmTimeoutMs), so the connection was dropped`
      : 'aborted' in why
        ? `the wait was aborted (${abortReason(why.aborted)}) and the connection dropped`
        : `the connection was lost${why.lost ? ` (${why.lost.message})` : ''}`;
  return new TransportError(
    'commit_unknown',
    `tx.commit of ${published} messages was sent to RabbitMQ at ${safeUrl}, then ${what} before the ` +
      'broker answered: it may or may not have committed; publishing them again (with the same message ' +
      'ids) can deliver them twice, not publishing them can lose them',
    {
      ...('lost' in why && why.lost !== undefined ? { cause: why.lost } : {}),
      details: { url: safeUrl, published },
    },
  );
}

/**
 * RabbitMQ routes a transaction's messages at commit: those no queue is bound for come back with
 * `basic.return` (when published mandatory) just before `tx.commit-ok`, while the others are
 * committed. A `PermanentDeliveryError` (the relay dead-letters an atomic group for it) whose
 * message says that the rest was delivered.
 */
export function returnedInTransactionError(
  exchange: string,
  returned: readonly AmqpReturnedMessage[],
  published: number,
): PermanentDeliveryError {
  const list = returned.map((r) => ({
    messageId: String(r.properties.messageId),
    topic: r.fields.routingKey,
    replyCode: r.fields.replyCode ?? 312,
    replyText: r.fields.replyText ?? 'NO_ROUTE',
  }));
  const shown = list
    .slice(0, 3)
    .map((r) => `${r.messageId} (topic ${JSON.stringify(r.topic)})`)
    .join(', ');
  return new PermanentDeliveryError(
    `RabbitMQ committed the transaction but returned ${list.length} of its ${published} messages as ` +
      `unroutable (${list[0]?.replyCode ?? 312} ${list[0]?.replyText ?? 'NO_ROUTE'}): ${shown}` +
      `${list.length > 3 ? ', …' : ''}; exchange ${JSON.stringify(exchange)} has no queue bound for ` +
      `their topics; the other ${published - list.length} were committed and delivered (RabbitMQ routes ` +
      'at commit, so this cannot be undone); bind a queue for these topics and publish them again, or ' +
      'set mandatory: false to let the broker drop unroutable messages',
    { details: { exchange, returned: list, committed: published - list.length } },
  );
}

/**
 * Transacted receive: an output of message `inputId` came back as unroutable at the commit,
 * which committed the acknowledgement and the other outputs.
 */
export function outputReturnedError(
  inputId: string,
  output: OutboxMessage,
  exchange: string,
  returned: AmqpReturnedMessage,
): PermanentDeliveryError {
  const code = returned.fields.replyCode ?? 312;
  const text = returned.fields.replyText ?? 'NO_ROUTE';
  return new PermanentDeliveryError(
    `RabbitMQ returned output ${output.id} of message ${inputId} as unroutable (${code} ${text}): exchange ` +
      `${JSON.stringify(exchange)} has no queue bound for topic ${JSON.stringify(output.topic)}; the ` +
      'acknowledgement of the input and its other outputs were committed (RabbitMQ routes at commit), ' +
      'so this output is lost; bind a queue for the topic before consumers publish to it',
    {
      details: {
        messageId: output.id,
        topic: output.topic,
        inputId,
        exchange,
        replyCode: code,
        replyText: text,
      },
    },
  );
}

/** The socket's write buffer did not drain in time while publishing in a transaction. */
export function drainTimeoutError(safeUrl: string, why: AbortSignal | number): TransportError {
  const what =
    typeof why === 'number'
      ? `did not take more data within ${why} ms (confirmTimeoutMs), so its connection was dropped`
      : `was still taking data when the publish was aborted (${abortReason(why)})`;
  return new TransportError('publish_timeout', `RabbitMQ at ${safeUrl} ${what}; nothing was committed`, {
    details: { url: safeUrl },
  });
}

/** `context.publish` after the handler's run ended. */
export function publishAfterRunError(messageId: string): ConfigError {
  return new ConfigError(
    'publish',
    `context.publish() for message ${messageId} was called after its handler run had ended (a promise ` +
      'not awaited?); outputs are committed with the acknowledgement when the handler returns, so ' +
      'await every context.publish() inside the handler',
  );
}
