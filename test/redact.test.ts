import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { redactUrl } from '../src/core/redact.js';

describe('redactUrl', () => {
  it('masks the password of a URL and secret query parameters', () => {
    assert.equal(redactUrl('amqp://guest:s3cret@127.0.0.1:5672/vh'), 'amqp://guest:***@127.0.0.1:5672/vh');
    assert.equal(
      redactUrl('postgres://u@h/db?password=x&sslmode=require'),
      'postgres://u@h/db?password=***&sslmode=require',
    );
  });

  it('masks the password of a URL written without its scheme', () => {
    // Parsed as a URL, this is scheme "guest:" with no password at all.
    assert.equal(redactUrl('guest:s3cret@127.0.0.1:5672'), 'guest:***@127.0.0.1:5672');
    assert.equal(redactUrl('//guest:s3cret@127.0.0.1:5672'), '//guest:***@127.0.0.1:5672');
  });

  it('leaves a value without credentials as it is', () => {
    assert.equal(redactUrl('localhost:5672'), 'localhost:5672');
    assert.equal(redactUrl('not a url'), 'not a url');
  });
});
