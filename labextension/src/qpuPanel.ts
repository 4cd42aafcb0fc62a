import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { Notification } from '@jupyterlab/apputils';
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';
import { LabIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

import { element, panelHeading } from './panelDom';
import { FINAL_STATES, IJob, IQpuOverview, jobStatusText, parseOverview, reasonInWords } from './qpu';

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

/** Backends, quota left and the user's jobs, updating while jobs run; cancel a job. */
class QpuPanel extends Widget {
  private _timer: number | undefined;
  private _loading: Promise<void> | null = null;

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

  private _render(answer: Answer): void {
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
      item.append(el('code', '', job.id.slice(0, 8)), el('span', '', ` ${job.backend} (${job.project}) `));
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
