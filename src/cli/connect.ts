import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ConfigError, isConfigError } from '../core/errors/config-error.js';
import type { Transport } from '../core/ports.js';
import { redactUrl } from '../core/redact.js';
import type { MySqlStore } from '../stores/mysql/mysql-store.js';
import type { PGliteStore } from '../stores/pglite/pglite-store.js';
import { loadPg, postgresStoreOptionsSchema, PostgresStore } from '../stores/postgres/postgres-store.js';
import type { SqliteStore } from '../stores/sqlite/sqlite-store.js';
import { bounds, type OptionSpec, type ResolvedConfig } from './options.js';

const deadlines = postgresStoreOptionsSchema.fields;

/**
 * The deadlines of a command's database connections (and, for `relay`, its broker connection).
 * A command that declares them takes them from flags, environment and config file; one that
 * does not gets the store's defaults all the same.
 */
export const CONNECTION_OPTIONS: readonly OptionSpec[] = [
  {
    key: 'connectTimeoutMs',
    flag: 'connect-timeout-ms',
    env: 'MAILROOM_CONNECT_TIMEOUT_MS',
    type: 'int',
    ...bounds(deadlines.connectTimeoutMs),
    description:
      'deadline for opening a connection (TCP, TLS, handshake, login) to PostgreSQL or MySQL; a URL that points at the wrong server fails after this long',
  },
  {
    key: 'statementTimeoutMs',
    flag: 'statement-timeout-ms',
    env: 'MAILROOM_STATEMENT_TIMEOUT_MS',
    type: 'int',
    ...bounds(deadlines.statementTimeoutMs),
    description:
      'longest a database statement may run (migrations included): PostgreSQL cancels it; with MySQL the driver ends the connection, which rolls it back',
  },
  {
    key: 'serverStatementTimeout',
    flag: 'server-statement-timeout',
    env: 'MAILROOM_SERVER_STATEMENT_TIMEOUT',
    type: 'bool',
    ...(deadlines.serverStatementTimeout.default === undefined
      ? {}
      : { default: deadlines.serverStatementTimeout.default }),
    description:
      'PostgreSQL: send statement_timeout when connecting; --no-server-statement-timeout behind a pooler that refuses it (PgBouncer)',
  },
];

/** The store options a command's connection flags set; none when the command has no such flags. */
export function connectionSettings(config: ResolvedConfig) {
  return {
    ...(config.connectTimeoutMs === undefined ? {} : { connectTimeoutMs: Number(config.connectTimeoutMs) }),
    ...(config.statementTimeoutMs === undefined
      ? {}
      : { statementTimeoutMs: Number(config.statementTimeoutMs) }),
    ...(config.serverStatementTimeout === undefined
      ? {}
      : { serverStatementTimeout: Boolean(config.serverStatementTimeout) }),
  };
}

/**
 * The stores a `--database-url` can name. The scheme picks one: `postgres://` and
 * `postgresql://` PostgreSQL, `mysql://` and `mariadb://` MySQL 8 or MariaDB 10.6+, `sqlite:path`
 * a SQLite file, `pglite:path` a PGlite data directory.
 */
export type StoreKind = 'postgres' | 'pglite' | 'mysql' | 'sqlite';

/** The store class {@link openStore} returns for each kind. */
export interface StoreByKind {
  postgres: PostgresStore;
  pglite: PGliteStore;
  mysql: MySqlStore;
  sqlite: SqliteStore;
}

/** Any store {@link openStore} opens. */
export type OpenedStore = StoreByKind[StoreKind];

/** Every store a command can be given; pass as `kinds` when the command works with all of them. */
export const ALL_STORE_KINDS = ['postgres', 'pglite', 'mysql', 'sqlite'] as const;

/**
 * The stores a command opens when it names none: PostgreSQL and PGlite, which are one store class
 * ({@link PostgresStore}) with every feature (acknowledgements, TCC, the verify ledger).
 */
export const POSTGRES_STORE_KINDS = ['postgres', 'pglite'] as const;

