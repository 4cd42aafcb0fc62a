import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { Notification } from '@jupyterlab/apputils';
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';
import { IStatusBar } from '@jupyterlab/statusbar';
import { Widget } from '@lumino/widgets';

import {
  formatLeft,
  ISessionStatus,
  parseSession,
  secondsLeft,
  warningDue,
  warningText
} from './countdown';

/** How often the server is asked (activity elsewhere resets the idle time). */
const POLL_MS = 30_000;

async function fetchSession(
  settings: ServerConnection.ISettings,
  keepAlive = false
): Promise<ISessionStatus | null> {
  // GET does not count as activity; POST .../keepalive does, and tells the hub at once.
  const parts = keepAlive ? ['session', 'keepalive'] : ['session'];
  const url = URLExt.join(settings.baseUrl, 'qustody', 'api', ...parts);
  const init = { method: keepAlive ? 'POST' : 'GET' };
  const response = await ServerConnection.makeRequest(url, init, settings);
  if (!response.ok) {
    return null;
  }
  return parseSession(await response.json());
}

/** The status-bar item: "Session 41:07 left", with a tooltip saying which limit. */
class SessionClock extends Widget {
  private _status: ISessionStatus | null = null;
  private _fetchedAt = 0;
  private _given = new Set<number>();

  constructor(private _keepAlive: () => void) {
    super();
    this.addClass('jp-qustody-clock');
    this.node.title = 'Time left before this server is stopped';
  }

  update_(status: ISessionStatus | null): void {
    this._status = status;
    this._fetchedAt = Date.now();
    this.tick();
  }

  tick(): void {
    const status = this._status;
    const left = status === null ? null : secondsLeft(status, this._fetchedAt, Date.now());
    if (status === null || left === null) {
      this.node.textContent = '';
      this.setHidden(true);
      return;
    }
    this.setHidden(false);
    const which = status.stopReason === 'idle' ? 'if idle' : 'max age';
    this.node.textContent = `Session ${formatLeft(left)} left (${which})`;
    this.node.dataset.secondsLeft = String(left);
    this.toggleClass('jp-qustody-clock-warn', left <= 600);
    const due = warningDue(left, this._given);
    if (due !== null) {
      // "Keep working" only where it helps: activity does not extend the maximum age.
      const actions =
        status.stopReason === 'idle'
          ? [{ label: 'Keep working', callback: () => this._keepAlive() }]
          : [];
      Notification.warning(warningText(status, due), { autoClose: false, actions });
    }
  }
}

/** Time left before the hub culls this server (idle) or it reaches its maximum age. */
export const clockPlugin: JupyterFrontEndPlugin<void> = {
  id: '@qustody/jupyterlab:session-clock',
  description: 'Status-bar countdown to the idle cull or maximum age, with warnings.',
  autoStart: true,
  optional: [IStatusBar],
  activate: (app: JupyterFrontEnd, statusBar: IStatusBar | null) => {
    if (statusBar === null) {
      return;
    }
    const settings = app.serviceManager.serverSettings;
    const clock: SessionClock = new SessionClock(() => {
      fetchSession(settings, true).then(
        status => clock.update_(status),
        () => Notification.error('The server did not answer: the idle timer was not reset.')
      );
    });
    statusBar.registerStatusItem('@qustody/jupyterlab:session-clock', {
      item: clock,
      align: 'left',
      rank: 100
    });
    const poll = async (): Promise<void> => {
      try {
        clock.update_(await fetchSession(settings));
      } catch {
        // the server is gone or restarting: keep counting down from the last answer
      }
    };
    void poll();
    setInterval(() => void poll(), POLL_MS);
    setInterval(() => clock.tick(), 1000);
  }
};
