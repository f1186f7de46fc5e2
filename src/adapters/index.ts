/**
 * Transaction adapters: each turns an ORM's transaction into the one `execute(sql, params)`
 * method a store needs, so `outbox.enqueue` writes the message in the ORM's transaction. No ORM
 * is loaded at run time: import the adapter of the ORM you use (`mailroom/adapters/kysely`…) or
 * all of them from here. See docs/adapters.md.
 */
export { fromKysely } from './kysely.js';
export { fromDrizzle, type DrizzleTransaction } from './drizzle.js';
export { fromKnex } from './knex.js';
export { fromTypeORM } from './typeorm.js';
export { fromPrisma, type PrismaTransactionClient } from './prisma.js';
export { PlaceholderError, isPlaceholderError } from './placeholder-error.js';
export { UnreadableResultError, isUnreadableResultError } from './unreadable-result-error.js';
export type { SqlDialect } from './placeholders.js';
export { NotATransactionError, isNotATransactionError } from '../core/errors/not-a-transaction-error.js';
