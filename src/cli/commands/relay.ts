import type { Logger } from '../../core/logger.js';
import { requireOrdered } from '../../core/options-schema.js';
import type { OutboxStore, Transport } from '../../core/ports.js';
import { redactUrl } from '../../core/redact.js';
import { relayOptionsSchema } from '../../core/relay-options.js';
import { Relay, type RelayOptions } from '../../core/relay.js';
import { RelayGroup } from '../../core/relay-group.js';
import { PostgresStore } from '../../stores/postgres/postgres-store.js';
import {
  ALL_STORE_KINDS,
  checkWakeup,
  CONNECTION_OPTIONS,
  openStore,
  openTransport,
  relayWakeup,
  type OpenedStore,
} from '../connect.js';
import { PostgresLogSource } from '../../replication/postgres-log-source.js';
import { ConfigError } from '../../core/errors/config-error.js';
import { bounds, COMMON_OPTIONS, printableConfig, type OptionSpec, type ResolvedConfig } from '../options.js';
import { UsageError } from '../cli-error.js';
import { databaseTarget, resolveSources, SOURCE_OPTIONS, type ResolvedSource } from '../sources.js';
import { RelayActivityLog, relayLogger } from '../relay-activity.js';
import { settlesWithin, ShutdownDeadline } from '../shutdown-deadline.js';
import type { Command } from '../command.js';
import type { AdminServer } from '../../server/admin-server.js';
import {
  ADMIN_OPTIONS,
  adminSettings,
  loadRelayMetrics,
  startRelayAdmin,
  type AdminSettings,
  type LoadedMetrics,
} from './admin.js';

/**
 * After `--shutdown-timeout-ms`, the time the transport and the store get to close before the
 * process is ended anyway (exit code 3). Closing a healthy RabbitMQ connection and pool takes
 * milliseconds; the RabbitMQ transport gives up on an unanswered close after 2 s.
 */
export const SHUTDOWN_CLOSE_MARGIN_MS = 5000;

/**
 * How long past its own deadline `relay.stop()` may take (unsubscribing from LISTEN) before the
 * transport and the store are closed regardless.
 */
const RELAY_STOP_GRACE_MS = 1000;

