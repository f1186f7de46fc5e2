import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { destinationFor } from '../../src/transports/stomp/stomp-options.js';

describe('STOMP destination template', () => {
  it("puts the topic in literally, also one with replacement patterns ($&, $')", () => {
    assert.equal(destinationFor('/queue/{topic}', 'orders.created'), '/queue/orders.created');
    assert.equal(destinationFor('/queue/{topic}', 'a$&b'), '/queue/a$&b');
    assert.equal(destinationFor('/topic/x.{topic}', "a$'b$`c"), "/topic/x.a$'b$`c");
  });
});
