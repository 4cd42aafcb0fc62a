/**
 * "Move to a secret": take a credential the guard found out of a code cell and put a
 * ``get_secret("NAME")`` call where it was, once the hub has stored the value as the
 * user's own secret. Pure text logic, unit-tested on plain Node.
 *
 * A value is replaced only where the result is still the same Python: a whole string
 * literal becomes the call; a value inside a longer literal becomes a concatenation (or a
 * replacement field in an f-string); a value in a comment becomes the call's text. A
 * value inside a longer triple-quoted string or a bytes literal with other text is left
 * for the user to edit: guessing there could change what the code does.
 */

import { IFinding } from './refusal';
import { IMPORT_LINE } from './secrets';

const NAME = /^[A-Za-z_][A-Za-z0-9_]{0,127}$/;

/** Rules whose value must not be copied: a secret this server was given is already one. */
const NOT_MOVABLE = new Set(['known-secret']);

/** Whether a finding can be moved: in a code cell's source, with its place on the line. */
export function canMoveToSecret(finding: IFinding, cellType: string): boolean {
  return (
    cellType === 'code' &&
    finding.zone === 'source' &&
    finding.column !== undefined &&
    finding.length !== undefined &&
    !NOT_MOVABLE.has(finding.detector)
  );
}

/** Offset (UTF-16 code units, as JS strings index) of a code-point column on a 1-based line. */
function offsetOf(source: string, line: number, column: number): number | null {
  let start = 0;
  for (let i = 1; i < line; i++) {
    const nl = source.indexOf('\n', start);
    if (nl < 0) {
      return null;
    }
    start = nl + 1;
  }
  let at = start;
  for (let c = 0; c < column; c++) {
    const code = source.codePointAt(at);
    if (code === undefined || code === 0x0a) {
      return null;
    }
    at += code > 0xffff ? 2 : 1;
  }
  return at;
}

/**
 * The finding's value as it is in ``source`` (the cell the save sent), or null when the
 * place does not hold a value that looks like what the server masked (the cell changed).
 */
export function valueAt(source: string, finding: IFinding): string | null {
  if (finding.column === undefined || finding.length === undefined || finding.length < 1) {
    return null;
  }
  const start = offsetOf(source, finding.line, finding.column);
  if (start === null) {
    return null;
  }
  const chars = Array.from(source.slice(start, start + finding.length * 2)).slice(0, finding.length);
  const value = chars.join('');
  if (chars.length !== finding.length || value.includes('\n')) {
    return null;
  }
  // The mask keeps a public prefix and, for long values, the last characters.
  const stars = finding.masked.indexOf('*');
  const head = stars < 0 ? finding.masked : finding.masked.slice(0, stars);
  const tail = stars < 0 ? '' : finding.masked.slice(finding.masked.lastIndexOf('*') + 1);
  return value.startsWith(head) && value.endsWith(tail) ? value : null;
}

/** A secret name from the rule's id (``github-token`` → ``GITHUB_TOKEN``), not in ``taken``. */
export function suggestName(detector: string, taken: ReadonlyArray<string>): string {
  let base = detector.toUpperCase().replace(/[^A-Z0-9]+/g, '_').replace(/^_+|_+$/g, '');
  if (!/^[A-Z_]/.test(base)) {
    base = `KEY_${base}`;
  }
  base = base.slice(0, 120) || 'MY_SECRET';
  let name = base;
  for (let n = 2; taken.includes(name); n++) {
    name = `${base}_${n}`;
  }
  return name;
}

export function isSecretName(name: string): boolean {
  return NAME.test(name);
}

interface ILiteral {
  /** Where the literal starts (its prefix) and ends (after its closing quote). */
  start: number;
  end: number;
  bodyStart: number;
  bodyEnd: number;
  prefix: string;
  quote: string;
}

