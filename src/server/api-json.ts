import type { AckRecord, OutboxStats, RelayInfo } from '../core/ports.js';
import type { DeadLetter } from '../core/types.js';
import type { AckRow, ApiOutboxStats, DeadLetterDetail, DeadLetterRow, RelayRow } from './api-types.js';

/** Characters of a dead letter's payload in its list row. */
export const PREVIEW_CHARS = 200;

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

export function statsJson(stats: OutboxStats): ApiOutboxStats {
  return {
    backlog: stats.backlog,
    inFlight: stats.inFlight,
    scheduled: stats.scheduled,
    oldestAgeMs: stats.oldestAgeMs,
    deadLetters: stats.deadLetters,
    topics: stats.topics.map((t) => ({ topic: t.topic, backlog: t.backlog, deadLetters: t.deadLetters })),
    ...(stats.approximate === undefined ? {} : { approximate: stats.approximate }),
    ...(stats.estimated === undefined ? {} : { estimated: [...stats.estimated] }),
    ...(stats.topicsTruncated === undefined ? {} : { topicsTruncated: stats.topicsTruncated }),
  };
}

function iso(value: unknown): string | null {
  if (value instanceof Date) return Number.isNaN(value.getTime()) ? null : value.toISOString();
  if (typeof value === 'string' || typeof value === 'number') {
    const date = new Date(value);
    return Number.isNaN(date.getTime()) ? null : date.toISOString();
  }
  return null;
}

export function deadLetterRow(letter: DeadLetter): DeadLetterRow {
  // Control characters (other than tab and newline) would only garble a one-line preview.
  const text = letter.payload
    .subarray(0, PREVIEW_CHARS * 4)
    .toString('utf8')
    // eslint-disable-next-line no-control-regex
    .replace(/[\u0000-\u0008\u000b-\u001f\u007f]/g, ' ');
  return {
    id: letter.id,
    topic: letter.topic,
    key: letter.key,
    type: letter.type,
    attempts: letter.attempts,
    error: letter.lastError ?? '',
    deadAt: iso(letter.deadAt) ?? '',
    createdAt: iso(letter.createdAt) ?? '',
    contentType: letter.contentType,
    size: letter.payload.length,
    preview: [...text].slice(0, PREVIEW_CHARS).join(''),
  };
}

/** A dead letter with headers and its whole payload: parsed JSON, text, or base64 bytes. */
export function deadLetterDetail(letter: DeadLetter): DeadLetterDetail {
  let payload: DeadLetterDetail['payload'];
  let text: string | undefined;
  try {
    text = strictUtf8.decode(letter.payload);
  } catch {
    text = undefined;
  }
  if (text === undefined) payload = { encoding: 'base64', value: letter.payload.toString('base64') };
  else if (/json/i.test(letter.contentType)) {
    try {
      payload = { encoding: 'json', value: JSON.parse(text) as unknown };
    } catch {
      payload = { encoding: 'utf8', value: text };
    }
  } else payload = { encoding: 'utf8', value: text };
  return { ...deadLetterRow(letter), headers: { ...letter.headers }, payload };
}

export function ackRow(record: AckRecord): AckRow {
  return {
    id: record.id,
    topic: record.topic,
    state: record.state,
    attempts: record.resends,
    deadline: iso(record.deadline),
    sentAt: iso(record.sentAt),
    ackedAt: iso(record.ackedAt),
    consumer: record.consumer,
  };
}

/** A row of a store's relay presence table (`OutboxStore.listRelays`) as JSON. */
export function relayRowJson(info: RelayInfo): RelayRow {
  return {
    owner: info.owner,
    host: info.host,
    pid: info.pid,
    version: info.version,
    wakeup: info.wakeup,
    state: info.state,
    startedAt: iso(info.startedAt),
    heartbeatAt: iso(info.heartbeatAt),
    alive: info.alive,
    inFlight: info.inFlight.messages,
  };
}
