import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';

import {
  decisionText,
  jobStatusText,
  parseOverview,
  parseProvenance,
  quotaLines,
  reasonInWords
} from '../src/qpu';

const JOB = 'a'.repeat(32);

describe('parseOverview', () => {
  it('reads backends and jobs, leaving out malformed entries', () => {
    const overview = parseOverview({
      backends: [
        { name: 'aer_simulator', backend_class: 'simulator', num_qubits: 30, paused: false, reserved_for: null },
        { nope: 1 }
      ],
      jobs: [
        { job_id: JOB, backend: 'aer_simulator', project: 'personal:rita', state: 'QUEUED', reason: 'QUEUED:FAIR_SHARE', queue_position: 2 },
        { job_id: '../../etc/passwd', state: 'DONE' }
      ],
      quota: {}
    });
    assert.ok(overview);
    assert.deepEqual(overview.backends.map(b => [b.name, b.qubits, b.paused]), [['aer_simulator', 30, false]]);
    assert.deepEqual(overview.jobs.map(j => [j.id, j.queuePosition]), [[JOB, 2]]);
  });

  it('is null for a body that is not the answer', () => {
    for (const body of [null, [], { backends: [] }, 'x']) {
      assert.equal(parseOverview(body), null);
    }
  });
});

describe('quotaLines', () => {
  const limited = (jobs: number, used: number) => ({
    day: { jobs: { limit: jobs, used, remaining: jobs - used }, shots: { limit: null, used: 0 }, seconds: { limit: null, used: 0 } },
    month: { jobs: { limit: null, used }, shots: { limit: null, used: 0 }, seconds: { limit: null, used: 0 } },
    soft: false
  });

  it('says what is used of each limit, for the user and each project', () => {
    const lines = quotaLines({
      user: { name: 'sam', quota: { simulator: limited(20, 3) } },
      projects: {
        'course-101': {
          role: 'member',
          your_quota: { simulator: limited(5, 2) },
          quota: { simulator: limited(100, 95), hardware: limited(0, 0) }
        }
      }
    });
    assert.deepEqual(
      lines.map(l => [l.who, l.backendClass, l.text]),
      [
        ['you', 'simulator', 'today: 3 of 20 jobs'],
        ['you in course-101', 'simulator', 'today: 2 of 5 jobs'],
        ['project course-101', 'simulator', 'today: 95 of 100 jobs'],
        ['project course-101', 'hardware', 'today: 0 of 0 jobs']
      ]
    );
    assert.equal(lines[1].left, 0.6);
    assert.equal(lines[2].left, 0.05);
    assert.equal(lines[3].left, 0);
  });

  it('leaves out what has no limit', () => {
    const open = { day: { jobs: { limit: null, used: 4 } }, month: {} };
    assert.deepEqual(quotaLines({ user: { quota: { simulator: open } }, projects: {} }), []);
  });
});

describe('job words', () => {
  it('turns reason codes into words and keeps unknown ones', () => {
    assert.equal(reasonInWords('HELD:BACKEND_PAUSED'), 'an operator paused the backend');
    assert.equal(reasonInWords('QUEUED:SOMETHING_NEW'), 'QUEUED:SOMETHING_NEW');
  });

  it('says the queue position and the estimated start of a waiting job only', () => {
    const job = {
      id: JOB, backend: 'b', project: 'p', state: 'QUEUED', reason: 'QUEUED:PRIORITY',
      queuePosition: 3, estimatedStart: 1000 + 120, submittedAt: 990, error: null
    };
    assert.equal(jobStatusText(job, 1000), 'QUEUED, position 3 in the queue, starts in about 2 min');
    assert.equal(jobStatusText({ ...job, state: 'DONE' }, 1000), 'DONE');
  });
});

describe('provenance', () => {
  const body = {
    job_id: 'a'.repeat(32),
    shots: 1024,
    provenance: {
      owner: 'alice',
      submitted_at: 1796346744,
      backend: 'aer_simulator',
      backend_config_hash: 'f'.repeat(64),
      circuit_hashes: ['0123456789abcdef0123', 7],
      policy: 'p'.repeat(20),
      gateway: { version: '0.2.0', qiskit: '2.1.0', qiskit_aer: '', python: '3.11.2' },
      client_reported: { notebook_path: 'bell.ipynb', kernel_id: null, sdk: { qiskit: '2.1.0' } }
    },
    decisions: [{ at: 1796346744, code: 'QUEUED:PENDING' }, { at: null, code: 'STARTED' }, { code: 3 }]
  };

  it('lists what the gateway recorded, then what the client reported, in words', () => {
    const p = parseProvenance(body);
    assert.ok(p !== null);
    assert.deepEqual(p.rows, [
      ['owner', 'alice'],
      ['submitted', '2026-12-04T01:12:24Z'],
      ['backend', 'aer_simulator'],
      ['backend configuration', 'ffffffffffffffff…'],
      ['circuit (SHA-256)', '0123456789abcdef…'],
      ['shots', '1024'],
      ['policy', 'pppppppppppppppp…'],
      ['gateway', 'qustody 0.2.0, qiskit 2.1.0, python 3.11.2'],
      ['notebook (reported)', 'bell.ipynb'],
      ['SDK (reported)', 'qiskit 2.1.0']
    ]);
    assert.deepEqual(p.decisions.map(decisionText), [
      '2026-12-04T01:12:24Z QUEUED:PENDING (admitted, waiting for its place in the queue)',
      'STARTED'
    ]);
  });

  it('is null for an answer without provenance', () => {
    for (const b of [null, {}, { provenance: 'x' }, []]) {
      assert.equal(parseProvenance(b), null);
    }
  });
});
