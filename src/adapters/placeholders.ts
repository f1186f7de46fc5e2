import { PlaceholderError } from './placeholder-error.js';

/**
 * The databases the adapters know. Each store writes its SQL in its database's own placeholder
 * style: PostgreSQL numbers them (`$1`, `$2`, a number may repeat), MySQL/MariaDB and SQLite
 * take them in order (`?`). An adapter rewrites only when its ORM's raw-SQL call wants another
 * style than the database's (Knex always wants `?`; Drizzle renders its dialect's own).
 */
export type SqlDialect = 'postgres' | 'mysql' | 'sqlite';

/**
 * One piece of a scanned statement: text to keep as it is (starting at offset `at` of the
 * original), or a placeholder for the parameter at `param` (0-based).
 */
export type SqlPiece = { text: string; at: number } | { param: number };

/** A statement split at its placeholders. */
export interface ScannedSql {
  pieces: SqlPiece[];
  /**
   * Offsets of `?` characters that are not placeholders: inside string literals, quoted
   * identifiers or comments, or PostgreSQL's JSON operators (`?`, `?|`, `?&`).
   */
  literalQuestionMarks: number[];
}

const isIdentChar = (c: string | undefined): boolean => c !== undefined && /[A-Za-z0-9_$]/.test(c);
const isDigit = (c: string | undefined): boolean => c !== undefined && c >= '0' && c <= '9';

/** End (exclusive) of a quoted run starting at `start` (the opening quote), doubled quotes escape. */
function endOfQuoted(sql: string, start: number, quote: string, backslashEscapes: boolean): number {
  let i = start + 1;
  while (i < sql.length) {
    const c = sql[i];
    if (backslashEscapes && c === '\\') {
      i += 2;
      continue;
    }
    if (c === quote) {
      if (sql[i + 1] === quote) {
        i += 2;
        continue;
      }
      return i + 1;
    }
    i += 1;
  }
  return sql.length;
}

/** End of a `/* … *\/` comment; PostgreSQL nests them, MySQL and SQLite do not. */
function endOfBlockComment(sql: string, start: number, nested: boolean): number {
  let depth = 1;
  let i = start + 2;
  while (i < sql.length) {
    if (sql.startsWith('*/', i)) {
      depth -= 1;
      i += 2;
      if (depth === 0 || !nested) return i;
      continue;
    }
    if (nested && sql.startsWith('/*', i)) {
      depth += 1;
      i += 2;
      continue;
    }
    i += 1;
  }
  return sql.length;
}

/** A PostgreSQL dollar-quote tag (`$$` or `$tag$`) at `i`, or undefined. Tags never start with a digit. */
function dollarTag(sql: string, i: number): string | undefined {
  const match = /^\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$/.exec(sql.slice(i, i + 64));
  return match?.[0];
}

/**
 * Splits a store's statement at its placeholders, in the placeholder style of `dialect`
 * (PostgreSQL `$n`, the others `?`). String literals, quoted identifiers, comments and
 * PostgreSQL dollar-quoted bodies are skipped: a `$1` or `?` inside them is text, not a
 * parameter. Throws {@link PlaceholderError} when a placeholder names a parameter that was not
 * passed, or when the count of `?` does not match the parameters.
 */
