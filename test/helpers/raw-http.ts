import { connect } from 'node:net';

/**
 * Sends raw bytes to a local HTTP server and resolves with what it answered before it closed the
 * connection, or before `waitMs` passed: for requests no HTTP client would send (garbage, bad
 * framing, bodies that never end).
 */
export function rawHttp(
  port: number,
  bytes: string | Buffer,
  waitMs = 8000,
  encoding: BufferEncoding = 'latin1',
): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    let received = '';
    const timer = setTimeout(() => {
      socket.destroy();
      resolve(received);
    }, waitMs);
    socket.on('data', (chunk) => (received += chunk.toString(encoding)));
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(received);
    });
    socket.on('error', (err) => {
      clearTimeout(timer);
      if (received) resolve(received);
      else reject(err);
    });
    socket.write(bytes);
  });
}
