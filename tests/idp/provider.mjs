// A real OpenID provider (npm oidc-provider) for Qustody's tests and demo.
//
//   node provider.mjs CONFIG.json
//
// CONFIG.json: {"host": "127.0.0.1", "port": 0, "admin_token": "...",
//   "clients": [{"client_id", "client_secret", "redirect_uris": [...]}],
//   "users": {"alice": {"password", "groups": [...], "amr": ["pwd","otp"], "acr": "...",
//             "name", "email", "preferred_username" (default: the account id, also `sub`),
//             "disabled": false}},
//   "ttl": {"AccessToken": 60, "IdToken": 60, "RefreshToken": 3600, "Session": 3600}}
//
// Prints one line `READY <issuer-url>` on stdout once it listens. Login is our own plain
// HTML form (POST username + password) so an HTTP client can drive it without a browser.
// /admin/* (Bearer admin_token) lets tests change users and revoke their grants;
// /admin/requests counts the requests served per path.
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';

import Provider from 'oidc-provider';

import { newSigningKey } from './keys.mjs';

const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const users = new Map(Object.entries(config.users ?? {}));
const adminToken = config.admin_token;
if (!adminToken || adminToken.length < 32) {
  console.error('provider.mjs: admin_token (32+ characters) is required');
  process.exit(2);
}

// -- storage: plain maps (the bundled LRU adapter forgets entries under load) and an
// index by account so the control API can revoke everything a user holds.
const store = new Map();
function expired(entry) {
  return entry.expiresAt && entry.expiresAt < Date.now();
}
class MapAdapter {
  constructor(model) { this.model = model; }
  key(id) { return `${this.model}:${id}`; }
  async upsert(id, payload, expiresIn) {
    store.set(this.key(id), {
      model: this.model, payload, expiresAt: expiresIn ? Date.now() + expiresIn * 1000 : 0,
    });
  }
  async find(id) {
    const entry = store.get(this.key(id));
    if (!entry || expired(entry)) return undefined;
    return entry.payload;
  }
  async findByUid(uid) {
    for (const entry of store.values()) {
      if (entry.model === this.model && entry.payload.uid === uid && !expired(entry)) {
        return entry.payload;
      }
    }
    return undefined;
  }
  async findByUserCode() { return undefined; }
  async consume(id) {
    const entry = store.get(this.key(id));
    if (entry) entry.payload.consumed = Math.floor(Date.now() / 1000);
  }
  async destroy(id) { store.delete(this.key(id)); }
  async revokeByGrantId(grantId) {
    for (const [key, entry] of store) if (entry.payload.grantId === grantId) store.delete(key);
  }
}
function revokeAccount(accountId) {
  let removed = 0;
  for (const [key, entry] of store) {
    if (entry.payload.accountId === accountId) {
      store.delete(key);
      removed += 1;
    }
  }
  return removed;
}

// -- accounts -------------------------------------------------------------------------
async function findAccount(ctx, id) {
  const user = users.get(id);
  if (!user || user.disabled) return undefined;
  return {
    accountId: id,
    async claims() {
      return {
        sub: id,
        preferred_username: user.preferred_username ?? id,
        name: user.name ?? id,
        email: user.email ?? `${id}@example.org`,
        groups: user.groups ?? [],
      };
    },
  };
}

// the first key signs; older ones stay published (key rotation via /admin/rotate-keys)
let signingKeys = [newSigningKey()];
const cookieKeys = [crypto.randomBytes(32).toString('hex')];
const acrValues = [...new Set([...users.values()].map((u) => u.acr).filter(Boolean))];

const host = config.host ?? '127.0.0.1';
const server = http.createServer();
await new Promise((resolve) => { server.listen(config.port ?? 0, host, resolve); });
const issuer = `http://${host}:${server.address().port}`;

function build(keys) {
  const built = new Provider(issuer, {
  adapter: MapAdapter,
  clients: (config.clients ?? []).map((c) => ({
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_post',
    ...c,
  })),
  findAccount,
  jwks: { keys },
  cookies: { keys: cookieKeys },
  claims: {
    // amr/acr/auth_time under openid: every ID token carries how the user signed in
    iss: null, sid: null,
    openid: ['sub', 'amr', 'acr', 'auth_time'],
    profile: ['name', 'preferred_username'],
    email: ['email'],
    groups: ['groups'],
  },
  scopes: ['openid', 'offline_access', 'profile', 'email', 'groups'],
  acrValues,
  // groups, amr and acr in the signed ID token (the hub trusts only what it verifies)
  conformIdTokenClaims: false,
  features: {
    devInteractions: { enabled: false },
    revocation: { enabled: true },
    rpInitiatedLogout: { enabled: true },
  },
  pkce: { required: () => true, methods: ['S256'] },
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: true,
  ttl: {
    AccessToken: 60, AuthorizationCode: 60, IdToken: 60, Interaction: 600,
    RefreshToken: 3600, Session: 3600, Grant: 3600,
    ...(config.ttl ?? {}),
  },
  // first-party client: consent is implied; each login gets a fresh grant
  async loadExistingGrant(ctx) {
    const { client, session } = ctx.oidc;
    const grant = new ctx.oidc.provider.Grant({ clientId: client.clientId, accountId: session.accountId });
    grant.addOIDCScope('openid offline_access profile email groups');
    await grant.save();
    return grant;
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = `<!doctype html><title>Sign-in error</title><h1>Sign-in error</h1><p>${escape(out.error)}: ${escape(out.error_description ?? '')}</p>`;
  },
  });
  built.on('server_error', (ctx, err) => console.error('server_error', err));
  return built;
}
let provider = build(signingKeys);
let callback = provider.callback();

