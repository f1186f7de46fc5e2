import { readFileSync } from 'node:fs';
import { ConfigError } from '../../core/errors/config-error.js';
import type { Logger } from '../../core/logger.js';
import type { OutboxStore, Transport } from '../../core/ports.js';
import type * as MetricsModule from '../../metrics/index.js';
import type { Relay } from '../../core/relay.js';
import type { RelayGroup } from '../../core/relay-group.js';
import type { AdminRelay } from '../../server/relay-view.js';
import { AdminServer, isLoopbackHost, type MetricsRegistry } from '../../server/admin-server.js';
import { ALL_STORE_KINDS, CONNECTION_OPTIONS, openStore, type OpenedStore } from '../connect.js';
import { COMMON_OPTIONS, type OptionSpec, type ResolvedConfig } from '../options.js';
import { databaseTarget, resolveSources, SOURCE_OPTIONS } from '../sources.js';
import { settlesWithin, ShutdownDeadline } from '../shutdown-deadline.js';
import type { Command } from '../command.js';

/** The admin server's port when `mailroom admin` is given none (Prometheus exporters' range). */
export const DEFAULT_ADMIN_PORT = 9464;

/** How long closing the server and the stores may take after a signal. */
const ADMIN_CLOSE_MS = 5000;

/**
 * The admin server's settings, shared by `mailroom relay` (where `--admin-port` turns the server
 * on) and `mailroom admin`. The token comes from the environment or a file, never printed.
 */
export const ADMIN_OPTIONS: OptionSpec[] = [
  {
    key: 'adminPort',
    flag: 'admin-port',
    env: 'MAILROOM_ADMIN_PORT',
    type: 'int',
    min: 0,
    max: 65535,
    valueName: 'port',
    description:
      'serve /metrics, /healthz, /readyz, the JSON API and the dashboard on this port (0: any free port, logged); see docs/admin.md',
  },
  {
    key: 'adminHost',
    flag: 'admin-host',
    env: 'MAILROOM_ADMIN_HOST',
    type: 'string',
    default: '127.0.0.1',
    valueName: 'address',
    description:
      'address the admin server binds; anything but loopback needs an admin token, which every /api request must then carry',
  },
  {
    key: 'adminToken',
    flag: 'admin-token',
    env: 'MAILROOM_ADMIN_TOKEN',
    type: 'string',
    secret: true,
    valueName: 'token',
    description:
      'bearer token for replay and purge (16 characters or more; e.g. openssl rand -hex 32); prefer the variable or --admin-token-file to a flag other users can see; never printed',
  },
  {
    key: 'adminTokenFile',
    flag: 'admin-token-file',
    env: 'MAILROOM_ADMIN_TOKEN_FILE',
    type: 'string',
    valueName: 'path',
    description: 'read the admin token from this file (its first line), e.g. a mounted secret',
  },
];

/** Where and how the admin server listens, from the settings. */
export interface AdminSettings {
  host: string;
  port: number;
  token: string | undefined;
}

/**
 * The admin server's settings, or undefined when no port is set and none is `fallbackPort` (a
 * token set then is ignored: the environment may be shared with `mailroom admin`).
 * Throws a {@link ConfigError} naming the flag: a token file that cannot be read, both a token and
 * a token file, or a non-loopback address without a token.
 */
