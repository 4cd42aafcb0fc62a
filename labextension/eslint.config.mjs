// eslint 9 flat config: typescript-eslint's type-aware recommended rules.
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['lib/', 'prebuilt/', 'build-test/', 'node_modules/', '*.mjs', 'build.py'] },
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { project: ['./tsconfig.json', './tsconfig.test.json'], tsconfigRootDir: import.meta.dirname }
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/explicit-module-boundary-types': 'off',
      eqeqeq: 'error',
      'no-console': 'error'
    }
  },
  // node:test's describe/it return promises the runner itself awaits
  { files: ['test/**'], rules: { '@typescript-eslint/no-floating-promises': 'off' } }
);
