/**
 * Acknowledged delivery end to end under faults (issue 13): two services, each with its own
 * database (here: a schema each) and relay, talking through RabbitMQ.
 *
 *   sender:   writers → outbox (ack) → `mailroom relay` ×2 → exchange → receiver queue
 *   receiver: inbox-consumer ×2 (RabbitMqConsumer + Inbox, one effect row per message in the
 *             receiver's schema, the acknowledgement enqueued in the same transaction)
 *             → receiver outbox → `mailroom relay` → exchange → ack queue
 *   sender:   ack-consumer (RabbitMqConsumer + AckReceiver) → sender's ack table
 *
 * Phase 1: for ACK_FAULT_DURATION_S (60 by default) writers commit and roll back while every
 * relay and consumer process is SIGKILLed at random moments and restarted (consumers also kill
 * themselves between their inbox commit and the broker ack); then quiet. Every committed message
 * has exactly one effect and is acknowledged; rolled-back ones left nothing; resends happened and
 * the inbox dropped the copies.
 * Phase 2: the receiver's consumers stay stopped while messages with a short timeout go out:
 * each expires, and exactly one cancellation per expired message is delivered, none for any
 * other message; the late acknowledgements that follow the consumers' return do not revive them.
 *
 *   node scripts/run-tests.mjs test/faults/ack-e2e.test.ts        (after npm run build)
 *   ACK_FAULT_DURATION_S=600 node scripts/run-tests.mjs test/faults/ack-e2e.test.ts
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import amqp from 'amqplib';
import type pg from 'pg';
import { Outbox, type MessageInput, type MessageStatus } from '../../src/core/index.js';
import { AMQP_URL } from '../helpers/amqp.js';
import { spawnCli } from '../helpers/cli.js';
import { createTestDb, DATABASE_URL, type TestDb } from '../helpers/postgres.js';

// The fault suite's FAULT_DURATION_S (45 s in CI) applies here too unless ACK_FAULT_DURATION_S is set.
const DURATION_S = Number(process.env.ACK_FAULT_DURATION_S ?? process.env.FAULT_DURATION_S ?? 60);
const KEYS = 40;
const TOPIC = 'task.requested';
const CANCEL_TOPIC = 'task-cancel.requested';
/** Phase 1: resends are cheap and frequent; 60 of them (3 minutes) is more than any outage here. */
const PHASE1_ACK = { timeoutMs: 3000, maxResends: 60, onExpire: CANCEL_TOPIC };
/** Phase 2: expires 3 × 1 s after its first delivery without an acknowledgement. */
const PHASE2_ACK = { timeoutMs: 1000, maxResends: 2, onExpire: CANCEL_TOPIC };
const PHASE2_MESSAGES = 60;
const SENDER_RELAYS = 2;
const RECEIVER_RELAYS = 1;
const CONSUMERS = 2;
const ROOT = fileURLToPath(new URL('../../', import.meta.url));

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `check` until it returns true or `timeoutMs` passes; returns whether it did. */
async function settles(check: () => Promise<boolean>, timeoutMs: number, everyMs = 250): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    if (await check().catch(() => false)) return true;
    if (performance.now() > deadline) return false;
    await sleep(everyMs);
  }
}

/** A kind of process the test keeps `want` of running, restarting the dead ones. */
class Role {
  readonly live = new Set<ChildProcess>();
  want: number;
  /** No restart before this time (an outage of this role). */
  downUntil = 0;
  spawned = 0;
  readonly stderrTail: string[] = [];

  constructor(
    readonly name: string,
    want: number,
    private readonly start: () => ChildProcess,
    private readonly onLine: (line: string) => void = () => undefined,
  ) {
    this.want = want;
  }

  /** Starts processes until `want` are running (unless the role is held down). */
  topUp(): void {
    if (Date.now() < this.downUntil) return;
    while (this.live.size < this.want) {
      const child = this.start();
      this.spawned++;
      this.live.add(child);
      child.on('exit', () => this.live.delete(child));
      createInterface({ input: child.stdout! }).on('line', this.onLine);
      createInterface({ input: child.stderr! }).on('line', (l) => {
        this.stderrTail.push(`${this.name}[${child.pid}]: ${l}`);
        if (this.stderrTail.length > 20) this.stderrTail.shift();
      });
    }
  }

