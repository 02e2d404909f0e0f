// An unmodified `oidc-provider` (panva/node-oidc-provider) on 127.0.0.1, for tokend's interop
// tests (tests/it/interop.rs). Prints {"port": N} on stdout once listening and exits when its
// stdin closes, so a test runner that dies never leaves it behind.
//
// Clients (secret from $CLIENT_SECRET, by default one full of form-reserved characters):
//   tokend-post   client_secret_post,  grant client_credentials
//   tokend-basic  client_secret_basic, grant client_credentials
//   introspector  client_secret_post,  used only by /admin/check to call the real
//                 introspection endpoint
// Resource indicator `urn:tokend:api` makes the provider issue JWT access tokens (at+jwt);
// without `resource` it issues opaque ones. Both live $TTL seconds (default 5).
//
// The provider's own view, for assertions, on extra routes under /admin/:
//   GET /admin/log           every token/discovery request: time, grant, client, how the client
//                            authenticated, resource, status, error, error_description, token
//   GET /admin/check?token=  JWT: signature, issuer and expiry checked against the provider's
//                            JWKS; opaque: the provider's introspection endpoint answer

import http from 'node:http';

import * as jose from 'jose';
import Provider, { errors } from 'oidc-provider';

const SECRET = process.env.CLIENT_SECRET ?? 'a:b%c+d e&f=g/h?';
const TTL = Number(process.env.TTL ?? '5');
const RESOURCE = 'urn:tokend:api';
const INTROSPECTOR = { id: 'introspector', secret: 'introspector-secret' };

const log = [];

const server = http.createServer();
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const provider = makeProvider(issuer);
  const callback = provider.callback();
  server.on('request', (req, res) => {
    if (req.url.startsWith('/admin/')) {
      admin(issuer, req, res).catch((err) => {
        res.writeHead(500, { 'content-type': 'text/plain' });
        res.end(String(err?.stack ?? err));
      });
    } else {
      callback(req, res);
    }
  });
  process.stdout.write(`${JSON.stringify({ port })}\n`);
});

process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();

function makeProvider(issuer) {
  const cc = (id, method) => ({
    client_id: id,
    client_secret: SECRET,
    token_endpoint_auth_method: method,
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
    scope: 'read write',
  });
  const provider = new Provider(issuer, {
    clients: [
      cc('tokend-post', 'client_secret_post'),
      cc('tokend-basic', 'client_secret_basic'),
      {
        client_id: INTROSPECTOR.id,
        client_secret: INTROSPECTOR.secret,
        token_endpoint_auth_method: 'client_secret_post',
        grant_types: [],
        redirect_uris: [],
        response_types: [],
      },
    ],
    scopes: ['openid', 'read', 'write'],
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => undefined,
        useGrantedResource: () => false,
        getResourceServerInfo(ctx, resourceIndicator) {
          if (resourceIndicator !== RESOURCE) throw new errors.InvalidTarget();
          return {
            scope: 'read write',
            audience: RESOURCE,
            accessTokenTTL: TTL,
            accessTokenFormat: 'jwt',
          };
        },
      },
    },
    ttl: {
      ClientCredentials: (ctx, token) => token.resourceServer?.accessTokenTTL ?? TTL,
    },
  });

  provider.use(async (ctx, next) => {
    const started = Date.now();
    await next();
    const token = ctx.path === '/token' && ctx.method === 'POST';
    const discovery = ctx.path === '/.well-known/openid-configuration';
    if (!token && !discovery) return;
    const params = ctx.oidc?.params ?? {};
    const authorization = ctx.get('authorization');
    log.push({
      at_ms: started,
      method: ctx.method,
      path: ctx.path,
      status: ctx.status,
      grant_type: params.grant_type ?? null,
      // The client the provider authenticated, and how the request carried its secret.
      client_id: ctx.oidc?.client?.clientId ?? null,
      auth: authorization ? authorization.split(' ')[0].toLowerCase() : (params.client_secret ? 'post' : null),
      resource: params.resource ?? null,
      scope: params.scope ?? null,
      error: ctx.body?.error ?? null,
      error_description: ctx.body?.error_description ?? null,
      access_token: ctx.body?.access_token ?? null,
      expires_in: ctx.body?.expires_in ?? null,
    });
  });
  return provider;
}

async function admin(issuer, req, res) {
  const url = new URL(req.url, issuer);
  let body;
  if (url.pathname === '/admin/log') {
    body = log;
  } else if (url.pathname === '/admin/check') {
    body = await check(issuer, url.searchParams.get('token') ?? '');
  } else {
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('no such admin route');
    return;
  }
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

async function check(issuer, token) {
  if (token.split('.').length === 3) {
    // Structured tokens cannot go through the introspection endpoint (the provider refuses
    // them there): verify them the way a resource server does, with the provider's JWKS.
    const jwks = jose.createLocalJWKSet(await (await fetch(`${issuer}/jwks`)).json());
    try {
      const { payload, protectedHeader } = await jose.jwtVerify(token, jwks, {
        issuer,
        audience: RESOURCE,
        typ: 'at+jwt',
      });
      return { format: 'jwt', active: true, header: protectedHeader, claims: payload };
    } catch (err) {
      return { format: 'jwt', active: false, reason: String(err?.message ?? err) };
    }
  }
  const answer = await fetch(`${issuer}/token/introspection`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      token,
      client_id: INTROSPECTOR.id,
      client_secret: INTROSPECTOR.secret,
    }),
  });
  return { format: 'opaque', introspection_status: answer.status, ...(await answer.json()) };
}
