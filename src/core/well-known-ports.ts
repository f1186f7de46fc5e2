/**
 * Which server a well-known port belongs to, for errors about a URL that points at the wrong
 * one (a PostgreSQL URL with Redis's port, an AMQP URL with PostgreSQL's). Only default ports of
 * the servers a Mailroom user is likely to run beside it: a hint about any other port would be
 * a guess.
 */
const DEFAULT_PORTS: ReadonlyMap<number, string> = new Map([
  [80, 'HTTP servers listen'],
  [443, 'HTTPS servers listen'],
  [1433, 'SQL Server listens'],
  [1521, 'Oracle Database listens'],
  [1883, 'MQTT brokers listen'],
  [3306, 'MySQL and MariaDB listen'],
  [4222, 'NATS listens'],
  [5432, 'PostgreSQL listens'],
  [5671, 'RabbitMQ listens for AMQP over TLS'],
  [5672, 'RabbitMQ listens for AMQP'],
  [6379, 'Redis listens'],
  [8883, 'MQTT brokers listen for MQTT over TLS'],
  [9092, 'Kafka listens'],
  [9200, 'Elasticsearch listens'],
  [11211, 'Memcached listens'],
  [15672, "RabbitMQ's management UI listens"],
  [27017, 'MongoDB listens'],
  [61613, 'STOMP brokers listen'],
]);

/**
 * "Redis listens on 6379 by default" for a well-known port that is not one of `expected` (the
 * ports of the server the caller wanted); `''` otherwise.
 */
export function portHint(port: number | undefined, expected: readonly number[]): string {
  if (port === undefined || expected.includes(port)) return '';
  const who = DEFAULT_PORTS.get(port);
  return who === undefined ? '' : `${who} on ${port} by default`;
}
