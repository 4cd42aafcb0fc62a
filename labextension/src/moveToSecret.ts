/**
 * "Move to a secret": take a credential the guard found out of a code cell and put a
 * ``get_secret("NAME")`` call where it was, once the hub has stored the value as the
 * user's own secret. Pure text logic, unit-tested on plain Node.
 *
 * A value is replaced only where the result is still the same Python: a whole string
 * literal becomes the call; a value inside a longer literal becomes a concatenation (or a
 * replacement field in an f-string); a value in a comment becomes the call's text.
 * Everything else is left for the user to edit, because guessing could change what the
 * code does: a value outside a string, on a magic or shell line, in a cell magic, with
 * an escape sequence, in an f-string expression, in a string joined to a neighbour
 * ("a" "b"), or inside a longer triple-quoted or bytes string.
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

/** ``source`` with the import of ``get_secret`` on top (after ``from __future__``
 * imports, which must come first), unless the cell already has it. */
function withImport(source: string): string {
  const lines = source.split('\n');
  if (lines.some(line => line.trim() === IMPORT_LINE)) {
    return source;
  }
  let at = 0;
  while (at < lines.length && /^from\s+__future__\s+import\b/.test(lines[at])) {
    at += 1;
  }
  lines.splice(at, 0, IMPORT_LINE);
  return lines.join('\n');
}

/** Where the escape sequences of a non-raw literal's body are: [start, end) offsets. */
function escapes(source: string, lit: ILiteral): Array<[number, number]> {
  const spans: Array<[number, number]> = [];
  for (let i = lit.bodyStart; i < lit.bodyEnd; i++) {
    if (source[i] !== '\\') {
      continue;
    }
    const next = source[i + 1] ?? '';
    let end = i + 2;
    if (next === 'x') {
      end = i + 4;
    } else if (next === 'u') {
      end = i + 6;
    } else if (next === 'U') {
      end = i + 10;
    } else if (next === 'N' && source[i + 2] === '{') {
      end = Math.max(i + 3, source.indexOf('}', i) + 1);
    } else if (/[0-7]/.test(next)) {
      end = i + 2 + (/^[0-7]{0,2}/.exec(source.slice(i + 2, i + 4))?.[0].length ?? 0);
    }
    spans.push([i, end]);
    i = end - 1;
  }
  return spans;
}

/** Whether ``at`` is inside a replacement field ``{...}`` of an f-string's body. */
function inField(source: string, lit: ILiteral, at: number): boolean {
  let depth = 0;
  for (let i = lit.bodyStart; i < at; i++) {
    const ch = source[i];
    if ((ch === '{' || ch === '}') && depth === 0 && source[i + 1] === ch) {
      i += 1; // {{ and }} are literal braces
    } else if (ch === '{') {
      depth += 1;
    } else if (ch === '}' && depth > 0) {
      depth -= 1;
    }
  }
  return depth > 0;
}

/** Whether another string literal touches ``lit`` (implicit concatenation: "a" "b"). */
function touchesLiteral(source: string, literals: ILiteral[], lit: ILiteral): boolean {
  const i = literals.indexOf(lit);
  const before = literals[i - 1];
  const after = literals[i + 1];
  return (
    (before !== undefined && source.slice(before.end, lit.start).trim() === '') ||
    (after !== undefined && source.slice(lit.end, after.start).trim() === '')
  );
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
  if (source.startsWith('%%')) {
    return { reason: 'this cell is a cell magic, not Python: edit it by hand' };
  }
  const lineStart = source.lastIndexOf('\n', at - 1) + 1;
  if (/^\s*[%!]/.test(source.slice(lineStart, at))) {
    return { reason: 'the value is on a magic or shell line, not Python: edit it by hand' };
  }
  const { literals, comments } = scan(source);
  const splice = (from: number, to: number, text: string): Replaced => ({
    source: withImport(source.slice(0, from) + text + source.slice(to))
  });
  if (comments.some(([s, e]) => s <= at && end <= e)) {
    return splice(at, end, call);
  }
  const lit = literals.find(l => l.bodyStart <= at && end <= l.bodyEnd);
  if (lit === undefined) {
    return { reason: 'the value is not inside a string: edit it by hand' };
  }
  const prefix = lit.prefix.toLowerCase();
  const raw = prefix.includes('r');
  if (!raw && escapes(source, lit).some(([s, e]) => s < end && at < e)) {
    // what Python makes of the escapes is not the text: storing the text would be wrong
    return { reason: 'the value has an escape sequence (\\n, \\x...) in it: edit it by hand' };
  }
  if (touchesLiteral(source, literals, lit)) {
    return { reason: 'the string is joined to another one next to it: edit it by hand' };
  }
  if (prefix.includes('f') && inField(source, lit, at)) {
    return { reason: 'the value is inside an f-string expression: edit it by hand' };
  }
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
  if (raw && /\\$/.test(head)) {
    return { reason: 'the value follows a backslash: edit it by hand' };
  }
  const part = (text: string): string => `${lit.prefix}${lit.quote}${text}${lit.quote}`;
  const pieces = [
    ...(at > lit.bodyStart ? [part(head)] : []),
    call,
    ...(end < lit.bodyEnd ? [part(source.slice(end, lit.bodyEnd))] : [])
  ];
  return splice(lit.start, lit.end, `(${pieces.join(' + ')})`);
}