/** What each store is called in messages, an example URL, and the package its driver comes from. */
const STORES: Record<StoreKind, { title: string; example: string; driver: string; install: string }> = {
  postgres: {
    title: 'PostgreSQL',
    example: 'postgres://user:password@host:5432/database',
    driver: 'pg',
    install: 'npm install pg',
  },
  pglite: {
    title: 'PGlite',
    example: 'pglite:./data',
    driver: '@electric-sql/pglite',
    install: 'npm install @electric-sql/pglite',
  },
  mysql: {
    title: 'MySQL/MariaDB',
    example: 'mysql://user:password@host:3306/database',
    driver: 'mysql2',
    install: 'npm install mysql2',
  },
  sqlite: {
    title: 'SQLite',
    example: 'sqlite:./app.db',
    driver: 'better-sqlite3',
    // 13.x needs Node 22; 12.x runs on Node 20 and later.
    install: 'npm install better-sqlite3@12',
  },
};

/** The schemes, as the unknown-scheme error lists them. */
export const STORE_SCHEMES = 'postgres://, postgresql://, mysql://, mariadb://, sqlite:path, pglite:path';

/** A `--database-url` taken apart: which store, by which scheme, and the file or directory. */
export interface StoreUrl {
  kind: StoreKind;
  /** The scheme as written, lower case, with its colon: `mariadb:`. */
  scheme: string;
  /**
   * The SQLite file or the PGlite data directory, as given (relative to the working directory,
   * or absolute); undefined for the network databases and for `pglite:memory:`.
   */
  path?: string;
}

const KEY = '--database-url';

