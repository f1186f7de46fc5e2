import { ConfigError } from '../../core/errors/config-error.js';
import { isStoreError, StoreError } from '../../core/errors/store-error.js';
import { boolean, custom, hasMethods, optionsSchema, string } from '../../core/options-schema.js';
import type { StoreCapabilities, Unsubscribe, WakeGate } from '../../core/ports.js';
import { describeDbError } from '../postgres/postgres-errors.js';
import { PostgresStore } from '../postgres/postgres-store.js';
import { validateSchemaName } from '../postgres/schema-name.js';
import { quoteIdent } from '../sql-identifier.js';
import { pglitePool, type PGliteDatabase } from './pglite-driver.js';

/** Options of {@link PGliteStore}. Give `db`, or `dataDir`, or neither (a database in memory). */
export interface PGliteStoreOptions {
  /**
   * Your PGlite instance, shared with your application code; the store does not close it.
   *
   * @default a new in-memory instance (or one on `dataDir`), closed by `store.close()`
   * @example { db: await PGlite.create('./data') }
   */
  db?: PGliteDatabase;
  /**
   * Where the store's own PGlite instance keeps its files; omit it for a database in memory
   * that is gone when the process exits. Not together with `db`.
   *
   * @default undefined (in memory)
   * @example { dataDir: './.mailroom-data' }
   */
  dataDir?: string;
  /**
   * Schema holding Mailroom's tables: a plain identifier of at most 43 bytes (names derived from
   * it must fit PostgreSQL's 63), not a system schema (`pg_*`, `information_schema`).
   *
   * @default 'mailroom'
   */
  schema?: string;
  /**
   * Send a NOTIFY from the enqueueing transaction, so a relay on the same instance wakes at
   * commit instead of at its next poll. PGlite is one session, which cannot hold the wake gate
   * against itself: `'idle'` (PostgresStore's default) notifies at every commit here, as `true`.
   *
   * @default true
   */
  notify?: boolean | 'idle';
  /**
   * Keep delivered messages in `<schema>.archive` instead of deleting them.
   *
   * @default false
   */
  archive?: boolean;
}

const pgliteStoreSchema = optionsSchema<PGliteStoreOptions>()('PGliteStore', {
  db: custom('a PGlite instance', hasMethods<PGliteDatabase>('query', 'transaction', 'listen', 'close')),
  dataDir: string({ expected: 'a directory path' }),
  // The type only; validateSchemaName applies PostgresStore's rules, before an instance is made.
  schema: string({ expected: 'a schema name' }),
  // Left out, PostgresStore's defaults apply; checked here so that a bad value leaves no instance open.
  notify: custom(
    "true, false or 'idle'",
    (v): v is boolean | 'idle' => typeof v === 'boolean' || v === 'idle',
  ),
  archive: boolean(),
});

type PGliteModule = {
  PGlite: new (dataDir?: string) => PGliteDatabase & { waitReady?: Promise<void> };
};

let pgliteModule: PGliteModule | undefined;

/** Loads `@electric-sql/pglite` once; the store only needs it when it makes its own instance. */
export async function loadPGlite(): Promise<PGliteModule> {
  if (pgliteModule) return pgliteModule;
  try {
    pgliteModule = (await import('@electric-sql/pglite')) as unknown as PGliteModule;
    return pgliteModule;
  } catch (err) {
    throw new ConfigError(
      '@electric-sql/pglite',
      'the PGlite store needs the `@electric-sql/pglite` package: run `npm install @electric-sql/pglite`',
      {},
      err,
    );
  }
}

/**
 * The outbox in PGlite, PostgreSQL compiled to WebAssembly and run inside the process: the
 * same tables, SQL and migrations as {@link PostgresStore}, with nothing to install or run.
 * For tests, demos, desktop and edge apps, and services whose data already lives in PGlite.
 *
 * PGlite is one connection, so one relay per database (`capabilities.concurrentRelays` is
 * false) and every statement waits its turn — the relay's claims wait for the application's
 * transactions and the other way round.
 *
 * @example
 * ```ts
 * const store = await PGliteStore.connect(); // in memory; or { dataDir: './data' }, or { db }
 * await store.migrate();
 * const outbox = new Outbox({ store });
 * await store.db.transaction(async (tx) => {
 *   await tx.query('INSERT INTO orders (id, total) VALUES ($1, $2)', [id, total]);
 *   await outbox.enqueue(tx, { topic: 'order.created', key: id, payload: { id, total } });
 * });
 * ```
 */
export class PGliteStore extends PostgresStore {
  override readonly name: string = 'pglite';
  override readonly capabilities: StoreCapabilities = { notify: true };
  /** The PGlite instance the outbox lives in; run your business transactions on it. */
  readonly db: PGliteDatabase;
  readonly #ownsDb: boolean;
  #subscriptions = new Set<Unsubscribe>();

