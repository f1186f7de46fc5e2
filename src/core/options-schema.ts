import { ConfigError } from './errors/config-error.js';
import { redactUrl } from './redact.js';
import { showValue } from './show-value.js';

/**
 * Option schemas: one declarative table per options object. The table gives the allowed keys,
 * each key's type, range and default; the resolved type is inferred from it, and every violation
 * becomes a {@link ConfigError} naming the key path (`retry.maxAttempts`), the value and what is
 * allowed. Why in-house and not zod or valibot: docs/design.md, "Option schemas".
 *
 * @example
 * ```ts
 * const schema = optionsSchema<PoolOptions>()('Pool', {
 *   size: integer({ min: 1, max: 100, default: 4 }),
 *   mode: oneOf(['lazy', 'eager'], { default: 'lazy' }),
 * });
 * const resolved = schema.resolve(options); // { size: number; mode: 'lazy' | 'eager' }
 * ```
 */

/** Where an option sits, for messages: owner `Relay`, path `retry.maxAttempts`. */
export interface OptionPath {
  readonly owner: string;
  readonly path: string;
}

/** The options of the same object resolved before this one, in declaration order. */
export type ResolvedSoFar = Readonly<Record<string, unknown>>;

/** One option: what it accepts, and what it resolves to (`undefined` included when optional). */
export interface Field<Out> {
  /** What the option accepts, completing "must be …": `an integer from 1 to 64`. */
  readonly expected: string;
  /** Bounds of a numeric option, so that a command-line flag can mirror them. */
  readonly min?: number;
  readonly max?: number;
  /** The default when it is a plain value (not computed from other options). */
  readonly default?: Out;
  /** `value` is `undefined` when the option was left out. Throws a ConfigError. */
  resolve(value: unknown, at: OptionPath, resolved: ResolvedSoFar): Out;
}

/**
 * How a left-out option resolves: to its default (a value, or computed from the options declared
 * before it), to a ConfigError (`required`), or else to `undefined`.
 */
export interface Presence<T> {
  default?: T | ((resolved: ResolvedSoFar) => T);
  required?: true;
}

/** `T` when the option always has a value after resolving, `T | undefined` when it may not. */
export type Present<T, P> = P extends { default: unknown } | { required: true } ? T : T | undefined;

interface Kind<T> {
  expected: string;
  accepts(value: unknown): value is T;
  min?: number;
  max?: number;
  /** The allowed values of an option that takes one of a list. */
  allowed?: readonly string[];
  /** The value is a function, so a function default is the default itself, not computing it. */
  functionValued?: boolean;
  /** Values shown redacted (URLs with passwords). */
  secret?: boolean;
}

function label(at: OptionPath): string {
  return `${at.owner} option ${at.path}`;
}

function field<T, P extends Presence<T>>(kind: Kind<T>, presence?: P): Field<Present<T, P>>;
function field<T>(kind: Kind<T>, presence: Presence<T> = {}): Field<T | undefined> {
  const fallback = presence.default;
  const computed = typeof fallback === 'function' && !kind.functionValued;
  return {
    expected: kind.expected,
    ...(kind.min === undefined ? {} : { min: kind.min }),
    ...(kind.max === undefined ? {} : { max: kind.max }),
    ...(fallback === undefined || computed ? {} : { default: fallback as T }),
    resolve(value, at, resolved) {
      if (value === undefined) {
        if (presence.required) {
          throw new ConfigError(at.path, `${label(at)} is missing; give ${kind.expected}`);
        }
        return computed
          ? (fallback as (resolved: ResolvedSoFar) => T)(resolved)
          : (fallback as T | undefined);
      }
      if (!kind.accepts(value)) {
        const shown = kind.secret && typeof value === 'string' ? redactUrl(value) : value;
        throw new ConfigError(at.path, `${label(at)} must be ${kind.expected}, got ${showValue(shown)}`, {
          value: shown,
          expected: kind.expected,
          ...(kind.min === undefined ? {} : { min: kind.min }),
          ...(kind.max === undefined ? {} : { max: kind.max }),
          ...(kind.allowed === undefined ? {} : { allowed: kind.allowed }),
        });
      }
      return value;
    },
  };
}

/**
 * Longest delay Node's timers keep (2^31 - 1 ms, about 24.8 days): a longer one fires after 1 ms
 * instead, so a huge timeout would act as none. The bound of every option a timer waits for.
 */
export const MAX_TIMER_MS = 2_147_483_647;

