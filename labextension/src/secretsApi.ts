/** The server's ``/qustody/api/secrets`` endpoints, as the panel and the save dialog use them. */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import { ISecretName, parseSecrets, parseSelfServiceClass } from './secrets';

export type SecretsAnswer =
  | { state: 'ok'; secrets: ISecretName[]; selfServiceClass: string | null }
  | { state: 'off' | 'error'; message: string };

function url(settings: ServerConnection.ISettings, ...parts: string[]): string {
  return URLExt.join(settings.baseUrl, 'qustody', 'api', 'secrets', ...parts);
}

async function messageOf(response: Response): Promise<string> {
  try {
    const body = (await response.json()) as { message?: unknown };
    if (typeof body.message === 'string' && body.message !== '') {
      return body.message;
    }
  } catch {
    // not JSON
  }
  return `The server answered ${response.status}.`;
}

/** The names this server holds (``refresh``: fetched anew from the hub first). */
export async function requestSecrets(
  settings: ServerConnection.ISettings,
  refresh: boolean
): Promise<SecretsAnswer> {
  const response = await ServerConnection.makeRequest(
    refresh ? url(settings, 'refresh') : url(settings),
    { method: refresh ? 'POST' : 'GET' },
    settings
  );
  if (response.status === 503) {
    return { state: 'off', message: 'Secret delivery is not running on this server.' };
  }
  if (!response.ok) {
    return { state: 'error', message: await messageOf(response) };
  }
  const body: unknown = await response.json();
  return { state: 'ok', secrets: parseSecrets(body), selfServiceClass: parseSelfServiceClass(body) };
}

/** Store a new secret of the user's: null when stored, else the server's reason. */
export async function storeSecret(
  settings: ServerConnection.ISettings,
  name: string,
  value: string
): Promise<string | null> {
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(
      url(settings),
      { method: 'POST', body: JSON.stringify({ name, value }) },
      settings
    );
  } catch {
    return 'The server did not answer.';
  }
  return response.status === 201 ? null : messageOf(response);
}