const OPTIONS: OptionSpec[] = [
  ...SOURCE_OPTIONS,
  ...COMMON_OPTIONS.filter((o) => o.key !== 'databaseUrl' && o.key !== 'schema'),
  ...CONNECTION_OPTIONS,
  {
    key: 'transport',
    flag: 'transport',
    env: 'MAILROOM_TRANSPORT',
    type: 'url',
    secret: true,
    description: 'where to deliver: amqp://user:password@host:5672/vhost',
  },
  {
    key: 'exchange',
    flag: 'exchange',
    env: 'MAILROOM_EXCHANGE',
    type: 'string',
    default: 'mailroom',
    description: 'RabbitMQ exchange (durable) messages are published to; topic = routing key',
  },
  {
    key: 'exchangeType',
    flag: 'exchange-type',
    env: 'MAILROOM_EXCHANGE_TYPE',
    type: 'enum',
    values: ['topic', 'direct', 'fanout', 'headers'],
    default: 'topic',
    description: 'type of the exchange the relay declares (must match an existing exchange of that name)',
  },
  {
    key: 'declareExchange',
    flag: 'declare-exchange',
    env: 'MAILROOM_DECLARE_EXCHANGE',
    type: 'bool',
    default: true,
    description:
      'declare the exchange at start; --no-declare-exchange for a user without configure permission (the exchange must exist)',
  },
  {
    key: 'mandatory',
    flag: 'mandatory',
    env: 'MAILROOM_MANDATORY',
    type: 'bool',
    default: true,
    description:
      'dead-letter messages no queue is bound to receive (replay them once one is); --no-mandatory lets RabbitMQ drop them unseen',
  },
  {
    key: 'batchSize',
    flag: 'batch-size',
    env: 'MAILROOM_BATCH_SIZE',
    type: 'int',
    ...bounds(relayOptionsSchema.fields.batchSize),
    description: 'messages claimed and published per batch',
  },
  {
    key: 'maxPerKey',
    flag: 'max-per-key',
    env: 'MAILROOM_MAX_PER_KEY',
    type: 'int',
    ...bounds(relayOptionsSchema.fields.maxPerKey),
    description:
      'most messages of one key per batch, sent in order (default: the batch size); 1 for queues with x-overflow reject-publish',
  },
  {
    key: 'concurrency',
    flag: 'concurrency',
    env: 'MAILROOM_CONCURRENCY',
    type: 'int',
    ...bounds(relayOptionsSchema.fields.concurrency),
    description: 'batches in flight at once',
  },
  {
    key: 'leaseMs',
    flag: 'lease-ms',
    env: 'MAILROOM_LEASE_MS',
    type: 'int',
    ...bounds(relayOptionsSchema.fields.leaseMs),
    description: "how long a claim holds its messages; a dead relay's messages return after this",
  },
  {
    key: 'wakeup',
    flag: 'wakeup',
    env: 'MAILROOM_WAKEUP',
    type: 'enum',
    values: ['notify', 'poll', 'replication'],
    description:
      'notify: wake-ups at commit (PostgreSQL LISTEN/NOTIFY, SQLite data_version) plus a poll backstop; poll: polling only; replication: tail the outbox inserts in the log (PostgreSQL logical replication slot), claims for retries and a 5 s backstop (default: notify, poll for MySQL/MariaDB, which have no NOTIFY)',
  },
  {
    key: 'slot',
    flag: 'slot',
    env: 'MAILROOM_SLOT',
    type: 'string',
    description:
      'with --wakeup replication: the logical replication slot, created when missing (default <schema>_relay); relays sharing it are hot standbys',
  },
  {
    key: 'publication',
    flag: 'publication',
    env: 'MAILROOM_PUBLICATION',
    type: 'string',
    description:
      'with --wakeup replication: the publication of <schema>.outbox (inserts), created when missing (default <schema>_outbox)',
  },
  {
    key: 'pollIntervalMs',
    flag: 'poll-interval-ms',
    env: 'MAILROOM_POLL_INTERVAL_MS',
    type: 'int',
    ...bounds(relayOptionsSchema.fields.pollIntervalMs),
    description: 'poll interval (default 1000 with notify, 250 with poll, 5000 with replication)',
  },
  {
    key: 'idlePollMaxMs',
    flag: 'idle-poll-max-ms',
    env: 'MAILROOM_IDLE_POLL_MAX_MS',
    type: 'int',
    ...bounds(relayOptionsSchema.fields.idlePollMaxMs),
    description:
      'longest wait between polls while they find nothing: the wait doubles from the poll interval up to this (default 2000 with poll, else the poll interval)',
  },
  {
    key: 'maxAttempts',
    flag: 'max-attempts',
    env: 'MAILROOM_MAX_ATTEMPTS',
    type: 'int',
    min: 1,
    max: 1000,
    default: 12,
    description: 'delivery attempts before a message is dead-lettered',
  },
  {
    key: 'retryBaseMs',
    flag: 'retry-base-ms',
    env: 'MAILROOM_RETRY_BASE_MS',
    type: 'int',
    min: 0,
    max: 86400000,
    default: 1000,
    description: 'backoff ceiling of the first retry; doubles per attempt (full jitter)',
  },
  {
    key: 'retryMaxMs',
    flag: 'retry-max-ms',
    env: 'MAILROOM_RETRY_MAX_MS',
    type: 'int',
    min: 0,
    max: 86400000,
    default: 300000,
    description: 'largest backoff between attempts',
  },
  {
    key: 'archive',
    flag: 'archive',
    env: 'MAILROOM_ARCHIVE',
    type: 'bool',
    default: false,
    description: 'keep delivered messages in <schema>.archive instead of deleting them',
  },
  {
    key: 'archiveRetentionMs',
    flag: 'archive-retention-ms',
    env: 'MAILROOM_ARCHIVE_RETENTION_MS',
    type: 'int',
    min: 1000,
    max: 31536000000,
    default: 604800000,
    description: 'with --archive: delete archived messages older than this (checked every minute)',
  },
  {
    key: 'publishTimeoutMs',
    flag: 'publish-timeout-ms',
    env: 'MAILROOM_PUBLISH_TIMEOUT_MS',
    type: 'int',
    ...bounds(relayOptionsSchema.fields.publishTimeoutMs),
    description:
      'deadline of one publish; past it the batch is released (no attempt spent) and the broker is probed until it answers',
  },
  {
    key: 'shutdownTimeoutMs',
    flag: 'shutdown-timeout-ms',
    env: 'MAILROOM_SHUTDOWN_TIMEOUT_MS',
    type: 'int',
    ...bounds(relayOptionsSchema.fields.shutdownTimeoutMs),
    description: `on SIGINT/SIGTERM, how long to wait for in-flight batches; the process ends at most ${SHUTDOWN_CLOSE_MARGIN_MS / 1000} s later whatever the sockets do (exit code 3)`,
  },
  {
    key: 'ackSweepIntervalMs',
    flag: 'ack-sweep-interval-ms',
    env: 'MAILROOM_ACK_SWEEP_INTERVAL_MS',
    type: 'int',
    ...bounds(relayOptionsSchema.fields.ackSweepIntervalMs),
    description:
      'how often messages sent with ack are resent or expired once their acknowledgement deadline passed',
  },
  {
    key: 'ackRetentionMs',
    flag: 'ack-retention-ms',
    env: 'MAILROOM_ACK_RETENTION_MS',
    type: 'int',
    ...bounds(relayOptionsSchema.fields.ackRetentionMs),
    description: 'delete acknowledged and expired records older than this',
  },
  {
    key: 'webhookSecret',
    flag: 'webhook-secret',
    env: 'MAILROOM_WEBHOOK_SECRET',
    type: 'string',
    secret: true,
    description:
      'signing secret of an http(s):// --transport (Standard Webhooks; a whsec_… secret, or 16 bytes or more); never printed',
  },
  {
    key: 'callbackSecret',
    flag: 'callback-secret',
    env: 'MAILROOM_CALLBACK_SECRET',
    type: 'string',
    secret: true,
    description:
      'sign and POST the outcomes of messages sent with callback: { url } (a whsec_… secret, or 16 bytes or more); never printed',
  },
  {
    key: 'progressIntervalMs',
    flag: 'progress-interval-ms',
    env: 'MAILROOM_PROGRESS_INTERVAL_MS',
    type: 'int',
    min: 0,
    max: 86_400_000,
    default: 10_000,
    description:
      'interval of the progress line (delivered, retried, dead, backlog) while there is work; 0: none',
  },
  ...ADMIN_OPTIONS,
];