/** Inclusive bounds; no `max` means no upper bound. */
export interface Range {
  min: number;
  max?: number | undefined;
}

/** "from 1 to 64", or "of at least 1" without an upper bound. */
export function rangeText({ min, max }: Range): string {
  return max === undefined ? `of at least ${min}` : `from ${min} to ${max}`;
}

function inRange(value: number, { min, max }: Range): boolean {
  return value >= min && (max === undefined || value <= max);
}

function numeric<P extends Presence<number>>(
  noun: string,
  isNumber: (value: unknown) => boolean,
  options: Range & P,
): Field<Present<number, P>> {
  return field<number, P>(
    {
      expected: `${noun} ${rangeText(options)}`,
      accepts: (v): v is number => isNumber(v) && inRange(v as number, options),
      min: options.min,
      ...(options.max === undefined ? {} : { max: options.max }),
    },
    options,
  );
}

/** A whole number within `min`…`max`. */
export function integer<const P extends Presence<number> = object>(
  options: Range & P & Presence<number>,
): Field<Present<number, P>> {
  return numeric('an integer', Number.isInteger, options);
}

/** A finite number within `min`…`max` (fractions allowed). */
export function number<const P extends Presence<number> = object>(
  options: Range & P & Presence<number>,
): Field<Present<number, P>> {
  return numeric('a number', Number.isFinite, options);
}

/** `'a' or 'b'`, `'a', 'b' or 'c'`. */
function alternatives(values: readonly string[]): string {
  const quoted = values.map((v) => `'${v}'`);
  return quoted.length < 2 ? quoted.join('') : `${quoted.slice(0, -1).join(', ')} or ${quoted.at(-1)}`;
}

/** One of a fixed list of strings. */
export function oneOf<const V extends readonly string[], const P extends Presence<V[number]> = object>(
  values: V,
  presence?: P & Presence<V[number]>,
): Field<Present<V[number], P>> {
  return field<V[number], P>(
    {
      expected: alternatives(values),
      accepts: (v): v is V[number] => values.includes(v as string),
      allowed: values,
    },
    presence,
  );
}

/** `true` or `false`. */
export function boolean<const P extends Presence<boolean> = object>(
  presence?: P & Presence<boolean>,
): Field<Present<boolean, P>> {
  return field<boolean, P>(
    { expected: 'true or false', accepts: (v): v is boolean => typeof v === 'boolean' },
    presence,
  );
}

/** A string: non-empty unless `empty`, matching `pattern` when given (then say what in `expected`). */
export function string<const P extends Presence<string> = object>(
  options: { empty?: boolean; pattern?: RegExp; expected?: string; secret?: boolean } & P &
    Presence<string> = {} as P,
): Field<Present<string, P>> {
  return field<string, P>(
    {
      expected: options.expected ?? (options.empty ? 'a string' : 'a non-empty string'),
      accepts: (v): v is string =>
        typeof v === 'string' && (options.empty === true || v !== '') && (options.pattern?.test(v) ?? true),
      ...(options.secret ? { secret: true } : {}),
    },
    options,
  );
}

/** A function; its default (when given) is the function itself. */
export function func<F extends (...args: never[]) => unknown>(
  expected: string,
  presence: { default: F },
): Field<F>;
export function func<F extends (...args: never[]) => unknown>(expected: string): Field<F | undefined>;
export function func<F extends (...args: never[]) => unknown>(
  expected: string,
  presence?: { default: F },
): Field<F | undefined> {
  return field<F, Presence<F>>(
    { expected, accepts: (v): v is F => typeof v === 'function', functionValued: true },
    presence,
  );
}

/** A value the `accepts` guard recognises (a store, a pool, a clock…), described by `expected`. */
export function custom<T, const P extends Presence<T> = object>(
  expected: string,
  accepts: (value: unknown) => value is T,
  presence?: P & Presence<NoInfer<T>>,
): Field<Present<T, P>> {
  return field<T, P>({ expected, accepts }, presence);
}

