/**
 * Every options object is checked by its declarative schema: an unknown key, a value of the
 * wrong type, a value out of range and a bad nested key each give a ConfigError whose key is
 * the path at fault and whose message names that key, the value and what is allowed.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isConfigError } from '../src/core/errors/config-error.js';
import { resolveRetryPolicy } from '../src/core/index.js';

/** Checks a thrown error: a ConfigError at `key` whose message matches every pattern. */
function configError(key: string, ...patterns: RegExp[]) {
  return (err: unknown): true => {
    assert.ok(isConfigError(err), `a ConfigError, got ${String(err)}`);
    assert.equal(err.code, 'invalid_config');
    assert.equal(err.key, key);
    for (const pattern of patterns) assert.match(err.message, pattern);
    return true;
  };
}

describe('Retry policy (the relay option retry)', () => {
  it('resolves the documented defaults', () => {
    const { random, ...rest } = resolveRetryPolicy();
    assert.equal(random, Math.random);
    assert.deepEqual(rest, { baseDelayMs: 1000, maxDelayMs: 300_000, maxAttempts: 12, jitter: 'full' });
  });

  it('rejects an unknown key, naming it under retry and listing the allowed ones', () => {
    assert.throws(
      () => resolveRetryPolicy({ maxattempts: 3 } as never),
      configError(
        'retry.maxattempts',
        /^unknown Relay option "retry\.maxattempts" \(did you mean maxAttempts\?\); allowed in retry: baseDelayMs, maxDelayMs, maxAttempts, jitter, random$/,
      ),
    );
  });

  it('rejects a value of the wrong type, naming the key, the value and what is allowed', () => {
    assert.throws(
      () => resolveRetryPolicy({ random: 0.5 } as never),
      configError(
        'retry.random',
        /^Relay option retry\.random must be a function returning a number in \[0, 1\), got 0\.5$/,
      ),
    );
    assert.throws(
      () => resolveRetryPolicy({ baseDelayMs: '1s' } as never),
      configError(
        'retry.baseDelayMs',
        /^Relay option retry\.baseDelayMs must be a number from 0 to 31536000000, got "1s"$/,
      ),
    );
  });

  it('rejects a delay out of range: over 365 days, which the database could not add to now()', () => {
    assert.throws(
      () => resolveRetryPolicy({ maxDelayMs: 1e20 }),
      configError('retry.maxDelayMs', /must be a number from 0 to 31536000000, got 100000000000000000000$/),
    );
  });

  it('rejects a first delay above the largest, naming both (issue 11)', () => {
    assert.throws(
      () => resolveRetryPolicy({ baseDelayMs: 2000, maxDelayMs: 1500 }),
      configError(
        'retry.maxDelayMs',
        /^Relay option retry\.baseDelayMs \(2000\) must not exceed retry\.maxDelayMs \(1500\); raise retry\.maxDelayMs or lower retry\.baseDelayMs$/,
      ),
    );
  });
});