const STRING_START = /([rRbBuUfF]{0,2})('''|"""|'|")/y;

/** The string literals and comments of Python ``source``, in order. */
function scan(source: string): { literals: ILiteral[]; comments: Array<[number, number]> } {
  const literals: ILiteral[] = [];
  const comments: Array<[number, number]> = [];
  let i = 0;
  while (i < source.length) {
    const ch = source[i];
    if (ch === '#') {
      const nl = source.indexOf('\n', i);
      const end = nl < 0 ? source.length : nl;
      comments.push([i, end]);
      i = end;
      continue;
    }
    const before = i > 0 ? source[i - 1] : '';
    STRING_START.lastIndex = i;
    const m = /[A-Za-z0-9_]/.test(before) ? null : STRING_START.exec(source);
    if (m === null || (m[1] === '' && ch !== '"' && ch !== "'")) {
      i += 1;
      continue;
    }
    const quote = m[2];
    const bodyStart = i + m[0].length;
    let j = bodyStart;
    let bodyEnd = -1;
    while (j < source.length) {
      if (source[j] === '\\') {
        j += 2;
        continue;
      }
      if (quote.length === 1 && source[j] === '\n') {
        break; // unterminated: not a literal we can reason about
      }
      if (source.startsWith(quote, j)) {
        bodyEnd = j;
        break;
      }
      j += 1;
    }
    if (bodyEnd < 0) {
      i = j + 1;
      continue;
    }
    literals.push({ start: i, end: bodyEnd + quote.length, bodyStart, bodyEnd, prefix: m[1], quote });
    i = bodyEnd + quote.length;
  }
  return { literals, comments };
}

/** ``source`` with the import of ``get_secret`` on top, unless the cell already has it. */
function withImport(source: string): string {
  const imported = source.split('\n').some(line => line.trim() === IMPORT_LINE);
  return imported ? source : `${IMPORT_LINE}\n${source}`;
}

export type Replaced = { source: string } | { reason: string };

/**
 * ``source`` with ``value`` (at its only place) replaced by a ``get_secret(name)`` call,
 * or the reason it is left for the user to edit.
 */
export function replaceWithSecret(source: string, value: string, name: string): Replaced {
  if (!NAME.test(name)) {
    return { reason: `${name} is not a secret name (letters, digits and _)` };
  }
  const at = source.indexOf(value);
  if (at < 0) {
    return { reason: 'the value is no longer in this cell' };
  }
  if (source.indexOf(value, at + 1) >= 0) {
    return { reason: 'the value is in this cell more than once: replace each by hand' };
  }
  const end = at + value.length;
  const call = `get_secret("${name}")`;
  const { literals, comments } = scan(source);
  const splice = (from: number, to: number, text: string): Replaced => ({
    source: withImport(source.slice(0, from) + text + source.slice(to))
  });
  if (comments.some(([s, e]) => s <= at && end <= e)) {
    return splice(at, end, call);
  }
  const lit = literals.find(l => l.bodyStart <= at && end <= l.bodyEnd);
  if (lit === undefined) {
    return literals.some(l => at < l.end && l.start < end)
      ? { reason: 'the value spans the edge of a string: edit it by hand' }
      : splice(at, end, call);
  }
  const prefix = lit.prefix.toLowerCase();
  const bytes = prefix.includes('b');
  if (at === lit.bodyStart && end === lit.bodyEnd) {
    return splice(lit.start, lit.end, bytes ? `${call}.encode()` : call);
  }
  if (bytes || lit.quote.length === 3) {
    return { reason: 'the value is part of a longer string: edit it by hand' };
  }
  if (prefix.includes('f')) {
    const other = lit.quote === '"' ? "'" : '"';
    return splice(at, end, `{get_secret(${other}${name}${other})}`);
  }
  const head = source.slice(lit.bodyStart, at);
  if (/(^|[^\\])(\\\\)*\\$/.test(head)) {
    return { reason: 'the value follows an escape character: edit it by hand' };
  }
  const part = (text: string): string => `${lit.prefix}${lit.quote}${text}${lit.quote}`;
  const pieces = [
    ...(at > lit.bodyStart ? [part(head)] : []),
    call,
    ...(end < lit.bodyEnd ? [part(source.slice(end, lit.bodyEnd))] : [])
  ];
  return splice(lit.start, lit.end, `(${pieces.join(' + ')})`);
}