/**
 * Closes what was opened, in parallel (neither depends on the other), each as a named step of
 * the shutdown deadline. Waits at most `ms`: what did not close by then is the deadline's to
 * report. Resolves to false when the transport's close failed.
 */
async function closeAll(
  deadline: ShutdownDeadline,
  logger: Logger,
  ms: number,
  parts: { transport: Transport; broker: string; store: OutboxStore | undefined; database: string },
): Promise<boolean> {
  let ok = true;
  const closing = [
    deadline.step(`transport (closing ${parts.broker})`, parts.transport.close()).catch((err: unknown) => {
      ok = false;
      logger.error('closing the transport failed', { event: 'cli_transport_close_failed', error: err });
    }),
    parts.store &&
      deadline
        .step(`store (closing ${parts.database})`, parts.store.close())
        .catch((err: unknown) =>
          logger.warn('closing the store failed', { event: 'cli_close_failed', error: err }),
        ),
  ];
  await settlesWithin(Promise.all(closing), ms);
  return ok;
}

export const relayCommand: Command = {
  name: 'relay',
  summary: 'deliver outbox messages to the transport until stopped (SIGINT/SIGTERM drain gracefully)',
  usage: 'mailroom relay --database-url URL… [--schema NAME]… --transport amqp://… [options]',
  options: OPTIONS,
  booleans: ['print-config'],
  required: ['transport'],
  details: [
    'Several databases or schemas: repeat --schema (schemas of one --database-url) or',
    '--database-url (the same --schema in each), or list them by name in "sources" (config file,',
    'MAILROOM_SOURCES or --sources). One claim loop per source, one broker connection, a shared',
    'budget of batches in flight handed out round-robin (docs/relay.md, "Several databases or',
    'schemas"). Log lines carry the source name; a source whose database is down is retried.',
  ].join('\n'),
  async run({ config: settings, flags, out, logger }) {
    const printOnly = flags.get('print-config') === true;
    let sources: ResolvedSource[];
    try {
      sources = resolveSources(settings, flags);
    } catch (err) {
      // --print-config shows the settings also before a database URL is given.
      if (!(printOnly && err instanceof UsageError && err.details.key === 'databaseUrl')) throw err;
      sources = [];
    }
    if (printOnly) {
      // The sources as the relay would serve them (names, where, schema), passwords taken out.
      const printed = {
        ...printableConfig(settings, OPTIONS),
        ...(sources.length > 1
          ? {
              sources: sources.map((s) => ({
                name: s.name,
                databaseUrl: redactUrl(s.databaseUrl),
                schema: s.schema,
              })),
            }
          : {}),
      };
      out(JSON.stringify(printed, null, 2));
      return 0;
    }
    const config = (sources[0] as ResolvedSource).config;
    // The library refuses this pair too, but only once the store and broker are open, and by its
    // own option names: check it first, by the flags' names.
    const side = (key: string, name: string) => ({
      name,
      value: Number(config[key]),
      given: config[key] !== OPTIONS.find((o) => o.key === key)?.default,
    });
    requireOrdered(side('retryBaseMs', '--retry-base-ms'), side('retryMaxMs', '--retry-max-ms'));
    // The admin server's settings and prom-client are checked before anything connects: a bad
    // token file or a missing package is a one-line usage error.
    const admin = adminSettings(settings);
    if (!admin && (settings.adminToken !== undefined || settings.adminTokenFile !== undefined)) {
      logger.warn('an admin token is set but no --admin-port: no admin server runs', {
        see: 'docs/admin.md',
      });
    }
    const metrics = admin ? await loadRelayMetrics() : undefined;
    const replication = config.wakeup === 'replication';
    // A wake-up a database cannot give is refused from its URL, before anything connects.
    for (const source of sources) checkWakeup(source.config);
    if (!replication) {
      for (const [key, flag] of [
        ['slot', '--slot'],
        ['publication', '--publication'],
      ] as const) {
        if (config[key] !== undefined) {
          throw new ConfigError(
            key,
            `${flag} needs --wakeup replication (it names what the log is read through)`,
          );
        }
      }
    }

    if (sources.length > 1) {
      if (replication && (config.slot !== undefined || config.publication !== undefined)) {
        throw new ConfigError(
          config.slot !== undefined ? 'slot' : 'publication',
          'with several sources each one reads the log through its own <schema>_relay slot and <schema>_outbox ' +
            'publication: leave --slot and --publication out',
        );
      }
      return runGroup(settings, sources, logger, admin && metrics ? { settings: admin, metrics } : undefined);
    }
    const shutdownTimeoutMs = Number(config.shutdownTimeoutMs);
    const database = databaseTarget(String(config.databaseUrl));
    const broker = redactUrl(String(config.transport));
    // Checks the broker URL and builds the transport, connecting nothing: a wrong URL is a
    // one-line usage error before anything else is written.
    const transport = await openTransport(config);

    // Signals are ours from here on, also while connecting: a relay that cannot reach its
    // database must still end on SIGTERM, by the same deadline.
    const deadline = new ShutdownDeadline({
      logger,
      deadlineMs: shutdownTimeoutMs + SHUTDOWN_CLOSE_MARGIN_MS,
    });
    deadline.install();
    void deadline.requested.then((signal) =>
      logger.info('stopping: draining in-flight batches', {
        event: 'cli_stopping',
        signal,
        shutdownTimeoutMs,
      }),
    );

    const store = await deadline.unlessStopped(
      `store (connecting to ${database})`,
      openStore(config, {
        kinds: ALL_STORE_KINDS,
        archive: Boolean(config.archive),
        // Each batch in flight may extend its lease while it settles (two connections), plus a
        // claim, the LISTEN connection and the wake gate's (held while the relay is idle); the
        // log source's claimIds in replication mode.
        poolSize: Number(config.concurrency) * 2 + 3,
      }),
    );
    if (!store) {
      await closeAll(deadline, logger, SHUTDOWN_CLOSE_MARGIN_MS, {
        transport,
        broker,
        store: undefined,
        database,
      });
      return 0;
    }
    const mandatory = Boolean(config.mandatory);
    // The exchange and mandatory flag are RabbitMQ's: other transports' lines do not show them.
    const amqp = /^amqps?:/i.test(String(config.transport));
    // Where this relay reads and writes, once the database answered and before the broker is
    // connected: a broker connect that fails or hangs is explained by the line above it.
    logger.info('relay starting', {
      event: 'cli_relay_starting',
      database,
      schema: config.schema,
      broker,
      ...(amqp ? { exchange: config.exchange } : {}),
      wakeup: relayWakeup(config, store),
      ...(amqp ? { mandatory } : {}),
    });
    if (amqp && !mandatory) {
      logger.warn(
        'mandatory is off: RabbitMQ drops a message no queue is bound to receive and still confirms it, ' +
          'so the relay counts it delivered and cannot warn about it',
        { event: 'mandatory_off', exchange: config.exchange },
      );
    }
    let relay: Relay;
    let starting: Promise<void>;
    let started: boolean;
    try {
      relay = new Relay({
        store,
        transport,
        logger: relayLogger(logger),
        ...relayOptionsFrom(config, store, relayLogger(logger)),
      });
      starting = relay.start();
      started =
        (await deadline.unlessStopped(
          `relay (starting: schema check, connecting to ${broker})`,
          starting.then(() => true),
        )) ?? false;
    } catch (err) {
      deadline.begin();
      await closeAll(deadline, logger, SHUTDOWN_CLOSE_MARGIN_MS, { transport, broker, store, database });
      throw err;
    }
    if (!started) {
      // Stopped while connecting: nothing was claimed, so nothing needs draining. Closing the
      // store and transport makes a start still under way fail; one that completes all the same
      // is stopped at once.
      starting.then(
        () => void relay.stop(),
        () => undefined,
      );
      await closeAll(deadline, logger, SHUTDOWN_CLOSE_MARGIN_MS, { transport, broker, store, database });
      return 0;
    }

    const activity = new RelayActivityLog({
      relay,
      stats: () => store.stats(),
      logger,
      progressEveryMs: Number(config.progressIntervalMs),
    });
    activity.start();
    let adminServer: AdminServer | undefined;
    if (admin && metrics) {
      try {
        const source = (sources[0] as ResolvedSource).name;
        metrics.observe(relay, { store, source });
        adminServer = await startRelayAdmin({
          settings: admin,
          metrics,
          relay,
          transport,
          stores: [{ name: source, store }],
          logger,
        });
      } catch (err) {
        // The port is taken (or the like): stop as on a signal, then report it.
        deadline.begin();
        metrics.close();
        activity.stop();
        await settlesWithin(
          deadline.step('relay (stopping)', relay.stop()),
          shutdownTimeoutMs + RELAY_STOP_GRACE_MS,
        );
        await closeAll(deadline, logger, SHUTDOWN_CLOSE_MARGIN_MS - RELAY_STOP_GRACE_MS, {
          transport,
          broker,
          store,
          database,
        });
        throw err;
      }
    }
    let pruneTimer: NodeJS.Timeout | undefined;
    if (config.archive) {
      const prune = () =>
        store
          .pruneArchive(Number(config.archiveRetentionMs))
          .then((n) => n && logger.info('pruned archive', { event: 'archive_pruned', count: n }))
          .catch((err: unknown) =>
            logger.warn('archive prune failed', { event: 'archive_prune_failed', error: err }),
          );
      pruneTimer = setInterval(prune, 60_000);
      void prune();
    }

    await deadline.requested;
    clearInterval(pruneTimer);
    // relay.stop() keeps its own deadline for the batches; past it, only unsubscribing from
    // LISTEN is left, which a silent database can hold up: close the rest regardless.
    await settlesWithin(
      deadline.step('relay (stopping)', relay.stop()),
      shutdownTimeoutMs + RELAY_STOP_GRACE_MS,
    );
    activity.stop();
    // Served through the drain (readiness, metrics); closed before the store it reads.
    metrics?.close();
    if (adminServer) await settlesWithin(deadline.step('admin server (closing)', adminServer.close()), 1000);
    const closed = await closeAll(deadline, logger, SHUTDOWN_CLOSE_MARGIN_MS - RELAY_STOP_GRACE_MS, {
      transport,
      broker,
      store,
      database,
    });
    logger.info('relay exited', { event: 'cli_exited', ...activity.totals });
    return closed ? 0 : 1;
  },
};

