import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';

import {
  canMoveToSecret,
  replaceWithSecret,
  suggestName,
  valueAt
} from '../src/moveToSecret';
import { IFinding, parseRefusal } from '../src/refusal';
import { IMPORT_LINE } from '../src/secrets';

const KEY = 'ghp_' + 'aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5';
const IMPORT = `${IMPORT_LINE}\n`;

function finding(line: number, column: number, length: number, masked = 'ghp_********fG5'): IFinding {
  return { detector: 'github-token', line, masked, fingerprint: 'f', zone: 'source', column, length };
}

function replaced(source: string, name = 'GITHUB_TOKEN'): string {
  const result = replaceWithSecret(source, KEY, name);
  assert.ok('source' in result, 'reason' in result ? result.reason : '');
  return result.source;
}

describe('valueAt', () => {
  it('reads the value at its line and column, counted in code points', () => {
    const source = `x = 1\nclé = '🔑' ; t = '${KEY}'`;
    const column = Array.from(`clé = '🔑' ; t = '`).length;
    assert.equal(valueAt(source, finding(2, column, KEY.length)), KEY);
  });

  it('is null when the cell changed since the save (the mask no longer fits)', () => {
    const source = `t = 'ghp_somethingElseEntirelyXXXXXXXXXXXXXX'`;
    assert.equal(valueAt(source, finding(1, 5, KEY.length)), null);
    assert.equal(valueAt('short', finding(3, 0, 5)), null);
    assert.equal(valueAt(`t = '${KEY}'`, { ...finding(1, 5, 1), column: undefined }), null);
  });
});

describe('replaceWithSecret', () => {
  it('replaces a whole literal by the call and imports get_secret once', () => {
    assert.equal(replaced(`token = "${KEY}"\n`), `${IMPORT}token = get_secret("GITHUB_TOKEN")\n`);
    assert.equal(replaced(`${IMPORT}f(token='${KEY}')`), `${IMPORT}f(token=get_secret("GITHUB_TOKEN"))`);
    assert.equal(replaced(`t = r'${KEY}'`), `${IMPORT}t = get_secret("GITHUB_TOKEN")`);
    assert.equal(replaced(`t = """${KEY}"""`), `${IMPORT}t = get_secret("GITHUB_TOKEN")`);
    assert.equal(replaced(`t = b'${KEY}'`), `${IMPORT}t = get_secret("GITHUB_TOKEN").encode()`);
  });

  it('splits a longer literal into a concatenation, and uses a field in an f-string', () => {
    assert.equal(
      replaced(`h = {"Authorization": "Bearer ${KEY}"}`),
      `${IMPORT}h = {"Authorization": ("Bearer " + get_secret("GITHUB_TOKEN"))}`
    );
    assert.equal(
      replaced(`u = 'https://${KEY}@github.com/x'`),
      `${IMPORT}u = ('https://' + get_secret("GITHUB_TOKEN") + '@github.com/x')`
    );
    assert.equal(
      replaced(`u = f"https://${KEY}@{host}"`),
      `${IMPORT}u = f"https://{get_secret('GITHUB_TOKEN')}@{host}"`
    );
  });

  it('replaces a value in a comment, and is not fooled by quotes in comments', () => {
    assert.equal(replaced(`x = 1  # it's ${KEY}`), `${IMPORT}x = 1  # it's get_secret("GITHUB_TOKEN")`);
    assert.equal(
      replaced(`# don't\nt = '${KEY}'`),
      `${IMPORT}# don't\nt = get_secret("GITHUB_TOKEN")`
    );
  });

  it('leaves what it cannot replace safely to the user, with the reason', () => {
    const cases: Array<[string, string]> = [
      [`t = """Bearer ${KEY}"""`, 'longer string'],
      [`t = b"Bearer ${KEY}"`, 'longer string'],
      [`t = '${KEY}'; u = '${KEY}'`, 'more than once'],
      [`t = 'x'`, 'no longer in this cell'],
      [`u = ("https://x/?k="\n "${KEY}")`, 'joined to another one'],
      [`u = "${KEY}" "tail"`, 'joined to another one'],
      [`v = f"{os.getenv('K', '${KEY}')}"`, 'f-string expression'],
      [`%env GITHUB_TOKEN=${KEY}`, 'magic or shell line'],
      [`!curl -H "Authorization: ${KEY}"`, 'magic or shell line'],
      [`%%bash\necho "${KEY}"`, 'cell magic'],
      [`t = ${KEY}`, 'not inside a string']
    ];
    for (const [source, reason] of cases) {
      const result = replaceWithSecret(source, KEY, 'GITHUB_TOKEN');
      assert.ok('reason' in result && result.reason.includes(reason), source);
    }
    const bad = replaceWithSecret(`t = '${KEY}'`, KEY, 'A"); import os; ("');
    assert.ok('reason' in bad && bad.reason.includes('not a secret name'));
  });

  it('puts the import after __future__ imports, which must stay first', () => {
    assert.equal(
      replaced(`from __future__ import annotations\nt = '${KEY}'`),
      `from __future__ import annotations\n${IMPORT}t = get_secret("GITHUB_TOKEN")`
    );
  });

  it('splits only between escape sequences, never inside one', () => {
    assert.equal(
      replaced(`v = "\\u00e9${KEY}"`),
      `${IMPORT}v = ("\\u00e9" + get_secret("GITHUB_TOKEN"))`
    );
    const inside = replaceWithSecret('v = "\\x41bcdef0123"', '41bcdef0123', 'HEX_KEY');
    assert.ok('reason' in inside && inside.reason.includes('escape sequence'));
    // a PEM key written with \n escapes: its text is not its value
    const pem = 'MIIEpAIBAAKCAQEA\\nq7Ws2Ld9kQ';
    const key = replaceWithSecret(`k = "-----BEGIN-----\\n${pem}\\n"`, pem, 'PEM');
    assert.ok('reason' in key && key.reason.includes('escape sequence'));
  });

  it('keeps strings with escaped quotes intact', () => {
    assert.equal(
      replaced(`t = "say \\"hi\\" ${KEY}"`),
      `${IMPORT}t = ("say \\"hi\\" " + get_secret("GITHUB_TOKEN"))`
    );
  });
});

