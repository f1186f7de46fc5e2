/**
 * For authors of stores and transports, and for tests of systems built on Mailroom: the
 * conformance suites every adapter must pass (they use `node:test`), and a TCP proxy for
 * fault injection.
 *
 * @module
 */
export { runStoreConformance, type StoreHarness, type StoreConformanceOptions } from './store-conformance.js';
export { runReceivingConformance } from './receiving-conformance.js';
export {
  runTransportConformance,
  testMessage,
  uniqueTopics,
  UNUSUAL_HEADERS,
  type ReceivedMessage,
  type ConformanceConsumer,
  type TransportConformanceOptions,
  type ConformanceAddress,
  type ConformanceProxy,
} from './transport-conformance.js';
export {
  runConsumerConformance,
  type ConsumerConformanceOptions,
  type ConformanceConsumerOptions,
} from './consumer-conformance.js';
export { TcpProxy, type TcpProxyOptions } from './tcp-proxy.js';
export { ManualClock } from './manual-clock.js';
