// The provider's signing keys, as JWKs.
//
// Generated as PEM and read back before the JWK export: exporting the KeyObject that
// generateKeyPairSync returns can deadlock Node 20 (a garbage collection during the export
// destroys the finished key-generation job, whose destructor waits for the mutex the export
// holds; seen as a provider that never printed its ready line).
// tests/identity/test_provider_process.py runs this under heavy collection.
import crypto from 'node:crypto';

export function newSigningKey(modulusLength = 2048) {
  const { privateKey: pem } = crypto.generateKeyPairSync('rsa', {
    modulusLength,
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
    publicKeyEncoding: { type: 'spki', format: 'pem' },
  });
  const jwk = crypto.createPrivateKey(pem).export({ format: 'jwk' });
  return { ...jwk, kid: crypto.randomUUID(), use: 'sig', alg: 'RS256' };
}
