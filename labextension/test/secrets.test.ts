import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';

import { IMPORT_LINE, parseSecrets, snippet } from '../src/secrets';

describe('parseSecrets', () => {
  it('reads names, classes and versions, sorted by name', () => {
    const body = {
      broker: 'embedded',
      secrets: [
        { name: 'IBMQ_TOKEN', class: 'prod', version: 3 },
        { name: 'AWS_KEY', class: 'dev', version: 1 }
      ]
    };
    assert.deepEqual(parseSecrets(body), [
      { name: 'AWS_KEY', cls: 'dev', version: 1 },
      { name: 'IBMQ_TOKEN', cls: 'prod', version: 3 }
    ]);
  });

  it('leaves out what is not a well-formed name or class', () => {
    const body = {
      secrets: [
        { name: '<img src=x onerror=alert(1)>', class: 'prod' },
        { name: 'OK', class: 'Prod!' },
        { name: 'GOOD', class: 'dev', version: '2' },
        null,
        'NAME'
      ]
    };
    assert.deepEqual(parseSecrets(body), [{ name: 'GOOD', cls: 'dev', version: null }]);
  });

  it('is empty for a body that is not the server answer', () => {
    for (const body of [null, 'x', 42, {}, { secrets: 'A' }]) {
      assert.deepEqual(parseSecrets(body), []);
    }
  });
});

describe('snippet', () => {
  it('adds the import once', () => {
    assert.deepEqual(snippet('TOKEN', 'x = 1\n'), {
      prefix: `${IMPORT_LINE}\n`,
      call: 'get_secret("TOKEN")'
    });
    assert.deepEqual(snippet('TOKEN', `${IMPORT_LINE}\nx = `), {
      prefix: '',
      call: 'get_secret("TOKEN")'
    });
  });

  it('refuses a name that could break out of the string', () => {
    assert.equal(snippet('A"); import os; ("', ''), null);
    assert.equal(snippet('', ''), null);
  });
});
