import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import {
  formatLeft,
  parseSession,
  secondsLeft,
  warningDue,
  warningText
} from '../src/countdown';

// GET /qustody/api/session (server_ext/session.py), trimmed to what the clock reads.
const status = parseSession({ enforced: true, stops_in_seconds: 700, stop_reason: 'idle' })!;

describe('secondsLeft', () => {
  it('counts down from the answer by the time elapsed since it came', () => {
    assert.equal(secondsLeft(status, 1_000_000, 1_000_000), 700);
    assert.equal(secondsLeft(status, 1_000_000, 1_000_000 + 100_500), 599);
  });
  it('stops at zero', () => {
    assert.equal(secondsLeft(status, 0, 10_000_000), 0);
  });
  it('ignores a clock that went backwards', () => {
    assert.equal(secondsLeft(status, 5000, 1000), 700);
  });
  it('is null when the server enforces no limit', () => {
    const free = parseSession({ enforced: false, stops_in_seconds: null, stop_reason: null })!;
    assert.equal(secondsLeft(free, 0, 0), null);
    assert.equal(parseSession('nope'), null);
    assert.equal(parseSession({ enforced: true, stops_in_seconds: 'x' })!.stopsInSeconds, null);
  });
});

describe('formatLeft', () => {
  it('shows hours only when there are some', () => {
    assert.equal(formatLeft(3909), '1:05:09');
    assert.equal(formatLeft(247), '4:07');
    assert.equal(formatLeft(9), '0:09');
    assert.equal(formatLeft(-3), '0:00');
  });
});

describe('warningDue', () => {
  it('warns once at 10 minutes and once at 2', () => {
    const given = new Set<number>();
    assert.equal(warningDue(601, given), null);
    assert.equal(warningDue(600, given), 10);
    assert.equal(warningDue(599, given), null);
    assert.equal(warningDue(121, given), null);
    assert.equal(warningDue(120, given), 2);
    assert.equal(warningDue(0, given), null);
  });
  it('gives only the 2-minute warning when the page opens with 90 s left', () => {
    const given = new Set<number>();
    assert.equal(warningDue(90, given), 2);
    assert.equal(warningDue(80, given), null);
  });
  it('warns again after activity reset the idle time', () => {
    const given = new Set<number>();
    assert.equal(warningDue(300, given), 10);
    assert.equal(warningDue(3600, given), null);
    assert.equal(warningDue(540, given), 10);
  });
});

describe('warningText', () => {
  it('says that maximum age is a hard limit', () => {
    const aged = parseSession({ enforced: true, stops_in_seconds: 100, stop_reason: 'max-age' })!;
    assert.match(warningText(aged, 2), /stops in less than 2 minutes\. .*hard limit/);
    assert.match(warningText(status, 10), /in less than 10 minutes if it stays idle/);
  });
});
