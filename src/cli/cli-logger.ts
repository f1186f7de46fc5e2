import {
  LOG_LEVEL_ORDER,
  logFields,
  logFieldsInto,
  type LogComponent,
  type LogLevel,
} from '../core/log-fields.js';
import type { Logger } from '../core/logger.js';
import { redactSecrets } from '../core/redact.js';

/** Where a {@link createCliLogger} writes: stderr, a file stream, anything with `write`. */
export interface LogDestination {
  write(line: string): unknown;
  /** A terminal: text lines unless `json` says otherwise. */
  isTTY?: boolean;
}

/** Options of {@link createCliLogger}. */
export interface CliLoggerOptions {
  /** Least severe level written. @default 'info' */
  level?: LogLevel;
  /** JSON lines (`true`) or text (`false`). @default JSON unless `stream` is a terminal */
  json?: boolean;
  /** @default process.stderr */
  stream?: LogDestination;
  /** `component` of lines whose fields name none. @default 'cli' */
  component?: LogComponent;
}

/**
 * Logger for long-running commands: one JSON object per line when stderr is not a terminal
 * (for log shippers), a readable line when it is. Writes to stderr so stdout stays for data.
 *
 * Every JSON line starts with `time`, `level`, `msg`, `component` and, when the call names one,
 * `event`, followed by the call's fields under the rules of `logFields` (errors as
 * `{ name, code, message, cause }`, secret fields and URL credentials masked; stacks only at
 * level `debug`). The field reference is docs/logging.md. Each line is one synchronous write,
 * so lines written just before `process.exit` are not lost.
 */
export function createCliLogger(options: CliLoggerOptions = {}): Logger {
  const stream = options.stream ?? process.stderr;
  const json = options.json ?? !stream.isTTY;
  const minLevel = options.level ?? 'info';
  const min = LOG_LEVEL_ORDER[minLevel];
  const fieldOptions = { stack: minLevel === 'debug' };
  const component = options.component ?? 'cli';
  // One ISO string per millisecond: a burst of lines formats the time once.
  let lastMs = -1;
  let lastIso = '';
  const isoNow = () => {
    const ms = Date.now();
    if (ms !== lastMs) {
      lastMs = ms;
      lastIso = new Date(ms).toISOString();
    }
    return lastIso;
  };
  const write = (level: LogLevel, message: string, fields: Record<string, unknown> | undefined) => {
    if (LOG_LEVEL_ORDER[level] < min) return;
    const msg = redactSecrets(message);
    if (json) {
      // The head first, in this order; `event: undefined` keeps its place and is not written
      // when the call names none.
      const record: Record<string, unknown> = { time: isoNow(), level, msg, component, event: undefined };
      if (fields) logFieldsInto(record, fields, fieldOptions);
      stream.write(`${JSON.stringify(record)}\n`);
    } else {
      const rest = fields ? logFields(fields, fieldOptions) : {};
      const { component: c = component, event, ...extra } = rest;
      const pairs = Object.entries(extra)
        .map(([k, v]) => `${k}=${textValue(v)}`)
        .join(' ');
      const time = isoNow().slice(11, 23);
      const head = `${time} ${level.toUpperCase().padEnd(5)} [${String(c)}] ${msg}`;
      stream.write(`${head}${event ? `  event=${String(event)}` : ''}${pairs ? `  ${pairs}` : ''}\n`);
    }
  };
  return {
    debug: (m, f) => write('debug', m, f),
    info: (m, f) => write('info', m, f),
    warn: (m, f) => write('warn', m, f),
    error: (m, f) => write('error', m, f),
  };
}

/** A field's value in a text line: strings bare, errors as `Name [code]: message <- cause`. */
function textValue(value: unknown): string {
  if (typeof value === 'string') return value;
  if (value !== null && typeof value === 'object' && 'message' in value && 'name' in value) {
    const parts: string[] = [];
    for (let e: unknown = value; e && typeof e === 'object'; e = (e as { cause?: unknown }).cause) {
      const { name, code, message } = e as { name: string; code?: string; message: string };
      parts.push(`${name}${code ? ` [${code}]` : ''}: ${message}`);
    }
    return JSON.stringify(parts.join(' <- '));
  }
  return JSON.stringify(value);
}
