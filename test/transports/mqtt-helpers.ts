// Shared by the MQTT transport tests: the local Mosquitto (1883, MQTT 5), a subscriber that reads
// back what the transport published, and a private Mosquitto started with a configuration of its
// own (ACL, packet size limit) for the refusals the shared one never makes.
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import mqtt from 'mqtt';

import type { ConformanceConsumer, ReceivedMessage } from '../../src/testkit/transport-conformance.js';
import { userPropertiesOf } from '../../src/transports/mqtt/index.js';

export const MQTT_URL = process.env.MQTT_URL ?? 'mqtt://127.0.0.1:1883';

/** What the subscriber got, with the raw MQTT side kept for assertions. */
export interface MqttReceived extends ReceivedMessage {
  topicName: string;
  userProperties: Record<string, string>;
  qos: number;
  retain: boolean;
}

export interface MqttSubscriber extends ConformanceConsumer {
  readonly received: MqttReceived[];
  take(count: number, timeoutMs: number): Promise<MqttReceived[]>;
}

/** Subscribes (MQTT 5, QoS 1, clean) to the topic filters, resolving once the SUBACK came. */
export async function subscribe(url: string, filters: readonly string[]): Promise<MqttSubscriber> {
  const client = await mqtt.connectAsync(url, { protocolVersion: 5, reconnectPeriod: 0, clean: true });
  const received: MqttReceived[] = [];
  let wake: (() => void) | undefined;
  client.on('message', (topicName, payload, packet) => {
    const user = { ...userPropertiesOf(packet.properties?.userProperties) };
    received.push({
      id: user['mailroom-id'] ?? '',
      topic: user['mailroom-topic'] ?? topicName,
      key: user['mailroom-key'] ?? null,
      type: user['mailroom-type'] ?? null,
      headers: user,
      payload: Buffer.from(payload),
      contentType: packet.properties?.contentType ?? 'application/octet-stream',
      topicName,
      userProperties: user,
      qos: packet.qos,
      retain: packet.retain,
    });
    wake?.();
  });
  if (filters.length > 0) {
    const granted = await client.subscribeAsync([...filters], { qos: 1 });
    for (const g of granted) if (g.qos !== 1) throw new Error(`subscription to ${g.topic} refused: ${g.qos}`);
  }
  return {
    received,
    take(count, timeoutMs) {
      return new Promise<MqttReceived[]>((resolve, reject) => {
        const timer = setTimeout(() => {
          wake = undefined;
          reject(new Error(`expected ${count} messages within ${timeoutMs} ms, got ${received.length}`));
        }, timeoutMs);
        const check = () => {
          if (received.length < count) return;
          clearTimeout(timer);
          wake = undefined;
          resolve(received.slice(0, count));
        };
        wake = check;
        check();
      });
    },
    async close() {
      await client.endAsync(true);
    },
  };
}

/** Connects with clean start and no session expiry: the broker forgets the session. */
export async function endSession(url: string, clientId: string): Promise<void> {
  const client = await mqtt.connectAsync(url, {
    protocolVersion: 5,
    clientId,
    clean: true,
    reconnectPeriod: 0,
    properties: { sessionExpiryInterval: 0 },
  });
  await client.endAsync(true);
}

/** The MQTT topic filter of a Mailroom topic under the default mapping (dots → slashes). */
export function mapped(topic: string, prefix = ''): string {
  return prefix + topic.replaceAll('.', '/');
}

/** A free local TCP port. */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (address === null || typeof address === 'string') throw new Error('no port');
  return address.port;
}

/** A Mosquitto of this test's own, on a free port, stopped by `stop()`. */
export interface PrivateBroker {
  url: string;
  port: number;
  log(): string;
  stop(): Promise<void>;
}

/**
 * Starts `mosquitto` with `config` lines (the listener is added) and waits until it accepts MQTT
 * connections. `files` are written beside the configuration; `{dir}` in the config names that
 * directory.
 */
export async function startMosquitto(
  config: string[],
  files: Record<string, string> = {},
): Promise<PrivateBroker> {
  const dir = mkdtempSync(join(tmpdir(), 'mailroom-mqtt-'));
  // Mosquitto started as root drops to the `mosquitto` user before it reads the ACL file.
  chmodSync(dir, 0o755);
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text, { mode: 0o644 });
  const port = await freePort();
  writeFileSync(
    join(dir, 'mosquitto.conf'),
    [`listener ${port} 127.0.0.1`, ...config.map((line) => line.replaceAll('{dir}', dir))].join('\n') + '\n',
  );
  const child: ChildProcess = spawn('mosquitto', ['-c', join(dir, 'mosquitto.conf')], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout?.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (output += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const url = `mqtt://127.0.0.1:${port}`;
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await exited;
    rmSync(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 5000;
  for (;;) {
    try {
      const probe = await mqtt.connectAsync(url, {
        protocolVersion: 5,
        reconnectPeriod: 0,
        connectTimeout: 500,
      });
      await probe.endAsync(true);
      break;
    } catch (err) {
      // A broker without anonymous logins answers, and refuses: it is up.
      if ((err as { code?: unknown }).code === 0x87 || (err as { code?: unknown }).code === 0x86) break;
      if (Date.now() > deadline || child.exitCode !== null) {
        await stop();
        throw new Error(`mosquitto did not start: ${String(err)}\n${output}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  return { url, port, log: () => output, stop };
}