/** A guard for objects that have the named methods: a store, a logger, a clock… */
export function hasMethods<T>(...names: ReadonlyArray<keyof T & string>): (value: unknown) => value is T {
  return (value): value is T =>
    typeof value === 'object' &&
    value !== null &&
    names.every((name) => typeof (value as Record<string, unknown>)[name] === 'function');
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** The allowed key a typo most likely meant: the same letters in another case or order. */
function closest(key: string, keys: readonly string[]): string | undefined {
  const lower = key.toLowerCase();
  return (
    keys.find((k) => k.toLowerCase() === lower) ??
    keys.find((k) => k.length === key.length && [...k].sort().join('') === [...key].sort().join(''))
  );
}

/** Every field's resolved type, by key. */
export type ResolvedOptions<F> = { -readonly [K in keyof F]: F[K] extends Field<infer T> ? T : never };

/** Pairs of keys whose values must not decrease: `[first delay, largest delay]`. */
export type OrderedPairs<F> = ReadonlyArray<readonly [keyof F & string, keyof F & string]>;

/** An options object's table of fields, and the function that resolves options by it. */
export interface OptionsSchema<F> {
  readonly owner: string;
  readonly fields: F;
  /**
   * Checks `options` against the table and applies defaults; throws a ConfigError naming the key
   * path (`path` prefixed, for an object nested under another's key).
   */
  resolve(options: unknown, path?: string): ResolvedOptions<F>;
}

/** One side of an ordered pair of options; `given` false marks a default, which messages say. */
export interface PairSide {
  /** As the user spells it: `retry.maxDelayMs`, `--retry-max-ms`. */
  name: string;
  value: number;
  given: boolean;
}

/**
 * Throws a ConfigError unless `low.value <= high.value`, naming both: for pairs such as a
 * backoff's first and largest delay. `owner` prefixes the message (`Relay option …`); the error's
 * key is the larger side's name.
 */
export function requireOrdered(low: PairSide, high: PairSide, owner?: string): void {
  if (low.value <= high.value) return;
  const show = (side: PairSide) => `${side.name} (${side.value}${side.given ? '' : ', the default'})`;
  throw new ConfigError(
    high.name,
    `${owner === undefined ? '' : `${owner} option `}${show(low)} must not exceed ${show(high)}; ` +
      `raise ${high.name} or lower ${low.name}`,
    { value: high.value, min: low.value },
  );
}

/**
 * Declares the schema of the options interface `In`: `optionsSchema<RelayOptions>()('Relay', {…})`
 * (two calls, so that `In` is given and the fields are inferred). The compiler checks that the
 * table has a field for every key of `In` and no other; `In` keeps the TSDoc users read.
 */
export function optionsSchema<In extends object>() {
  return <F extends { readonly [K in keyof Required<In>]: Field<unknown> }>(
    owner: string,
    fields: F & { readonly [K in Exclude<keyof F, keyof In>]: never },
    rules: { ordered?: OrderedPairs<F> } = {},
  ): OptionsSchema<F> => {
    const keys = Object.keys(fields);
    const table = fields as Readonly<Record<string, Field<unknown>>>;
    return {
      owner,
      fields,
      resolve(options, path) {
        const where = (key: string) => (path === undefined ? key : `${path}.${key}`);
        if (!isPlainObject(options)) {
          throw new ConfigError(
            path ?? 'options',
            `${path === undefined ? `${owner} options` : label({ owner, path })} must be an object ` +
              `with keys among ${keys.join(', ')}; got ${showValue(options)}`,
          );
        }
        for (const key of Object.keys(options)) {
          if (table[key] !== undefined) continue;
          const guess = closest(key, keys);
          throw new ConfigError(
            where(key),
            `unknown ${owner} option ${JSON.stringify(where(key))}${guess ? ` (did you mean ${guess}?)` : ''}; ` +
              `allowed${path === undefined ? '' : ` in ${path}`}: ${keys.join(', ')}`,
            { allowed: keys },
          );
        }
        const out: Record<string, unknown> = {};
        for (const key of keys) {
          out[key] = table[key]?.resolve(options[key], { owner, path: where(key) }, out);
        }
        for (const [lowKey, highKey] of rules.ordered ?? []) {
          const side = (key: string): PairSide => ({
            name: where(key),
            value: out[key] as number,
            given: options[key] !== undefined,
          });
          requireOrdered(side(lowKey), side(highKey), owner);
        }
        return out as ResolvedOptions<F>;
      },
    };
  };
}

/** A nested options object (`retry: { … }`), resolved by its own schema under the parent's key. */
export function nested<F>(schema: OptionsSchema<F>): Field<ResolvedOptions<F>> {
  return {
    expected: `an object with keys among ${Object.keys(schema.fields as object).join(', ')}`,
    resolve: (value, at) => schema.resolve(value ?? {}, at.path),
  };
}
