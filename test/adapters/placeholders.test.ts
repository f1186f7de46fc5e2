import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isPlaceholderError } from '../../src/adapters/placeholder-error.js';
import { scanPlaceholders, toQuestionMarks, type SqlDialect } from '../../src/adapters/placeholders.js';

/** The statement with each placeholder shown as `{n}` (its 0-based parameter), and the literal `?` offsets. */
function scan(sql: string, params: number, dialect: SqlDialect) {
  const scanned = scanPlaceholders(
    sql,
    Array.from({ length: params }, (_, i) => i),
    dialect,
  );
  const shown = scanned.pieces.map((p) => ('param' in p ? `{${p.param}}` : p.text)).join('');
  return { shown, literal: scanned.literalQuestionMarks };
}

const mismatch = (pattern: RegExp) => (err: unknown) => {
  assert.ok(isPlaceholderError(err), `expected PlaceholderError, got ${String(err)}`);
  assert.equal(err.code, 'placeholder_mismatch');
  assert.match(err.message, pattern);
  return true;
};

describe('placeholder scanning', () => {
  it('finds PostgreSQL $n placeholders, repeated and multi-digit, and leaves identifiers with $ alone', () => {
    const params = 12;
    assert.equal(
      scan('SELECT $1::int, $12, $1 + $2, a$1 FROM t', params, 'postgres').shown,
      'SELECT {0}::int, {11}, {0} + {1}, a$1 FROM t',
    );
  });

  it('skips PostgreSQL literals, quoted identifiers, dollar-quoted bodies and comments (nested too)', () => {
    const sql =
      `SELECT '$1 ''$1''', E'\\'$1', "$1""$1", $$ $1 $$, $fn$ $1 $fn$, $2 -- $1\n` +
      `/* $1 /* nested $1 */ still $1 */ $1`;
    assert.equal(
      scan(sql, 2, 'postgres').shown,
      `SELECT '$1 ''$1''', E'\\'$1', "$1""$1", $$ $1 $$, $fn$ $1 $fn$, {1} -- $1\n` +
        `/* $1 /* nested $1 */ still $1 */ {0}`,
    );
  });

  it('records every ? of a PostgreSQL statement as text: the JSON operators and ? in literals', () => {
    const sql = `SELECT j ? 'k', j ?| array['a'], j ?& $1, '?' -- ?`;
    const { literal } = scan(sql, 1, 'postgres');
    assert.deepEqual(
      literal,
      [...sql].flatMap((c, i) => (c === '?' ? [i] : [])),
    );
  });

  it('numbers MySQL and SQLite ? placeholders in order, skipping literals, backticks and comments', () => {
    assert.equal(
      scan("SELECT ?, '?', 'it\\'s ?', `a?`, \"?\", ? # ?\n, ? /* ? */", 3, 'mysql').shown,
      "SELECT {0}, '?', 'it\\'s ?', `a?`, \"?\", {1} # ?\n, {2} /* ? */",
    );
    // SQLite has no backslash escapes: 'a\' ends the literal.
    assert.equal(scan("SELECT 'a\\', ?, `?`", 1, 'sqlite').shown, "SELECT 'a\\', {0}, `?`");
  });

  it('refuses a placeholder without its parameter, and a ? count that does not match', () => {
    assert.throws(() => scan('SELECT $1, $3', 2, 'postgres'), mismatch(/uses \$3, but 2 parameter/));
    assert.throws(() => scan('SELECT $0', 1, 'postgres'), mismatch(/uses \$0/));
    assert.throws(() => scan('SELECT ?, ?', 3, 'mysql'), mismatch(/2 \? placeholder\(s\), but 3 parameter/));
  });
});

describe('rewriting to ?', () => {
  it('writes one ? per occurrence with the values in that order', () => {
    const params = ['a', 'b'];
    const scanned = scanPlaceholders('SELECT $2, $1, $2', params, 'postgres');
    const out = toQuestionMarks(scanned, params, {
      literalQuestionMark: () => assert.fail('no literal ? here'),
    });
    assert.deepEqual(out, { sql: 'SELECT ?, ?, ?', params: ['b', 'a', 'b'] });
  });

  it('asks what to write for each ? that is text, with its offset in the original statement', () => {
    const sql = `SELECT $1, j ? 'k', '?'`;
    const offsets: number[] = [];
    const out = toQuestionMarks(scanPlaceholders(sql, [1], 'postgres'), [1], {
      literalQuestionMark(offset) {
        offsets.push(offset);
        return '\\?';
      },
    });
    assert.deepEqual(offsets, [sql.indexOf('?'), sql.lastIndexOf('?')]);
    assert.equal(out.sql, `SELECT ?, j \\? 'k', '\\?'`);
  });
});