export function scanPlaceholders(sql: string, params: readonly unknown[], dialect: SqlDialect): ScannedSql {
  const numbered = dialect === 'postgres';
  const pieces: SqlPiece[] = [];
  const literalQuestionMarks: number[] = [];
  let textStart = 0;
  let next = 0;
  const markQuestionMarks = (from: number, to: number) => {
    for (let k = sql.indexOf('?', from); k !== -1 && k < to; k = sql.indexOf('?', k + 1)) {
      literalQuestionMarks.push(k);
    }
  };
  const pushParam = (at: number, end: number, index: number) => {
    if (at > textStart) pieces.push({ text: sql.slice(textStart, at), at: textStart });
    pieces.push({ param: index });
    textStart = end;
  };

  let i = 0;
  while (i < sql.length) {
    const c = sql[i] as string;
    let skipTo: number | undefined;
    if (c === "'") {
      // PostgreSQL reads backslash escapes only in E'…' strings; MySQL in every string.
      const prefixE = numbered && (sql[i - 1] === 'E' || sql[i - 1] === 'e') && !isIdentChar(sql[i - 2]);
      skipTo = endOfQuoted(sql, i, "'", dialect === 'mysql' || prefixE);
    } else if (c === '"') {
      skipTo = endOfQuoted(sql, i, '"', dialect === 'mysql');
    } else if (c === '`' && !numbered) {
      skipTo = endOfQuoted(sql, i, '`', false);
    } else if (c === '-' && sql[i + 1] === '-') {
      const eol = sql.indexOf('\n', i);
      skipTo = eol === -1 ? sql.length : eol;
    } else if (c === '#' && dialect === 'mysql') {
      const eol = sql.indexOf('\n', i);
      skipTo = eol === -1 ? sql.length : eol;
    } else if (c === '/' && sql[i + 1] === '*') {
      skipTo = endOfBlockComment(sql, i, numbered);
    } else if (c === '$' && numbered) {
      if (isDigit(sql[i + 1]) && !isIdentChar(sql[i - 1])) {
        let end = i + 1;
        while (isDigit(sql[end])) end += 1;
        const n = Number(sql.slice(i + 1, end));
        if (n < 1 || n > params.length) {
          throw new PlaceholderError(
            `the statement uses $${n}, but ${params.length} parameter(s) were passed`,
            sql,
          );
        }
        pushParam(i, end, n - 1);
        i = end;
        continue;
      }
      const tag = isIdentChar(sql[i - 1]) ? undefined : dollarTag(sql, i);
      if (tag) {
        const close = sql.indexOf(tag, i + tag.length);
        skipTo = close === -1 ? sql.length : close + tag.length;
      }
    } else if (c === '?') {
      if (numbered) {
        literalQuestionMarks.push(i);
      } else {
        pushParam(i, i + 1, next);
        next += 1;
      }
    }
    if (skipTo !== undefined) {
      markQuestionMarks(i, skipTo);
      i = skipTo;
    } else {
      i += 1;
    }
  }
  if (textStart < sql.length) pieces.push({ text: sql.slice(textStart), at: textStart });
  if (!numbered && next !== params.length) {
    throw new PlaceholderError(
      `the statement has ${next} ? placeholder(s), but ${params.length} parameter(s) were passed`,
      sql,
    );
  }
  return { pieces, literalQuestionMarks };
}

/** Options of {@link toQuestionMarks}. */
export interface QuestionMarkOptions {
  /**
   * What to write for a `?` that is text, not a placeholder (an operator, or inside a literal or
   * comment), given its offset in the original statement. Throw to refuse the statement.
   */
  literalQuestionMark(offset: number): string;
}

/**
 * Rewrites a scanned statement into `?` placeholders, one per occurrence, with the parameters
 * in occurrence order (a `$1` used twice becomes two `?` bound to the same value).
 */
export function toQuestionMarks(
  scanned: ScannedSql,
  params: readonly unknown[],
  options: QuestionMarkOptions,
): { sql: string; params: unknown[] } {
  const out: string[] = [];
  const values: unknown[] = [];
  const literal = new Set(scanned.literalQuestionMarks);
  for (const piece of scanned.pieces) {
    if ('param' in piece) {
      out.push('?');
      values.push(params[piece.param]);
      continue;
    }
    let from = 0;
    for (let k = piece.text.indexOf('?'); k !== -1; k = piece.text.indexOf('?', k + 1)) {
      if (!literal.has(piece.at + k)) continue;
      out.push(piece.text.slice(from, k), options.literalQuestionMark(piece.at + k));
      from = k + 1;
    }
    out.push(piece.text.slice(from));
  }
  return { sql: out.join(''), params: values };
}
