/**
 * JSON handled as text. `JSON.parse` turns every number into a double, so a payload that went
 * through it and back loses digits: 12345678901234567890123 comes out as 1.2345678901234568e+22,
 * an order id of 2^53 + 1 as 2^53. The command line only needs to check, compact and indent JSON,
 * never to compute with it, so it keeps the text's own tokens and changes only the whitespace
 * between them.
 */

import { randomBytes } from 'node:crypto';

/** JSON's insignificant whitespace (RFC 8259, section 2): space, tab, line feed, carriage return. */
function isJsonSpace(c: string): boolean {
  return c === ' ' || c === '\t' || c === '\n' || c === '\r';
}

/** Index just past the string literal that starts at `start` (a `"`). */
function endOfString(text: string, start: number): number {
  let i = start + 1;
  while (i < text.length) {
    const c = text[i];
    if (c === '\\') i += 2;
    else if (c === '"') return i + 1;
    else i++;
  }
  return i;
}

/**
 * Calls `emit` with each token of a JSON text (strings, numbers and literals whole; `{`, `}`,
 * `[`, `]`, `:` and `,` one by one), skipping whitespace. The text must be valid JSON (checked
 * with `JSON.parse` first): the scanner only splits, it does not validate.
 */
function tokens(text: string, emit: (token: string) => void): void {
  let i = 0;
  while (i < text.length) {
    const c = text[i] as string;
    if (isJsonSpace(c)) {
      i++;
    } else if (c === '"') {
      const end = endOfString(text, i);
      emit(text.slice(i, end));
      i = end;
    } else if ('{}[]:,'.includes(c)) {
      emit(c);
      i++;
    } else {
      // A number, true, false or null: runs to the next structural character or whitespace.
      let end = i + 1;
      while (
        end < text.length &&
        !'{}[]:,"'.includes(text[end] as string) &&
        !isJsonSpace(text[end] as string)
      ) {
        end++;
      }
      emit(text.slice(i, end));
      i = end;
    }
  }
}

/**
 * A valid JSON text without the whitespace between its tokens, every token as written:
 * `{ "n": 12345678901234567890123 }` → `{"n":12345678901234567890123}`. What `JSON.stringify`
 * prints for small values, except that numbers, and escapes in strings, keep their spelling.
 */
export function compactJson(text: string): string {
  const out: string[] = [];
  tokens(text, (t) => out.push(t));
  return out.join('');
}

/** A valid JSON text laid out as `JSON.stringify(value, null, indent)` would, tokens as written. */
export function indentJson(text: string, indent = 2): string {
  const out: string[] = [];
  const pad = (depth: number) => `\n${' '.repeat(indent * depth)}`;
  let depth = 0;
  let opened = false; // the last token opened an object or array
  tokens(text, (t) => {
    if (t === '}' || t === ']') {
      depth--;
      // An empty `{}` or `[]` stays on one line, as JSON.stringify prints it.
      out.push(opened ? t : `${pad(depth)}${t}`);
      opened = false;
      return;
    }
    if (opened) out.push(pad(depth));
    opened = false;
    if (t === '{' || t === '[') {
      out.push(t);
      depth++;
      opened = true;
    } else if (t === ',') {
      out.push(`,${pad(depth)}`);
    } else if (t === ':') {
      out.push(': ');
    } else {
      out.push(t);
    }
  });
  return out.join('');
}

/** JSON text to place as it is inside a larger document printed by {@link stringifyWithRaw}. */
export class RawJson {
  /** `text` must be valid, compact JSON: it is copied into the output unchanged. */
  constructor(readonly text: string) {}
}

/**
 * `JSON.stringify(value)`, except that each {@link RawJson} inside `value` is printed as its
 * text rather than as an object. Lets `--json` output carry a payload's numbers digit for digit.
 */
export function stringifyWithRaw(value: unknown): string {
  const raws: string[] = [];
  // A marker no real string can hold by accident: a NUL, a fresh random tag and an index.
  const tag = `\u0000mailroom-raw-${randomBytes(8).toString('hex')}-`;
  const text = JSON.stringify(value, (_key, v: unknown) => {
    if (v instanceof RawJson) {
      raws.push(v.text);
      return `${tag}${raws.length - 1}`;
    }
    return v;
  });
  if (raws.length === 0) return text;
  const marker = new RegExp(`"${JSON.stringify(tag).slice(1, -1).replaceAll('\\', '\\\\')}(\\d+)"`, 'g');
  return text.replace(marker, (_m, n: string) => raws[Number(n)] as string);
}
