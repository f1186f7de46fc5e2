/**
 * STOMP 1.2 frames on the wire: encoding (with the header escaping of the specification) and a
 * streaming decoder for what the broker sends. Small on purpose: the transport needs exactly these
 * two operations, with receipts on every frame that can carry one (see stomp-connection.ts for why
 * this is not `@stomp/stompjs`).
 *
 * A frame is `COMMAND LF (name:value LF)* LF body NUL`. Header names and values are UTF-8 with
 * `\\`, LF, CR and `:` escaped as `\\\\`, `\\n`, `\\r`, `\\c`, except in CONNECT and CONNECTED
 * frames, which are never escaped (the specification keeps them readable by 1.0 peers). Bodies
 * are bytes; every frame this module writes with a body carries `content-length`, so a body may
 * contain NUL.
 *
 * @module
 */

/** A decoded frame. Header names and values are unescaped; a repeated header keeps its first value. */
export interface StompFrame {
  command: string;
  headers: Record<string, string>;
  body: Buffer;
}

/** Headers to write, in order: the first of a repeated name is the one a STOMP 1.2 broker uses. */
export type HeaderList = ReadonlyArray<readonly [name: string, value: string]>;

/** The frame was not STOMP, or broke a limit: the connection cannot be read any further. */
export class StompProtocolError extends Error {
  override name = 'StompProtocolError';
}

const NUL = 0;
const LF = 10;
const CR = 13;

/** Escapes a header name or value as STOMP 1.2 requires. */
export function escapeHeader(text: string): string {
  return text.replace(/[\\\r\n:]/g, (c) =>
    c === '\\' ? '\\\\' : c === '\r' ? '\\r' : c === '\n' ? '\\n' : '\\c',
  );
}

/** Reverses {@link escapeHeader}; an undefined escape sequence is a protocol error (1.2 says so). */
export function unescapeHeader(text: string): string {
  if (!text.includes('\\')) return text;
  return text.replace(/\\(.?)/g, (_, c: string) => {
    switch (c) {
      case '\\':
        return '\\';
      case 'n':
        return '\n';
      case 'r':
        return '\r';
      case 'c':
        return ':';
      default:
        throw new StompProtocolError(`undefined escape sequence \\${c} in a header`);
    }
  });
}

/**
 * One frame as bytes. `escape` is false only for CONNECT. A `content-length` header is added when
 * there is a body (and only then), after the given headers.
 */
export function encodeFrame(command: string, headers: HeaderList, body?: Buffer, escape = true): Buffer {
  let head = `${command}\n`;
  for (const [name, value] of headers) {
    head += escape ? `${escapeHeader(name)}:${escapeHeader(value)}\n` : `${name}:${value}\n`;
  }
  if (body === undefined || body.length === 0) {
    head += body === undefined ? '\n' : 'content-length:0\n\n';
    return Buffer.from(`${head}\0`, 'utf8');
  }
  head += `content-length:${body.length}\n\n`;
  const headBytes = Buffer.from(head, 'utf8');
  const out = Buffer.allocUnsafe(headBytes.length + body.length + 1);
  headBytes.copy(out, 0);
  body.copy(out, headBytes.length);
  out[out.length - 1] = NUL;
  return out;
}

/** A heart-beat: one end-of-line between frames. */
export const HEARTBEAT = Buffer.from('\n');

/**
 * Reads frames out of a byte stream, however the stream is cut into chunks. Heart-beats (EOLs
 * between frames) are skipped. A body with `content-length` is collected chunk by chunk and
 * copied once, so a large message costs its size, not its size times its chunks.
 */
export class FrameDecoder {
  readonly #maxFrameBytes: number;
  /** Bytes not yet decoded: the tail of the last chunk(s). */
  #pending: Buffer = Buffer.alloc(0);
  /** A frame whose headers are read and whose body of known length is still arriving. */
  #partial:
    | { command: string; headers: Record<string, string>; length: number; chunks: Buffer[]; have: number }
    | undefined;
  /** Where the search for the end of the header block (or of a NUL-terminated body) goes on. */
  #scanFrom = 0;

  /** @param maxFrameBytes - largest frame accepted; a bigger one is a {@link StompProtocolError}. */
  constructor(maxFrameBytes: number) {
    this.#maxFrameBytes = maxFrameBytes;
  }

