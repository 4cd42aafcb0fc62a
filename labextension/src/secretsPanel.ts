import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { Notification } from '@jupyterlab/apputils';
import { INotebookTracker } from '@jupyterlab/notebook';
import { ServerConnection } from '@jupyterlab/services';
import { LabIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

import { element, panelHeading } from './panelDom';
import { requestSecrets, SecretsAnswer } from './secretsApi';
import { snippet } from './secrets';

const keyIcon = new LabIcon({
  name: '@qustody/jupyterlab:key',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24"><path class="jp-icon3" ' +
    'fill="#616161" d="M7 14a2 2 0 1 1 0-4 2 2 0 0 1 0 4zm5.65-4A6 6 0 1 0 12.65 14H17v4h4v-4h2v-4z"/></svg>'
});

/** The names of the secrets delivered to this server, with a button that inserts the call. */
class SecretsPanel extends Widget {
  constructor(
    private _settings: ServerConnection.ISettings,
    private _insert: (name: string) => void
  ) {
    super();
    this.id = 'jp-qustody-secrets';
    this.addClass('jp-qustody-panel');
    this.addClass('jp-qustody-secrets');
    this.title.icon = keyIcon;
    this.title.caption = 'Secrets on this server';
  }

  async load(refresh = false): Promise<void> {
    let answer: SecretsAnswer;
    try {
      answer = await requestSecrets(this._settings, refresh);
    } catch {
      answer = { state: 'error', message: 'The server did not answer.' };
    }
    this._render(answer);
    if (refresh && answer.state === 'error') {
      Notification.error(`Secrets were not refreshed: ${answer.message}`);
    }
  }

  private _render(answer: SecretsAnswer): void {
    const doc = this.node.ownerDocument;
    this.node.replaceChildren(
      panelHeading(
        doc,
        'Secrets',
        'jp-qustody-secrets-refresh',
        () => void this.load(true),
        'Fetch current values from the hub (rotated values replace old ones; revoked ones go)'
      )
    );
    const note = (text: string) => element(doc, 'p', 'jp-qustody-secrets-note', text);
    if (answer.state !== 'ok') {
      this.node.appendChild(note(answer.message));
      return;
    }
    if (answer.secrets.length === 0) {
      this.node.appendChild(
        note(
          'No secrets were delivered to this server. Ask an admin to grant one to you ' +
            '(qustody secrets grant), then Refresh.'
        )
      );
      return;
    }
    this.node.appendChild(
      note('Names only: values stay on the server. Insert puts get_secret("NAME") at the cursor.')
    );
    const list = element(doc, 'ul', 'jp-qustody-panel-list');
    for (const secret of answer.secrets) {
      const item = element(doc, 'li', 'jp-qustody-secret');
      item.dataset.name = secret.name;
      const version = secret.version === null ? '' : ` v${secret.version}`;
      const insert = element(doc, 'button', 'jp-mod-styled jp-qustody-secret-insert', 'Insert');
      insert.title = `Insert get_secret("${secret.name}") into the active cell`;
      insert.onclick = () => this._insert(secret.name);
      item.append(
        element(doc, 'code', '', secret.name),
        element(doc, 'span', 'jp-qustody-secret-class', ` ${secret.cls}${version} `),
        insert
      );
      list.appendChild(item);
    }
    this.node.appendChild(list);
  }
}

/** A left-sidebar panel: which secrets this server holds, and how to use one. */
export const secretsPlugin: JupyterFrontEndPlugin<void> = {
  id: '@qustody/jupyterlab:secrets',
  description: 'Names and classes of the secrets delivered to this server (never values).',
  autoStart: true,
  optional: [INotebookTracker],
  activate: (app: JupyterFrontEnd, notebooks: INotebookTracker | null) => {
    const insert = (name: string): void => {
      const cell = notebooks?.activeCell;
      const editor = cell?.editor;
      const text = cell ? snippet(name, cell.model.sharedModel.getSource()) : null;
      if (!cell || !editor || text === null) {
        Notification.info(`Open a notebook and select a cell to insert get_secret("${name}").`);
        return;
      }
      const source = cell.model.sharedModel;
      const at = editor.getOffsetAt(editor.getCursorPosition());
      source.updateSource(at, at, text.call); // first: the import shifts every offset
      if (text.prefix) {
        source.updateSource(0, 0, text.prefix);
      }
      editor.focus();
    };
    const panel = new SecretsPanel(app.serviceManager.serverSettings, insert);
    app.shell.add(panel, 'left', { rank: 900 });
    void panel.load();
  }
};
