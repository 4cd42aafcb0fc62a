/**
 * The session clock's arithmetic: how long is left from the server's last answer, and
 * which warning is due. No JupyterLab imports, so it is unit-tested on plain Node.
 */

/** The part of ``GET /qustody/api/session`` the clock uses. */
export interface ISessionStatus {
  enforced: boolean;
  stopsInSeconds: number | null;
  stopReason: 'idle' | 'max-age' | null;
}

export function parseSession(body: unknown): ISessionStatus | null {
  if (typeof body !== 'object' || body === null) {
    return null;
  }
  const raw = body as Record<string, unknown>;
  const left = raw.stops_in_seconds;
  const reason = raw.stop_reason;
  return {
    enforced: raw.enforced === true,
    stopsInSeconds: typeof left === 'number' && Number.isFinite(left) ? Math.max(0, left) : null,
    stopReason: reason === 'idle' || reason === 'max-age' ? reason : null
  };
}

/** Whole seconds left at ``nowMs``, given the answer received at ``fetchedAtMs``. */
export function secondsLeft(
  status: ISessionStatus,
  fetchedAtMs: number,
  nowMs: number
): number | null {
  if (!status.enforced || status.stopsInSeconds === null) {
    return null;
  }
  const elapsed = Math.max(0, nowMs - fetchedAtMs) / 1000;
  return Math.max(0, Math.floor(status.stopsInSeconds - elapsed));
}

/** "1:05:09", "4:07", "0:09": hours only when there are any. */
export function formatLeft(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${sec}` : `${m}:${sec}`;
}

/** Warnings, in minutes before the stop; each is given once per countdown. */
export const WARN_AT_MINUTES = [10, 2] as const;

/**
 * The warning due now (the smallest threshold crossed and not yet given), or null.
 * ``given`` is updated; it is cleared when the time left grows back above a threshold
 * (activity reset the idle timer), so the warning is given again next time.
 */
export function warningDue(left: number, given: Set<number>): number | null {
  for (const minutes of WARN_AT_MINUTES) {
    if (left > minutes * 60) {
      given.delete(minutes);
    }
  }
  let due: number | null = null;
  for (const minutes of WARN_AT_MINUTES) {
    if (left <= minutes * 60 && !given.has(minutes)) {
      due = minutes;
    }
  }
  if (due !== null) {
    for (const minutes of WARN_AT_MINUTES) {
      if (minutes >= due) {
        given.add(minutes); // a 2-minute warning makes the 10-minute one moot
      }
    }
  }
  return due;
}

/** The warning for threshold ``minutes`` (a toast stays up: no ticking number in it). */
export function warningText(status: ISessionStatus, minutes: number): string {
  const when = `in less than ${minutes} minute${minutes === 1 ? '' : 's'}`;
  if (status.stopReason === 'idle') {
    return `This server stops ${when} if it stays idle. Save your work; any activity resets the idle timer.`;
  }
  return `This server reaches its maximum age and stops ${when}. Save your work now: the maximum age is a hard limit that activity does not extend.`;
}
