import { ConfigError } from '../../core/errors/config-error.js';
import { validateIdentifier } from '../sql-identifier.js';

/**
 * PostgreSQL keeps at most 63 bytes of an identifier (NAMEDATALEN - 1) and silently cuts the
 * rest; prepared-statement names are cut the same way. Two names that differ only after byte 63
 * are then one name: the NOTIFY channels of two schemas would merge, or the notify and quiet
 * variants of the prepared enqueue would collide ("prepared statement already exists").
 */
export const MAX_IDENTIFIER_BYTES = 63;

/**
 * A replication slot or publication name Mailroom accepts: what PostgreSQL allows for slot names
 * (lower-case letters, digits, `_`, at most 63), used for publications too. One rule for the
 * store's table-less slot, the log stream's options and the CLI.
 */
export const SLOT_NAME = /^[a-z0-9_]{1,63}$/;

/** The NOTIFY channel relays listen on for a schema. */
export function notifyChannel(schema: string): string {
  return `${schema}_outbox`;
}

/**
 * The name the one-message enqueue is prepared under. It covers everything the statement text
 * depends on (schema; NOTIFY always, none, or through the wake gate), since a name must always
 * mean the same text.
 */
export function preparedEnqueueName(schema: string, notify: boolean | 'idle'): string {
  return `mailroom_enqueue1_${schema}_${notify === 'idle' ? 'i' : notify ? 'n' : 'q'}`;
}

/** Every name Mailroom derives from a schema name, with what it is, for the length check. */
function derivedNames(schema: string): Array<{ what: string; name: string }> {
  return [
    { what: 'the NOTIFY channel', name: notifyChannel(schema) },
    { what: 'the prepared enqueue statement', name: preparedEnqueueName(schema, true) },
    { what: 'the prepared enqueue statement', name: preparedEnqueueName(schema, false) },
    { what: 'the prepared enqueue statement', name: preparedEnqueueName(schema, 'idle') },
  ];
}

/**
 * The longest schema name whose derived names all fit in {@link MAX_IDENTIFIER_BYTES}: 43, set
 * by the prepared statement `mailroom_enqueue1_<schema>_n` (20 bytes around the schema).
 */
export const MAX_SCHEMA_NAME_BYTES =
  MAX_IDENTIFIER_BYTES - Math.max(...derivedNames('').map((d) => Buffer.byteLength(d.name)));

/**
 * Validates the schema Mailroom's tables live in: a plain identifier (see
 * {@link validateIdentifier}), short enough that every name derived from it stays whole, and not
 * one of PostgreSQL's system schemas (`pg_catalog`, `information_schema`, any `pg_*`, which
 * `CREATE SCHEMA` refuses or which hold the catalog). Throws a {@link ConfigError} that names
 * the schema and the rule; returns the name unchanged.
 */
export function validateSchemaName(value: unknown, key = 'schema'): string {
  const schema = validateIdentifier(key, value);
  if (/^pg_/i.test(schema) || schema.toLowerCase() === 'information_schema') {
    throw new ConfigError(
      key,
      `${key} "${schema}" is a PostgreSQL system schema name (pg_catalog, information_schema and ` +
        `every name starting with pg_ are reserved); choose another, e.g. "mailroom"`,
      { value: schema },
    );
  }
  const bytes = Buffer.byteLength(schema);
  if (bytes > MAX_SCHEMA_NAME_BYTES) {
    const longest = derivedNames(schema).reduce((a, b) =>
      Buffer.byteLength(b.name) > Buffer.byteLength(a.name) ? b : a,
    );
    throw new ConfigError(
      key,
      `${key} "${schema}" is ${bytes} bytes, over the limit of ${MAX_SCHEMA_NAME_BYTES}: Mailroom derives ` +
        `${longest.what} "${longest.name}" (${Buffer.byteLength(longest.name)} bytes) from it, and PostgreSQL ` +
        `cuts names at ${MAX_IDENTIFIER_BYTES} bytes; choose a schema name of at most ${MAX_SCHEMA_NAME_BYTES} bytes`,
      { value: schema, bytes, limit: MAX_SCHEMA_NAME_BYTES },
    );
  }
  return schema;
}
