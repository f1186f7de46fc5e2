/**
 * The slice of MQTT.js (the `mqtt` package, v5) that the MQTT transport uses, declared here so
 * that Mailroom builds and type-checks without `mqtt` installed (it is an optional peer
 * dependency), and the package loaded on first use.
 *
 * @module
 */
import { ConfigError } from '../../core/errors/config-error.js';

/** MQTT 5 PUBLISH properties the transport sets (a subset of mqtt-packet's). */
export interface MqttPublishProperties {
  contentType?: string;
  userProperties?: Record<string, string | string[]>;
}

/** The CONNACK properties the transport reads. */
export interface MqttConnackProperties {
  maximumPacketSize?: number;
  receiveMaximum?: number;
  maximumQoS?: number;
  retainAvailable?: boolean;
  [other: string]: unknown;
}

/** An error MQTT.js reports with an MQTT 5 reason code (a PUBACK, PUBREC or CONNACK refusal). */
export interface MqttReasonError extends Error {
  code?: number | string;
}

/** What MQTT.js hands a publish callback: the acknowledging packet (PUBACK, PUBCOMP) or an error. */
export type MqttPublishCallback = (error?: MqttReasonError, packet?: unknown) => void;

/** MQTT.js's `MqttClient`, as much of it as the transport calls. */
export interface MqttClientLike {
  readonly connected: boolean;
  readonly serverProperties: MqttConnackProperties | undefined;
  publish(
    topic: string,
    payload: Buffer,
    options: { qos: 1 | 2; retain: false; properties: MqttPublishProperties },
    callback: MqttPublishCallback,
  ): unknown;
  end(force: boolean, options: Record<string, unknown>, callback: () => void): unknown;
  on(event: 'connect', listener: (packet: { properties?: MqttConnackProperties }) => void): unknown;
  on(event: 'error', listener: (error: MqttReasonError) => void): unknown;
  on(event: 'close', listener: () => void): unknown;
  on(event: 'disconnect', listener: (packet: { reasonCode?: number; properties?: unknown }) => void): unknown;
  removeListener(
    event: 'connect' | 'error' | 'close' | 'disconnect',
    listener: (...args: never[]) => void,
  ): unknown;
}

/** MQTT.js's client options, as much of them as the transport sets. */
export interface MqttClientOptions {
  protocol: 'mqtt' | 'mqtts';
  host: string;
  port: number;
  protocolVersion: 5;
  clientId: string;
  clean: boolean;
  keepalive: number;
  connectTimeout: number;
  reconnectPeriod: 0;
  queueQoSZero: false;
  resubscribe: false;
  properties: { sessionExpiryInterval: number; maximumPacketSize?: number };
  username?: string;
  password?: string;
  [tls: string]: unknown;
}

/** Opens a client (MQTT.js's `connect`); the transport waits for its `connect` or `error`. */
export type MqttConnect = (options: MqttClientOptions) => MqttClientLike;

let mqttConnect: Promise<MqttConnect> | undefined;

/**
 * Loads MQTT.js's `connect` once. The specifier is a variable so TypeScript does not resolve
 * `mqtt` at build time.
 */
export function loadMqttConnect(): Promise<MqttConnect> {
  mqttConnect ??= (async () => {
    const specifier = 'mqtt';
    let mod: { connect?: unknown; default?: { connect?: unknown } };
    try {
      mod = (await import(specifier)) as typeof mod;
    } catch (err) {
      mqttConnect = undefined; // a later call may succeed once the package is installed
      throw new ConfigError(
        'mqtt',
        'the MQTT transport needs the mqtt package (MQTT.js 5), which could not be loaded; install it ' +
          'with `npm install mqtt`',
        {},
        err,
      );
    }
    const connect = mod.connect ?? mod.default?.connect;
    if (typeof connect !== 'function') {
      mqttConnect = undefined;
      throw new ConfigError(
        'mqtt',
        'the installed mqtt package has no connect function; install MQTT.js 5 (`npm install mqtt@5`)',
      );
    }
    return connect as MqttConnect;
  })();
  return mqttConnect;
}