function escape(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function loginPage(uid, message) {
  return `<!doctype html><html><head><title>Qustody test IdP: sign in</title></head><body>
<h1>Sign in</h1>${message ? `<p class="error">${escape(message)}</p>` : ''}
<form method="post" action="/interaction/${escape(uid)}/login">
<label>Username <input name="username" autofocus></label>
<label>Password <input name="password" type="password"></label>
<button type="submit">Sign in</button></form></body></html>`;
}

async function readBody(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 65536) throw new Error('body too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function send(res, status, body, type = 'application/json') {
  res.writeHead(status, { 'Content-Type': type, 'Cache-Control': 'no-store' });
  res.end(type === 'application/json' ? JSON.stringify(body) : body);
}

function tokenMatches(header) {
  const given = Buffer.from(String(header ?? '').replace(/^Bearer /, ''));
  const want = Buffer.from(adminToken);
  return given.length === want.length && crypto.timingSafeEqual(given, want);
}

// -- the control API (tests only) ----------------------------------------------------
async function admin(req, res, path) {
  if (!tokenMatches(req.headers.authorization)) return send(res, 401, { error: 'admin token required' });
  if (req.method !== 'POST') return send(res, 405, { error: 'POST only' });
  let body;
  try {
    body = JSON.parse((await readBody(req)) || '{}');
  } catch {
    return send(res, 400, { error: 'body must be JSON' });
  }
  let m = path.match(/^\/admin\/users\/([^/]+)$/);
  if (m) {
    const name = decodeURIComponent(m[1]);
    const user = users.get(name) ?? {};
    for (const key of ['password', 'groups', 'amr', 'acr', 'disabled', 'name', 'email', 'preferred_username']) {
      if (key in body) user[key] = body[key];
    }
    users.set(name, user);
    return send(res, 200, { user: name });
  }
  m = path.match(/^\/admin\/users\/([^/]+)\/revoke$/);
  if (m) return send(res, 200, { removed: revokeAccount(decodeURIComponent(m[1])) });
  if (path === '/admin/requests') return send(res, 200, Object.fromEntries(requests));
  if (path === '/admin/rotate-keys') {
    // sessions, grants and tokens live in `store`, so they survive the rebuilt provider
    signingKeys = [newSigningKey(), ...signingKeys];
    provider = build(signingKeys);
    callback = provider.callback();
    return send(res, 200, { kid: signingKeys[0].kid });
  }
  if (path === '/admin/clients') {
    const client = {
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_post',
      ...body,
    };
    await new MapAdapter('Client').upsert(client.client_id, client);
    return send(res, 200, { client_id: client.client_id });
  }
  return send(res, 404, { error: 'unknown admin path' });
}

// -- our login form for the interaction ------------------------------------------------
async function interaction(req, res, path) {
  const details = await provider.interactionDetails(req, res);
  const { uid, prompt } = details;
  if (prompt.name === 'consent') {
    // loadExistingGrant normally covers consent; finish it here for completeness
    const grant = new provider.Grant({ clientId: details.params.client_id, accountId: details.session.accountId });
    grant.addOIDCScope(details.params.scope);
    const grantId = await grant.save();
    return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  }
  if (req.method === 'GET') return send(res, 200, loginPage(uid), 'text/html');
  if (req.method === 'POST' && path.endsWith('/login')) {
    const form = new URLSearchParams(await readBody(req));
    const name = form.get('username') ?? '';
    const user = users.get(name);
    const given = Buffer.from(form.get('password') ?? '');
    const want = Buffer.from(user?.password ?? crypto.randomBytes(16).toString('hex'));
    const ok = user && !user.disabled && given.length === want.length && crypto.timingSafeEqual(given, want);
    if (!ok) return send(res, 200, loginPage(uid, 'Wrong username or password.'), 'text/html');
    const login = { accountId: name, amr: user.amr ?? ['pwd'] };
    if (user.acr) login.acr = user.acr;
    return provider.interactionFinished(req, res, { login }, { mergeWithLastSubmission: false });
  }
  return send(res, 405, 'method not allowed', 'text/plain');
}

// requests served per path (not /admin/*), so tests can count what the hub asked for
const requests = new Map();

server.on('request', async (req, res) => {
  const path = new URL(req.url, issuer).pathname;
  if (!path.startsWith('/admin/')) requests.set(path, (requests.get(path) ?? 0) + 1);
  try {
    if (path.startsWith('/admin/')) return await admin(req, res, path);
    if (path.startsWith('/interaction/')) return await interaction(req, res, path);
  } catch (err) {
    return send(res, 400, `<!doctype html><p>${escape(err.message)}</p>`, 'text/html');
  }
  return callback(req, res);
});

process.on('SIGTERM', () => server.close(() => process.exit(0)));
console.log(`READY ${issuer}`);
