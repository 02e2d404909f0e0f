// `@node-oauth/oauth2-server` (the maintained oauth2-server for Node) on 127.0.0.1 with a small
// in-memory model, for tokend's interop tests (tests/it/interop.rs). Prints {"port": N} on
// stdout once listening and exits when its stdin closes.
//
// Client `tokend` / $CLIENT_SECRET (default `app-secret`), grants password and refresh_token;
// user `alice` / $USER_PASSWORD (default `alice-pass`). Access tokens live $TTL seconds
// (default 2). The library's default `alwaysIssueNewRefreshToken` rotates the refresh token
// on every use, and the model's revokeToken() deletes the used one, so a refresh token works
// exactly once. $SEED_REFRESH_TOKEN, when set, is a refresh token for alice known from the start.
//
// The server's own view, on extra routes under /admin/:
//   GET /admin/log              every token request (grant, status, error, the refresh token
//                               presented, the tokens issued), every refresh token ever
//                               presented to getRefreshToken(), and the password logins
//   GET /admin/check?token=     the library's authenticate() on `Authorization: Bearer token`
//   GET /admin/revoke?user=     revokes every live refresh token of that user (server-side
//                               revocation of the chain)

'use strict';

const http = require('node:http');
const OAuth2Server = require('@node-oauth/oauth2-server');

const { Request, Response } = OAuth2Server;

const TTL = Number(process.env.TTL || '2');
const CLIENT = {
  id: 'tokend',
  secret: process.env.CLIENT_SECRET || 'app-secret',
  grants: ['password', 'refresh_token'],
};
const USERS = { alice: { id: 'alice', username: 'alice', password: process.env.USER_PASSWORD || 'alice-pass' } };

const accessTokens = new Map();
const refreshTokens = new Map();
const requests = [];
const presented = [];
const logins = [];

if (process.env.SEED_REFRESH_TOKEN) {
  refreshTokens.set(process.env.SEED_REFRESH_TOKEN, {
    refreshToken: process.env.SEED_REFRESH_TOKEN,
    refreshTokenExpiresAt: new Date(Date.now() + 3600 * 1000),
    scope: undefined,
    client: CLIENT,
    user: USERS.alice,
  });
}

const model = {
  async getClient(clientId, clientSecret) {
    if (clientId !== CLIENT.id) return null;
    if (clientSecret != null && clientSecret !== CLIENT.secret) return null;
    return CLIENT;
  },
  async getUser(username, password) {
    const user = USERS[username];
    const ok = !!user && user.password === password;
    logins.push({ username, ok });
    return ok ? user : null;
  },
  async saveToken(token, client, user) {
    const saved = { ...token, client, user };
    accessTokens.set(token.accessToken, saved);
    if (token.refreshToken) refreshTokens.set(token.refreshToken, saved);
    return saved;
  },
  async getAccessToken(accessToken) {
    return accessTokens.get(accessToken) || null;
  },
  async getRefreshToken(refreshToken) {
    presented.push(refreshToken);
    return refreshTokens.get(refreshToken) || null;
  },
  async revokeToken(token) {
    return refreshTokens.delete(token.refreshToken);
  },
  async verifyScope() {
    return true;
  },
};

const oauth = new OAuth2Server({
  model,
  accessTokenLifetime: TTL,
  refreshTokenLifetime: 3600,
});

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function send(res, status, body, headers = {}) {
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(JSON.stringify(body));
}

async function token(req, res) {
  const raw = await readBody(req);
  const body = Object.fromEntries(new URLSearchParams(raw));
  const request = new Request({ method: req.method, headers: req.headers, query: {}, body });
  const response = new Response({ headers: {} });
  const entry = {
    at_ms: Date.now(),
    grant_type: body.grant_type ?? null,
    auth: req.headers.authorization ? req.headers.authorization.split(' ')[0].toLowerCase() : (body.client_secret ? 'post' : null),
    refresh_token: body.refresh_token ?? null,
  };
  try {
    await oauth.token(request, response);
  } catch {
    // The library has already put the RFC 6749 §5.2 error body and status on `response`.
  }
  entry.status = response.status;
  entry.error = response.body?.error ?? null;
  entry.error_description = response.body?.error_description ?? null;
  entry.access_token = response.body?.access_token ?? null;
  entry.issued_refresh_token = response.body?.refresh_token ?? null;
  requests.push(entry);
  send(res, response.status, response.body, response.headers);
}

async function check(tokenValue) {
  const request = new Request({
    method: 'GET',
    headers: { authorization: `Bearer ${tokenValue}` },
    query: {},
    body: {},
  });
  try {
    const t = await oauth.authenticate(request, new Response({ headers: {} }));
    return { active: true, user: t.user.username, expires_at_ms: t.accessTokenExpiresAt.getTime() };
  } catch (err) {
    return { active: false, reason: err.message };
  }
}

async function handle(req, res) {
  const url = new URL(req.url, 'http://127.0.0.1');
  if (url.pathname === '/token' && req.method === 'POST') return token(req, res);
  if (url.pathname === '/admin/log') return send(res, 200, { requests, presented, logins });
  if (url.pathname === '/admin/check') return send(res, 200, await check(url.searchParams.get('token') || ''));
  if (url.pathname === '/admin/revoke') {
    const user = url.searchParams.get('user');
    const revoked = [];
    for (const [value, t] of refreshTokens) {
      if (t.user.username === user) {
        refreshTokens.delete(value);
        revoked.push(value);
      }
    }
    return send(res, 200, { revoked });
  }
  return send(res, 404, { error: 'not_found' });
}

const server = http.createServer((req, res) => {
  handle(req, res).catch((err) => send(res, 500, { error: 'fixture_error', error_description: String(err.stack || err) }));
});
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ port: server.address().port })}\n`);
});

process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();
