export type {
  ConsumerContext,
  ConsumerHandler,
  ConsumerInbox,
  ConsumerRetryOptions,
  MessageConsumer,
} from './consumer.js';
