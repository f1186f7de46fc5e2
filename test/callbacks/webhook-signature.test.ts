import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import {
  generateWebhookSecret,
  isWebhookVerificationError,
  signWebhook,
  verifyWebhook,
  type WebhookVerificationCode,
} from '../../src/callbacks/index.js';
import { isConfigError } from '../../src/core/errors/index.js';

const KEY = Buffer.from('0123456789abcdef0123456789abcdef', 'utf8');
const SECRET = `whsec_${KEY.toString('base64')}`;
const NOW = 1_700_000_000;

function rejects(fn: () => unknown, code: WebhookVerificationCode): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(isWebhookVerificationError(err), `expected a WebhookVerificationError, got ${String(err)}`);
    assert.equal(err.code, code);
    assert.equal(err.name, 'WebhookVerificationError');
    return true;
  });
}

describe('Standard Webhooks signatures', () => {
  it('signs id.timestamp.body with HMAC-SHA256 under the decoded whsec_ key (computed by hand)', () => {
    const body = '{"type":"message.delivered","data":{"id":"x"}}';
    const headers = signWebhook({ secret: SECRET, id: 'cb_1', timestamp: NOW, body });
    const expected = createHmac('sha256', KEY).update(`cb_1.${NOW}.${body}`).digest('base64');
    assert.deepEqual(headers, {
      'webhook-id': 'cb_1',
      'webhook-timestamp': String(NOW),
      'webhook-signature': `v1,${expected}`,
    });
  });

  it("matches the Standard Webhooks specification's published example", () => {
    const headers = signWebhook({
      secret: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw',
      id: 'msg_p5jXN8AQM9LWM0D4loKWxJek',
      timestamp: 1614265330,
      body: '{"test": 2432232314}',
    });
    assert.equal(headers['webhook-signature'], 'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=');
  });

  it("uses a plain string's UTF-8 bytes as the key, exactly as given", () => {
    const secret = 'correct horse battery staple ünïcode';
    const body = Buffer.from('{"a":1}');
    const headers = signWebhook({ secret, id: 'x', timestamp: new Date(NOW * 1000), body });
    const expected = createHmac('sha256', Buffer.from(secret, 'utf8'))
      .update(`x.${NOW}.{"a":1}`)
      .digest('base64');
    assert.equal(headers['webhook-signature'], `v1,${expected}`);
    assert.equal(headers['webhook-timestamp'], String(NOW));
  });

  it('round-trips: what signWebhook makes, verifyWebhook accepts, from a Buffer or string body', () => {
    const body = JSON.stringify({ hello: 'wörld' });
    const headers = signWebhook({ secret: SECRET, id: 'round-trip', timestamp: NOW, body });
    assert.deepEqual(verifyWebhook({ secret: SECRET, headers, body, now: NOW }), {
      id: 'round-trip',
      timestamp: NOW,
    });
    assert.deepEqual(verifyWebhook({ secret: SECRET, headers, body: Buffer.from(body), now: NOW + 299 }), {
      id: 'round-trip',
      timestamp: NOW,
    });
  });

  it('reads headers from a fetch Headers object and from plain objects in any case', () => {
    const body = 'x';
    const signed = signWebhook({ secret: SECRET, id: 'h', timestamp: NOW, body });
    verifyWebhook({ secret: SECRET, headers: new Headers({ ...signed }), body, now: NOW });
    const shouted = {
      'Webhook-Id': signed['webhook-id'],
      'WEBHOOK-TIMESTAMP': signed['webhook-timestamp'],
      'Webhook-Signature': signed['webhook-signature'],
    };
    verifyWebhook({ secret: SECRET, headers: shouted, body, now: NOW });
  });

  it('refuses a missing header, naming it', () => {
    const body = 'x';
    const signed = signWebhook({ secret: SECRET, id: 'm', timestamp: NOW, body });
    for (const name of ['webhook-id', 'webhook-timestamp', 'webhook-signature'] as const) {
      const headers: Record<string, string> = { ...signed };
      delete headers[name];
      rejects(() => verifyWebhook({ secret: SECRET, headers, body, now: NOW }), 'missing_header');
      assert.throws(() => verifyWebhook({ secret: SECRET, headers, body, now: NOW }), new RegExp(name));
    }
  });

  it('refuses a timestamp that is not whole seconds', () => {
    const headers = { ...signWebhook({ secret: SECRET, id: 't', timestamp: NOW, body: 'x' }) };
    headers['webhook-timestamp'] = `${NOW}.5`;
    rejects(() => verifyWebhook({ secret: SECRET, headers, body: 'x', now: NOW }), 'invalid_timestamp');
  });

  it('refuses a timestamp older or newer than the tolerance, and accepts one at its edge', () => {
    const body = 'x';
    const headers = signWebhook({ secret: SECRET, id: 'old', timestamp: NOW, body });
    verifyWebhook({ secret: SECRET, headers, body, now: NOW + 300 });
    verifyWebhook({ secret: SECRET, headers, body, now: NOW - 300 });
    rejects(() => verifyWebhook({ secret: SECRET, headers, body, now: NOW + 301 }), 'timestamp_too_old');
    rejects(() => verifyWebhook({ secret: SECRET, headers, body, now: NOW - 301 }), 'timestamp_in_future');
    rejects(
      () => verifyWebhook({ secret: SECRET, headers, body, now: NOW + 11, toleranceSec: 10 }),
      'timestamp_too_old',
    );
  });

  it('refuses a changed body, another secret, a changed id and a signature of another version', () => {
    const body = '{"n":1}';
    const headers = signWebhook({ secret: SECRET, id: 'sig', timestamp: NOW, body });
    rejects(() => verifyWebhook({ secret: SECRET, headers, body: '{"n":2}', now: NOW }), 'bad_signature');
    rejects(
      () => verifyWebhook({ secret: generateWebhookSecret(), headers, body, now: NOW }),
      'bad_signature',
    );
    rejects(
      () => verifyWebhook({ secret: SECRET, headers: { ...headers, 'webhook-id': 'other' }, body, now: NOW }),
      'bad_signature',
    );
    const v1a = headers['webhook-signature'].replace('v1,', 'v1a,');
    rejects(
      () =>
        verifyWebhook({ secret: SECRET, headers: { ...headers, 'webhook-signature': v1a }, body, now: NOW }),
      'bad_signature',
    );
  });

  it('accepts any of several space-separated signatures, and any of several secrets (key rotation)', () => {
    const body = 'rotate';
    const oldSecret = generateWebhookSecret();
    const newSecret = generateWebhookSecret();
    const both = signWebhook({ secret: [newSecret, oldSecret], id: 'r', timestamp: NOW, body });
    const entries = both['webhook-signature'].split(' ');
    assert.equal(entries.length, 2);
    // A receiver still on the old secret, and one already on the new, both accept it.
    verifyWebhook({ secret: oldSecret, headers: both, body, now: NOW });
    verifyWebhook({ secret: newSecret, headers: both, body, now: NOW });
    // A receiver that accepts both secrets accepts a request signed with either.
    const oldOnly = signWebhook({ secret: oldSecret, id: 'r', timestamp: NOW, body });
    verifyWebhook({ secret: [newSecret, oldSecret], headers: oldOnly, body, now: NOW });
    // Unknown entries beside a valid one do not matter.
    const noisy = {
      ...oldOnly,
      'webhook-signature': `v2,abc v1,${'A'.repeat(44)} ${oldOnly['webhook-signature']}`,
    };
    verifyWebhook({ secret: oldSecret, headers: noisy, body, now: NOW });
  });

  it('refuses a secret shorter than 16 bytes or a bad whsec_ with a ConfigError that does not show it', () => {
    const short = 'short-secret';
    for (const secret of [short, `whsec_${randomBytes(8).toString('base64')}`, 'whsec_not base64!']) {
      assert.throws(
        () => signWebhook({ secret, id: 'x', body: 'x' }),
        (err: unknown) => isConfigError(err) && !(err as Error).message.includes(secret),
      );
    }
    assert.throws(
      () => verifyWebhook({ secret: short, headers: {}, body: 'x' }),
      (err: unknown) => isConfigError(err),
    );
  });

  it('refuses a parsed body instead of the raw one, saying so', () => {
    const headers = signWebhook({ secret: SECRET, id: 'p', timestamp: NOW, body: '{}' });
    assert.throws(
      () => verifyWebhook({ secret: SECRET, headers, body: {} as unknown as string, now: NOW }),
      /raw request body/,
    );
  });

  it('generates whsec_ secrets of 32 random bytes', () => {
    const a = generateWebhookSecret();
    assert.match(a, /^whsec_[A-Za-z0-9+/]+=*$/);
    assert.equal(Buffer.from(a.slice(6), 'base64').length, 32);
    assert.notEqual(a, generateWebhookSecret());
  });
});
