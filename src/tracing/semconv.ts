/**
 * The span attributes Mailroom sets: OpenTelemetry's messaging semantic conventions (the
 * `messaging.*` and `error.type` names), and Mailroom's own under `mailroom.*`. Written out here
 * rather than taken from `@opentelemetry/semantic-conventions`, which would be one more peer
 * dependency for a dozen strings.
 *
 * @module
 */

export const ATTR_MESSAGING_SYSTEM = 'messaging.system';
export const ATTR_MESSAGING_OPERATION_TYPE = 'messaging.operation.type';
export const ATTR_MESSAGING_OPERATION_NAME = 'messaging.operation.name';
export const ATTR_MESSAGING_DESTINATION_NAME = 'messaging.destination.name';
export const ATTR_MESSAGING_MESSAGE_ID = 'messaging.message.id';
export const ATTR_MESSAGING_MESSAGE_BODY_SIZE = 'messaging.message.body.size';
export const ATTR_MESSAGING_CONSUMER_GROUP_NAME = 'messaging.consumer.group.name';
export const ATTR_ERROR_TYPE = 'error.type';

/** Delivery attempt of the message, as the relay counts them (1 on the first publish). */
export const ATTR_MAILROOM_ATTEMPT = 'mailroom.attempt';
/** How the transport answered a publish: `ok`, `retry`, `permanent` or `unavailable`. */
export const ATTR_MAILROOM_OUTCOME = 'mailroom.publish.outcome';
/** True on publish spans of messages sent in a broker transaction (atomic groups). */
export const ATTR_MAILROOM_TRANSACTION = 'mailroom.transaction';
/** How the inbox took the message: `processed`, or `duplicate` (a copy already processed). */
export const ATTR_MAILROOM_INBOX_STATUS = 'mailroom.inbox.status';

/**
 * `messaging.system` for a transport or consumer name: the well-known value where the
 * conventions define one (`aws_sqs`), else Mailroom's name (`rabbitmq`, `kafka`, `nats`…).
 */
export function messagingSystem(name: string): string {
  return name === 'sqs' ? 'aws_sqs' : name;
}
