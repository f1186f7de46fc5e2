import { after, before } from 'node:test';
import { Relay, type RelayOptions, type Transport } from '../../src/core/index.js';
import { createTestDb, type TestDb } from './postgres.js';

/**
 * A schema of its own for a relay test file, and the relays its tests start: `start` builds
 * and starts one on the schema's store (with `defaults` under the test's options), `track`
 * adopts one a test built itself, `clean` stops them all and empties the tables between tests.
 * Registers the file's `before`/`after` hooks; call it at the top of a `describe`.
 */
export function relayTestBed(prefix: string, defaults: Partial<RelayOptions> = {}) {
  const relays: Relay[] = [];
  let db: TestDb | undefined;
  before(async () => {
    db = await createTestDb(prefix);
  });
  after(async () => {
    await Promise.all(relays.map((r) => r.stop()));
    await db?.drop();
  });
  const bed = {
    get db(): TestDb {
      if (!db) throw new Error('relayTestBed: the database is made in the before hook');
      return db;
    },
    track(relay: Relay): Relay {
      relays.push(relay);
      return relay;
    },
    async start(options: Partial<RelayOptions> & { transport: Transport }): Promise<Relay> {
      const relay = bed.track(new Relay({ store: bed.db.store, ...defaults, ...options }));
      await relay.start();
      return relay;
    },
    async clean(): Promise<void> {
      await Promise.all(relays.splice(0).map((r) => r.stop()));
      const s = bed.db.schema;
      await bed.db.pool.query(`TRUNCATE "${s}".outbox, "${s}".dead_letter, "${s}".archive`);
    },
  };
  return bed;
}
