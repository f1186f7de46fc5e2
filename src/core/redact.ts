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
