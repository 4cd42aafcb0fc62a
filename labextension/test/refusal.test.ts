import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import {
  canMarkNotSecret,
  describeSaveReport,
  describeWhere,
  locateCell,
  parseRefusal,
  parseSaveReport,
  PRAGMA,
  withPragma
} from '../src/refusal';

// The shape the server sends (server_ext/contents.py: GuardRefusal + Located.public()).
const body = {
  message: 'x.ipynb was not saved: 2 credential(s) found.',
  reason: 'Unprocessable Entity',
  findings: [
    {
      zone: 'source',
      pointer: '/cells/2/source',
      cell: 2,
      cell_id: 'c-three',
      detector: 'ibm-quantum-token',
      line: 3,
      fingerprint: 'fp1',
      masked: '********a1b'
    },
    {
      zone: 'output',
      pointer: '/cells/0/outputs/0/text',
      cell: 0,
      cell_id: 'c-one',
      detector: 'aws-access-key',
      line: 1,
      fingerprint: 'fp2',
      masked: 'AKIA********'
    }
  ]
};

describe('parseRefusal', () => {
  it('reads the findings of a refusal body', () => {
    const refusal = parseRefusal(body);
    assert.ok(refusal);
    assert.equal(refusal.findings.length, 2);
    assert.deepEqual(refusal.findings[0], {
      zone: 'source',
      pointer: '/cells/2/source',
      cell: 2,
      cellId: 'c-three',
      detector: 'ibm-quantum-token',
      line: 3,
      fingerprint: 'fp1',
      masked: '********a1b'
    });
    assert.equal(refusal.auditRef, undefined);
  });

  it('carries the audit reference when the server reported the refusal', () => {
    assert.equal(parseRefusal({ ...body, audit_ref: '3f9a0c12b7e4' })?.auditRef, '3f9a0c12b7e4');
  });

  it('ignores an audit reference that is not 12 hex digits', () => {
    for (const ref of ['', 'ev-42', '3F9A0C12B7E4', '<b>3f9a0c12b7e4</b>', 42]) {
      assert.equal(parseRefusal({ ...body, audit_ref: ref })?.auditRef, undefined);
    }
  });

  it('is null for other errors, so JupyterLab shows its own dialog', () => {
    assert.equal(parseRefusal({ message: 'Permission denied' }), null);
    assert.equal(parseRefusal({ message: 'too big', findings: [] }), null);
    assert.equal(parseRefusal('text'), null);
    assert.equal(parseRefusal(null), null);
    assert.equal(parseRefusal([body]), null);
  });

  it('drops malformed findings instead of showing undefined', () => {
    const refusal = parseRefusal({
      findings: [{ detector: 'x' }, { ...body.findings[0], cell: -1, cell_id: 7 }]
    });
    assert.ok(refusal);
    assert.equal(refusal.findings.length, 1);
    assert.equal(refusal.findings[0].cell, undefined);
    assert.equal(refusal.findings[0].cellId, undefined);
    assert.equal(refusal.message, 'The save was refused.');
  });
});

describe('locateCell', () => {
  const finding = parseRefusal(body)!.findings[0];

  it('follows the cell id when cells moved since the save', () => {
    assert.equal(locateCell(finding, ['new', 'c-one', 'x', 'c-three']), 3);
  });

  it('does not point at another cell when the finding cell was deleted', () => {
    assert.equal(locateCell(finding, ['c-one', 'x', 'y']), null);
  });

  it('uses the index for notebooks without cell ids', () => {
    assert.equal(locateCell(finding, ['', '', '', '']), 2);
    assert.equal(locateCell({ ...finding, cellId: undefined }, ['', '', '']), 2);
  });

  it('is null when the index is past the end', () => {
    assert.equal(locateCell({ ...finding, cellId: undefined }, ['', '']), null);
  });

  it('is null for a finding outside any cell (notebook metadata)', () => {
    assert.equal(
      locateCell({ detector: 'd', line: 1, masked: 'm', fingerprint: 'f', zone: 'metadata' }, ['a']),
      null
    );
  });
});

describe('describeWhere', () => {
  const [source, output] = parseRefusal(body)!.findings;
  it('counts cells from 1 as JupyterLab users see them', () => {
    assert.equal(describeWhere(source, 3), 'cell 4, line 3');
    assert.equal(describeWhere(output, 0), 'cell 1, output, line 1');
  });
  it('says when the cell is gone', () => {
    assert.equal(describeWhere(source, null), 'cell 3 (no longer in the notebook), line 3');
  });
});

describe('withPragma', () => {
  it('appends the pragma as a comment of the cell language to that line only', () => {
    const source = 'a = 1\ntoken = "abc"   \nb = 2';
    assert.equal(withPragma(source, 2, 'code'), `a = 1\ntoken = "abc"  # ${PRAGMA}\nb = 2`);
    assert.equal(withPragma('key: abc', 1, 'markdown'), `key: abc  <!-- ${PRAGMA} -->`);
  });
  it('refuses lines that do not exist or are already marked', () => {
    assert.equal(withPragma('a', 0, 'code'), null);
    assert.equal(withPragma('a', 2, 'code'), null);
    assert.equal(withPragma(`a  # ${PRAGMA}`, 1, 'code'), null);
  });
});

describe('describeSaveReport', () => {
  const output = { ...body.findings[1] };
  it('names the redacted cells and rules, and says the view now shows the disk', () => {
    const report = parseSaveReport({ mode: 'block', redacted: 1, findings: [output] })!;
    assert.equal(
      describeSaveReport(report, ['c-one', 'c-two']),
      'Saved with 1 credential redacted in cell 1 (aws-access-key). The notebook now shows what was saved.'
    );
  });
  it('warns about findings a warn path let through', () => {
    const report = parseSaveReport({ mode: 'warn', redacted: 0, findings: body.findings })!;
    assert.equal(
      describeSaveReport(report, ['c-one', 'x', 'c-three']),
      'Saved, but 2 credentials were found in cells 1, 3 (aws-access-key, ibm-quantum-token): ' +
        'this folder only warns. Remove them before sharing.'
    );
  });
  it('says nothing after a clean save, and ignores what is not a report', () => {
    assert.equal(describeSaveReport(parseSaveReport({ mode: 'block', redacted: 0, findings: [] })!, []), null);
    assert.equal(parseSaveReport(undefined), null);
    assert.equal(parseSaveReport({ redacted: 3 }), null);
  });
});

describe('canMarkNotSecret', () => {
  const [source, output] = parseRefusal(body)!.findings;
  it('offers the pragma for a source finding only', () => {
    assert.equal(canMarkNotSecret(source), true);
    assert.equal(canMarkNotSecret(output), false);
  });
  it('never for a value this server delivered (the guard ignores pragmas for those)', () => {
    assert.equal(canMarkNotSecret({ ...source, detector: 'known-secret' }), false);
  });
});
