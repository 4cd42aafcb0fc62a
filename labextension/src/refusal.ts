/**
 * What a refused save tells the user: the server's JSON refusal body, checked field by
 * field (it crosses a trust boundary), and which cell of the open notebook each finding
 * is in. No JupyterLab imports here, so the logic is unit-tested on plain Node.
 */

/** One finding as the server reports it (``Located.public()``): never the value itself. */
export interface IFinding {
  /** The rule that matched (a detector id such as ``ibm-quantum-token``). */
  detector: string;
  /** 1-based line within the cell's source or output text. */
  line: number;
  /** The value with its random part starred out. */
  masked: string;
  fingerprint: string;
  /** ``source``, ``output``, ``metadata``, ``attachment`` or ``file``. */
  zone: string;
  /** JSON pointer into the notebook, e.g. ``/cells/3/source``. */
  pointer?: string;
  /** Index of the cell in the notebook that was sent. */
  cell?: number;
  cellId?: string;
  /** Where the value starts on its line of a cell's source, in characters (code points),
   * and how many it has: what "move to a secret" replaces. */
  column?: number;
  length?: number;
}

export interface IRefusal {
  message: string;
  findings: IFinding[];
  /** The reference of the refusal's audit record (``save-refused`` ``ref``), when the
   * server reported one: the user quotes it, the security team searches by it. */
  auditRef?: string;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function parseFinding(raw: unknown): IFinding | null {
  if (!isRecord(raw)) {
    return null;
  }
  const { detector, line, masked, fingerprint, zone } = raw;
  if (
    typeof detector !== 'string' ||
    typeof line !== 'number' ||
    typeof masked !== 'string' ||
    typeof fingerprint !== 'string'
  ) {
    return null;
  }
  const finding: IFinding = {
    detector,
    line,
    masked,
    fingerprint,
    zone: typeof zone === 'string' ? zone : 'file'
  };
  if (typeof raw.pointer === 'string') {
    finding.pointer = raw.pointer;
  }
  if (typeof raw.cell === 'number' && Number.isInteger(raw.cell) && raw.cell >= 0) {
    finding.cell = raw.cell;
  }
  if (typeof raw.cell_id === 'string' && raw.cell_id !== '') {
    finding.cellId = raw.cell_id;
  }
  const { column, length } = raw;
  if (
    typeof column === 'number' && Number.isInteger(column) && column >= 0 &&
    typeof length === 'number' && Number.isInteger(length) && length > 0
  ) {
    finding.column = column;
    finding.length = length;
  }
  return finding;
}

/**
 * The refusal in a contents API error body, or null when the body is not a Qustody
 * refusal with findings (then JupyterLab's own error dialog is the right place for it).
 */
export function parseRefusal(body: unknown): IRefusal | null {
  if (!isRecord(body) || !Array.isArray(body.findings)) {
    return null;
  }
  const findings = body.findings
    .map(parseFinding)
    .filter((f): f is IFinding => f !== null);
  if (findings.length === 0) {
    return null;
  }
  const refusal: IRefusal = {
    message: typeof body.message === 'string' ? body.message : 'The save was refused.',
    findings
  };
  if (typeof body.audit_ref === 'string' && /^[0-9a-f]{12}$/.test(body.audit_ref)) {
    refusal.auditRef = body.audit_ref;
  }
  return refusal;
}

/**
 * The index of the finding's cell in the notebook as it is now, or null.
 *
 * The cell id wins: cells may have been moved, added or deleted since the save was sent.
 * The index is used only for notebooks without cell ids (nbformat < 4.5), and only when
 * it still exists.
 */
export function locateCell(finding: IFinding, cellIds: ReadonlyArray<string>): number | null {
  if (finding.cellId !== undefined) {
    const at = cellIds.indexOf(finding.cellId);
    if (at >= 0) {
      return at;
    }
    if (cellIds.some(id => id !== '')) {
      return null; // that cell is gone: pointing at whatever moved to its index would mislead
    }
  }
  if (finding.cell !== undefined && finding.cell < cellIds.length) {
    return finding.cell;
  }
  return null;
}

/** Where a finding is, in words: "cell 4, output, line 2" (cells counted from 1). */
export function describeWhere(finding: IFinding, cellIndex: number | null): string {
  const part = finding.zone === 'source' ? '' : `${finding.zone}, `;
  if (cellIndex !== null) {
    return `cell ${cellIndex + 1}, ${part}line ${finding.line}`;
  }
  if (finding.cell !== undefined) {
    return `cell ${finding.cell + 1} (no longer in the notebook), ${part}line ${finding.line}`;
  }
  return `${finding.pointer ?? 'file'}, line ${finding.line}`;
}

export const PRAGMA = 'pragma: allowlist secret';

/** Rules a pragma cannot silence: a value this server delivered is a secret anywhere. */
const UNSILENCEABLE = new Set(['known-secret']);

/** Whether "not a secret" is offered: a finding in a cell's source, of a rule the guard's
 * pragma filter applies to. */
export function canMarkNotSecret(finding: IFinding): boolean {
  return finding.zone === 'source' && !UNSILENCEABLE.has(finding.detector);
}

/**
 * ``source`` with the allowlist pragma appended to its 1-based ``line`` as a comment of
 * the cell's language, or null when the line does not exist or already carries it.
 */
export function withPragma(source: string, line: number, cellType: string): string | null {
  const lines = source.split('\n');
  if (!Number.isInteger(line) || line < 1 || line > lines.length) {
    return null;
  }
  const current = lines[line - 1];
  if (current.includes(PRAGMA)) {
    return null;
  }
  const comment = cellType === 'markdown' ? `<!-- ${PRAGMA} -->` : `# ${PRAGMA}`;
  lines[line - 1] = current.replace(/\s*$/, '') + '  ' + comment;
  return lines.join('\n');
}

/** What the guard did to a save that went ahead (the ``qustody`` field of the saved model). */
export interface ISaveReport {
  mode: string;
  redacted: number;
  findings: IFinding[];
}

export function parseSaveReport(raw: unknown): ISaveReport | null {
  if (!isRecord(raw) || typeof raw.mode !== 'string') {
    return null;
  }
  const redacted = typeof raw.redacted === 'number' && raw.redacted > 0 ? raw.redacted : 0;
  const findings = Array.isArray(raw.findings)
    ? raw.findings.map(parseFinding).filter((f): f is IFinding => f !== null)
    : [];
  return { mode: raw.mode, redacted, findings };
}

/**
 * One sentence for the notification after a save the guard changed or let through with
 * findings, or null when there is nothing to say.
 */
export function describeSaveReport(report: ISaveReport, cellIds: ReadonlyArray<string>): string | null {
  const places = (findings: IFinding[]): string => {
    const cells = new Set<number>();
    for (const f of findings) {
      const at = locateCell(f, cellIds);
      if (at !== null) {
        cells.add(at + 1);
      }
    }
    const rules = [...new Set(findings.map(f => f.detector))].sort().join(', ');
    const sorted = [...cells].sort((a, b) => a - b);
    const where = sorted.length ? ` in cell${sorted.length > 1 ? 's' : ''} ${sorted.join(', ')}` : '';
    return `${where} (${rules})`;
  };
  if (report.redacted > 0) {
    const n = report.redacted;
    const redactedFindings = report.findings.filter(f => f.zone !== 'source');
    return (
      `Saved with ${n} credential${n > 1 ? 's' : ''} redacted` +
      `${places(redactedFindings.length ? redactedFindings : report.findings)}. ` +
      'The notebook now shows what was saved.'
    );
  }
  if (report.findings.length > 0) {
    const n = report.findings.length;
    return (
      `Saved, but ${n} credential${n > 1 ? 's were' : ' was'} found` +
      `${places(report.findings)}: this folder only warns. Remove ${n > 1 ? 'them' : 'it'} before sharing.`
    );
  }
  return null;
}
