// A node:test reporter that prints, once the run has ended, the test files that took longest
// (wall time of each file's process, as the runner measured it) with their test counts: where a
// CI run spends its minutes, in every log. Used by scripts/run-tests.mjs beside the spec reporter.
import { relative } from 'node:path';
import { performance } from 'node:perf_hooks';

const TOP = Number(process.env.TEST_DURATIONS_TOP ?? 15);

export default async function* durations(source) {
  const files = new Map(); // file -> { ms, tests, failed }
  const entry = (file) => {
    let e = files.get(file);
    if (!e) files.set(file, (e = { ms: 0, tests: 0, failed: 0 }));
    return e;
  };
  const started = performance.now();
  for await (const event of source) {
    const { type, data } = event;
    if (type !== 'test:complete' && type !== 'test:pass' && type !== 'test:fail') continue;
    if (!data.file) continue;
    if (type === 'test:complete') {
      // The file itself completes as a test named by its path, its duration the process's.
      if (data.nesting === 0 && data.name === data.file) entry(data.file).ms = data.details?.duration_ms ?? 0;
      continue;
    }
    // Leaf tests only: a suite (describe) is counted through its tests.
    if (data.name === data.file || data.details?.type === 'suite') continue;
    const e = entry(data.file);
    e.tests += 1;
    if (type === 'test:fail') e.failed += 1;
  }
  const rows = [...files.entries()].sort((a, b) => b[1].ms - a[1].ms);
  if (rows.length === 0) return;
  const total = rows.reduce((s, [, e]) => s + e.ms, 0);
  const wall = (performance.now() - started) / 1000;
  const shown = rows.slice(0, TOP);
  let out = `\nslowest test files (${shown.length} of ${rows.length}; ${(total / 1000).toFixed(0)} s of file time in ${wall.toFixed(0)} s of wall time):\n`;
  for (const [file, e] of shown) {
    const s = (e.ms / 1000).toFixed(1).padStart(7);
    const failed = e.failed ? `, ${e.failed} failed` : '';
    out += `${s} s  ${relative(process.cwd(), file)} (${e.tests} tests${failed})\n`;
  }
  yield out;
}