/** The relay options the settings give, for one source's store (its log source in replication mode). */
function relayOptionsFrom(
  config: ResolvedConfig,
  store: OpenedStore,
  logger: Logger,
): Omit<RelayOptions, 'store' | 'transport' | 'logger'> {
  const wakeup = relayWakeup(config, store);
  // checkWakeup let replication through for a PostgreSQL URL only: its store is a PostgresStore.
  const logStore = wakeup === 'replication' && store instanceof PostgresStore ? store : undefined;
  return {
    batchSize: Number(config.batchSize),
    concurrency: Number(config.concurrency),
    ...(config.maxPerKey === undefined ? {} : { maxPerKey: Number(config.maxPerKey) }),
    leaseMs: Number(config.leaseMs),
    ...(logStore
      ? {
          source: new PostgresLogSource({
            connectionString: String(config.databaseUrl),
            schema: String(config.schema),
            store: logStore,
            logger,
            ...(config.slot === undefined ? {} : { slot: String(config.slot) }),
            ...(config.publication === undefined ? {} : { publication: String(config.publication) }),
          }),
        }
      : { wakeup: wakeup as 'notify' | 'poll' }),
    ...(config.pollIntervalMs === undefined ? {} : { pollIntervalMs: Number(config.pollIntervalMs) }),
    ...(config.idlePollMaxMs === undefined ? {} : { idlePollMaxMs: Number(config.idlePollMaxMs) }),
    shutdownTimeoutMs: Number(config.shutdownTimeoutMs),
    publishTimeoutMs: Number(config.publishTimeoutMs),
    ackSweepIntervalMs: Number(config.ackSweepIntervalMs),
    ackRetentionMs: Number(config.ackRetentionMs),
    ...(config.callbackSecret === undefined ? {} : { callbacks: { secret: String(config.callbackSecret) } }),
    retry: {
      maxAttempts: Number(config.maxAttempts),
      baseDelayMs: Number(config.retryBaseMs),
      maxDelayMs: Number(config.retryMaxMs),
    },
  };
}