/** The path of a `sqlite:` or `pglite:` URL: `x:./rel`, `x:rel`, `x:///abs`; no query or fragment. */
function filePath(url: string, scheme: string, what: string, example: string): string {
  let path = url.slice(scheme.length);
  if (path.startsWith('//')) path = path.slice(2);
  if (/[?#]/.test(path)) {
    throw new ConfigError(
      KEY,
      `${KEY} ${JSON.stringify(url)} has a query or fragment, which a ${scheme} URL does not take: give the ${what} only, e.g. ${example}`,
      { value: url },
    );
  }
  if (path === '') {
    throw new ConfigError(KEY, `${KEY} ${JSON.stringify(url)} names no ${what}: give one, e.g. ${example}`, {
      value: url,
    });
  }
  return decodeURIComponent(path);
}

/**
 * Takes a `--database-url` apart. Refuses, naming the value (password hidden), a scheme no store
 * has, a MySQL URL without a database, a `sqlite:` or `pglite:` URL without a path, and
 * `sqlite::memory:` (each `mailroom` command is a process of its own: a database in its memory
 * starts empty and is gone when it exits).
 */
export function parseStoreUrl(url: string): StoreUrl {
  const colon = url.indexOf(':');
  const scheme = colon <= 0 ? '' : url.slice(0, colon + 1).toLowerCase();
  switch (scheme) {
    case 'postgres:':
    case 'postgresql:':
      return { kind: 'postgres', scheme };
    case 'mysql:':
    case 'mariadb:': {
      let database = '';
      try {
        database = decodeURIComponent(new URL(url).pathname.replace(/^\//, ''));
      } catch {
        throw new ConfigError(
          KEY,
          `${KEY} is not a URL: ${JSON.stringify(redactUrl(url))}; expected ${STORES.mysql.example}`,
          { value: redactUrl(url) },
        );
      }
      if (database === '') {
        throw new ConfigError(
          KEY,
          `${KEY} ${redactUrl(url)} names no database: add it as the path, e.g. ${STORES.mysql.example} ` +
            "(Mailroom's tables go in it, beside your own, so one transaction writes both)",
          { value: redactUrl(url) },
        );
      }
      return { kind: 'mysql', scheme };
    }
    case 'sqlite:': {
      const path = filePath(url, scheme, 'database file', 'sqlite:./app.db or sqlite:///var/lib/app.db');
      if (path === ':memory:') {
        throw new ConfigError(
          KEY,
          `${KEY} ${JSON.stringify(url)} is a database in memory, which starts empty and is gone when this ` +
            'command exits, so nothing your application writes can reach it: give the database file, e.g. sqlite:./app.db',
          { value: url },
        );
      }
      return { kind: 'sqlite', scheme, path };
    }
    case 'pglite:': {
      if (url.slice(scheme.length) === 'memory:') return { kind: 'pglite', scheme };
      return {
        kind: 'pglite',
        scheme,
        path: filePath(url, scheme, 'data directory', 'pglite:./data or pglite:///var/lib/app-data'),
      };
    }
    default:
      throw new ConfigError(
        KEY,
        `${KEY} ${JSON.stringify(redactUrl(url))} names no database Mailroom can open` +
          `${scheme ? ` (scheme "${scheme}")` : ''}; supported: ${STORE_SCHEMES}, e.g. ${STORES.postgres.example}`,
        { value: redactUrl(url) },
      );
  }
}

function firstLine(err: unknown): string {
  const message = (err as { message?: unknown } | null)?.message;
  return (typeof message === 'string' && message ? message : String(err)).split('\n')[0] as string;
}

/**
 * The error for a store's driver package that would not load: missing (`the mysql:// store needs
 * the mysql2 package: npm install mysql2`), or installed but failing (a native addon built for
 * another Node version, a dependency of its own missing), with the line that fixes it. `err` is
 * what loading threw: the import's error, or a store's error wrapping it as `cause`.
 */
export function driverLoadError(kind: StoreKind, scheme: string, err: unknown): ConfigError {
  const store = STORES[kind];
  const shown = kind === 'sqlite' || kind === 'pglite' ? scheme : `${scheme}//`;
  let cause: unknown = err;
  while (isConfigError(cause) && cause.cause !== undefined) cause = cause.cause;
  const code = (cause as { code?: unknown } | null)?.code;
  const notFound = code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND';
  // Node names the package it could not find in quotes (ESM: Cannot find package 'x'; CommonJS:
  // Cannot find module 'x'); another name is a dependency of the driver's own.
  const names = (text: string) => text.includes(`'${store.driver}'`) || text.includes(`"${store.driver}"`);
  let message: string;
  if (notFound && names(firstLine(cause))) {
    message = `the ${shown} store needs the ${store.driver} package: ${store.install}`;
  } else if (notFound) {
    message =
      `the ${shown} store needs the ${store.driver} package, which is installed but incomplete ` +
      `(${firstLine(cause)}): ${store.install}`;
  } else {
    message =
      `the ${store.driver} package (for ${shown} URLs) is installed but failed to load (${firstLine(cause)}); ` +
      `reinstall it for this Node.js ${process.version}: ${store.install}`;
  }
  return new ConfigError(store.driver, message, { store: kind, install: store.install }, cause);
}

/** Options of {@link openStore}. */
export interface OpenStoreOptions {
  /** PostgreSQL, PGlite, SQLite: wake-ups at commit (see each store's `notify`). @default the store's */
  notify?: boolean;
  /** Keep delivered messages in the archive table instead of deleting them. @default false */
  archive?: boolean;
  /**
   * Connections of a PostgreSQL or MySQL store's pool; the relay asks for two per batch in flight
   * (a lease extension can run beside its settle) plus two (claim, LISTEN). @default 4
   */
  poolSize?: number;
  /**
   * The stores the command works with; another is refused with an error that names both. Leave
   * it out for a command that needs what only PostgreSQL and PGlite keep (acknowledgements, TCC,
   * the verify ledger). @default {@link POSTGRES_STORE_KINDS}
   */
  kinds?: readonly StoreKind[];
  /**
   * Why the command needs one of `kinds`, for the refusal of another store: `'the verify ledger is
   * a PostgreSQL trigger'`.
   */
  needs?: string;
  /**
   * The command creates what is missing (`migrate`): a SQLite file or PGlite directory that does
   * not exist yet is made. Other commands refuse one that does not exist, since it would be made
   * empty (a typo in the path would look like an empty outbox). @default false
   */
  create?: boolean;
}

function refuseKind(parsed: StoreUrl, url: string, kinds: readonly StoreKind[], needs?: string): ConfigError {
  const titles = kinds.map((k) => STORES[k].title);
  const wanted = titles.length > 1 ? `${titles.slice(0, -1).join(', ')} or ${titles.at(-1)}` : titles[0];
  return new ConfigError(
    KEY,
    `${KEY} names a ${STORES[parsed.kind].title} database (${redactUrl(url)}), and this command needs ` +
      `${wanted}${needs ? ` (${needs})` : ''}`,
    { value: redactUrl(url), store: parsed.kind },
  );
}

/**
 * Checks what `--schema` means for the store: the schema of PostgreSQL and PGlite (the store
 * validates it); the prefix of the tables for MySQL (`mailroom` makes `mailroom_outbox`…); nothing
 * for SQLite, whose one outbox per file is in tables named `mailroom_*` (only `mailroom` is taken).
 */
export function checkStoreSchema(kind: StoreKind, schema: string): void {
  if (kind === 'mysql' && !/^[A-Za-z_][A-Za-z0-9_]{0,38}$/.test(schema)) {
    throw new ConfigError(
      '--schema',
      `--schema ${JSON.stringify(schema)} cannot name MySQL tables: for a mysql:// or mariadb:// database it is the ` +
        "prefix of Mailroom's tables (schema billing: billing_outbox, billing_dead_letter…), a letter or _ then " +
        'letters, digits or _, at most 39 characters; the database itself is the path of the URL',
      { value: schema },
    );
  }
  if (kind === 'sqlite' && schema !== 'mailroom') {
    throw new ConfigError(
      '--schema',
      `--schema ${JSON.stringify(schema)} does not apply to a SQLite database: it holds one outbox, in tables ` +
        'named mailroom_*; leave --schema out (and MAILROOM_SCHEMA unset), or give each outbox a database file of its own',
      { value: schema },
    );
  }
}

/** Loads a store's driver package up front, so that a missing one is {@link driverLoadError}'s error. */
async function loadDriver(parsed: StoreUrl, load: () => Promise<unknown>): Promise<void> {
  try {
    await load();
  } catch (err) {
    throw driverLoadError(parsed.kind, parsed.scheme, err);
  }
}

/** A `sqlite:` file or `pglite:` directory that must exist already (see {@link OpenStoreOptions.create}). */
function requireExisting(parsed: StoreUrl, url: string): void {
  if (parsed.path === undefined || existsSync(parsed.path)) return;
  const what = parsed.kind === 'sqlite' ? 'database file' : 'PGlite data directory';
  throw new ConfigError(
    KEY,
    `${KEY} ${JSON.stringify(url)}: no ${what} ${resolve(parsed.path)}; check the path, or create the outbox there ` +
      `with \`npx mailroom migrate --database-url ${url}\``,
    { value: url },
  );
}

/** Opens a PGlite directory, explaining the lock PGlite keeps while a process has it open. */
async function connectPGlite(
  parsed: StoreUrl,
  url: string,
  options: ConstructorParameters<typeof PGliteStore>[0],
): Promise<PGliteStore> {
  const { PGliteStore: Store } = await import('../stores/pglite/pglite-store.js');
  // PGlite writes postmaster.pid while a process has the directory open, and refuses a second.
  const held = parsed.path !== undefined && existsSync(join(parsed.path, 'postmaster.pid'));
  try {
    return await Store.connect(options);
  } catch (err) {
    if (!held) throw err;
    throw new ConfigError(
      KEY,
      `${KEY} ${JSON.stringify(url)}: the PGlite database is open in another process (${join(parsed.path as string, 'postmaster.pid')} ` +
        'exists). PGlite is a database for one process: stop the other one (your application, or a `mailroom relay` ' +
        'on it) first; if none runs any more, one that was killed left the file behind: delete it',
      { value: url },
      err,
    );
  }
}

/**
 * Opens the store `--database-url` names; the scheme picks it (see {@link parseStoreUrl}):
 *
 * - `postgres://`, `postgresql://`: {@link PostgresStore} (driver `pg`); `--schema` is the schema.
 * - `pglite:path`: {@link PGliteStore} on that data directory; `--schema` is the schema.
 * - `mysql://`, `mariadb://`: {@link MySqlStore} (driver `mysql2`) in the URL's database;
 *   `--schema` is the prefix of the tables (`mailroom` makes `mailroom_outbox`…).
 * - `sqlite:path`: {@link SqliteStore} (driver `better-sqlite3`) on that file; its tables are
 *   `mailroom_*`, so `--schema` can only be left at `mailroom`.
 *
 * Drivers are loaded only when their scheme is used; a missing one is a ConfigError with the
 * `npm install` line. Network connections have deadlines (see {@link CONNECTION_OPTIONS}) whether
 * or not the command declares the flags, so no command hangs on a server that does not answer.
 * Without `kinds`, only PostgreSQL and PGlite are opened (the return type says so).
 */
export function openStore(
  config: ResolvedConfig,
  extra?: OpenStoreOptions & { kinds?: undefined },
): Promise<PostgresStore>;
export function openStore<K extends StoreKind>(
  config: ResolvedConfig,
  extra: OpenStoreOptions & { kinds: readonly K[] },
): Promise<StoreByKind[K]>;
export async function openStore(
  config: ResolvedConfig,
  extra: OpenStoreOptions = {},
): Promise<PostgresStore | MySqlStore | SqliteStore> {
  const url = String(config.databaseUrl);
  const parsed = parseStoreUrl(url);
  const kinds = extra.kinds ?? POSTGRES_STORE_KINDS;
  if (!kinds.includes(parsed.kind)) throw refuseKind(parsed, url, kinds, extra.needs);
  const schema = String(config.schema ?? 'mailroom');
  const archive = extra.archive === undefined ? {} : { archive: extra.archive };
  const notify = extra.notify === undefined ? {} : { notify: extra.notify };
  if (!extra.create) requireExisting(parsed, url);
  checkStoreSchema(parsed.kind, schema);
  switch (parsed.kind) {
    case 'postgres':
      await loadDriver(parsed, loadPg);
      return PostgresStore.connect({
        connectionString: url,
        schema,
        poolSize: extra.poolSize ?? 4,
        ...connectionSettings(config),
        ...notify,
        ...archive,
      });
    case 'pglite': {
      if (parsed.path === undefined) {
        throw new ConfigError(
          KEY,
          `${KEY} pglite:memory: is a database in this command's memory: it starts empty and is gone when the ` +
            'command exits, so nothing can be read from it or kept in it; give a data directory, e.g. pglite:./data ' +
            '(`npx mailroom demo` runs the whole flow in memory)',
          { value: url },
        );
      }
      const { loadPGlite } = await import('../stores/pglite/pglite-store.js');
      await loadDriver(parsed, loadPGlite);
      return connectPGlite(parsed, url, {
        ...(parsed.path === undefined ? {} : { dataDir: parsed.path }),
        schema,
        ...notify,
        ...archive,
      });
    }
    case 'mysql': {
      const tablePrefix = `${schema}_`;
      const { MySqlStore: Store, loadMysql2 } = await import('../stores/mysql/mysql-store.js');
      await loadDriver(parsed, loadMysql2);
      const settings = connectionSettings(config);
      return Store.connect({
        connectionString: url,
        tablePrefix,
        poolSize: extra.poolSize ?? 4,
        ...(settings.connectTimeoutMs === undefined ? {} : { connectTimeoutMs: settings.connectTimeoutMs }),
        ...(settings.statementTimeoutMs === undefined
          ? {}
          : { statementTimeoutMs: settings.statementTimeoutMs }),
        ...archive,
      });
    }
    case 'sqlite': {
      const { SqliteStore: Store, loadBetterSqlite3 } = await import('../stores/sqlite/sqlite-store.js');
      await loadDriver(parsed, loadBetterSqlite3);
      return Store.connect({ filename: parsed.path as string, ...notify, ...archive });
    }
  }
}

/**
 * Refuses, from the URL and before anything connects, a `--wakeup` the database cannot give:
 * `replication` reads PostgreSQL's write-ahead log (a logical replication slot), which PGlite,
 * MySQL and SQLite do not have; `notify` needs wake-ups at commit, which MySQL and MariaDB cannot
 * send. Unset, {@link relayWakeup} picks one.
 */
export function checkWakeup(config: ResolvedConfig): void {
  const { kind } = parseStoreUrl(String(config.databaseUrl));
  if (config.wakeup === 'replication' && kind !== 'postgres') {
    throw new ConfigError(
      '--wakeup',
      `--wakeup replication reads PostgreSQL's write-ahead log through a logical replication slot, which a ` +
        `${STORES[kind].title} database does not have: leave --wakeup out, or give notify or poll`,
      { value: 'replication', store: kind },
    );
  }
  if (config.wakeup === 'notify' && kind === 'mysql') {
    throw new ConfigError(
      '--wakeup',
      '--wakeup notify needs wake-ups at commit, which MySQL and MariaDB cannot send: leave --wakeup out, or give ' +
        '--wakeup poll (the relay polls every --poll-interval-ms)',
      { value: 'notify', store: kind },
    );
  }
}

/**
 * The relay's wake-up: `--wakeup` when given (see {@link checkWakeup}), else `notify` where the
 * store sends wake-ups at commit (PostgreSQL and PGlite by NOTIFY, SQLite by `data_version`) and
 * `poll` where it cannot (MySQL, MariaDB).
 */
export function relayWakeup(
  config: ResolvedConfig,
  store: Pick<OpenedStore, 'capabilities'>,
): 'notify' | 'poll' | 'replication' {
  const given = config.wakeup;
  if (given === 'notify' || given === 'poll' || given === 'replication') return given;
  return store.capabilities.notify ? 'notify' : 'poll';
}

/**
 * Where a store keeps Mailroom's tables, for a command's output: `schema "mailroom"`,
 * `tables mailroom_* in database "shop"`, `database file "./app.db"`.
 */
export function storeLocation(store: OpenedStore, url: string): string {
  if (store instanceof PostgresStore) return `schema "${store.schema}"`;
  if ('tablePrefix' in store) {
    let database = store.database;
    try {
      database ??= decodeURIComponent(new URL(url).pathname.replace(/^\//, ''));
    } catch {
      // parseStoreUrl accepted it: it is a URL.
    }
    return `tables ${store.tablePrefix}* in database "${database ?? ''}"`;
  }
  return `database file "${store.file}"`;
}

/** Builds the transport a URL names; the scheme picks it. */
export async function openTransport(config: ResolvedConfig): Promise<Transport> {
  const url = String(config.transport);
  let scheme: string;
  try {
    scheme = new URL(url).protocol;
  } catch {
    throw new ConfigError(
      'transport',
      `--transport is not a URL: ${JSON.stringify(redactUrl(url))}; e.g. amqp://guest:guest@127.0.0.1:5672`,
    );
  }
  switch (scheme) {
    case 'amqp:':
    case 'amqps:': {
      const { RabbitMqTransport } = await import('../transports/rabbitmq/index.js');
      return new RabbitMqTransport({
        url,
        exchange: String(config.exchange),
        mandatory: Boolean(config.mandatory),
        ...(config.exchangeType === undefined ? {} : { exchangeType: String(config.exchangeType) }),
        ...(config.declareExchange === undefined ? {} : { declareExchange: Boolean(config.declareExchange) }),
        ...(config.connectTimeoutMs === undefined
          ? {}
          : { connectTimeoutMs: Number(config.connectTimeoutMs) }),
      });
    }
    case 'stomp:':
    case 'stomps:': {
      // Loaded on demand, like the RabbitMQ transport. It speaks STOMP with Node's own net/tls
      // (no client package to install); the destination is the default `/queue/{topic}`.
      const { StompTransport } = await import('../transports/stomp/index.js');
      return new StompTransport({
        url,
        ...(config.connectTimeoutMs === undefined
          ? {}
          : { connectTimeoutMs: Number(config.connectTimeoutMs) }),
      });
    }
    case 'http:':
    case 'https:': {
      // The URL is the template messages are POSTed to ({topic}, {key}, {type} in its path or
      // query); the signing secret never rides in it: --webhook-secret or MAILROOM_WEBHOOK_SECRET.
      const secret = config.webhookSecret;
      if (secret === undefined || secret === '') {
        throw new ConfigError(
          'webhookSecret',
          `an ${scheme}// transport signs every POST (Standard Webhooks): give the secret with ` +
            '--webhook-secret or MAILROOM_WEBHOOK_SECRET (a whsec_… secret, e.g. from generateWebhookSecret()); ' +
            'it never goes in the URL',
        );
      }
      const { WebhookTransport } = await import('../transports/webhook/index.js');
      return new WebhookTransport({
        url,
        secret: String(secret),
        ...(config.connectTimeoutMs === undefined
          ? {}
          : { connectTimeoutMs: Number(config.connectTimeoutMs) }),
      });
    }
    case 'nats:':
    case 'tls:': {
      // Loaded on demand: @nats-io/transport-node and @nats-io/jetstream are optional peer
      // dependencies. `?prefix=` sets the subject prefix, `?stream=NAME[&subjects=a.>,b.>]` makes
      // the relay create (or extend) that stream at start; see docs/transports/nats.md.
      const { NatsTransport, natsOptionsFromUrl } = await import('../transports/nats/index.js');
      return new NatsTransport({
        ...natsOptionsFromUrl(url),
        ...(config.connectTimeoutMs === undefined
          ? {}
          : { connectTimeoutMs: Number(config.connectTimeoutMs) }),
      });
    }
    case 'redis:':
    case 'rediss:': {
      // Loaded on demand; needs the ioredis package (an optional peer dependency). Streams are
      // named by the topic (the default '{topic}' template); docs/transports/redis.md.
      const { RedisStreamsTransport } = await import('../transports/redis/index.js');
      return new RedisStreamsTransport({
        url,
        ...(config.connectTimeoutMs === undefined
          ? {}
          : { connectTimeoutMs: Number(config.connectTimeoutMs) }),
      });
    }
    case 'mqtt:':
    case 'mqtts:': {
      // Loaded on demand; MqttTransport loads the mqtt package (MQTT.js 5) on its first connect and
      // says to install it when it is missing. QoS 1; topics with dots turned into slashes.
      const { MqttTransport } = await import('../transports/mqtt/index.js');
      return new MqttTransport({
        url,
        ...(config.connectTimeoutMs === undefined
          ? {}
          : { connectTimeoutMs: Number(config.connectTimeoutMs) }),
      });
    }
    case 'kafka:':
    case 'kafkas:': {
      // Loaded on demand; kafkajs (optional peer) is loaded when the producer is built.
      const { KafkaTransport } = await import('../transports/kafka/index.js');
      return new KafkaTransport({
        url,
        ...(config.connectTimeoutMs === undefined
          ? {}
          : { connectTimeoutMs: Number(config.connectTimeoutMs) }),
      });
    }
    case 'sqs:': {
      const { SqsTransport } = await import('../transports/aws/index.js');
      return new SqsTransport({ url });
    }
    case 'sns:': {
      const { SnsTransport } = await import('../transports/aws/index.js');
      return new SnsTransport({ url });
    }
    default:
      throw new ConfigError(
        'transport',
        `no transport for scheme "${scheme}" in ${redactUrl(url)}; supported: amqp://, amqps://, stomp://, stomps://, http://, https://, nats://, tls:// (NATS), redis://, rediss://, mqtt://, mqtts://, kafka://, kafkas://, sqs://, sns://`,
      );
  }
}