export function adminSettings(config: ResolvedConfig, fallbackPort?: number): AdminSettings | undefined {
  const port = config.adminPort === undefined ? fallbackPort : Number(config.adminPort);
  if (port === undefined) {
    return undefined;
  }
  const host = String(config.adminHost ?? '127.0.0.1');
  let token = config.adminToken === undefined ? undefined : String(config.adminToken);
  if (config.adminTokenFile !== undefined) {
    const file = String(config.adminTokenFile);
    if (token !== undefined) {
      throw new ConfigError(
        'adminTokenFile',
        '--admin-token-file and MAILROOM_ADMIN_TOKEN (or --admin-token) are both set; give the token one way',
      );
    }
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      throw new ConfigError(
        'adminTokenFile',
        `cannot read --admin-token-file ${JSON.stringify(file)}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
      );
    }
    token = (text.split(/\r?\n/)[0] ?? '').trim();
    if (token === '') {
      throw new ConfigError(
        'adminTokenFile',
        `--admin-token-file ${JSON.stringify(file)} is empty; write the token on its first line`,
      );
    }
  }
  if (token !== undefined && (token.length < 16 || /\s/.test(token))) {
    throw new ConfigError(
      config.adminTokenFile !== undefined ? 'adminTokenFile' : 'adminToken',
      'the admin token must be at least 16 characters without spaces; generate one with `openssl rand -hex 32`',
    );
  }
  if (!isLoopbackHost(host) && token === undefined) {
    throw new ConfigError(
      'adminHost',
      `--admin-host ${host} lets other machines reach the admin server, which then needs a token: set MAILROOM_ADMIN_TOKEN or --admin-token-file, or bind 127.0.0.1`,
    );
  }
  return { host, port, token };
}

/** What `mailroom relay --admin-port` needs from `mailroom/metrics`, loaded only then. */
export interface LoadedMetrics {
  registry: MetricsRegistry;
  observe(target: AdminRelay, options?: { store: OutboxStore; source: string }): void;
  close(): void;
}

/**
 * A `RelayMetrics` from `mailroom/metrics`, imported on demand: prom-client is an optional
 * dependency, needed only when the admin server runs with a relay. A missing prom-client is a
 * {@link ConfigError} that says what to install.
 */
export async function loadRelayMetrics(): Promise<LoadedMetrics> {
  let mod: typeof MetricsModule;
  try {
    mod = await import('../../metrics/index.js');
  } catch (err) {
    const text = String((err as Error).message ?? err);
    if (/prom-client/.test(text)) {
      throw new ConfigError(
        'adminPort',
        '--admin-port serves /metrics, which needs prom-client: npm install prom-client (or leave --admin-port out)',
        {},
        err,
      );
    }
    throw err;
  }
  const metrics = new mod.RelayMetrics();
  return {
    registry: metrics.registry,
    observe: (target, options) => {
      // A relay is observed with its store (for the backlog); a group knows its sources' stores.
      if (options) metrics.observe(target as Relay, options);
      else metrics.observe(target as RelayGroup);
    },
    close: () => metrics.close(),
  };
}

/**
 * Starts the admin server of a running relay (or group): its sources' stores, its transport,
 * the metrics registry. Logs where it listens.
 */
export async function startRelayAdmin(options: {
  settings: AdminSettings;
  metrics: LoadedMetrics;
  relay: AdminRelay;
  transport: Transport;
  stores: Array<{ name: string; store: OutboxStore }>;
  logger: Logger;
}): Promise<AdminServer> {
  const server = new AdminServer({
    host: options.settings.host,
    port: options.settings.port,
    ...(options.settings.token === undefined ? {} : { token: options.settings.token }),
    stores: options.stores,
    registry: options.metrics.registry,
    relay: options.relay,
    transport: options.transport,
    logger: options.logger,
  });
  const { url } = await server.start();
  options.logger.info('admin server listening', {
    url,
    mutations: options.settings.token !== undefined,
  });
  return server;
}

export const adminCommand: Command = {
  name: 'admin',
  summary: 'serve the admin API and dashboard over the outbox database(s), without a relay',
  usage: 'mailroom admin --database-url URL… [--schema NAME]… [--admin-port 9464] [options]',
  options: [
    ...SOURCE_OPTIONS,
    ...COMMON_OPTIONS.filter((o) => o.key !== 'databaseUrl' && o.key !== 'schema'),
    ...CONNECTION_OPTIONS,
    ...ADMIN_OPTIONS.map((o) =>
      o.key === 'adminPort'
        ? {
            ...o,
            default: DEFAULT_ADMIN_PORT,
            description: `${o.description} (default ${DEFAULT_ADMIN_PORT})`,
          }
        : o,
    ),
  ],
  details: [
    'For operators: /healthz, /readyz (the databases answer), the JSON API (status, history,',
    'topics, relays from the presence table, dead letters list/replay/purge, acknowledgements) and',
    'the dashboard at /, for one or several sources (as mailroom relay takes them). No /metrics:',
    'those come from the relays (mailroom relay --admin-port). Binds 127.0.0.1 unless',
    '--admin-host says otherwise; replay and purge need MAILROOM_ADMIN_TOKEN or --admin-token-file.',
    'Stops on SIGINT/SIGTERM. Details: docs/admin.md.',
  ].join('\n'),
  async run({ config, flags, logger }) {
    const settings = adminSettings(config, DEFAULT_ADMIN_PORT) as AdminSettings;
    const sources = resolveSources(config, flags);
    const deadline = new ShutdownDeadline({ logger, deadlineMs: ADMIN_CLOSE_MS * 2 });
    deadline.install();
    const stores: OpenedStore[] = [];
    let server: AdminServer | undefined;
    const closeAll = async () => {
      await settlesWithin(
        Promise.all([
          server && deadline.step('admin server (closing)', server.close()),
          ...stores.map((store, i) =>
            deadline
              .step(`store (closing ${sources[i]?.name ?? '?'})`, store.close())
              .catch((err: unknown) => logger.warn('closing a store failed', { error: String(err) })),
          ),
        ]),
        ADMIN_CLOSE_MS,
      );
    };
    try {
      for (const source of sources) {
        stores.push(await openStore(source.config, { kinds: ALL_STORE_KINDS, poolSize: 4 }));
      }
      server = new AdminServer({
        host: settings.host,
        port: settings.port,
        ...(settings.token === undefined ? {} : { token: settings.token }),
        stores: sources.map((s, i) => ({ name: s.name, store: stores[i] as OutboxStore })),
        logger,
      });
      const { url } = await server.start();
      logger.info('admin server listening', {
        url,
        sources: sources.map((s) => `${s.name}=${databaseTarget(s.databaseUrl)}#${s.schema}`).join(', '),
        mutations: settings.token !== undefined,
      });
    } catch (err) {
      deadline.begin();
      await closeAll();
      deadline.dispose();
      throw err;
    }
    const signal = await deadline.requested;
    logger.info('stopping the admin server', { signal });
    await closeAll();
    deadline.dispose();
    return 0;
  },
};
