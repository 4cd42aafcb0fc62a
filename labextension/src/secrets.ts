/**
 * The secrets panel's logic: what ``GET /qustody/api/secrets`` says (names and classes,
 * never values), checked field by field, and the code a click inserts. No JupyterLab
 * imports, so it is unit-tested on plain Node.
 */

export interface ISecretName {
  name: string;
  /** The secret's class (``sandbox``, ``dev``, ``prod``, ...), which decides where it may go. */
  cls: string;
  version: number | null;
}

/** A secret name as the hub allows it: a Python identifier-like word. */
const NAME = /^[A-Za-z_][A-Za-z0-9_]{0,127}$/;
const CLASS = /^[a-z0-9][a-z0-9-]{0,63}$/;
export const IMPORT_LINE = 'from server_ext.secrets import get_secret';

/** The names in the server's answer; entries that are not well-formed are left out. */
export function parseSecrets(body: unknown): ISecretName[] {
  if (typeof body !== 'object' || body === null) {
    return [];
  }
  const list = (body as Record<string, unknown>).secrets;
  if (!Array.isArray(list)) {
    return [];
  }
  const out: ISecretName[] = [];
  for (const raw of list) {
    if (typeof raw !== 'object' || raw === null) {
      continue;
    }
    const { name, version } = raw as Record<string, unknown>;
    const cls = (raw as Record<string, unknown>).class;
    if (typeof name !== 'string' || !NAME.test(name) || typeof cls !== 'string' || !CLASS.test(cls)) {
      continue;
    }
    out.push({
      name,
      cls,
      version: typeof version === 'number' && Number.isInteger(version) ? version : null
    });
  }
  return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** The class a secret stored from this server gets, or null when it may not store. */
export function parseSelfServiceClass(body: unknown): string | null {
  if (typeof body !== 'object' || body === null) {
    return null;
  }
  const cls = (body as Record<string, unknown>).self_service_class;
  return typeof cls === 'string' && CLASS.test(cls) ? cls : null;
}

/**
 * What to insert at the cursor for ``name``: the call, and the import first when the
 * cell does not import ``get_secret`` yet. Null for a name that is not well-formed.
 */
export function snippet(name: string, cellSource: string): { prefix: string; call: string } | null {
  if (!NAME.test(name)) {
    return null;
  }
  const imported = cellSource.split('\n').some(line => line.trim() === IMPORT_LINE);
  return { prefix: imported ? '' : `${IMPORT_LINE}\n`, call: `get_secret("${name}")` };
}
