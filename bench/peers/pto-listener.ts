/**
 * The pg-transactional-outbox peer's listener: the package's polling or logical-replication
 * listener with a handler that publishes each message to RabbitMQ with publisher confirms.
 *
 * Used two ways:
 * - imported: `startPtoListener()` runs it in the calling process (the latency scenario, so the
 *   confirm callback can be timestamped with the same clock as the commits);
 * - as its own process (the drain scenario, so its CPU and memory are measured alone, like
 *   Mailroom's relay processes): when PTO_LISTENER_CONFIG holds a JSON `PtoListenerConfig`, the
 *   module starts the listener, prints `ready`, and on SIGTERM prints `problems <json>` (the
 *   warnings and errors the package logged until then) and stops cleanly.
 *
 * It imports packages only (no relative imports), so bench/scenarios/pg-transactional-outbox.ts
 * can strip its types and run it with plain `node --input-type=module --eval` (no tsx loader in
 * the measured process: the tsx loader adds about 0.3 s CPU and 30 MiB RSS at start-up alone).
 */
import amqp, { type ConfirmChannel } from 'amqplib';
import type { PoolConfig } from 'pg';
import {
  createReplicationFullConcurrencyController,
  createReplicationSegmentMutexConcurrencyController,
  getDisabledLogger,
  initializePollingMessageListener,
  initializeReplicationMessageListener,
  type GeneralMessageHandler,
  type PollingListenerConfig,
  type ReplicationListenerConfig,
  type StoredTransactionalMessage,
  type TransactionalLogger,
} from 'pg-transactional-outbox';

export interface PtoListenerConfig {
  listener: 'polling' | 'replication';
  databaseUrl: string;
  amqpUrl: string;
  exchange: string;
  schema: string;
  table: string;
  /** Max connections of the package's message-handler pool (one per message in flight). */
  poolMax: number;
  /** Polling: the next-messages function and its settings. */
  nextMessagesFunctionName: string;
  batchSize: number;
  pollingIntervalMs: number;
  /** How long a fetched message stays locked from other polls (also the retry delay after an error). */
  lockMs: number;
  /** Replication: publication, slot and concurrency controller. */
  publication: string;
  slot: string;
  concurrency: 'segment-mutex' | 'full';
}

export interface PtoListener {
  stop(): Promise<void>;
  /** Warnings and errors the package logged (retries, lock conflicts, duplicates...). */
  problems(): { warn: number; error: number; first: string[] };
}

/** Settings common to both listeners; the protections as the package's outbox defaults. */
export function ptoBaseSettings(schema: string, table: string) {
  return {
    dbSchema: schema,
    dbTable: table,
    // TRX_OUTBOX_ENABLE_MAX_ATTEMPTS_PROTECTION and ..._POISONOUS_MESSAGE_PROTECTION default
    // to false for the outbox (true for the inbox).
    enableMaxAttemptsProtection: false,
    enablePoisonousMessageProtection: false,
    // No cleanup during the run: 0 disables the scheduled DELETE.
    messageCleanupIntervalInMs: 0,
  };
}

/** A logger that stays quiet but counts warnings and errors and keeps the first few of each. */
function countingLogger() {
  const base = getDisabledLogger();
  const seen = { warn: 0, error: 0, first: [] as string[] };
  const record = (level: 'warn' | 'error') =>
    ((...args: unknown[]) => {
      // The first three of each level.
      if (++seen[level] <= 3) {
        const [a, b] = args;
        const text = typeof a === 'string' ? a : typeof b === 'string' ? b : '';
        const err = a instanceof Error ? `: ${a.message}` : '';
        const id = a && typeof a === 'object' && 'id' in a ? ` (message ${String(a.id)})` : '';
        seen.first.push(`${level} ${text}${err}${id}`.slice(0, 300));
      }
    }) as TransactionalLogger['warn'];
  const logger: TransactionalLogger = {
    ...base,
    warn: record('warn'),
    error: record('error'),
    fatal: record('error'),
  };
  return { logger, seen };
}

/** Publishes each message with confirms; resolves only once the broker confirmed it. */
export function confirmingPublisher(
  channel: ConfirmChannel,
  exchange: string,
  onConfirmed?: (id: string) => void,
): GeneralMessageHandler {
  return {
    handle: (message: StoredTransactionalMessage) =>
      new Promise<void>((resolve, reject) => {
        channel.publish(
          exchange,
          message.messageType,
          Buffer.from(JSON.stringify(message.payload)),
          {
            persistent: true,
            messageId: message.id,
            contentType: 'application/json',
            headers: { key: message.segment },
          },
          (err: unknown) => {
            if (err) {
              reject(err instanceof Error ? err : new Error(String(err)));
              return;
            }
            onConfirmed?.(message.id);
            resolve();
          },
        );
      }),
  };
}

export async function startPtoListener(
  cfg: PtoListenerConfig,
  onConfirmed?: (id: string) => void,
): Promise<PtoListener> {
  const conn = await amqp.connect(cfg.amqpUrl);
  const channel = await conn.createConfirmChannel();
  const handler = confirmingPublisher(channel, cfg.exchange, onConfirmed);
  const { logger, seen } = countingLogger();
  // The handler pool is a pg Pool built from this config, so `max` sizes it.
  const dbHandlerConfig: PoolConfig = { connectionString: cfg.databaseUrl, max: cfg.poolMax };
  const dbListenerConfig: PoolConfig = { connectionString: cfg.databaseUrl };
  let shutdown: () => Promise<void>;
  if (cfg.listener === 'polling') {
    const config: PollingListenerConfig = {
      outboxOrInbox: 'outbox',
      dbListenerConfig,
      dbHandlerConfig,
      settings: {
        ...ptoBaseSettings(cfg.schema, cfg.table),
        nextMessagesFunctionSchema: cfg.schema,
        nextMessagesFunctionName: cfg.nextMessagesFunctionName,
        nextMessagesBatchSize: cfg.batchSize,
        nextMessagesPollingIntervalInMs: cfg.pollingIntervalMs,
        nextMessagesLockInMs: cfg.lockMs,
      },
    };
    [shutdown] = initializePollingMessageListener(config, handler, logger);
  } else {
    const config: ReplicationListenerConfig = {
      outboxOrInbox: 'outbox',
      dbListenerConfig,
      dbHandlerConfig,
      settings: {
        ...ptoBaseSettings(cfg.schema, cfg.table),
        dbPublication: cfg.publication,
        dbReplicationSlot: cfg.slot,
      },
    };
    const concurrencyStrategy =
      cfg.concurrency === 'full'
        ? createReplicationFullConcurrencyController()
        : createReplicationSegmentMutexConcurrencyController();
    [shutdown] = initializeReplicationMessageListener(config, handler, logger, { concurrencyStrategy });
  }
  return {
    async stop() {
      await shutdown().catch(() => undefined);
      await conn.close().catch(() => undefined);
    },
    problems: () => seen,
  };
}

const childConfig = process.env.PTO_LISTENER_CONFIG;
if (childConfig) {
  const listener = await startPtoListener(JSON.parse(childConfig) as PtoListenerConfig);
  process.stdout.write('ready\n');
  process.once('SIGTERM', () => {
    // What the package logged while it ran; stopping mid-backlog makes it log more (ended pools).
    // Pipes are synchronous on Linux, so the line is out before exit.
    process.stdout.write(`problems ${JSON.stringify(listener.problems())}\n`);
    setTimeout(() => process.exit(0), 5000).unref();
    void listener.stop().finally(() => process.exit(0));
  });
}
