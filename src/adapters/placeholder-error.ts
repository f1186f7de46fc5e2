import { MailroomError } from '../core/errors/mailroom-error.js';

/** Longest part of the statement quoted in the message. */
const SHOWN = 200;

/**
 * A transaction adapter could not carry a store's statement to its ORM: a placeholder names a
 * parameter that was not passed, or the ORM's raw-SQL call cannot express the statement (Knex
 * reads every `?` as a binding). Nothing was sent to the database. `details.sql` holds the start
 * of the statement (parameter values are never included).
 */
export class PlaceholderError extends MailroomError {
  override name = 'PlaceholderError';

  constructor(problem: string, sql: string) {
    const shown = sql.length > SHOWN ? `${sql.slice(0, SHOWN)}…` : sql;
    super(
      'placeholder_mismatch',
      `${problem} (statement: ${shown}). This is a mismatch between the store and the adapter: ` +
        'use the adapter for the database the store runs on (a PostgresStore with an ORM on PostgreSQL…), ' +
        'and report it if they match',
      { details: { sql: shown } },
    );
  }
}

export function isPlaceholderError(err: unknown): err is PlaceholderError {
  return err instanceof PlaceholderError || (err as { name?: unknown })?.name === 'PlaceholderError';
}
