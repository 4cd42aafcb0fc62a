/**
 * The QPU panel's logic: the server's ``GET /qustody/api/qpu`` answer checked field by
 * field, reason codes in words, quota as "used of limit" lines. No JupyterLab imports, so
 * it is unit-tested on plain Node.
 */

export interface IBackend {
  name: string;
  backendClass: string;
  description: string;
  qubits: number | null;
  paused: boolean;
  reservedFor: string | null;
}

export interface IJob {
  id: string;
  backend: string;
  project: string;
  state: string;
  reason: string;
  queuePosition: number | null;
  estimatedStart: number | null;
  submittedAt: number | null;
  error: string | null;
}

export interface IQuotaLine {
  /** "you" or "project qc101". */
  who: string;
  backendClass: string;
  /** "today: 3 of 100 jobs, 300 of 10000 shots" (limits only where there are any). */
  text: string;
  /** The smallest share left of any limited dimension, 0..1 (1 when nothing is limited). */
  left: number;
}

export interface IQpuOverview {
  backends: IBackend[];
  jobs: IJob[];
  quota: IQuotaLine[];
}

export const FINAL_STATES = new Set(['DONE', 'CANCELLED', 'FAILED', 'REJECTED']);

const REASONS: Record<string, string> = {
  'QUEUED:PENDING': 'admitted, waiting for its place in the queue',
  'QUEUED:READY': 'starts as soon as the dispatcher takes it',
  'QUEUED:BACKEND_BUSY': 'every lane of the backend is taken',
  'QUEUED:PRIORITY': 'a job of a higher priority is ahead',
  'QUEUED:FAIR_SHARE': 'a project that used less of its share recently is ahead',
  'QUEUED:RESERVATION': 'the backend is reserved for another project now',
  'QUEUED:RATE_LIMIT': 'you submitted faster than your rate limit; it starts at its slot',
  'QUEUED:RECOVERED': 'its gateway process stopped while running it; it runs again',
  'HELD:BACKEND_PAUSED': 'an operator paused the backend',
  'HELD:PROJECT_PAUSED': 'an operator paused the project',
  'RUNNING:EXECUTING': 'running on the backend',
  'DONE:COMPLETED': 'done: results available',
  'CANCELLED:CANCELLED': 'cancelled; quota refunded, but for any time you let it run',
  'FAILED:EXECUTION_ERROR': 'failed on the backend; quota refunded',
  'FAILED:LOST': 'lost; quota refunded',
  'FAILED:MEMORY_LIMIT': 'needed more memory than the policy allows; the time it ran is charged',
  'FAILED:TIME_LIMIT': 'ran longer than the policy allows; the time it ran is charged',
  'FAILED:WIDTH_LIMIT': 'too many qubits for the policy now; quota refunded',
  'FAILED:SANDBOX_CRASHED': 'the simulation process died; quota refunded',
  'REJECTED:USER_QUOTA': 'refused: your quota is used up',
  'REJECTED:PROJECT_QUOTA': "refused: the project's quota is used up",
  'REJECTED:MEMBER_QUOTA': 'refused: your share of the course budget is used up',
  'REJECTED:COURSE_CLOSED': "refused: the course's term has closed",
  'REJECTED:RATE_LIMIT': 'refused: too many submissions too fast',
  'REJECTED:USER_REVOKED': 'refused: an operator revoked your access'
};

/** A reason code in words; an unknown code is shown as it is. */
export function reasonInWords(reason: string): string {
  return REASONS[reason] ?? reason;
}

function rec(value: unknown): Record<string, unknown> | null {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
    ? (value as Record<string, unknown>)
    : null;
}

function str(value: unknown, fallback = ''): string {
  return typeof value === 'string' ? value : fallback;
}

function num(value: unknown): number | null {
  return typeof value === 'number' && Number.isFinite(value) ? value : null;
}

function parseBackend(raw: unknown): IBackend | null {
  const b = rec(raw);
  if (b === null || typeof b.name !== 'string') {
    return null;
  }
  return {
    name: b.name,
    backendClass: str(b.backend_class, 'simulator'),
    description: str(b.description),
    qubits: num(b.num_qubits),
    paused: b.paused === true,
    reservedFor: typeof b.reserved_for === 'string' ? b.reserved_for : null
  };
}

function parseJob(raw: unknown): IJob | null {
  const j = rec(raw);
  if (j === null || typeof j.job_id !== 'string' || !/^[0-9a-f]{32}$/.test(j.job_id)) {
    return null;
  }
  return {
    id: j.job_id,
    backend: str(j.backend),
    project: str(j.project),
    state: str(j.state, 'UNKNOWN'),
    reason: str(j.reason),
    queuePosition: num(j.queue_position),
    estimatedStart: num(j.estimated_start),
    submittedAt: num(j.submitted_at),
    error: typeof j.error === 'string' && j.error !== '' ? j.error : null
  };
}

const PERIOD_WORDS: Record<string, string> = { day: 'today', month: 'this month' };
const DIMENSIONS: [string, string][] = [
  ['jobs', 'jobs'],
  ['shots', 'shots'],
  ['seconds', 'backend-seconds']
];

