/**
 * MQTT 5 reason codes a broker puts in a PUBACK (QoS 1) or PUBREC (QoS 2) to refuse a message
 * (0x80 and above), and how the transport reads each: `permanent` when the message as it is can
 * never be taken, `retry` for everything else. docs/transports/mqtt.md has the same table.
 *
 * Why "not authorized" and "quota exceeded" are `retry`, not `permanent` and not an outage: the
 * broker is up and answering, so reading them as an outage would make the relay probe (which
 * succeeds), publish, be refused, and probe again forever, with no message spending an attempt or
 * ever reaching the dead letters. As `retry`, the messages follow their backoff (a quota frees
 * up, an operator fixes the ACL) and, if the cause stays, end as dead letters an operator can see
 * and replay. `permanent` is kept for what no change on the broker's side short of its limits
 * makes acceptable: the topic name, the packet size, the payload format.
 *
 * @module
 */

/** What the transport reports for a refusal. */
export type ReasonClass = 'permanent' | 'retry';

/** One row of the table. */
export interface ReasonCodeInfo {
  /** The name MQTT 5 gives the code. */
  name: string;
  class: ReasonClass;
}

/** Reason codes a PUBACK or PUBREC may carry (MQTT 5 §3.4.2.1, §3.5.2.1). */
export const PUBLISH_REASON_CODES: ReadonlyMap<number, ReasonCodeInfo> = new Map([
  [0x80, { name: 'Unspecified error', class: 'retry' }],
  [0x83, { name: 'Implementation specific error', class: 'retry' }],
  [0x87, { name: 'Not authorized', class: 'retry' }],
  [0x90, { name: 'Topic Name invalid', class: 'permanent' }],
  [0x91, { name: 'Packet Identifier in use', class: 'retry' }],
  [0x95, { name: 'Packet too large', class: 'permanent' }],
  [0x97, { name: 'Quota exceeded', class: 'retry' }],
  [0x99, { name: 'Payload format invalid', class: 'permanent' }],
] satisfies Array<[number, ReasonCodeInfo]>);

/** `0x87` */
export function hex(code: number): string {
  return `0x${code.toString(16).padStart(2, '0')}`;
}

/**
 * How a refusal with `code` is reported. A code MQTT 5 does not list for PUBACK/PUBREC is `retry`
 * (a broker's own extension tells nothing certain about the message).
 */
export function classifyReasonCode(code: number): ReasonCodeInfo {
  return PUBLISH_REASON_CODES.get(code) ?? { name: `reason code ${hex(code)}`, class: 'retry' };
}

/** Reason codes of a CONNACK refusal that mean the credentials (or their rights) are wrong. */
export const AUTH_REASON_CODES: ReadonlySet<number> = new Set([0x04, 0x05, 0x86, 0x87, 0x8c]);
