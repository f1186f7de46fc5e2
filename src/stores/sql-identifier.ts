import { ConfigError } from '../core/errors/config-error.js';

const IDENT_RE = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/;

/**
 * Validates an SQL identifier given by a user (schema, table prefix). Only plain identifiers
 * are accepted — letters, digits, underscore, at most 63 bytes — so nothing a user types can
 * change the meaning of a statement, even before quoting.
 */
export function validateIdentifier(key: string, value: unknown): string {
  if (typeof value !== 'string' || !IDENT_RE.test(value)) {
    throw new ConfigError(
      key,
      `${key} must be a plain SQL identifier (a letter or _ then letters, digits or _, at most 63), got ` +
        `${JSON.stringify(value)}`,
      { value },
    );
  }
  return value;
}

/** Double-quotes an identifier that passed {@link validateIdentifier}. */
export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/** Single-quotes a string literal for SQL text that cannot take parameters (DDL templates). */
export function quoteLiteral(value: string): string {
  return `'${value.replace(/'/g, "''")}'`;
}
