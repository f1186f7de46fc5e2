/**
 * The leak guard: a test file that leaves something running after its last test (a relay not
 * stopped, a pool not ended, a pool client not released, a broker connection, server, child
 * process or timer not closed) fails, with a list of what is left and where each one was created.
 *
 * `scripts/run-tests.mjs` preloads `leak-guard-register.ts` into the process of every test file
 * (`--import`), which calls {@link installLeakGuard}. Node's test runner gives each file a process
 * of its own, so the guard compares that process with itself: what runs after the file's last
 * `after()` hook against what ran before the file was loaded.
 *
 * Only what keeps the process alive counts (referenced sockets, servers, child processes, timers;
 * `unref()`ed ones do not). Without the guard such a leak makes the file's process, and with it
 * the whole run, hang until somebody notices; with it the file fails at once, the leaked handles
 * are closed so the run goes on, and the message says what to fix.
 */
import { AsyncResource, createHook } from 'node:async_hooks';
import { ChildProcess } from 'node:child_process';
import { Server, Socket } from 'node:net';
import { relative } from 'node:path';
import { after } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

/**
 * How long the guard waits for things that are already closing (a pool's sockets after
 * `pool.end()` resolved, a child process after its kill) before it calls them leaks. A clean file
 * passes at the first look, so this only delays the report of a real leak.
 */
const SETTLE_MS = 5000;

/**
 * After a leak is reported and its handles closed, the longest the file's process may still take
 * to exit before the guard ends it: a leak the guard could not close must not hang the run.
 */
const EXIT_DEADLINE_MS = 3000;

/** Async resource types worth a creation stack: handles that keep the process alive. */
const TRACED = new Set([
  'Timeout',
  'TCPWRAP',
  'TCPSERVERWRAP',
  'PIPEWRAP',
  'PIPESERVERWRAP',
  'PROCESSWRAP',
  'UDPWRAP',
  'FSEVENTWRAP',
  'STATWATCHER',
]);

/** Ports the test suite talks to, named in reports so a leaked socket says what it was for. */
const SERVICES = new Map([
  [5432, 'PostgreSQL'],
  [5672, 'RabbitMQ'],
  [4222, 'NATS'],
  [6379, 'Redis'],
]);

/** A Node `Timeout` with the fields the guard reads: stable since Node 11, not in the typings. */
type Timer = NodeJS.Timeout & {
  _destroyed: boolean;
  _idleTimeout: number;
  _repeat: number | null;
};

/** The parts of a net handle's owner the guard reads. */
interface HandleOwner {
  _handle?: object | null;
}

interface ProcessInternals {
  _getActiveHandles?: () => unknown[];
}

/** One thing left running. */
export interface Leak {
  /** What it is, e.g. `TCP connection 127.0.0.1:41234 → 127.0.0.1:5432 (PostgreSQL)`. */
  what: string;
  /** Frames of the stack that created it, project frames first; empty when not traced. */
  createdAt: string[];
  /** Closes it, so the process can exit after the report. */
  close(): void;
}

/** A test left something running. */
export class LeakError extends Error {
  static {
    // On the prototype, so the stack's first line already says LeakError.
    this.prototype.name = 'LeakError';
  }

  constructor(message: string) {
    super(message);
    // Where the guard threw says nothing; the message names where each leak was created.
    this.stack = `${this.name}: ${message}`;
  }
}

/** Creation stacks by resource (the handle object, or the Timeout itself). */
const origins = new WeakMap<object, { stack?: string }>();
/** Timers created since the guard was installed and not yet seen finished. */
const timers = new Set<Timer>();
let timerInits = 0;
let baseline: { handles: Set<unknown>; counts: Map<string, number> } | undefined;

function counts(names: readonly string[]): Map<string, number> {
  const map = new Map<string, number>();
  for (const name of names) map.set(name, (map.get(name) ?? 0) + 1);
  return map;
}

function activeHandles(): unknown[] {
  // Undocumented but long-lived; without it the guard still counts what runs, by type.
  const { _getActiveHandles } = process as NodeJS.Process & ProcessInternals;
  return typeof _getActiveHandles === 'function' ? _getActiveHandles.call(process) : [];
}

