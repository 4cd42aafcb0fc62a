/**
 * The security notices of GET /qustody/api/notices (server_ext/notices.py): the alerts
 * about this user that the audit service raised, each with what to do. Pure functions,
 * tested with node --test.
 */

export interface INotice {
  seq: number;
  ts: string;
  rule: string;
  message: string;
}

/** The notices of an answer, leaving out malformed entries (oldest first). */
export function parseNotices(body: unknown): INotice[] {
  const list = (body as { notices?: unknown } | null)?.notices;
  if (!Array.isArray(list)) {
    return [];
  }
  const out: INotice[] = [];
  for (const item of list) {
    const n = item as Record<string, unknown>;
    if (
      typeof n === 'object' &&
      n !== null &&
      Number.isInteger(n.seq) &&
      typeof n.message === 'string' &&
      typeof n.rule === 'string'
    ) {
      out.push({
        seq: n.seq as number,
        ts: typeof n.ts === 'string' ? n.ts : '',
        rule: n.rule,
        message: n.message
      });
    }
  }
  return out.sort((a, b) => a.seq - b.seq);
}

/** The notices not shown yet (each alert is shown once, across reloads). */
export function unseen(notices: INotice[], seen: ReadonlySet<number>): INotice[] {
  return notices.filter(n => !seen.has(n.seq));
}

/** The toast's words (JupyterLab cuts a toast at 140 characters): the first sentence. */
export function noticeText(notice: INotice): string {
  const end = notice.message.indexOf('. ');
  const first = end < 0 ? notice.message : notice.message.slice(0, end + 1);
  return `Security notice: ${first}`;
}

/** The whole notice (the "What to do" dialog): when, in UTC, and the service's words. */
export function noticeDetail(notice: INotice): string {
  const when = notice.ts.slice(0, 16).replace('T', ' ');
  return `${when ? `${when} UTC: ` : ''}${notice.message}`;
}

/** The seen set as stored: the newest ``keep`` sequence numbers. */
export function trimSeen(seen: ReadonlySet<number>, keep = 200): number[] {
  return [...seen].sort((a, b) => a - b).slice(-keep);
}
