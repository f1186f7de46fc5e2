#!/usr/bin/env node
// Runs the test suite with Node's own test runner. Usage:
//   node scripts/run-tests.mjs                 every test/**/*.test.ts except test/faults
//   node scripts/run-tests.mjs test/relay      only files under these paths
//   node scripts/run-tests.mjs --faults        the fault-injection suite
import { spawn } from 'node:child_process';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join, relative } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const args = process.argv.slice(2);
const faults = args.includes('--faults');
const paths = args.filter((a) => !a.startsWith('--'));

function walk(dir, out) {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p, out);
    else if (name.endsWith('.test.ts')) out.push(p);
  }
  return out;
}

let files = [];
for (const p of paths.length ? paths : [faults ? 'test/faults' : 'test']) {
  const abs = join(root, p);
  files.push(...(statSync(abs).isDirectory() ? walk(abs, []) : [abs]));
}
if (!faults && paths.length === 0) files = files.filter((f) => !relative(root, f).startsWith('test/faults/'));
files.sort();
// The longest files start first (measured in CI, 2026-12-03: 30-80 s each), so that two workers
// do not end with one of them alone on a long file while the other has finished: the same work,
// a shorter run. The rest keep their alphabetical order.
const SLOW_FIRST = [
  'test/replication/tableless.test.ts',
  'test/cli-relay.test.ts',
  'test/tcc/chaos.test.ts',
  'test/demo-tcc.test.ts',
  'test/cli-admin.test.ts',
  'test/bad-input-corpus.test.ts',
  'test/relay-hardening.test.ts',
  // Measured 2026-12-03 on a busy machine: 20-60 s each.
  'test/testkit/conformance-catches-defects.test.ts',
  'test/stores/mysql-store.test.ts',
  'test/stores/sqlite-store.test.ts',
  'test/transports/consumer-conformance.test.ts',
  'test/transports/sqs-consumer.test.ts',
  'test/server/dashboard-browser.test.ts',
];
if (!faults) {
  const rank = (f) => {
    const i = SLOW_FIRST.indexOf(relative(root, f));
    return i === -1 ? SLOW_FIRST.length : i;
  };
  files.sort((a, b) => rank(a) - rank(b) || (a < b ? -1 : a > b ? 1 : 0));
}
if (files.length === 0) {
  console.error('no test files found');
  process.exit(1);
}

// Fault files one at a time: the main fault run restarts PostgreSQL and RabbitMQ, which would
// break the scenarios running beside it.
const concurrency = process.env.TEST_CONCURRENCY ?? (faults ? '1' : '2');
// The leak guard (test/helpers/leak-guard.ts) fails a file that leaves a relay, pool, client,
// socket, child process or timer running. Not yet in the fault suite: that suite restarts
// PostgreSQL and RabbitMQ, cannot run beside other work, and has not been tried with the guard.
const preload = faults ? [] : ['--import', './test/helpers/leak-guard-register.ts'];
// A test that hangs (a broken acknowledgement path can wait forever for a delivery) fails after
// this long instead of holding CI to its limit.
const timeoutMs = process.env.TEST_TIMEOUT_MS ?? (faults ? '1800000' : '600000');
/**
 * The machine's CPU time so far, from /proc/stat (Linux; null elsewhere): all of it, and the part
 * its cores sat idle. Over the run this says whether the cores were the limit (little idle: more
 * concurrency would not help) or the tests mostly waited (much idle: TEST_CONCURRENCY could go up).
 * The database and brokers count too, which a process's own CPU time would leave out.
 */
function cpuTicks() {
  try {
    const [cpu] = readFileSync('/proc/stat', 'utf8').split('\n');
    const ticks = cpu.trim().split(/\s+/).slice(1).map(Number);
    return { total: ticks.reduce((a, b) => a + b, 0), idle: ticks[3] + ticks[4] };
  } catch {
    return null;
  }
}

const startTicks = cpuTicks();
const startedAt = Date.now();
const child = spawn(
  process.execPath,
  [
    '--import',
    'tsx',
    ...preload,
    '--test',
    `--test-concurrency=${concurrency}`,
    `--test-timeout=${timeoutMs}`,
    '--test-reporter=spec',
    '--test-reporter-destination=stdout',
    // After the run, the slowest files with their durations (scripts/test-durations.mjs).
    '--test-reporter=./scripts/test-durations.mjs',
    '--test-reporter-destination=stdout',
    ...files.map((f) => relative(root, f)),
  ],
  { cwd: root, stdio: 'inherit' },
);
child.on('exit', (code, signal) => {
  const endTicks = cpuTicks();
  if (startTicks && endTicks && endTicks.total > startTicks.total) {
    const busy = 1 - (endTicks.idle - startTicks.idle) / (endTicks.total - startTicks.total);
    console.log(
      `${((Date.now() - startedAt) / 1000).toFixed(0)} s on ${availableParallelism()} cores, ` +
        `${(busy * 100).toFixed(0)}% busy (the whole machine, at concurrency ${concurrency})`,
    );
  }
  process.exit(signal ? 1 : (code ?? 1));
});
