export {
  Inbox,
  ACK_MESSAGE_TYPE,
  ACK_OF_HEADER,
  type InboxOptions,
  type InboxContext,
  type InboxResult,
} from './inbox.js';
export { AckReceiver, parseAckReceipt, type AckReceiverOptions } from './ack-receiver.js';
