import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { Notification } from '@jupyterlab/apputils';
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';
import { LabIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

import { element, panelHeading } from './panelDom';
import {
  decisionText,
  FINAL_STATES,
  IJob,
  IProvenance,
  IQpuOverview,
  jobStatusText,
  parseOverview,
  parseProvenance,
  reasonInWords
} from './qpu';

/** Polling: often while a job of the user is unfinished, rarely otherwise. */
const BUSY_MS = 3_000;
const IDLE_MS = 30_000;

const qpuIcon = new LabIcon({
  name: '@qustody/jupyterlab:qpu',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24"><g class="jp-icon3" fill="#616161">' +
    '<circle cx="12" cy="12" r="2.5"/><path d="M12 4c4.4 0 8 3.6 8 8s-3.6 8-8 8-8-3.6-8-8 3.6-8 8-8zm0 ' +
    '2a6 6 0 1 0 0 12 6 6 0 0 0 0-12z" opacity=".7"/></g></svg>'
});

type Answer = { ok: true; overview: IQpuOverview } | { ok: false; message: string };

async function fetchOverview(settings: ServerConnection.ISettings): Promise<Answer> {
  const url = URLExt.join(settings.baseUrl, 'qustody', 'api', 'qpu');
  const response = await ServerConnection.makeRequest(url, {}, settings);
  const body: unknown = await response.json().catch(() => null);
  if (!response.ok) {
    const message = (body as { message?: unknown } | null)?.message;
    return { ok: false, message: typeof message === 'string' ? message : `The server answered ${response.status}.` };
  }
  const overview = parseOverview(body);
  return overview === null ? { ok: false, message: 'Unreadable answer from the server.' } : { ok: true, overview };
}

async function fetchProvenance(settings: ServerConnection.ISettings, id: string): Promise<IProvenance | string> {
  const url = URLExt.join(settings.baseUrl, 'qustody', 'api', 'qpu', 'jobs', id);
  try {
    const response = await ServerConnection.makeRequest(url, {}, settings);
    const body: unknown = await response.json().catch(() => null);
    if (!response.ok) {
      const message = (body as { message?: unknown } | null)?.message;
      return typeof message === 'string' ? message : `The server answered ${response.status}.`;
    }
    return parseProvenance(body) ?? 'The gateway recorded no provenance for this job.';
  } catch {
    return 'The server did not answer.';
  }
}

/** An open provenance view: the job state it was read at, and what it showed. */
interface IOpenJob {
  state: string;
  shown: IProvenance | string | null;
}

/** Backends, quota left and the user's jobs, updating while jobs run; cancel a job; a
 * job's provenance on a click on its id. */
class QpuPanel extends Widget {
  private _timer: number | undefined;
  private _loading: Promise<void> | null = null;
  private _last: Answer | null = null;
  private _open = new Map<string, IOpenJob>();

  constructor(private _settings: ServerConnection.ISettings) {
    super();
    this.id = 'jp-qustody-qpu';
    this.addClass('jp-qustody-panel');
    this.addClass('jp-qustody-qpu');
    this.title.icon = qpuIcon;
    this.title.caption = 'QPU jobs and quota';
  }

  async refresh(): Promise<void> {
    // one request at a time, and one timer: a click while a poll is out asks again after it
    window.clearTimeout(this._timer);
    while (this._loading !== null) {
      await this._loading;
    }
    this._loading = this._load();
    try {
      await this._loading;
    } finally {
      this._loading = null;
    }
  }

  private async _load(): Promise<void> {
    let answer: Answer;
    try {
      answer = await fetchOverview(this._settings);
    } catch {
      answer = { ok: false, message: 'The server did not answer.' };
    }
    this._render(answer);
    // fast only while a job is moving (a held job waits for an operator, not seconds)
    const busy =
      answer.ok && answer.overview.jobs.some(j => !FINAL_STATES.has(j.state) && j.state !== 'HELD');
    // only while the panel is open and the tab seen: otherwise it costs the gateway nothing
    window.clearTimeout(this._timer);
    if (this.isVisible) {
      const wait = busy && !document.hidden ? BUSY_MS : IDLE_MS;
      this._timer = window.setTimeout(() => void this.refresh(), wait);
    }
  }

  protected onAfterShow(): void {
    void this.refresh();
  }

  protected onAfterHide(): void {
    window.clearTimeout(this._timer);
  }

  private async _cancel(job: IJob): Promise<void> {
    const url = URLExt.join(this._settings.baseUrl, 'qustody', 'api', 'qpu', 'jobs', job.id, 'cancel');
    const response = await ServerConnection.makeRequest(url, { method: 'POST' }, this._settings);
    if (!response.ok) {
      const body = (await response.json().catch(() => null)) as { message?: unknown } | null;
      const why = typeof body?.message === 'string' ? body.message : `the server answered ${response.status}`;
      Notification.error(`Job ${job.id.slice(0, 8)} was not cancelled: ${why}`);
    }
    await this.refresh();
  }

  /** Show or hide what the gateway recorded about ``job``. */
  private _toggle(job: IJob): void {
    if (this._open.has(job.id)) {
      this._open.delete(job.id);
    } else {
      this._open.set(job.id, { state: '', shown: null });
    }
    if (this._last !== null) {
      this._render(this._last);
    }
  }

  /** (Re)read a shown job's provenance when it is new or its state moved on (new decisions). */
  private _readOpen(jobs: IJob[]): void {
    const listed = new Set(jobs.map(j => j.id));
    for (const id of [...this._open.keys()]) {
      if (!listed.has(id)) {
        this._open.delete(id); // no longer among the newest jobs
      }
    }
    for (const job of jobs) {
      const open = this._open.get(job.id);
      if (open === undefined || open.state === job.state) {
        continue;
      }
      open.state = job.state;
      void fetchProvenance(this._settings, job.id).then(shown => {
        const current = this._open.get(job.id);
        if (current !== undefined && current.state === job.state) {
          // (an answer for an older state that came late is dropped: a newer one is due)
          current.shown = shown;
          if (this._last !== null) {
            this._render(this._last);
          }
        }
      });
    }
  }

  private _provenance(doc: Document, open: IOpenJob): HTMLElement {
    const box = element(doc, 'div', 'jp-qustody-qpu-provenance');
    if (open.shown === null) {
      box.append(element(doc, 'p', 'jp-qustody-qpu-note', 'Reading what the gateway recorded…'));
      return box;
    }
    if (typeof open.shown === 'string') {
      box.append(element(doc, 'p', 'jp-qustody-qpu-note', open.shown));
      return box;
    }
    const list = element(doc, 'dl', '');
    for (const [label, value] of open.shown.rows) {
      list.append(element(doc, 'dt', '', label), element(doc, 'dd', '', value));
    }
    box.append(list, element(doc, 'h5', '', 'Decisions'));
    const decisions = element(doc, 'ol', 'jp-qustody-qpu-decisions');
    for (const decision of open.shown.decisions) {
      decisions.append(element(doc, 'li', '', decisionText(decision)));
    }
    box.append(decisions);
    return box;
  }

  private _render(answer: Answer): void {
    this._last = answer;
    const doc = this.node.ownerDocument;
    const el = <K extends keyof HTMLElementTagNameMap>(tag: K, cls: string, text = '') =>
      element(doc, tag, cls, text);
    this.node.replaceChildren(
      panelHeading(doc, 'QPU', 'jp-qustody-qpu-refresh', () => void this.refresh())
    );
    if (!answer.ok) {
      this.node.appendChild(el('p', 'jp-qustody-qpu-note', answer.message));
      return;
    }
    const { backends, quota, jobs } = answer.overview;
    this._readOpen(jobs);

    this.node.appendChild(el('h4', '', 'Backends you may use'));
    if (backends.length === 0) {
      this.node.appendChild(el('p', 'jp-qustody-qpu-note', 'None: ask an admin to add you to a project.'));
    }
    const blist = el('ul', 'jp-qustody-panel-list');
    for (const b of backends) {
      const item = el('li', 'jp-qustody-qpu-backend');
      item.dataset.name = b.name;
      item.append(el('code', '', b.name));
      const facts = [b.backendClass, b.qubits === null ? '' : `${b.qubits} qubits`];
      if (b.paused) {
        facts.push('paused');
      }
      if (b.reservedFor !== null) {
        facts.push(`reserved for ${b.reservedFor} now`);
      }
      item.append(el('span', 'jp-qustody-qpu-facts', ` ${facts.filter(Boolean).join(', ')}`));
      item.title = b.description;
      blist.appendChild(item);
    }
    this.node.appendChild(blist);

    this.node.appendChild(el('h4', '', 'Quota'));
    if (quota.length === 0) {
      this.node.appendChild(el('p', 'jp-qustody-qpu-note', 'No limits apply to you.'));
    }
    for (const line of quota) {
      const p = el('p', 'jp-qustody-qpu-quota', `${line.who}, ${line.backendClass}: ${line.text}`);
      p.classList.toggle('jp-qustody-qpu-low', line.left < 0.1);
      this.node.appendChild(p);
    }

    this.node.appendChild(el('h4', '', 'Your jobs'));
    if (jobs.length === 0) {
      this.node.appendChild(el('p', 'jp-qustody-qpu-note', 'No jobs yet: backend.run(...) in a notebook submits one.'));
    }
    const jlist = el('ul', 'jp-qustody-panel-list');
    const now = Date.now() / 1000;
    for (const job of jobs) {
      const item = el('li', 'jp-qustody-qpu-job');
      item.dataset.jobId = job.id;
      item.dataset.state = job.state;
      const id = el('button', 'jp-qustody-qpu-job-id', job.id.slice(0, 8));
      id.title = `Job ${job.id}: show what the gateway recorded about it (provenance)`;
      id.setAttribute('aria-expanded', String(this._open.has(job.id)));
      id.onclick = () => this._toggle(job);
      item.append(id, el('span', '', ` ${job.backend} (${job.project}) `));
      item.append(el('span', 'jp-qustody-qpu-state', jobStatusText(job, now)));
      item.append(el('div', 'jp-qustody-qpu-reason', reasonInWords(job.reason)));
      if (job.error !== null) {
        item.append(el('div', 'jp-qustody-qpu-reason', job.error));
      }
      if (!FINAL_STATES.has(job.state)) {
        const cancel = el('button', 'jp-mod-styled jp-qustody-qpu-cancel', 'Cancel');
        cancel.onclick = () => void this._cancel(job);
        item.append(cancel);
      }
      const open = this._open.get(job.id);
      if (open !== undefined) {
        item.append(this._provenance(doc, open));
      }
      jlist.appendChild(item);
    }
    this.node.appendChild(jlist);
  }
}

/** A left-sidebar panel for the QPU gateway, through this server (no credential in the page). */
export const qpuPlugin: JupyterFrontEndPlugin<void> = {
  id: '@qustody/jupyterlab:qpu',
  description: 'QPU backends, quota left and your jobs, live; cancel a job.',
  autoStart: true,
  activate: (app: JupyterFrontEnd) => {
    const panel = new QpuPanel(app.serviceManager.serverSettings);
    app.shell.add(panel, 'left', { rank: 910 });
  }
};