/** Per source, what happened since the last progress line. */
interface SourceCounts {
  delivered: number;
  retried: number;
  dead: number;
  errors: number;
}

/**
 * `mailroom relay` with several sources: a {@link RelayGroup} over one store per source and one
 * transport. Stores are opened lazily (a database that is down fails that source's start, which
 * the group retries); the process stops on SIGINT/SIGTERM by the same deadline as one relay.
 */
async function runGroup(
  settings: ResolvedConfig,
  sources: readonly ResolvedSource[],
  logger: Logger,
  admin: { settings: AdminSettings; metrics: LoadedMetrics } | undefined,
): Promise<number> {
  const shutdownTimeoutMs = Number(settings.shutdownTimeoutMs);
  const broker = redactUrl(String(settings.transport));
  const transport = await openTransport(settings);
  const deadline = new ShutdownDeadline({ logger, deadlineMs: shutdownTimeoutMs + SHUTDOWN_CLOSE_MARGIN_MS });
  deadline.install();
  void deadline.requested.then((signal) =>
    logger.info('stopping: draining in-flight batches', { event: 'cli_stopping', signal, shutdownTimeoutMs }),
  );
  const stores: OpenedStore[] = [];
  const closeEverything = async (ms: number): Promise<boolean> => {
    let ok = true;
    const closing = [
      deadline.step(`transport (closing ${broker})`, transport.close()).catch((err: unknown) => {
        ok = false;
        logger.error('closing the transport failed', { event: 'cli_transport_close_failed', error: err });
      }),
      ...stores.map((store, i) =>
        deadline
          .step(`store (closing ${sources[i]?.name ?? '?'})`, store.close())
          .catch((err: unknown) =>
            logger.warn('closing a store failed', { event: 'cli_close_failed', error: err }),
          ),
      ),
    ];
    await settlesWithin(Promise.all(closing), ms);
    return ok;
  };
  let group: RelayGroup;
  try {
    for (const source of sources) {
      stores.push(
        await openStore(source.config, {
          kinds: ALL_STORE_KINDS,
          archive: Boolean(settings.archive),
          poolSize: Number(settings.concurrency) * 2 + 3,
        }),
      );
    }
    group = new RelayGroup({
      transport,
      logger: relayLogger(logger),
      sources: sources.map((source, i) => {
        const store = stores[i] as OpenedStore;
        const {
          batchSize: _b,
          concurrency: _c,
          ...own
        } = relayOptionsFrom(source.config, store, relayLogger(logger));
        return { name: source.name, store, ...own };
      }),
      batchSize: Number(settings.batchSize),
      concurrency: Number(settings.concurrency),
      ...(settings.maxPerKey === undefined ? {} : { maxPerKey: Number(settings.maxPerKey) }),
    });
  } catch (err) {
    deadline.begin();
    await closeEverything(SHUTDOWN_CLOSE_MARGIN_MS);
    throw err;
  }
  logger.info('relay starting', {
    event: 'cli_relay_starting',
    sources: sources.map((s) => `${s.name}=${databaseTarget(s.databaseUrl)}#${s.schema}`).join(', '),
    broker,
    wakeup: settings.wakeup,
    maxInFlightBatches: group.maxInFlightBatches,
  });
  const starting = group.start();
  let started: boolean;
  try {
    started =
      (await deadline.unlessStopped(
        `relay group (starting ${sources.length} sources, connecting to ${broker})`,
        starting.then(() => true),
      )) ?? false;
  } catch (err) {
    deadline.begin();
    await closeEverything(SHUTDOWN_CLOSE_MARGIN_MS);
    throw err;
  }
  if (!started) {
    starting.then(
      () => void group.stop(),
      () => undefined,
    );
    await closeEverything(SHUTDOWN_CLOSE_MARGIN_MS);
    return 0;
  }
  let adminServer: AdminServer | undefined;
  if (admin) {
    try {
      admin.metrics.observe(group);
      adminServer = await startRelayAdmin({
        settings: admin.settings,
        metrics: admin.metrics,
        relay: group,
        transport,
        stores: sources.map((s, i) => ({ name: s.name, store: stores[i] as OpenedStore })),
        logger,
      });
    } catch (err) {
      deadline.begin();
      admin.metrics.close();
      await settlesWithin(
        deadline.step('relay group (stopping)', group.stop()),
        shutdownTimeoutMs + RELAY_STOP_GRACE_MS,
      );
      await closeEverything(SHUTDOWN_CLOSE_MARGIN_MS - RELAY_STOP_GRACE_MS);
      throw err;
    }
  }
  // Progress: one line per source that did something in the interval, with its backlog.
  const counts = new Map<string, SourceCounts>(
    sources.map((s) => [s.name, { delivered: 0, retried: 0, dead: 0, errors: 0 }]),
  );
  const totals = { delivered: 0, retried: 0, dead: 0 };
  const at = (source: string) => counts.get(source) as SourceCounts;
  group.on('relay:batch:settled', ({ source, delivered }) => {
    at(source).delivered += delivered;
    totals.delivered += delivered;
  });
  group.on('relay:message:retry', ({ source }) => {
    at(source).retried++;
    totals.retried++;
  });
  group.on('relay:message:dead', ({ source, message, error }) => {
    if (at(source).dead === 0) {
      logger.warn('messages are being dead-lettered', {
        component: 'relay',
        event: 'topic_dead_lettering',
        source,
        topic: message.topic,
        error,
        see: `mailroom dlq list --schema ${sources.find((s) => s.name === source)?.schema ?? ''}`,
      });
    }
    at(source).dead++;
    totals.dead++;
  });
  group.on('relay:error', ({ source }) => void at(source).errors++);
  const everyMs = Number(settings.progressIntervalMs);
  const progress =
    everyMs > 0
      ? setInterval(() => {
          const busy = [...counts].filter(([, c]) => c.delivered + c.retried + c.dead + c.errors > 0);
          if (busy.length === 0) return;
          void group.backlog(2000).then((backlogs) => {
            for (const [source, c] of busy) {
              const b = backlogs.find((x) => x.name === source);
              logger.info('progress', {
                component: 'relay',
                event: 'relay_progress',
                source,
                ...c,
                ...(b?.stats ? { backlog: b.stats.backlog } : {}),
              });
              Object.assign(c, { delivered: 0, retried: 0, dead: 0, errors: 0 });
            }
          });
        }, everyMs)
      : undefined;
  let pruneTimer: NodeJS.Timeout | undefined;
  if (settings.archive) {
    const prune = () =>
      Promise.all(
        stores.map((store, i) =>
          store
            .pruneArchive(Number(settings.archiveRetentionMs))
            .then(
              (n) =>
                n &&
                logger.info('pruned archive', {
                  event: 'archive_pruned',
                  source: sources[i]?.name,
                  count: n,
                }),
            )
            .catch((err: unknown) =>
              logger.warn('archive prune failed', {
                event: 'archive_prune_failed',
                source: sources[i]?.name,
                error: err,
              }),
            ),
        ),
      );
    pruneTimer = setInterval(() => void prune(), 60_000);
    void prune();
  }
  await deadline.requested;
  clearInterval(pruneTimer);
  clearInterval(progress);
  await settlesWithin(
    deadline.step('relay group (stopping)', group.stop()),
    shutdownTimeoutMs + RELAY_STOP_GRACE_MS,
  );
  admin?.metrics.close();
  if (adminServer) await settlesWithin(deadline.step('admin server (closing)', adminServer.close()), 1000);
  const closed = await closeEverything(SHUTDOWN_CLOSE_MARGIN_MS - RELAY_STOP_GRACE_MS);
  logger.info('relay exited', { event: 'cli_exited', ...totals });
  return closed ? 0 : 1;
}