  /**
   * With `db`, ready at once. Without it, the store makes its own instance, which needs
   * `@electric-sql/pglite` loaded first: use `await PGliteStore.connect(options)`.
   */
  constructor(options: PGliteStoreOptions = {}) {
    const { db: given, dataDir, schema, notify, archive } = pgliteStoreSchema.resolve(options);
    if (given && dataDir !== undefined) {
      throw new ConfigError('dataDir', 'give PGliteStore a db or a dataDir, not both');
    }
    // Before making an instance, so a bad schema name leaves no PGlite open behind it.
    if (schema !== undefined) validateSchemaName(schema);
    const db = given ?? createPGlite(dataDir);
    super({
      pool: pglitePool(db),
      // PGlite's query() takes SQL text only; one connection has nothing to gain anyway.
      preparedStatements: false,
      ...(schema === undefined ? {} : { schema }),
      // No wake gate on one session (see wakeGate below): every enqueue notifies, or none.
      notify: notify !== false,
      ...(archive === undefined ? {} : { archive }),
    });
    this.db = db;
    this.#ownsDb = !given;
  }

  /** Same options as the constructor; loads `@electric-sql/pglite` first when the store makes the instance. */
  static override async connect(options: PGliteStoreOptions = {}): Promise<PGliteStore> {
    if (!options.db) await loadPGlite();
    const store = new PGliteStore(options);
    if (store.#ownsDb) {
      // Surface a bad dataDir (or a failed start) here, as the error it is.
      const ready = (store.db as { waitReady?: Promise<void> }).waitReady;
      try {
        await ready;
      } catch (err) {
        throw new ConfigError(
          'dataDir',
          `cannot open PGlite${options.dataDir === undefined ? '' : ` in ${options.dataDir}`}: ${(err as Error)?.message ?? String(err)}`,
          {},
          err,
        );
      }
    }
    return store;
  }

  /**
   * Wakes on the schema's NOTIFY channel through PGlite's own `listen()`: the store's LISTEN on
   * a pool client would hold PGlite's only connection for good.
   */
  override async subscribe(onWake: () => void, _onError: (err: unknown) => void): Promise<Unsubscribe> {
    return this.#listen(this.channel, () => onWake());
  }

  /** State changes of messages with `ack` through PGlite's `listen()`, as {@link subscribe}. */
  override async subscribeState(
    onChange: (id: string) => void,
    _onError: (err: unknown) => void,
  ): Promise<Unsubscribe> {
    return this.#listen(`${this.schema}_state`, onChange);
  }

  async #listen(channel: string, onPayload: (payload: string) => void): Promise<Unsubscribe> {
    let active = true;
    let unlisten: () => Promise<void>;
    try {
      // Quoted: PGlite sends the name as written, and a schema may have capitals.
      unlisten = await this.db.listen(quoteIdent(channel), (payload) => {
        if (active) onPayload(payload);
      });
    } catch (err) {
      throw describeDbError(err, { schema: this.schema });
    }
    const unsubscribe: Unsubscribe = async () => {
      if (!active) return;
      active = false;
      this.#subscriptions.delete(unsubscribe);
      if (this.db.closed) return;
      await unlisten().catch(() => undefined);
    };
    this.#subscriptions.add(unsubscribe);
    return unsubscribe;
  }

  /**
   * None: PGlite is one session, and a session's own advisory locks never block it, so writers
   * would always find the gate open and skip the NOTIFY. Writers here notify at every commit,
   * and {@link check} sets `mailroom.notify = on` for the SQL API's `enqueue()` too.
   */
  override wakeGate(): WakeGate | undefined {
    return undefined;
  }

  /**
   * As the PostgreSQL store's check, but a schema to create or upgrade says to call
   * `store.migrate()`, or the command with the `pglite:` URL of the data directory.
   */
  override async check(): Promise<void> {
    try {
      await super.check();
      // The SQL API's default is the wake gate, which one session cannot use (see wakeGate):
      // notify at every commit, unless the application chose a mode for its session itself.
      await this.db.query(
        "SELECT set_config('mailroom.notify', 'on', false) WHERE coalesce(current_setting('mailroom.notify', true), '') = ''",
      );
    } catch (err) {
      if (!isStoreError(err) || !err.message.includes('npx mailroom migrate')) throw err;
      throw new StoreError(
        err.code,
        err.message.replace(
          /`npx mailroom migrate --schema ([A-Za-z0-9_]+)`/,
          '`await store.migrate()` (or `npx mailroom migrate --database-url pglite:<data directory> --schema $1`)',
        ),
        { cause: err.cause, details: err.details },
      );
    }
  }

  /** Ends subscriptions; closes the PGlite instance when the store made it. Idempotent. */
  override async close(): Promise<void> {
    for (const unsubscribe of [...this.#subscriptions]) await unsubscribe();
    await super.close();
    if (this.#ownsDb && !this.db.closed) await this.db.close();
  }
}

function createPGlite(dataDir: string | undefined): PGliteDatabase {
  if (!pgliteModule) {
    throw new ConfigError(
      'db',
      'call `await PGliteStore.connect(options)` (it loads @electric-sql/pglite), or pass a PGlite instance as db',
    );
  }
  const db = new pgliteModule.PGlite(dataDir);
  // A failed start also fails every query with the same error; keep it from being unhandled.
  db.waitReady?.catch(() => undefined);
  return db;
}