/** One line per (who, class) that has any limit: what is used of what is allowed. */
export function quotaLines(quota: unknown): IQuotaLine[] {
  const q = rec(quota);
  if (q === null) {
    return [];
  }
  const blocks: [string, unknown][] = [];
  const user = rec(q.user);
  if (user !== null) {
    blocks.push(['you', user.quota]);
  }
  for (const [name, project] of Object.entries(rec(q.projects) ?? {})) {
    const mine = rec(project)?.your_quota;
    if (mine !== undefined) {
      // a course's per-student budget: the limit a student meets first
      blocks.push([`you in ${name}`, mine]);
    }
    blocks.push([`project ${name}`, rec(project)?.quota]);
  }
  const lines: IQuotaLine[] = [];
  for (const [who, byClass] of blocks) {
    for (const [backendClass, periods] of Object.entries(rec(byClass) ?? {})) {
      const parts: string[] = [];
      let left = 1;
      for (const [period, words] of Object.entries(PERIOD_WORDS)) {
        const dims = rec(rec(periods)?.[period]);
        const limited: string[] = [];
        for (const [dim, unit] of DIMENSIONS) {
          const d = rec(dims?.[dim]);
          const limit = num(d?.limit);
          const used = num(d?.used) ?? 0;
          if (limit === null) {
            continue;
          }
          limited.push(`${Math.round(used)} of ${limit} ${unit}`);
          left = Math.min(left, limit > 0 ? Math.max(0, limit - used) / limit : 0);
        }
        if (limited.length > 0) {
          parts.push(`${words}: ${limited.join(', ')}`);
        }
      }
      if (parts.length > 0) {
        lines.push({ who, backendClass, text: parts.join('; '), left });
      }
    }
  }
  return lines;
}

/** The overview, or null when the body is not the server's answer. */
export function parseOverview(body: unknown): IQpuOverview | null {
  const o = rec(body);
  if (o === null || !Array.isArray(o.backends) || !Array.isArray(o.jobs)) {
    return null;
  }
  return {
    backends: o.backends.map(parseBackend).filter((b): b is IBackend => b !== null),
    jobs: o.jobs.map(parseJob).filter((j): j is IJob => j !== null),
    quota: quotaLines(o.quota)
  };
}

/** "QUEUED, 3rd in line, starts in about 2 min" / "DONE". */
export function jobStatusText(job: IJob, nowSeconds: number): string {
  const parts = [job.state];
  if (job.queuePosition !== null && !FINAL_STATES.has(job.state)) {
    parts.push(`position ${job.queuePosition} in the queue`);
  }
  if (job.estimatedStart !== null && !FINAL_STATES.has(job.state) && job.state !== 'RUNNING') {
    const minutes = Math.max(0, Math.round((job.estimatedStart - nowSeconds) / 60));
    parts.push(minutes === 0 ? 'starts within a minute' : `starts in about ${minutes} min`);
  }
  return parts.join(', ');
}

/** One decision the gateway took about a job, in order. */
export interface IDecision {
  at: number | null;
  code: string;
}

/** What the gateway recorded about a job (``GET /qustody/api/qpu/jobs/<id>``). */
export interface IProvenance {
  /** [label, value] rows, recorded by the gateway first, then what the client reported. */
  rows: [string, string][];
  decisions: IDecision[];
}

function when(seconds: number | null): string {
  return seconds === null ? '' : `${new Date(seconds * 1000).toISOString().slice(0, 19)}Z`;
}

function short(hash: string): string {
  return hash.length > 16 ? `${hash.slice(0, 16)}…` : hash;
}

/** The provenance in a job answer, or null when the body holds none. */
export function parseProvenance(body: unknown): IProvenance | null {
  const job = rec(body);
  const p = rec(job?.provenance);
  if (job === null || p === null) {
    return null;
  }
  const rows: [string, string][] = [];
  const add = (label: string, value: unknown): void => {
    const text = typeof value === 'number' ? String(value) : str(value);
    if (text !== '') {
      rows.push([label, text]);
    }
  };
  add('owner', p.owner);
  add('submitted', when(num(p.submitted_at)));
  add('backend', p.backend);
  add('backend configuration', short(str(p.backend_config_hash)));
  const hashes = Array.isArray(p.circuit_hashes) ? p.circuit_hashes.filter(h => typeof h === 'string') : [];
  if (hashes.length > 0) {
    add(`circuit${hashes.length > 1 ? 's' : ''} (SHA-256)`, hashes.map(h => short(h)).join(', '));
  }
  add('shots', job.shots);
  add('policy', short(str(p.policy)));
  const gateway = rec(p.gateway);
  if (gateway !== null) {
    add('gateway', ['version', 'qiskit', 'qiskit_aer', 'python']
      .filter(k => str(gateway[k]) !== '')
      .map(k => `${k === 'version' ? 'qustody' : k} ${str(gateway[k])}`)
      .join(', '));
  }
  const client = rec(p.client_reported);
  if (client !== null) {
    add('notebook (reported)', client.notebook_path);
    add('notebook hash (reported)', short(str(client.notebook_hash)));
    add('kernel (reported)', client.kernel_id);
    add('transpile seed (reported)', client.transpile_seed);
    const sdk = rec(client.sdk);
    if (sdk !== null) {
      add('SDK (reported)', Object.entries(sdk).map(([k, v]) => `${k} ${str(v)}`).join(', '));
    }
  }
  const decisions: IDecision[] = [];
  for (const raw of Array.isArray(job.decisions) ? job.decisions : []) {
    const d = rec(raw);
    if (d !== null && typeof d.code === 'string') {
      decisions.push({ at: num(d.at), code: d.code });
    }
  }
  return { rows, decisions };
}

/** "2026-12-04T01:02:03Z QUEUED:PENDING (admitted, waiting for its place in the queue)". */
export function decisionText(decision: IDecision): string {
  const words = reasonInWords(decision.code);
  return `${when(decision.at)} ${decision.code}${words === decision.code ? '' : ` (${words})`}`.trim();
}
