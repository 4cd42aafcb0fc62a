import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { Notification } from '@jupyterlab/apputils';
import { DocumentRegistry } from '@jupyterlab/docregistry';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { Contents, ServerConnection } from '@jupyterlab/services';
import { Signal } from '@lumino/signaling';

import {
  describeSaveReport,
  IFinding,
  IRefusal,
  ISaveReport,
  locateCell,
  parseRefusal,
  parseSaveReport,
  withPragma
} from './refusal';
import { canMoveToSecret, replaceWithSecret, valueAt } from './moveToSecret';
import { RefusalDialogs, IRefusalTarget } from './refusalDialog';
import { requestSecrets, storeSecret } from './secretsApi';

const HIGHLIGHT = 'jp-qustody-highlight';

/**
 * The contents API's error bodies for refused saves. JupyterLab reads an error body once
 * (for its message), so a copy is taken as the response arrives, keyed by the response.
 */
const refusalBodies = new WeakMap<Response, unknown>();

function isContentsSave(request: RequestInfo, init?: RequestInit): boolean {
  const method = init?.method ?? (request instanceof Request ? request.method : 'GET');
  const url = request instanceof Request ? request.url : request;
  const upper = method.toUpperCase();
  return (upper === 'PUT' || upper === 'PATCH') && new URL(url, location.href).pathname.includes('/api/contents/');
}

function keepRefusalBodies(settings: ServerConnection.ISettings): void {
  const original = settings.fetch;
  const wrapped = async (request: RequestInfo, init?: RequestInit): Promise<Response> => {
    const response = await original.call(null, request, init);
    if (response.status >= 400 && response.status < 500 && isContentsSave(request, init)) {
      try {
        refusalBodies.set(response, await response.clone().json());
      } catch {
        // not JSON: not a Qustody refusal
      }
    }
    return response;
  };
  // ISettings is read-only in its type only; the object is shared by every manager.
  (settings as { fetch: typeof fetch }).fetch = wrapped as typeof fetch;
}

function refusalOf(error: unknown): IRefusal | null {
  if (!(error instanceof ServerConnection.ResponseError)) {
    return null;
  }
  return parseRefusal(refusalBodies.get(error.response));
}

function targetFor(
  panel: NotebookPanel,
  path: string,
  settings: ServerConnection.ISettings
): IRefusalTarget {
  const notebook = panel.content;
  const cellIds = (): string[] => notebook.widgets.map(cell => cell.model.id ?? '');
  const cellOf = (finding: IFinding) => {
    const index = locateCell(finding, cellIds());
    return index === null ? undefined : notebook.widgets[index];
  };
  return {
    path,
    locate: (finding: IFinding) => locateCell(finding, cellIds()),
    reveal: (index: number) => {
      const cell = notebook.widgets[index];
      if (cell === undefined) {
        return;
      }
      notebook.activeCellIndex = index;
      void notebook.scrollToCell(cell, 'center');
      cell.addClass(HIGHLIGHT);
      setTimeout(() => cell.removeClass(HIGHLIGHT), 4000);
    },
    markNotSecret: (finding: IFinding) => {
      const index = locateCell(finding, cellIds());
      const cell = index === null ? undefined : notebook.widgets[index];
      if (cell === undefined) {
        return false;
      }
      const shared = cell.model.sharedModel;
      const updated = withPragma(shared.getSource(), finding.line, cell.model.type);
      if (updated === null) {
        return false;
      }
      shared.setSource(updated);
      return true;
    },
    movableValue: (finding: IFinding) => {
      const cell = cellOf(finding);
      if (cell === undefined || !canMoveToSecret(finding, cell.model.type)) {
        return null;
      }
      return valueAt(cell.model.sharedModel.getSource(), finding);
    },
    selfService: async () => {
      const answer = await requestSecrets(settings, false);
      return answer.state === 'ok'
        ? { cls: answer.selfServiceClass, taken: answer.secrets.map(s => s.name) }
        : { cls: null, taken: [] };
    },
    store: (name: string, value: string) => storeSecret(settings, name, value),
    replace: (finding: IFinding, value: string, name: string) => {
      const cell = cellOf(finding);
      if (cell === undefined) {
        return 'its cell is no longer in the notebook';
      }
      const shared = cell.model.sharedModel;
      const result = replaceWithSecret(shared.getSource(), value, name);
      if ('reason' in result) {
        return result.reason;
      }
      shared.setSource(result.source);
      return null;
    }
  };
}

/**
 * Tell the status bar the save failed. The error thrown below makes JupyterLab skip its
 * own dialog, and with it its 'failed' state, which would leave "Saving started" up.
 */
function markSaveFailed(panel: NotebookPanel): void {
  const state = panel.context.saveState;
  if (state instanceof Signal) {
    (state as Signal<DocumentRegistry.Context, DocumentRegistry.SaveState>).emit('failed');
  }
}

/**
 * A save the guard changed (outputs redacted) or let through with findings (a ``warn``
 * path): say so without a modal, and show what is on disk, not the unredacted outputs.
 */
function afterGuardedSave(panel: NotebookPanel, report: ISaveReport): void {
  const cellIds = panel.content.widgets.map(cell => cell.model.id ?? '');
  const text = describeSaveReport(report, cellIds);
  if (text === null) {
    return;
  }
  if (report.redacted > 0) {
    Notification.info(text, { autoClose: 10000 });
    const context = panel.context;
    const reload = (_: DocumentRegistry.Context, state: DocumentRegistry.SaveState): void => {
      if (state === 'completed' || state === 'failed') {
        context.saveState.disconnect(reload);
      }
      if (state === 'completed' && !context.model.dirty) {
        void context.revert();
      }
    };
    context.saveState.connect(reload);
  } else {
    Notification.warning(text, { autoClose: 10000 });
  }
}

/**
 * Refused saves: the findings of the server's refusal in one dialog, instead of
 * JupyterLab's generic "File Save Error" text.
 */
export const saveGuardPlugin: JupyterFrontEndPlugin<void> = {
  id: '@qustody/jupyterlab:save-guard',
  description: 'Shows why Qustody refused a save, finding by finding, with links to the cells.',
  autoStart: true,
  requires: [INotebookTracker],
  activate: (app: JupyterFrontEnd, tracker: INotebookTracker) => {
    const dialogs = new RefusalDialogs();
    keepRefusalBodies(app.serviceManager.serverSettings);
    const contents = app.serviceManager.contents;
    const save = contents.save.bind(contents);
    contents.save = async (
      path: string,
      options?: Partial<Contents.IModel> & Contents.IContentProvisionOptions
    ): Promise<Contents.IModel> => {
      let saved: Contents.IModel;
      try {
        saved = await save(path, options);
      } catch (error) {
        const refusal = refusalOf(error);
        const panel = tracker.find(p => p.context.path === path);
        if (refusal === null || panel === undefined) {
          throw error; // JupyterLab's own dialog says what went wrong
        }
        dialogs.show(targetFor(panel, path, app.serviceManager.serverSettings), refusal);
        markSaveFailed(panel);
        // JupyterLab shows no dialog of its own for this name; the document stays dirty.
        const handled = new Error(refusal.message);
        handled.name = 'ModalCancelError';
        throw handled;
      }
      const report = parseSaveReport((saved as { qustody?: unknown }).qustody);
      const panel = tracker.find(p => p.context.path === path);
      if (report !== null && panel !== undefined) {
        afterGuardedSave(panel, report);
      }
      return saved;
    };
  }
};
