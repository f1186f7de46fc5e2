export { PGliteStore, loadPGlite, type PGliteStoreOptions } from './pglite-store.js';
export { pglitePool } from './pglite-driver.js';
export type { PGliteDatabase, PGliteTransaction, PGliteResults } from './pglite-driver.js';
