import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { Dialog, Notification, showDialog } from '@jupyterlab/apputils';
import { PageConfig, URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import { INotice, noticeDetail, noticeText, parseNotices, trimSeen, unseen } from './noticeList';

/** Alerts are raised a few seconds behind the log; a minute is soon enough to be told. */
const POLL_MS = 60_000;

async function fetchNotices(settings: ServerConnection.ISettings): Promise<INotice[] | null> {
  const url = URLExt.join(settings.baseUrl, 'qustody', 'api', 'notices');
  const response = await ServerConnection.makeRequest(url, { method: 'GET' }, settings);
  // 503: no audit service (a server outside a hub); 502: it did not answer. Ask again later.
  return response.ok ? parseNotices(await response.json()) : null;
}

function loadSeen(key: string): Set<number> {
  try {
    const stored: unknown = JSON.parse(window.localStorage.getItem(key) ?? '[]');
    const seqs: unknown[] = Array.isArray(stored) ? stored : [];
    return new Set(seqs.filter((s): s is number => Number.isInteger(s)));
  } catch {
    return new Set();
  }
}

/** The security alerts about this user (the audit service's), each shown once. */
export const noticesPlugin: JupyterFrontEndPlugin<void> = {
  id: '@qustody/jupyterlab:security-notices',
  description: 'Shows the security alerts about this user, with what to do.',
  autoStart: true,
  activate: (app: JupyterFrontEnd) => {
    const settings = app.serviceManager.serverSettings;
    // per hub user: the hub serves every user's JupyterLab, and each of a user's named
    // servers, from one origin; an alert is about the user, so it is shown once for all
    const user = PageConfig.getOption('hubUser') || settings.baseUrl;
    const key = `@qustody/jupyterlab:notices-seen:${user}`;
    const poll = async (): Promise<void> => {
      let notices: INotice[] | null;
      try {
        notices = await fetchNotices(settings);
      } catch {
        return; // the server is restarting: ask again at the next poll
      }
      // read again each time: another tab or server may have shown some since
      const seen = loadSeen(key);
      for (const notice of unseen(notices ?? [], seen)) {
        const details = (): void => {
          void showDialog({
            title: 'Security notice',
            body: noticeDetail(notice),
            buttons: [Dialog.okButton({ label: 'Close' })]
          });
        };
        Notification.warning(noticeText(notice), {
          autoClose: false,
          actions: [{ label: 'What to do', callback: details }]
        });
        seen.add(notice.seq);
      }
      try {
        window.localStorage.setItem(key, JSON.stringify(trimSeen(seen)));
      } catch {
        // storage full or disabled: notices may show again after a reload
      }
    };
    // after the layout is restored: a notification added before the toasts are mounted
    // would only be counted in the notification center, never shown
    void app.restored.then(() => {
      void poll();
      setInterval(() => void poll(), POLL_MS);
    });
  }
};
