/**
 * Every options object is checked by its declarative schema: an unknown key, a value of the
 * wrong type, a value out of range and a bad nested key each give a ConfigError whose key is
 * the path at fault and whose message names that key, the value and what is allowed.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import pg from 'pg';
import { isConfigError } from '../src/core/errors/config-error.js';
import {
  encodeMessage,
  Outbox,
  resolveRelayOptions,
  resolveRetryPolicy,
  type RelayOptions,
} from '../src/core/index.js';
import { PGliteStore } from '../src/stores/pglite/index.js';
import { PostgresStore } from '../src/stores/postgres/index.js';
import { MemoryTransport } from '../src/transports/memory/index.js';
import { resolveRabbitMqOptions } from '../src/transports/rabbitmq/index.js';
import { runCli } from './helpers/cli.js';
import { DATABASE_URL } from './helpers/postgres.js';

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

// Unknown-key messages are matched up to the keys that exist today, so that adding an option
// does not break them. A real store and transport: the pool opens no connection until a
// query, and none is made here.
const pool = new pg.Pool({ connectionString: DATABASE_URL });
after(() => pool.end());
const store = new PostgresStore({ pool, schema: 'options_schema_test' });
const transport = new MemoryTransport();

function relay(extra: Record<string, unknown>): RelayOptions {
  return { store, transport, ...extra } as RelayOptions;
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
        /^unknown Relay option "retry\.maxattempts" \(did you mean maxAttempts\?\); allowed in retry: baseDelayMs, maxDelayMs, maxAttempts, jitter, random/,
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

describe('Relay options', () => {
  it('resolves the documented defaults when only store and transport are given', () => {
    const resolved = resolveRelayOptions({ store, transport });
    assert.equal(resolved.batchSize, 250);
    assert.equal(resolved.concurrency, 4);
    assert.equal(resolved.leaseMs, 10_000);
    assert.equal(resolved.wakeup, 'notify');
    assert.equal(resolved.pollIntervalMs, 1000);
    assert.equal(resolved.publishTimeoutMs, 30_000);
    assert.equal(resolved.probeMinDelayMs, 500);
    assert.equal(resolved.probeMaxDelayMs, 30_000);
    assert.equal(resolved.shutdownTimeoutMs, 10_000);
    assert.match(resolved.owner, /^.+:\d+:[0-9a-f]{6}$/);
    assert.deepEqual(
      { ...resolved.retry, random: typeof resolved.retry.random },
      { baseDelayMs: 1000, maxDelayMs: 300_000, maxAttempts: 12, jitter: 'full', random: 'function' },
    );
    assert.equal(resolveRelayOptions({ store, transport, wakeup: 'poll' }).pollIntervalMs, 250);
    assert.equal(resolved.maxPerKey, 250, 'runs of up to a batch on a transport that keeps order');
    assert.equal(resolveRelayOptions({ store, transport, batchSize: 40 }).maxPerKey, 40);
  });

  it('takes one message per key from a transport without ordering, and refuses runs there', () => {
    const unordered = {
      name: 'unordered',
      start: async () => undefined,
      publish: async () => [],
      probe: async () => undefined,
      close: async () => undefined,
    };
    assert.equal(resolveRelayOptions({ store, transport: unordered }).maxPerKey, 1);
    assert.throws(
      () => resolveRelayOptions({ store, transport: unordered, maxPerKey: 10 }),
      configError(
        'maxPerKey',
        /^Relay option maxPerKey is 10, but the unordered transport does not keep a batch's order .*leave maxPerKey out \(1\)/,
      ),
    );
  });

  it('rejects an unknown key, suggesting the key it resembles and listing the allowed ones', () => {
    assert.throws(
      () => resolveRelayOptions(relay({ batchsize: 10 })),
      configError(
        'batchsize',
        /^unknown Relay option "batchsize" \(did you mean batchSize\?\); allowed: store, transport, batchSize, concurrency, leaseMs, source, wakeup, pollIntervalMs, idlePollMaxMs, maxPerKey, retry, publishTimeoutMs, probeMinDelayMs, probeMaxDelayMs, shutdownTimeoutMs, ackSweepIntervalMs, ackRetentionMs, callbacks, owner, signal, logger, clock/,
      ),
    );
  });

  it('rejects a value of the wrong type, naming the key, the value and the range', () => {
    assert.throws(
      () => resolveRelayOptions(relay({ batchSize: '250' })),
      configError('batchSize', /^Relay option batchSize must be an integer from 1 to 10000, got "250"$/),
    );
    assert.throws(
      () => resolveRelayOptions(relay({ wakeup: 'sometimes' })),
      configError(
        'wakeup',
        /^Relay option wakeup must be 'notify', 'poll' or 'replication', got "sometimes"$/,
      ),
    );
    assert.throws(
      () => resolveRelayOptions(relay({ logger: console.log })),
      configError(
        'logger',
        /^Relay option logger must be a Logger \(debug, info, warn, error\), got a function$/,
      ),
    );
  });

  it('rejects a value out of range, naming the key, the value and the range', () => {
    assert.throws(
      () => resolveRelayOptions(relay({ leaseMs: 999 })),
      configError('leaseMs', /^Relay option leaseMs must be an integer from 1000 to 3600000, got 999$/),
    );
    assert.throws(
      () => resolveRelayOptions(relay({ concurrency: 1.5 })),
      configError('concurrency', /must be an integer from 1 to 64, got 1\.5$/),
    );
  });

  it('rejects a missing store and a store that is not one', () => {
    assert.throws(
      () => resolveRelayOptions(relay({ store: undefined })),
      configError(
        'store',
        /^Relay option store is missing; give an outbox store \(PostgresStore, PGliteStore…\)$/,
      ),
    );
    assert.throws(
      () => resolveRelayOptions(relay({ store: pool })),
      configError('store', /^Relay option store must be an outbox store/),
    );
  });

  it('rejects a bad key nested under retry, naming the whole path', () => {
    assert.throws(
      () => resolveRelayOptions(relay({ retry: { maxAttemps: 3 } })),
      configError(
        'retry.maxAttemps',
        /^unknown Relay option "retry.maxAttemps"; allowed in retry: baseDelayMs, maxDelayMs, maxAttempts, jitter, random/,
      ),
    );
    assert.throws(
      () => resolveRelayOptions(relay({ retry: { maxAttempts: 0 } })),
      configError(
        'retry.maxAttempts',
        /^Relay option retry\.maxAttempts must be an integer of at least 1, got 0$/,
      ),
    );
    assert.throws(
      () => resolveRelayOptions(relay({ retry: { jitter: 'some' } })),
      configError('retry.jitter', /^Relay option retry\.jitter must be 'full' or 'none', got "some"$/),
    );
    assert.throws(
      () => resolveRelayOptions(relay({ retry: 5 })),
      configError('retry', /^Relay option retry must be an object with keys among baseDelayMs, /),
    );
  });

  it('rejects a first retry delay above the largest, naming both and saying which is the default', () => {
    assert.throws(
      () => resolveRelayOptions(relay({ retry: { baseDelayMs: 5000, maxDelayMs: 1000 } })),
      configError(
        'retry.maxDelayMs',
        /^Relay option retry\.baseDelayMs \(5000\) must not exceed retry\.maxDelayMs \(1000\); raise retry\.maxDelayMs or lower retry\.baseDelayMs$/,
      ),
    );
    assert.throws(
      () => resolveRelayOptions(relay({ retry: { maxDelayMs: 500 } })),
      configError(
        'retry.maxDelayMs',
        /retry\.baseDelayMs \(1000, the default\) must not exceed retry\.maxDelayMs \(500\)/,
      ),
    );
    assert.equal(
      resolveRelayOptions(relay({ retry: { baseDelayMs: 500, maxDelayMs: 500 } })).retry.maxDelayMs,
      500,
    );
  });

  it('keeps the rules across options: probe delays in order, notify only with a store that can', () => {
    assert.throws(
      () => resolveRelayOptions(relay({ probeMaxDelayMs: 100 })),
      configError(
        'probeMaxDelayMs',
        /^Relay option probeMinDelayMs \(500, the default\) must not exceed probeMaxDelayMs \(100\)/,
      ),
    );
    class PollOnlyStore extends PostgresStore {
      override readonly capabilities = { notify: false };
    }
    const pollOnly = new PollOnlyStore({ pool });
    assert.equal(resolveRelayOptions({ store: pollOnly, transport }).wakeup, 'poll');
    assert.throws(
      () => resolveRelayOptions({ store: pollOnly, transport, wakeup: 'notify' }),
      configError(
        'wakeup',
        /^Relay option wakeup is 'notify', but the postgres store cannot notify; use wakeup: 'poll'$/,
      ),
    );
  });
});

describe('Outbox options', () => {
  it('rejects an unknown key, listing the allowed ones', () => {
    assert.throws(
      () => new Outbox({ store, maxPayload: 10 } as never),
      configError(
        'maxPayload',
        /^unknown Outbox option "maxPayload"; allowed: store, maxPayloadBytes, requireTransaction/,
      ),
    );
  });

  it('rejects a value of the wrong type, naming the key, the value and what is allowed', () => {
    assert.throws(
      () => new Outbox({ store, requireTransaction: 'yes' } as never),
      configError(
        'requireTransaction',
        /^Outbox option requireTransaction must be true or false, got "yes"$/,
      ),
    );
  });

  it('rejects a value out of range, naming the key, the value and the range', () => {
    assert.throws(
      () => new Outbox({ store, maxPayloadBytes: 0 }),
      configError(
        'maxPayloadBytes',
        /^Outbox option maxPayloadBytes must be an integer of at least 1, got 0$/,
      ),
    );
  });

  it('rejects a missing store, and requireTransaction with a store that cannot check', () => {
    assert.throws(
      () => new Outbox({} as never),
      configError('store', /^Outbox option store is missing; give an outbox store/),
    );
    const cannotCheck = new Proxy(store, {
      get: (target, key) => (key === 'requireTransaction' ? undefined : Reflect.get(target, key)),
    });
    assert.throws(
      () => new Outbox({ store: cannotCheck, requireTransaction: true }),
      configError('requireTransaction', /^Outbox option requireTransaction: the postgres store cannot check/),
    );
    assert.doesNotThrow(() => new Outbox({ store, requireTransaction: true, maxPayloadBytes: 1 }));
  });
});

describe('MemoryTransport options', () => {
  it('rejects an unknown key, suggesting the key it resembles and listing the allowed ones', () => {
    assert.throws(
      () => new MemoryTransport({ latencyms: 5 } as never),
      configError(
        'latencyms',
        /^unknown MemoryTransport option "latencyms" \(did you mean latencyMs\?\); allowed: failWith, loseConfirm, latencyMs, closeTimeoutMs, unavailable, hang/,
      ),
    );
  });

  it('rejects a value of the wrong type, naming the key, the value and what is allowed', () => {
    assert.throws(
      () => new MemoryTransport({ loseConfirm: 'sometimes' } as never),
      configError(
        'loseConfirm',
        /^MemoryTransport option loseConfirm must be true, false or a function \(message\) => boolean, got "sometimes"$/,
      ),
    );
    assert.throws(
      () => new MemoryTransport({ hang: 1 } as never),
      configError('hang', /^MemoryTransport option hang must be true or false, got 1$/),
    );
  });

  it('rejects a value out of range, naming the key, the value and the range', () => {
    assert.throws(
      () => new MemoryTransport({ closeTimeoutMs: -1 }),
      configError(
        'closeTimeoutMs',
        /^MemoryTransport option closeTimeoutMs must be a number from 0 to 2147483647, got -1$/,
      ),
    );
    assert.throws(
      () => new MemoryTransport({ latencyMs: Infinity }),
      configError('latencyMs', /must be a number from 0 to 2147483647, got Infinity$/),
    );
    assert.throws(
      () => new MemoryTransport({ latencyMs: 2 ** 31 }),
      configError('latencyMs', /must be a number from 0 to 2147483647, got 2147483648$/),
    );
  });

  it('applies the documented defaults', () => {
    const t = new MemoryTransport();
    assert.deepEqual(
      [t.failWith, t.loseConfirm, t.latencyMs, t.closeTimeoutMs, t.unavailable, t.hang],
      [undefined, false, 0, 1000, false, false],
    );
  });
});

describe('RabbitMqTransport options', () => {
  const url = 'amqp://guest:guest@127.0.0.1:5672';

  it('rejects an unknown key, suggesting the key it resembles and listing the allowed ones', () => {
    assert.throws(
      () => resolveRabbitMqOptions({ url, exchnage: 'orders' } as never),
      configError(
        'exchnage',
        /^unknown RabbitMqTransport option "exchnage" \(did you mean exchange\?\); allowed: url, exchange, exchangeType, declareExchange, mandatory, confirmTimeoutMs, maxMessageBytes, connectTimeoutMs, heartbeatSeconds, socketOptions, closeTimeoutMs, reconnectDelayMs, maxReconnectDelayMs, connect/,
      ),
    );
  });

  it('rejects a value of the wrong type, naming the key, the value and what is allowed', () => {
    assert.throws(
      () => resolveRabbitMqOptions({ url, mandatory: 'yes' } as never),
      configError('mandatory', /^RabbitMqTransport option mandatory must be true or false, got "yes"$/),
    );
    assert.throws(
      () => resolveRabbitMqOptions({ url, socketOptions: [] } as never),
      configError('socketOptions', /^RabbitMqTransport option socketOptions must be an object, got \[\]$/),
    );
    assert.throws(
      () => resolveRabbitMqOptions({} as never),
      configError(
        'url',
        /^RabbitMqTransport option url is missing; give an amqp:\/\/ or amqps:\/\/ URL string$/,
      ),
    );
  });

  it('rejects a value out of range, including timeouts longer than a Node timer can wait', () => {
    assert.throws(
      () => resolveRabbitMqOptions({ url, heartbeatSeconds: 70_000 }),
      configError(
        'heartbeatSeconds',
        /^RabbitMqTransport option heartbeatSeconds must be an integer from 0 to 65535, got 70000$/,
      ),
    );
    assert.throws(
      () => resolveRabbitMqOptions({ url, confirmTimeoutMs: 2 ** 31 }),
      configError('confirmTimeoutMs', /must be an integer from 1 to 2147483647, got 2147483648$/),
    );
  });

  it('rejects a reconnect delay above its upper bound, naming both', () => {
    assert.throws(
      () => resolveRabbitMqOptions({ url, reconnectDelayMs: 60_000 }),
      configError(
        'maxReconnectDelayMs',
        /^RabbitMqTransport option reconnectDelayMs \(60000\) must not exceed maxReconnectDelayMs \(30000, the default\); raise maxReconnectDelayMs or lower reconnectDelayMs$/,
      ),
    );
  });

  it('resolves the documented defaults, the heartbeat into the URL, the password hidden in safeUrl', () => {
    // mandatory's default is left to the RabbitMQ transport's own tests.
    const {
      connect,
      socketOptions,
      mandatory: _mandatory,
      ...rest
    } = resolveRabbitMqOptions({
      url,
      heartbeatSeconds: 5,
    });
    assert.equal(connect, undefined);
    assert.deepEqual(socketOptions, {});
    assert.deepEqual(rest, {
      url: 'amqp://guest:guest@127.0.0.1:5672?heartbeat=5',
      safeUrl: 'amqp://guest:***@127.0.0.1:5672?heartbeat=5',
      exchange: 'mailroom',
      exchangeType: 'topic',
      declareExchange: true,
      confirmTimeoutMs: 30_000,
      maxMessageBytes: 134_217_728,
      connectTimeoutMs: 10_000,
      heartbeatSeconds: 5,
      closeTimeoutMs: 10_000,
      reconnectDelayMs: 100,
      maxReconnectDelayMs: 30_000,
    });
    assert.equal(resolveRabbitMqOptions({ url, exchange: '' }).declareExchange, false);
  });
});

describe('PGliteStore options', () => {
  it('rejects an unknown key, listing the allowed ones', () => {
    assert.throws(
      () => new PGliteStore({ pool } as never),
      configError(
        'pool',
        /^unknown PGliteStore option "pool"; allowed: db, dataDir, schema, notify, archive/,
      ),
    );
  });

  it('rejects a value of the wrong type, naming the key, the value and what is allowed, before opening PGlite', () => {
    assert.throws(
      () => new PGliteStore({ notify: 'yes' } as never),
      configError('notify', /^PGliteStore option notify must be true, false or 'idle', got "yes"$/),
    );
    assert.throws(
      () => new PGliteStore({ db: pool } as never),
      configError('db', /^PGliteStore option db must be a PGlite instance, got /),
    );
  });

  it('rejects an empty dataDir and a schema name past the limit', () => {
    assert.throws(
      () => new PGliteStore({ dataDir: '' }),
      configError('dataDir', /^PGliteStore option dataDir must be a directory path, got ""$/),
    );
    assert.throws(
      () => new PGliteStore({ schema: 'x'.repeat(44) }),
      configError('schema', /is 44 bytes, over the limit of 43/),
    );
  });
});

describe('PostgresStore options', () => {
  it('rejects an unknown key, suggesting the key it resembles and listing the allowed ones', () => {
    assert.throws(
      () => new PostgresStore({ pool, poolsize: 2 } as never),
      configError(
        'poolsize',
        /^unknown PostgresStore option "poolsize" \(did you mean poolSize\?\); allowed: pool, connectionString, poolSize, schema, notify, archive, preparedStatements/,
      ),
    );
  });

  it('rejects a value of the wrong type, naming the key, the value and what is allowed', () => {
    assert.throws(
      () => new PostgresStore({ pool, preparedStatements: 0 } as never),
      configError(
        'preparedStatements',
        /^PostgresStore option preparedStatements must be true or false, got 0$/,
      ),
    );
    assert.throws(
      () => new PostgresStore({ pool: DATABASE_URL } as never),
      configError(
        'pool',
        /^PostgresStore option pool must be a pg\.Pool \(query, connect and end methods\), got "postgres:/,
      ),
    );
  });

  it('rejects a value out of range, naming the key, the value and the range', () => {
    assert.throws(
      () => new PostgresStore({ connectionString: DATABASE_URL, poolSize: 0 }),
      configError('poolSize', /^PostgresStore option poolSize must be an integer of at least 1, got 0$/),
    );
  });

  it('rejects options with neither a pool nor a connectionString, saying how to give each', () => {
    assert.throws(
      () => new PostgresStore({ schema: 'x' }),
      configError(
        'pool',
        /^PostgresStore options pool and connectionString are both missing; give a pg\.Pool as pool, or a postgres:\/\/ URL as connectionString$/,
      ),
    );
  });
});

describe('mailroom relay flags', () => {
  // Unreachable on purpose: a check that ran after connecting would report these instead.
  const unreachable = [
    '--database-url',
    'postgres://nobody@127.0.0.1:1/none',
    '--transport',
    'amqp://127.0.0.1:1',
  ];

  it('refuses a first retry delay above the largest before connecting, naming both flags', async () => {
    const r = await runCli(['relay', ...unreachable, '--retry-base-ms', '5000', '--retry-max-ms', '1000']);
    assert.equal(r.code, 2, r.stderr);
    assert.equal(
      r.stderr.trim(),
      'mailroom relay: --retry-base-ms (5000) must not exceed --retry-max-ms (1000); raise --retry-max-ms or lower --retry-base-ms',
    );
    const fromEnv = await runCli(['relay', ...unreachable], { MAILROOM_RETRY_MAX_MS: '500' });
    assert.equal(fromEnv.code, 2, fromEnv.stderr);
    assert.match(
      fromEnv.stderr,
      /--retry-base-ms \(1000, the default\) must not exceed --retry-max-ms \(500\)/,
    );
  });
});

describe('values in error messages', () => {
  it('prints NaN and Infinity as such, in option errors and in message errors alike', () => {
    assert.throws(
      () => resolveRelayOptions(relay({ batchSize: NaN })),
      configError('batchSize', /must be an integer from 1 to 10000, got NaN$/),
    );
    assert.throws(() => encodeMessage({ topic: 't', payload: 1, delayMs: NaN }), {
      name: 'InvalidMessageError',
      message: /^delayMs must be a non-negative finite number of milliseconds, got NaN$/,
    });
  });
});
