import { readFile } from 'node:fs/promises';
import { InvalidMessageError, isInvalidMessageError } from '../../core/errors/invalid-message-error.js';
import { isPayloadTooLargeError } from '../../core/errors/payload-too-large-error.js';
import { Outbox } from '../../core/outbox.js';
import type { OutboxStore } from '../../core/ports.js';
import type { MessageInput } from '../../core/types.js';
import { PostgresStore } from '../../stores/postgres/postgres-store.js';
import { UsageError } from '../cli-error.js';
import { compactJson } from '../json-text.js';
import type { Command } from '../command.js';
import { ALL_STORE_KINDS, CONNECTION_OPTIONS, openStore } from '../connect.js';
import { parseDuration } from '../duration.js';
import { COMMON_OPTIONS, type FlagValue, type OptionSpec, type ResolvedConfig } from '../options.js';

const OPTIONS: OptionSpec[] = [
  ...COMMON_OPTIONS.filter((o) => o.key === 'databaseUrl' || o.key === 'schema'),
  ...CONNECTION_OPTIONS,
  { key: 'topic', flag: 'topic', type: 'string', valueName: 'topic', description: 'topic of the message' },
  {
    key: 'key',
    flag: 'key',
    type: 'string',
    valueName: 'key',
    description: 'message key; same key, delivered in order',
  },
  {
    key: 'type',
    flag: 'type',
    type: 'string',
    valueName: 'type',
    description: 'message type, e.g. order.created',
  },
  {
    key: 'header',
    flag: 'header',
    type: 'string',
    valueName: 'name=value',
    repeatable: true,
    description: 'a header as name=value',
  },
  {
    key: 'payload',
    flag: 'payload',
    type: 'string',
    valueName: 'json',
    description: 'the payload, as JSON text',
  },
  {
    key: 'payloadFile',
    flag: 'payload-file',
    type: 'string',
    valueName: 'file',
    description: 'read the JSON payload from this file',
  },
  {
    key: 'delay',
    flag: 'delay',
    type: 'string',
    valueName: 'duration',
    description: 'deliver no earlier than this from now: 30s, 10m, 2h',
  },
];

/** The payload text from `--payload`, `--payload-file` or stdin, and where it came from. */
async function readPayload(config: ResolvedConfig): Promise<{ text: string; source: string }> {
  if (config.payload !== undefined && config.payloadFile !== undefined) {
    throw new UsageError('give the payload once: --payload or --payload-file, not both');
  }
  if (config.payload !== undefined) return { text: String(config.payload), source: '--payload' };
  if (config.payloadFile !== undefined) {
    const file = String(config.payloadFile);
    try {
      return { text: await readFile(file, 'utf8'), source: `--payload-file ${file}` };
    } catch (err) {
      throw new UsageError(`cannot read --payload-file ${file}: ${(err as Error).message}`);
    }
  }
  const missing = 'no payload: pass --payload JSON, --payload-file FILE, or pipe JSON into stdin';
  if (process.stdin.isTTY) throw new UsageError(missing);
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  const text = Buffer.concat(chunks).toString('utf8');
  if (text.trim() === '') throw new UsageError(missing);
  return { text, source: 'stdin' };
}

function parseHeaders(raw: FlagValue | undefined): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const pair of Array.isArray(raw) ? raw : []) {
    const eq = pair.indexOf('=');
    if (eq <= 0) {
      throw new UsageError(
        `--header ${JSON.stringify(pair)} must be name=value, e.g. --header source=billing`,
        {
          flag: 'header',
        },
      );
    }
    const name = pair.slice(0, eq);
    if (Object.hasOwn(headers, name)) throw new UsageError(`--header ${JSON.stringify(name)} is given twice`);
    headers[name] = pair.slice(eq + 1);
  }
  return headers;
}

async function buildMessage(config: ResolvedConfig, flags: Map<string, FlagValue>): Promise<MessageInput> {
  const headers = parseHeaders(flags.get('header'));
  const delayMs = config.delay === undefined ? 0 : parseDuration('delay', String(config.delay));
  const { text, source } = await readPayload(config);
  try {
    JSON.parse(text);
  } catch (err) {
    throw new InvalidMessageError(
      'payload',
      `payload from ${source} is not valid JSON (${(err as Error).message}); quote strings: '"text"'`,
    );
  }
  return {
    topic: String(config.topic),
    // The text itself, not JSON.parse's value: parsing turns numbers into doubles, and
    // 12345678901234567890123 would be stored as 1.2345678901234568e+22. Given as bytes with
    // the JSON content type, the message is stored and delivered exactly as written (only the
    // whitespace between tokens goes), and the size limit counts these bytes.
    payload: Buffer.from(compactJson(text), 'utf8'),
    contentType: 'application/json',
    headers,
    ...(config.key === undefined ? {} : { key: String(config.key) }),
    ...(config.type === undefined ? {} : { type: String(config.type) }),
    ...(delayMs ? { delayMs } : {}),
  };
}

export const sendCommand: Command = {
  name: 'send',
  summary: 'enqueue one message in its own transaction and print its id',
  usage:
    'mailroom send --topic T [--key K] [--type X] [--header name=value]... [--payload JSON | --payload-file F | < stdin]',
  options: OPTIONS,
  required: ['databaseUrl', 'topic'],
  details: [
    'The message is written in a transaction of its own, in any database the URL names',
    '(postgres://, mysql://, mariadb://, sqlite:path, pglite:path).',
    'The payload is JSON, from --payload, --payload-file or stdin (in that order of preference).',
    'It is stored as written, without the whitespace between tokens: numbers keep every digit.',
    'A message that is not valid (bad JSON, empty topic, header without "=") exits with code 2',
    'and writes nothing.',
    '',
    'Examples:',
    `  mailroom send --topic order.created --key 42 --payload '{"id":42}'`,
    '  echo \'{"id":42}\' | mailroom send --topic order.created --header source=ops',
  ].join('\n'),
  async run({ config, flags, out }) {
    let input: MessageInput;
    const store = await openStore(config, { kinds: ALL_STORE_KINDS });
    try {
      // Any store's Outbox validates the same way: the message limits are the Outbox's own.
      const check = new Outbox({ store: store as OutboxStore });
      try {
        input = await buildMessage(config, flags);
        // Validate before connecting, so a bad message never opens a transaction.
        check.encode([input]);
      } catch (err) {
        if (isInvalidMessageError(err) || isPayloadTooLargeError(err)) throw new UsageError(err.message);
        throw err;
      }
      // First contact through the store, with its deadlines and its explanations (a server
      // that is not the database the URL says, a schema to migrate), as every other command.
      await store.check();
      // The message in a transaction of its own, on a connection of the store's, with the
      // store's deadlines: the same enqueue an application runs in its transaction.
      const message = input;
      let id: string;
      if (store instanceof PostgresStore) {
        const outbox = new Outbox({ store });
        id = await store.transaction((tx) => outbox.enqueue(tx, message));
      } else if ('tablePrefix' in store) {
        const outbox = new Outbox({ store });
        id = await store.transaction((tx) => outbox.enqueue(tx, message));
      } else {
        const outbox = new Outbox({ store });
        id = await store.transaction((tx) => outbox.enqueue(tx, message));
      }
      out(id);
      return 0;
    } finally {
      await store.close();
    }
  },
};