  /** Decodes what `chunk` completes. Throws a {@link StompProtocolError} for bytes that are not STOMP. */
  push(chunk: Buffer): StompFrame[] {
    const frames: StompFrame[] = [];
    let data = chunk;
    for (;;) {
      const partial = this.#partial;
      if (partial) {
        const need = partial.length + 1 - partial.have; // the rest of the body, and its NUL
        if (data.length < need) {
          if (data.length > 0) partial.chunks.push(data);
          partial.have += data.length;
          return frames;
        }
        partial.chunks.push(data.subarray(0, need));
        const whole = Buffer.concat(partial.chunks, partial.length + 1);
        if (whole[partial.length] !== NUL) {
          throw new StompProtocolError(
            `a ${partial.command} frame's body of content-length ${partial.length} is not followed by NUL`,
          );
        }
        frames.push({
          command: partial.command,
          headers: partial.headers,
          body: whole.subarray(0, partial.length),
        });
        this.#partial = undefined;
        data = data.subarray(need);
        continue;
      }
      if (data.length > 0) {
        this.#pending = this.#pending.length === 0 ? data : Buffer.concat([this.#pending, data]);
      }
      const next = this.#next();
      if (next === undefined) return frames;
      if ('frame' in next) {
        frames.push(next.frame);
        data = Buffer.alloc(0);
      } else {
        // A body of known length started: its bytes so far go through the partial path.
        data = next.rest;
      }
    }
  }

  /**
   * The next frame out of `#pending`: a frame; or, when a body of known length starts, the bytes
   * of it received so far (the frame is then in `#partial`); undefined when more bytes are needed.
   */
  #next(): { frame: StompFrame } | { rest: Buffer } | undefined {
    let buf = this.#pending;
    // Heart-beats and the optional EOLs after a frame's NUL.
    let start = 0;
    while (start < buf.length && (buf[start] === LF || buf[start] === CR)) start++;
    if (start > 0) {
      buf = buf.subarray(start);
      this.#pending = buf;
      this.#scanFrom = Math.max(0, this.#scanFrom - start);
    }
    if (buf.length === 0) return undefined;
    // The header block ends at the first empty line.
    let end = -1;
    for (let i = Math.max(1, this.#scanFrom); i < buf.length; i++) {
      if (buf[i] === LF && (buf[i - 1] === LF || (buf[i - 1] === CR && i >= 2 && buf[i - 2] === LF))) {
        end = i;
        break;
      }
      if (buf[i] === NUL && i > 0) {
        throw new StompProtocolError('a frame ended (NUL) before its headers did');
      }
    }
    if (end === -1) {
      if (buf.length > Math.min(this.#maxFrameBytes, 1024 * 1024)) {
        throw new StompProtocolError('a frame header block is over 1 MiB, or the peer does not speak STOMP');
      }
      this.#scanFrom = buf.length;
      return undefined;
    }
    this.#scanFrom = 0;
    const lines = buf
      .subarray(0, end)
      .toString('utf8')
      .split('\n')
      .map((line) => (line.endsWith('\r') ? line.slice(0, -1) : line));
    const command = lines[0] ?? '';
    if (!/^[A-Z]+$/.test(command)) {
      throw new StompProtocolError(`expected a STOMP command, got ${JSON.stringify(command.slice(0, 40))}`);
    }
    const escaped = command !== 'CONNECTED' && command !== 'CONNECT';
    const headers: Record<string, string> = {};
    for (const line of lines.slice(1)) {
      if (line === '') continue;
      const colon = line.indexOf(':');
      if (colon <= 0)
        throw new StompProtocolError(`a header line has no name: ${JSON.stringify(line.slice(0, 80))}`);
      const name = escaped ? unescapeHeader(line.slice(0, colon)) : line.slice(0, colon);
      const value = escaped ? unescapeHeader(line.slice(colon + 1)) : line.slice(colon + 1);
      if (!(name in headers)) headers[name] = value;
    }
    const rest = buf.subarray(end + 1);
    const lengthText = headers['content-length'];
    if (lengthText !== undefined) {
      if (!/^\d{1,15}$/.test(lengthText)) {
        throw new StompProtocolError(`content-length ${JSON.stringify(lengthText)} is not a number`);
      }
      const length = Number(lengthText);
      if (length > this.#maxFrameBytes) {
        throw new StompProtocolError(
          `a ${command} frame of ${length} bytes is over the limit of ${this.#maxFrameBytes} (maxMessageBytes)`,
        );
      }
      this.#pending = Buffer.alloc(0);
      this.#partial = { command, headers, length, chunks: [], have: 0 };
      return { rest };
    }
    const nul = rest.indexOf(NUL);
    if (nul === -1) {
      if (rest.length > this.#maxFrameBytes) {
        throw new StompProtocolError(`a ${command} frame is over the limit of ${this.#maxFrameBytes} bytes`);
      }
      return undefined; // headers are parsed again once the NUL arrives: rare (no content-length)
    }
    this.#pending = rest.subarray(nul + 1);
    return { frame: { command, headers, body: Buffer.from(rest.subarray(0, nul)) } };
  }
}