describe('suggestName and canMoveToSecret', () => {
  it('suggests a name from the rule, not one already taken', () => {
    assert.equal(suggestName('github-token', []), 'GITHUB_TOKEN');
    assert.equal(suggestName('github-token', ['GITHUB_TOKEN']), 'GITHUB_TOKEN_2');
    assert.equal(suggestName('1password-secret', []), 'KEY_1PASSWORD_SECRET');
  });

  it('offers the move only for source findings in code cells, never for a delivered secret', () => {
    assert.ok(canMoveToSecret(finding(1, 0, 4), 'code'));
    assert.ok(!canMoveToSecret(finding(1, 0, 4), 'markdown'));
    assert.ok(!canMoveToSecret({ ...finding(1, 0, 4), detector: 'known-secret' }, 'code'));
    assert.ok(!canMoveToSecret({ ...finding(1, 0, 4), zone: 'output' }, 'code'));
  });

  it('takes column and length from the refusal only when they are whole numbers', () => {
    const body = {
      findings: [
        { detector: 'd', line: 1, masked: 'm', fingerprint: 'f', zone: 'source', column: 4, length: 9 },
        { detector: 'd', line: 1, masked: 'm', fingerprint: 'f', zone: 'source', column: -1, length: 9 },
        { detector: 'd', line: 1, masked: 'm', fingerprint: 'f', zone: 'source', column: 2, length: 0 }
      ]
    };
    const parsed = parseRefusal(body);
    assert.ok(parsed !== null);
    assert.deepEqual(
      parsed.findings.map(f => [f.column, f.length]),
      [[4, 9], [undefined, undefined], [undefined, undefined]]
    );
  });
});
