/**
 * Returns a URL fit for logs and error messages: the password (and any `password`, `token`,
 * `secret` query parameter) replaced by `***`. Never throws; a value that is not a URL comes
 * back with anything after `//user:` up to `@` masked.
 */
export function redactUrl(value: string): string {
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
