import { Dialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { isSecretName, suggestName } from './moveToSecret';
import { canMarkNotSecret, describeWhere, IFinding, IRefusal } from './refusal';

/** What this server lets its user store (``GET /qustody/api/secrets``). */
export interface ISelfService {
  /** The class a stored secret gets, or null: this server may not store secrets. */
  cls: string | null;
  /** Names this server already holds. */
  taken: string[];
}

/** What the dialog asks of the notebook it belongs to. */
export interface IRefusalTarget {
  path: string;
  /** The cell index of a finding in the notebook as it is now, or null. */
  locate(finding: IFinding): number | null;
  /** Scroll to and highlight a cell. */
  reveal(index: number): void;
  /** Append the allowlist pragma to the finding's line; false when it cannot. */
  markNotSecret(finding: IFinding): boolean;
  /** The finding's value in its code cell now, when it can be moved to a secret. */
  movableValue(finding: IFinding): string | null;
  /** Whether (and as what) this server may store secrets. */
  selfService(): Promise<ISelfService>;
  /** Store ``value`` as the user's secret ``name``: null when stored, else why not. */
  store(name: string, value: string): Promise<string | null>;
  /** Put ``get_secret(name)`` where ``value`` is in the finding's cell: null when done,
   * else why it was left to the user. */
  replace(finding: IFinding, value: string, name: string): string | null;
}

/** What Enter in a secret-name field sends to it instead of reaching the dialog. */
const SUBMIT = 'qustody-move-submit';

/** The body of the findings dialog; re-rendered in place when another refusal comes. */
class FindingsBody extends Widget {
  constructor(private _close: () => void) {
    super();
    this.addClass('jp-qustody-findings');
    window.addEventListener('keydown', this._enter, true);
  }

  dispose(): void {
    window.removeEventListener('keydown', this._enter, true);
    super.dispose();
  }

  /** The dialog takes Enter as "Close" in its own capturing listener, which runs before
   * anything on the field; the window's capturing listener runs before the dialog's. */
  private _enter = (event: KeyboardEvent): void => {
    const target = event.target;
    if (
      event.key === 'Enter' &&
      !event.isComposing && // Enter that ends an input-method composition is not "store"
      target instanceof HTMLInputElement &&
      target.classList.contains('jp-qustody-move-name') &&
      this.node.contains(target)
    ) {
      event.preventDefault();
      event.stopPropagation();
      target.dispatchEvent(new Event(SUBMIT));
    }
  };

  private _selfService: Promise<ISelfService> | null = null;
  /** Findings (by fingerprint) already stored as a secret, and the name: a later refusal
   * that still lists one (an autosave before the cell changed) does not offer it again. */
  private _stored = new Map<string, string>();

  render(target: IRefusalTarget, refusal: IRefusal): void {
    this._selfService = target.selfService().catch(() => ({ cls: null, taken: [] }));
    const doc = this.node.ownerDocument;
    this.node.replaceChildren();
    const intro = doc.createElement('p');
    const n = refusal.findings.length;
    intro.textContent =
      `${target.path} was not saved: ${n} ${n === 1 ? 'credential' : 'credentials'} found. ` +
      'Nothing was written; your work is still open here. Move each value below to a ' +
      'secret, remove it, or mark a false positive, then save again.';
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
    const stored = this._stored.get(finding.fingerprint);
    if (stored !== undefined) {
      // moved while an earlier version of this dialog was open (an autosave re-rendered it)
      const note = doc.createElement('span');
      note.className = 'jp-qustody-move jp-mod-partial';
      note.textContent = ` Stored as ${stored}: use get_secret("${stored}") here, then save.`;
      row.append(note);
      return row;
    }
    const value = index === null ? null : target.movableValue(finding);
    if (value !== null) {
      void this._selfService?.then(service => {
        if (service.cls !== null) {
          row.append(' ', this._moveButton(target, finding, value, service));
        }
      });
    }
    return row;
  }

  /** "Move to a secret": a name field, then the hub stores the value and the cell calls
   * ``get_secret`` instead. */
  private _moveButton(
    target: IRefusalTarget,
    finding: IFinding,
    value: string,
    service: ISelfService
  ): HTMLElement {
    const doc = this.node.ownerDocument;
    const box = doc.createElement('span');
    box.className = 'jp-qustody-move';
    const open = doc.createElement('button');
    open.className = 'jp-mod-styled jp-mod-accept jp-qustody-move-open';
    open.textContent = 'Move to a secret';
    open.title = `Store this value as a secret of yours (class ${service.cls}) and call get_secret() here`;
    const form = doc.createElement('span');
    form.className = 'jp-qustody-move-form';
    form.hidden = true;
    const name = doc.createElement('input');
    name.className = 'jp-mod-styled jp-qustody-move-name';
    name.setAttribute('aria-label', 'Secret name');
    name.spellcheck = false;
    const store = doc.createElement('button');
    store.className = 'jp-mod-styled jp-mod-accept jp-qustody-move-store';
    store.textContent = 'Store';
    const note = doc.createElement('span');
    note.className = 'jp-qustody-move-note';
    note.setAttribute('role', 'status');
    form.append(name, ' ', store, ' ', note);
    open.addEventListener('click', () => {
      name.value = suggestName(finding.detector, service.taken); // names taken meanwhile too
      open.hidden = true;
      form.hidden = false;
      name.focus();
    });
    const submit = async (): Promise<void> => {
      const chosen = name.value.trim();
      if (!isSecretName(chosen)) {
        note.textContent = 'Use letters, digits and _ (not starting with a digit).';
        return;
      }
      store.disabled = name.disabled = true;
      note.textContent = 'Storing…';
      const refused = await target.store(chosen, value);
      if (refused !== null) {
        note.textContent = refused;
        store.disabled = name.disabled = false;
        return;
      }
      service.taken.push(chosen);
      this._stored.set(finding.fingerprint, chosen);
      name.hidden = store.hidden = true; // done: only the outcome stays
      const notSecret = box.closest('li')?.querySelector<HTMLElement>('.jp-qustody-not-secret');
      if (notSecret) {
        notSecret.hidden = true;
      }
      const left = target.replace(finding, value, chosen);
      note.textContent =
        left === null
          ? `Stored as ${chosen}; the cell now calls get_secret("${chosen}"). Save again.`
          : `Stored as ${chosen}, but ${left}: use get_secret("${chosen}") there, then save.`;
      box.classList.add(left === null ? 'jp-mod-done' : 'jp-mod-partial');
    };
    store.addEventListener('click', () => void submit());
    name.addEventListener(SUBMIT, () => void submit());
    box.append(open, form);
    return box;
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