  /** SIGKILLs one of the running processes (a random one). */
  killOne(): boolean {
    const victims = [...this.live].filter((c) => c.exitCode === null && c.signalCode === null);
    const victim = victims[Math.floor(Math.random() * victims.length)];
    if (!victim) return false;
    victim.kill('SIGKILL');
    this.live.delete(victim);
    return true;
  }

  /** Stops every process: SIGTERM (they drain), SIGKILL after `graceMs`. */
  async stopAll(graceMs = 10_000): Promise<void> {
    this.want = 0;
    const children = [...this.live];
    await Promise.all(
      children.map(async (c) => {
        if (c.exitCode !== null || c.signalCode !== null) return;
        const exited = new Promise((r) => c.once('exit', r));
        c.kill('SIGTERM');
        const timer = setTimeout(() => c.kill('SIGKILL'), graceMs);
        await exited;
        clearTimeout(timer);
      }),
    );
  }
}

describe('acknowledged delivery under faults', () => {
  let sender: TestDb;
  let receiver: TestDb;
  let admin: Awaited<ReturnType<typeof amqp.connect>>;
  let adminCh: Awaited<ReturnType<typeof admin.createChannel>>;
  const exchange = `mr_ack_${randomBytes(3).toString('hex')}`;
  const receiverQueue = `${exchange}.receiver`;
  const ackQueue = `${exchange}.acks`;
  const cancelQueue = `${exchange}.cancellations`;
  const queues = [receiverQueue, `${receiverQueue}.dead`, ackQueue, `${ackQueue}.dead`, cancelQueue];
  const roles: Role[] = [];
  let supervisor: ReturnType<typeof setInterval> | undefined;

  /** Cancellations as they arrive: message id, the expired message's id, type, payload topic. */
  const cancellations: Array<{ messageId: string; expiredId: string; type: string; topic: string }> = [];
  /** What the consumers reported, per message id. */
  const processed = new Map<string, number>();
  const duplicates = new Map<string, number>();
  let diedAfterCommit = 0;
  const ackOutcomes: Record<string, number> = {};

  const bump = (map: Map<string, number>, id: string) => map.set(id, (map.get(id) ?? 0) + 1);

  before(async () => {
    sender = await createTestDb('ack_sender');
    receiver = await createTestDb('ack_receiver');
    // No key on the effects: a second effect for one message must show up as a second row.
    await receiver.pool.query(
      `CREATE TABLE "${receiver.schema}".effects (id uuid NOT NULL, topic text NOT NULL, pid integer NOT NULL, at timestamptz NOT NULL DEFAULT now())`,
    );
    admin = await amqp.connect(AMQP_URL);
    admin.on('error', () => undefined);
    adminCh = await admin.createChannel();
    // Declared and bound before anything publishes, as the consumers declare them, so nothing
    // published while a consumer is down is unroutable.
    await adminCh.assertExchange(exchange, 'topic', { durable: true });
    await adminCh.assertQueue(receiverQueue, { durable: true });
    await adminCh.bindQueue(receiverQueue, exchange, 'task.#');
    await adminCh.assertQueue(ackQueue, { durable: true });
    await adminCh.bindQueue(ackQueue, exchange, 'mailroom.ack');
    await adminCh.assertQueue(cancelQueue, { durable: true });
    await adminCh.bindQueue(cancelQueue, exchange, 'task-cancel.#');
    await adminCh.consume(cancelQueue, (msg) => {
      if (!msg) return;
      const payload = JSON.parse(msg.content.toString('utf8')) as { id: string; topic: string };
      cancellations.push({
        messageId: String(msg.properties.messageId),
        expiredId: payload.id,
        type: String(msg.properties.type),
        topic: payload.topic,
      });
      adminCh.ack(msg);
    });
  });

  after(async () => {
    clearInterval(supervisor);
    await Promise.all(roles.map((r) => r.stopAll(5000)));
    for (const q of queues) await adminCh.deleteQueue(q).catch(() => undefined);
    await adminCh.deleteExchange(exchange).catch(() => undefined);
    await admin.close().catch(() => undefined);
    await sender.drop();
    await receiver.drop();
  });

  const relayArgs = (schema: string) => [
    'relay',
    '--database-url',
    DATABASE_URL,
    '--schema',
    schema,
    '--transport',
    AMQP_URL,
    '--exchange',
    exchange,
    // Everything else at its default (lease, retries, batch size, ack sweep every second).
    '--log-level',
    'error',
  ];
  const fixture = (file: string, env: Record<string, string>) =>
    spawn(process.execPath, ['--import', 'tsx', `test/fixtures/${file}`], {
      cwd: ROOT,
      env: { ...process.env, DATABASE_URL, AMQP_URL, EXCHANGE: exchange, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });

  /** The statuses of `ids` in the sender's store, counted by state. */
  async function statesOf(
    ids: string[],
  ): Promise<{ statuses: MessageStatus[]; counts: Record<string, number> }> {
    const statuses = await sender.store.status(ids);
    const counts: Record<string, number> = {};
    for (const s of statuses) counts[s.state] = (counts[s.state] ?? 0) + 1;
    return { statuses, counts };
  }

  const queueDepth = async (q: string) => (await adminCh.checkQueue(q)).messageCount;

  it(
    `applies every committed message once and acknowledges it under ${DURATION_S}s of SIGKILLs, then expires and cancels what a stopped receiver never acknowledged`,
    { timeout: (DURATION_S + 300) * 1000 },
    async () => {
      // ---- the services ------------------------------------------------------------------
      // Consumers kill themselves between the inbox commit and the broker ack now and then: the
      // window where a crash must cost a redelivery, never a second effect.
      let dieAfterCommit = 0.003;
      const senderRelays = new Role('sender-relay', SENDER_RELAYS, () => spawnCli(relayArgs(sender.schema)));
      const receiverRelays = new Role('receiver-relay', RECEIVER_RELAYS, () =>
        spawnCli(relayArgs(receiver.schema)),
      );
      const consumers = new Role(
        'inbox-consumer',
        CONSUMERS,
        () =>
          fixture('inbox-consumer.ts', {
            SCHEMA: receiver.schema,
            QUEUE: receiverQueue,
            BINDINGS: 'task.#',
            CONSUMER: 'worker',
            DIE_AFTER_COMMIT: String(dieAfterCommit),
            HANDLE_DELAY_MS: '10',
          }),
        (line) => {
          const [what, id] = line.split(' ');
          if (what === 'processed' && id) bump(processed, id);
          else if (what === 'duplicate' && id) bump(duplicates, id);
          else if (what === 'die-after-commit') diedAfterCommit++;
        },
      );
      const ackConsumers = new Role(
        'ack-consumer',
        1,
        () =>
          fixture('ack-consumer.ts', {
            SCHEMA: sender.schema,
            QUEUE: ackQueue,
            BINDINGS: 'mailroom.ack',
          }),
        (line) => {
          const [what, outcome] = line.split(' ');
          if (what === 'ack' && outcome) ackOutcomes[outcome] = (ackOutcomes[outcome] ?? 0) + 1;
        },
      );
      roles.push(senderRelays, receiverRelays, consumers, ackConsumers);
      const topUpAll = () => roles.forEach((r) => r.topUp());
      topUpAll();
      supervisor = setInterval(topUpAll, 200);

      // ---- writers -----------------------------------------------------------------------
      const outbox = new Outbox({ store: sender.store });
      const committed: string[] = [];
      const rolledBack: string[] = [];
      /** COMMIT failed or its answer was lost: committed or not, the store says later. */
      const uncertain: string[] = [];
      let writing = true;
      let writeErrors = 0;
      let seq = 0;
      const writeTx = async (messages: MessageInput[], rollback: boolean) => {
        let client: pg.PoolClient | undefined;
        let ids: string[] = [];
        try {
          client = await sender.pool.connect();
          await client.query('BEGIN');
          ids = await outbox.enqueue(client, messages);
          if (rollback) {
            await client.query('ROLLBACK');
            rolledBack.push(...ids);
          } else {
            await client.query('COMMIT');
            committed.push(...ids);
          }
          client.release();
        } catch {
          writeErrors++;
          if (!rollback) uncertain.push(...ids);
          client?.release(true);
        }
      };
      const writer = async () => {
        while (writing) {
          const n = 1 + Math.floor(Math.random() * 3);
          const messages = Array.from({ length: n }, () => ({
            topic: TOPIC,
            key: `k${Math.floor(Math.random() * KEYS)}`,
            payload: { seq: seq++ },
            ack: PHASE1_ACK,
          }));
          await writeTx(messages, Math.random() < 0.15);
          await sleep(20 + Math.random() * 40);
        }
      };

      // ---- phase 1: faults ---------------------------------------------------------------
      const faultCounts: Record<string, number> = {};
      const faults: Array<[string, () => void]> = [
        ['sender relay SIGKILL', () => senderRelays.killOne()],
        ['receiver consumer SIGKILL', () => consumers.killOne()],
        ['receiver relay SIGKILL', () => receiverRelays.killOne()],
        ['ack consumer SIGKILL', () => ackConsumers.killOne()],
        [
          // Longer than the ack timeout: the acknowledgements of everything handled meanwhile
          // come too late, so those messages are resent and the inbox must drop the copies.
          'ack consumer SIGKILL, down 4s',
          () => {
            ackConsumers.killOne();
            ackConsumers.downUntil = Date.now() + 4000;
          },
        ],
        [
          'both receiver consumers SIGKILL, down 4s',
          () => {
            while (consumers.killOne());
            consumers.downUntil = Date.now() + 4000;
          },
        ],
        [
          'every relay SIGKILL',
          () => {
            while (senderRelays.killOne());
            while (receiverRelays.killOne());
          },
        ],
      ];
      const ready = await settles(async () => roles.every((r) => r.live.size === r.want), 30_000);
      assert.ok(ready, 'the services started');
      // Give the tsx-loaded consumers their start before the first message.
      await sleep(2000);
      const writers = Array.from({ length: 3 }, writer);
      const phase1Start = Date.now();
      const deadline = phase1Start + DURATION_S * 1000;
      let round = 0;
      while (Date.now() < deadline) {
        await sleep(500 + Math.random() * 2000);
        // First every kind in order, then random picks.
        const [name, inject] = (
          round < faults.length ? faults[round] : faults[Math.floor(Math.random() * faults.length)]
        ) as [string, () => void];
        round++;
        inject();
        faultCounts[name] = (faultCounts[name] ?? 0) + 1;
        topUpAll();
      }
      writing = false;
      await Promise.all(writers);
      dieAfterCommit = 0;
      for (const r of roles) r.downUntil = 0;
      // Consumers started during the faults may still kill themselves: replace them with calm ones.
      await consumers.stopAll();
      consumers.want = CONSUMERS;
      topUpAll();

      // Ambiguous commits: the store knows whether they committed.
      if (uncertain.length > 0) {
        for (const s of (await statesOf(uncertain)).statuses) {
          (s.state === 'unknown' ? rolledBack : committed).push(s.id);
        }
      }

      // ---- phase 1: quiet, then check ----------------------------------------------------
      const quietStart = Date.now();
      const allAcknowledged = await settles(
        async () => (await statesOf(committed)).counts.acknowledged === committed.length,
        120_000,
        500,
      );
      // Late copies (resends and redeliveries) still on their way: wait for every queue and
      // outbox to drain before counting effects.
      const drained = async () =>
        (await queueDepth(receiverQueue)) === 0 &&
        (await queueDepth(ackQueue)) === 0 &&
        (await sender.count()) === 0 &&
        (await receiver.count()) === 0;
      const phase1Drained = await settles(drained, 60_000, 500);
      await sleep(1500);
      const quietMs = Date.now() - quietStart;

      const phase1 = await statesOf(committed);
      const effects = await receiver.pool.query<{ id: string; n: number }>(
        `SELECT id::text AS id, count(*)::int AS n FROM "${receiver.schema}".effects GROUP BY id`,
      );
      const effectCount = new Map(effects.rows.map((r) => [r.id, r.n]));
      const resends = phase1.statuses.reduce((sum, s) => sum + (s.resends ?? 0), 0);
      const resentMessages = phase1.statuses.filter((s) => (s.resends ?? 0) > 0).length;
      const duplicateCount = [...duplicates.values()].reduce((a, b) => a + b, 0);
      const restarts = Object.fromEntries(roles.map((r) => [r.name, r.spawned]));
      console.log(
        `# phase 1: ${DURATION_S}s of faults, quiet after ${quietMs} ms: committed=${committed.length} ` +
          `rolledBack=${rolledBack.length} uncertain=${uncertain.length} writeErrors=${writeErrors} ` +
          `states=${JSON.stringify(phase1.counts)} effects=${effects.rows.length} resends=${resends} ` +
          `(of ${resentMessages} messages) inboxDuplicates=${duplicateCount} diedAfterCommit=${diedAfterCommit} ` +
          `ackOutcomes=${JSON.stringify(ackOutcomes)}`,
      );
      console.log(`# faults: ${JSON.stringify(faultCounts)}; processes started: ${JSON.stringify(restarts)}`);

      const notAcked = phase1.statuses.filter((s) => s.state !== 'acknowledged');
      if (notAcked.length > 0) {
        for (const r of roles) for (const l of r.stderrTail) console.log(`# ${l}`);
      }
      assert.ok(committed.length > 200, `enough traffic to mean something (${committed.length} committed)`);
      assert.deepEqual(
        notAcked.slice(0, 10),
        [],
        `every committed message acknowledged (${notAcked.length} not: ${JSON.stringify(phase1.counts)})`,
      );
      assert.ok(allAcknowledged && phase1Drained, 'queues and outboxes drained');
      const wrongEffects = committed
        .filter((id) => effectCount.get(id) !== 1)
        .map((id) => ({ id, effects: effectCount.get(id) ?? 0 }));
      assert.deepEqual(
        wrongEffects.slice(0, 10),
        [],
        `${wrongEffects.length} committed messages without exactly one effect`,
      );
      const committedSet = new Set(committed);
      const strayEffects = [...effectCount.keys()].filter((id) => !committedSet.has(id));
      assert.deepEqual(strayEffects.slice(0, 10), [], 'no effect of a rolled-back (or unknown) message');
      const rolledBackStates = await statesOf(rolledBack);
      assert.equal(
        rolledBackStates.counts.unknown ?? 0,
        rolledBack.length,
        'rolled-back messages are unknown',
      );
      assert.equal(await sender.count('dead_letter'), 0, 'no dead letters at the sender');
      assert.equal(await receiver.count('dead_letter'), 0, 'no dead letters at the receiver');
      assert.equal(
        await queueDepth(`${receiverQueue}.dead`),
        0,
        "nothing in the receiver consumers' dead-letter queue",
      );
      assert.equal(
        await queueDepth(`${ackQueue}.dead`),
        0,
        "nothing in the ack consumer's dead-letter queue",
      );
      assert.ok(resends > 0, 'acknowledgements arrived late under faults, so messages were resent');
      assert.ok(duplicateCount > 0, 'the inbox dropped copies (resends, redeliveries)');
      assert.ok(diedAfterCommit > 0, 'a consumer died between its commit and the broker ack');
      assert.equal(cancellations.length, 0, 'no cancellation: nothing expired');
      assert.equal(ackOutcomes.late ?? 0, 0, 'no acknowledgement came after an expiry');

      // ---- phase 2: the receiver stopped longer than timeoutMs × (maxResends + 1) -------------
      await consumers.stopAll();
      const consumersDownAt = Date.now();
      const expiring: string[] = [];
      for (let i = 0; i < PHASE2_MESSAGES; i += 5) {
        const messages = Array.from({ length: 5 }, (_, j) => ({
          topic: TOPIC,
          key: `k${(i + j) % KEYS}`,
          payload: { phase: 2, n: i + j },
          ack: PHASE2_ACK,
        }));
        const before = committed.length;
        await writeTx(messages, false);
        expiring.push(...committed.slice(before));
        await sleep(100);
      }
      assert.equal(expiring.length, PHASE2_MESSAGES, 'phase 2 messages committed');
      const allExpired = await settles(
        async () => (await statesOf(expiring)).counts.expired === expiring.length,
        60_000,
        250,
      );
      const downMs = Date.now() - consumersDownAt;
      const expiredStates = await statesOf(expiring);
      assert.ok(allExpired, `every message expired: ${JSON.stringify(expiredStates.counts)}`);
      assert.ok(downMs > PHASE2_ACK.timeoutMs * (PHASE2_ACK.maxResends + 1));
      assert.deepEqual(
        expiredStates.statuses
          .filter((s) => s.resends !== PHASE2_ACK.maxResends)
          .map((s) => [s.id, s.resends]),
        [],
        'each resent maxResends times before it expired',
      );

      // The receiver comes back and handles the copies waiting in its queue: one effect each,
      // and its acknowledgements arrive late: recorded, the messages stay expired.
      consumers.want = CONSUMERS;
      topUpAll();
      const expiringSet = new Set(expiring);
      const cancelled = () => new Set(cancellations.map((c) => c.expiredId));
      const phase2Done = await settles(
        async () =>
          (await drained()) &&
          expiring.every((id) => cancelled().has(id)) &&
          (await statesOf(expiring)).statuses.every((s) => s.ackedAt !== undefined),
        60_000,
        500,
      );
      // Anything that would come twice comes now.
      await sleep(2000);
      const final = await statesOf(expiring);
      const byExpired = new Map<string, Set<string>>();
      for (const c of cancellations) {
        const ids = byExpired.get(c.expiredId) ?? new Set<string>();
        ids.add(c.messageId);
        byExpired.set(c.expiredId, ids);
      }
      const phase2Effects = await receiver.pool.query<{ id: string; n: number }>(
        `SELECT id::text AS id, count(*)::int AS n FROM "${receiver.schema}".effects WHERE id = ANY($1::uuid[]) GROUP BY id`,
        [expiring],
      );
      const counts = await sender.store.ackCounts();
      console.log(
        `# phase 2: ${PHASE2_MESSAGES} messages, receiver down ${downMs} ms: states=${JSON.stringify(final.counts)} ` +
          `cancellations=${cancellations.length} (for ${byExpired.size} messages) ` +
          `lateAcks=${ackOutcomes.late ?? 0} ackCounts=${JSON.stringify(counts)}`,
      );

      assert.ok(phase2Done, 'the cancellations and late acknowledgements arrived, queues drained');
      assert.equal(
        final.counts.expired,
        PHASE2_MESSAGES,
        'a late acknowledgement does not revive an expired message',
      );
      const missing = expiring.filter((id) => !byExpired.has(id));
      assert.deepEqual(missing, [], 'a cancellation for every expired message');
      const strayCancels = [...byExpired.keys()].filter((id) => !expiringSet.has(id));
      assert.deepEqual(strayCancels, [], 'no cancellation for an acknowledged or rolled-back message');
      const twice = [...byExpired].filter(([, ids]) => ids.size !== 1).map(([id, ids]) => [id, [...ids]]);
      assert.deepEqual(twice, [], 'exactly one cancellation (one message id) per expired message');
      assert.ok(
        cancellations.every((c) => c.type === 'mailroom.expired' && c.topic === TOPIC),
        'cancellations say what expired',
      );
      assert.deepEqual(
        phase2Effects.rows.filter((r) => r.n !== 1),
        [],
        'the receiver applied each expired message once when it came back',
      );
      assert.equal(phase2Effects.rows.length, PHASE2_MESSAGES);
      assert.equal(counts.expired, PHASE2_MESSAGES);
      assert.equal(counts.awaiting, 0);
      assert.equal(counts.acknowledged, committed.length - PHASE2_MESSAGES);
    },
  );
});
