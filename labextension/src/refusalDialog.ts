import { Dialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { canMarkNotSecret, describeWhere, IFinding, IRefusal } from './refusal';

/** What the dialog asks of the notebook it belongs to. */
export interface IRefusalTarget {
  path: string;
  /** The cell index of a finding in the notebook as it is now, or null. */
  locate(finding: IFinding): number | null;
  /** Scroll to and highlight a cell. */
  reveal(index: number): void;
  /** Append the allowlist pragma to the finding's line; false when it cannot. */
  markNotSecret(finding: IFinding): boolean;
}

/** The body of the findings dialog; re-rendered in place when another refusal comes. */
class FindingsBody extends Widget {
  constructor(private _close: () => void) {
    super();
    this.addClass('jp-qustody-findings');
  }

  render(target: IRefusalTarget, refusal: IRefusal): void {
    const doc = this.node.ownerDocument;
    this.node.replaceChildren();
    const intro = doc.createElement('p');
    const n = refusal.findings.length;
    intro.textContent =
      `${target.path} was not saved: ${n} ${n === 1 ? 'credential' : 'credentials'} found. ` +
      'Nothing was written; your work is still open here. Remove each value below ' +
      '(or mark a false positive), then save again.';
    this.node.appendChild(intro);
    const list = doc.createElement('ul');
    list.className = 'jp-qustody-findings-list';
    for (const finding of refusal.findings) {
      list.appendChild(this._row(target, finding));
    }
    this.node.appendChild(list);
    if (refusal.auditRef !== undefined) {
      const audit = doc.createElement('p');
      audit.className = 'jp-qustody-audit-id';
      audit.textContent =
        `Audit reference: ${refusal.auditRef} (quote it when you ask your security team ` +
        'about this refusal).';
      this.node.appendChild(audit);
    }
  }

  private _row(target: IRefusalTarget, finding: IFinding): HTMLLIElement {
    const doc = this.node.ownerDocument;
    const row = doc.createElement('li');
    row.className = 'jp-qustody-finding';
    const index = target.locate(finding);
    row.dataset.cell = index === null ? '' : String(index);
    const where = doc.createElement(index === null ? 'span' : 'a');
    where.className = 'jp-qustody-finding-where';
    where.textContent = describeWhere(finding, index);
    if (index !== null) {
      (where as HTMLAnchorElement).href = '#';
      where.addEventListener('click', event => {
        event.preventDefault();
        this._close();
        target.reveal(index);
      });
    }
    const rule = doc.createElement('code');
    rule.className = 'jp-qustody-finding-rule';
    rule.textContent = finding.detector;
    const masked = doc.createElement('code');
    masked.className = 'jp-qustody-finding-masked';
    masked.textContent = finding.masked;
    row.append(where, ': ', rule, ' ', masked);
    if (index !== null && canMarkNotSecret(finding)) {
      const button = doc.createElement('button');
      button.className = 'jp-mod-styled jp-mod-reject jp-qustody-not-secret';
      button.textContent = 'Not a secret';
      button.title = 'Add "# pragma: allowlist secret" to this line (an admin can audit it)';
      button.addEventListener('click', () => {
        const done = target.markNotSecret(finding);
        button.disabled = true;
        button.textContent = done ? 'Marked: save again' : 'Already marked';
      });
      row.append(' ', button);
    }
    return row;
  }
}

/**
 * At most one findings dialog at a time: a refusal that comes while it is open (an
 * autosave, a second Ctrl+S) updates it instead of stacking another on top.
 */
export class RefusalDialogs {
  private _open: { dialog: Dialog<unknown>; body: FindingsBody } | null = null;

  get isOpen(): boolean {
    return this._open !== null;
  }

  show(target: IRefusalTarget, refusal: IRefusal): void {
    if (this._open !== null) {
      this._open.body.render(target, refusal);
      return;
    }
    const body = new FindingsBody(() => dialog.resolve(0));
    body.render(target, refusal);
    const dialog = new Dialog({
      title: 'Not saved: this notebook holds a credential',
      body,
      buttons: [Dialog.cancelButton({ label: 'Close' })],
      hasClose: true
    });
    dialog.addClass('jp-qustody-refusal-dialog');
    this._open = { dialog, body };
    void dialog.launch().finally(() => {
      this._open = null;
      dialog.dispose();
    });
  }
}
