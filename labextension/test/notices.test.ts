import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';

import { noticeDetail, noticeText, parseNotices, trimSeen, unseen } from '../src/noticeList';

// GET /qustody/api/notices (server_ext/notices.py), as the audit service words it.
const ANSWER = {
  notices: [
    { seq: 41, ts: '2026-12-04T10:02:11.5Z', rule: 'save-refusals', message: '3 of your saves were refused.' },
    { seq: 17, ts: '2026-12-04T09:00:00Z', rule: 'login-failures-user', message: 'Sign-ins were refused.' },
    { seq: 'x', rule: 'nope', message: 'malformed' },
    null
  ]
};

describe('parseNotices', () => {
  it('keeps well-formed notices, oldest first', () => {
    assert.deepEqual(
      parseNotices(ANSWER).map(n => n.seq),
      [17, 41]
    );
  });
  it('is empty for anything else', () => {
    assert.deepEqual(parseNotices({ error: 'NO_AUDIT' }), []);
    assert.deepEqual(parseNotices(null), []);
    assert.deepEqual(parseNotices({ notices: 'x' }), []);
  });
});

describe('unseen and trimSeen', () => {
  it('shows each alert once', () => {
    const notices = parseNotices(ANSWER);
    assert.deepEqual(unseen(notices, new Set([17])).map(n => n.seq), [41]);
    assert.deepEqual(unseen(notices, new Set([17, 41])), []);
  });
  it('remembers the newest only', () => {
    assert.deepEqual(trimSeen(new Set([5, 1, 9, 3]), 2), [5, 9]);
  });
});

describe('noticeText and noticeDetail', () => {
  it('puts the first sentence in the toast and everything in the details', () => {
    const notice = {
      seq: 1,
      ts: '2026-12-04T10:02:11.5Z',
      rule: 'save-refusals',
      message: '3 of your saves were refused. Keep credentials in the Secrets panel.'
    };
    assert.equal(noticeText(notice), 'Security notice: 3 of your saves were refused.');
    assert.equal(
      noticeDetail(notice),
      '2026-12-04 10:02 UTC: 3 of your saves were refused. Keep credentials in the Secrets panel.'
    );
    assert.equal(noticeText({ ...notice, message: 'One sentence' }), 'Security notice: One sentence');
    assert.equal(noticeDetail({ ...notice, ts: '' }), notice.message);
  });
});
