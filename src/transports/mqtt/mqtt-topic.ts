/**
 * From a Mailroom topic to an MQTT topic name, and the checks on that name and on the strings of
 * user properties. Mosquitto closes the connection on a string MQTT forbids (invalid UTF-8, a
 * control character), taking every message in flight on it along; so the transport refuses such a
 * message itself, as `permanent`, before sending anything.
 *
 * @module
 */
import type { MqttTopicMapper } from './mqtt-options.js';

/** Longest MQTT string, in UTF-8 bytes (a two-byte length prefix). */
export const MQTT_MAX_STRING_BYTES = 65_535;

/**
 * Characters MQTT 5 §1.5.4 says a string should not hold and Mosquitto refuses by closing the
 * connection: U+0000, the control characters U+0001–U+001F and U+007F–U+009F, and the
 * non-characters U+FDD0–U+FDEF and U+xFFFE/U+xFFFF of every plane.
 */
const PLANE_NONCHARACTERS = Array.from({ length: 17 }, (_, plane) => {
  const base = (plane * 0x10000 + 0xfffe).toString(16);
  return `\\u{${base}}\\u{${(plane * 0x10000 + 0xffff).toString(16)}}`;
}).join('');
const REFUSED_CHARACTERS = new RegExp(
  `[\\u0000-\\u001f\\u007f-\\u009f\\ufdd0-\\ufdef${PLANE_NONCHARACTERS}]`,
  'u',
);

/** `U+0009` */
function codePointName(char: string): string {
  return `U+${(char.codePointAt(0) ?? 0).toString(16).toUpperCase().padStart(4, '0')}`;
}

/**
 * Why `text` cannot be an MQTT UTF-8 string, or `undefined` when it can: a lone surrogate (not
 * UTF-8 at all), a character brokers refuse (see above), or more than 65535 bytes.
 */
export function mqttStringProblem(text: string): string | undefined {
  if (!text.isWellFormed()) return 'contains a lone surrogate, which is not UTF-8';
  const refused = REFUSED_CHARACTERS.exec(text);
  if (refused) {
    return `contains the character ${codePointName(refused[0])}, which MQTT brokers refuse (Mosquitto closes the connection)`;
  }
  if (Buffer.byteLength(text) > MQTT_MAX_STRING_BYTES) {
    return `is ${Buffer.byteLength(text)} bytes of UTF-8, over MQTT's ${MQTT_MAX_STRING_BYTES}`;
  }
  return undefined;
}

const ESCAPED = new RegExp(`%|${REFUSED_CHARACTERS.source}`, 'gu');

/**
 * `text` with each character brokers refuse, and `%`, percent-encoded as UTF-8 (`a\tb` → `a%09b`),
 * so that a header value such as a tab travels and {@link unescapeMqttString} restores it. Only
 * used for a header that needs it (see `ESCAPED_HEADER`); a lone surrogate is left as is.
 */
export function escapeMqttString(text: string): string {
  return text.replace(ESCAPED, (char) => encodeURIComponent(char));
}

/** The reverse of {@link escapeMqttString}. */
export function unescapeMqttString(text: string): string {
  return decodeURIComponent(text);
}

/**
 * Why `name` cannot be the topic name of a PUBLISH, or `undefined` when it can. `allowLong` skips
 * the length (for parts of a name), `allowDollar` permits a leading `$` (never for a whole name:
 * `$SYS/…` and other `$` topics belong to the broker).
 */
export function topicNameProblem(
  name: string,
  options: { allowLong?: boolean; allowDollar?: boolean } = {},
): string | undefined {
  if (name === '') return 'is empty';
  if (name.includes('+') || name.includes('#')) {
    return "contains a wildcard ('+' or '#'), which only subscriptions may use";
  }
  if (!options.allowDollar && name.startsWith('$')) {
    return "starts with '$', which marks the broker's own topics ($SYS/…)";
  }
  const problem = mqttStringProblem(name);
  if (problem && !(options.allowLong && problem.startsWith('is '))) return problem;
  return undefined;
}

/**
 * The MQTT topic name of a Mailroom topic under a template (or function) and prefix. Throws a
 * TypeError when the function returns something other than a string.
 */
export function topicNameFor(template: string | MqttTopicMapper, prefix: string, topic: string): string {
  if (typeof template === 'string')
    return prefix + template.replace('{topic}', () => topic.replaceAll('.', '/'));
  const mapped: unknown = template(topic);
  if (typeof mapped !== 'string') throw new TypeError(`it returned ${typeof mapped}, not a string`);
  return prefix + mapped;
}