/**
 * Starts recording where sockets, servers, child processes and timers are created, and takes the
 * baseline (what runs before the test file is loaded: the runner's own pipes). Idempotent.
 */
export function startTracing(): void {
  if (baseline) return;
  baseline = { handles: new Set(activeHandles()), counts: counts(process.getActiveResourcesInfo()) };
  createHook({
    init(_asyncId, type, _triggerAsyncId, resource) {
      // Promises are the bulk of async resources and never keep a process alive.
      if (type === 'PROMISE' || !TRACED.has(type)) return;
      const holder: { stack?: string } = {};
      const limit = Error.stackTraceLimit;
      // Deep enough to get from pg's or amqplib's internals back to the code that called them.
      Error.stackTraceLimit = 40;
      // V8 formats the stack only when it is read, so recording one per timer stays cheap.
      Error.captureStackTrace(holder);
      Error.stackTraceLimit = limit;
      origins.set(resource, holder);
      if (type === 'Timeout') {
        timers.add(resource as Timer);
        if (++timerInits % 1024 === 0) {
          for (const timer of timers) if (timer._destroyed) timers.delete(timer);
        }
      }
    },
  }).enable();
}

/** The stack frames of `holder`, as `function (path:line:col)` relative to the project. */
function frames(holder: { stack?: string } | undefined): string[] {
  if (!holder?.stack) return [];
  const lines = holder.stack
    .split('\n')
    .slice(1)
    .map((line) => line.trim().replace(/^at /, '').replaceAll('file://', '').replaceAll(ROOT, ''))
    .filter((line) => !line.includes('leak-guard'));
  // The project's own frames say who is responsible, a driver's say what; Node's say nothing.
  const outside = lines.filter((line) => !/\((node:|<anonymous>)|^node:/.test(line));
  const own = outside.filter((line) => !line.includes('node_modules'));
  if (own.length > 0) return own.slice(0, 4);
  if (outside.length > 0) return outside.slice(0, 4);
  return ['inside Node itself, with no JavaScript caller on the stack'];
}

function describeSocket(socket: Socket): string {
  const handle = (socket as Socket & HandleOwner)._handle;
  const kind = handle?.constructor.name;
  if (kind === 'Pipe') return 'pipe or Unix socket';
  if (socket.remotePort === undefined) return `TCP socket, not connected${socket.connecting ? ' yet' : ''}`;
  const service = SERVICES.get(socket.remotePort);
  return (
    `TCP connection ${socket.localAddress}:${socket.localPort} → ${socket.remoteAddress}:${socket.remotePort}` +
    (service ? ` (${service})` : '')
  );
}

function resourceName(handle: unknown): string | undefined {
  if (handle instanceof ChildProcess) return 'ProcessWrap';
  const kind = (handle as HandleOwner)._handle?.constructor.name;
  if (handle instanceof Server) return kind === 'Pipe' ? 'PipeServerWrap' : 'TCPServerWrap';
  if (handle instanceof Socket) return kind === 'Pipe' ? 'PipeWrap' : 'TCPSocketWrap';
  return undefined;
}

/** What runs now that did not run at the baseline, each with where it was created. */
export function findLeaks(): Leak[] {
  const base = baseline ?? { handles: new Set<unknown>(), counts: new Map<string, number>() };
  const leaks: Leak[] = [];
  const explained = new Map<string, number>();
  const explain = (name: string | undefined) => {
    if (name) explained.set(name, (explained.get(name) ?? 0) + 1);
  };
  const handles = activeHandles().filter((h) => !base.handles.has(h));
  // A child's stdio pipes close with the child: report the child once, not its pipes.
  const stdio = new Set<unknown>();
  for (const handle of handles) {
    if (handle instanceof ChildProcess) for (const stream of handle.stdio) if (stream) stdio.add(stream);
  }
  for (const handle of handles) {
    explain(resourceName(handle));
    if (stdio.has(handle)) continue;
    const origin = origins.get((handle as HandleOwner)._handle ?? {});
    if (handle instanceof ChildProcess) {
      leaks.push({
        what: `child process ${handle.pid} (${handle.spawnargs.join(' ')})`,
        createdAt: frames(origin),
        close: () => handle.kill('SIGKILL'),
      });
    } else if (handle instanceof Server) {
      const address = handle.address();
      leaks.push({
        what: `server listening on ${typeof address === 'string' ? address : `${address?.address}:${address?.port}`}`,
        createdAt: frames(origin),
        close: () => handle.close(),
      });
    } else if (handle instanceof Socket) {
      leaks.push({ what: describeSocket(handle), createdAt: frames(origin), close: () => handle.destroy() });
    } else {
      const name = (handle as object | null)?.constructor?.name ?? typeof handle;
      leaks.push({ what: `handle ${name}`, createdAt: [], close: () => undefined });
    }
  }
  for (const timer of timers) {
    if (timer._destroyed) {
      timers.delete(timer);
      continue;
    }
    if (!timer.hasRef()) continue;
    explain('Timeout');
    leaks.push({
      what:
        timer._repeat === null
          ? `timer: setTimeout of ${timer._idleTimeout} ms, not fired or cleared`
          : `timer: setInterval every ${timer._repeat} ms, never cleared`,
      createdAt: frames(origins.get(timer)),
      close: () => clearTimeout(timer),
    });
  }
  // Whatever Node counts that the lists above do not explain (requests in flight, handles of a
  // kind not traced): named by type only.
  for (const [name, count] of counts(process.getActiveResourcesInfo())) {
    const extra = count - (base.counts.get(name) ?? 0) - (explained.get(name) ?? 0);
    if (extra > 0) {
      leaks.push({ what: `${extra} × ${name} (not traced)`, createdAt: [], close: () => undefined });
    }
  }
  return leaks;
}

/**
 * Waits up to `settleMs` for leaks to close on their own, then returns what is still running.
 * Polls with an ordinary timer, which has fired (and so is not counted) by the time it looks.
 */
export async function findLeaksSettled(settleMs = SETTLE_MS): Promise<Leak[]> {
  const deadline = performance.now() + settleMs;
  for (;;) {
    const leaks = findLeaks();
    if (leaks.length === 0 || performance.now() >= deadline) return leaks;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/** The report of `leaks` left by `file`. */
export function formatLeaks(file: string, leaks: readonly Leak[], settleMs = SETTLE_MS): string {
  const lines = leaks.map((leak) =>
    [
      `  - ${leak.what}`,
      ...leak.createdAt.map((frame, i) => `      ${i === 0 ? 'created at' : '          '} ${frame}`),
    ].join('\n'),
  );
  return (
    `${file} left ${leaks.length} thing(s) running after its last test ` +
    `(still there ${settleMs} ms after the last after() hook):\n${lines.join('\n')}\n` +
    'Stop every relay, end every pool, release every pool client, and close every connection, ' +
    'server, child process and timer a test starts, in a finally block or an after() hook. ' +
    'The guard closed these so the run can go on.'
  );
}

let guarded = false;

/**
 * Installs the guard in this process: traces creation sites from now on and has the test file
 * fail with a {@link LeakError} naming what it left running. Called by the preloaded
 * `leak-guard-register.ts`, before the test file is loaded; idempotent.
 */
export function installLeakGuard(): void {
  if (guarded) return;
  guarded = true;
  startTracing();
  // Top-level after() hooks run in the order they were registered, and this one is registered
  // before the test file's own (a file may close its broker connection in one). So this hook
  // only appends the check to the same list, which the runner reads afresh after each hook:
  // the check then runs after every other top-level hook. It must be appended from outside any
  // test's async context, or node:test would attach it to this hook instead of to the file.
  const fileScope = new AsyncResource('leak-guard');
  after(() => fileScope.runInAsyncScope(() => after(check)));
}

async function check(): Promise<void> {
  const leaks = await findLeaksSettled();
  if (leaks.length === 0) return;
  const file = relative(ROOT, process.argv[1] ?? '') || 'this test file';
  const message = formatLeaks(file, leaks);
  for (const leak of leaks) {
    try {
      leak.close();
    } catch {
      // Closing is a courtesy to the rest of the run; the report is what matters.
    }
  }
  // A leak the guard could not close (named by type only, or a relay still running that opens
  // new connections as its old ones close) must not keep this file's process, and so the
  // whole run, alive: the failure is reported by then.
  setTimeout(() => process.exit(1), EXIT_DEADLINE_MS).unref();
  throw new LeakError(message);
}
