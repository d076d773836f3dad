// A real OpenID Connect provider for Ferry's end-to-end tests (tests/auth_oidc.rs): panva/oidc-provider with
// one client-credentials client and two resource servers, so that access tokens are JWTs with an audience.
//
//   node server.js [PORT]        (PORT, or the PORT environment variable; 0 or nothing: an OS-chosen port)
//
// Listens on 127.0.0.1 and prints `oidc-provider listening on http://127.0.0.1:PORT` once it accepts requests.
// Discovery: {issuer}/.well-known/openid-configuration; token endpoint: {issuer}/token.
//
// Environment (all optional):
//   CLIENT_ID / CLIENT_SECRET   the client (default `demo` / `demo-secret`; the client id is Ferry's tenant)
//   FERRY_RESOURCE              the resource indicator of Ferry's tunnel (default `urn:ferry:tunnel`), whose
//                               tokens carry `aud` = FERRY_AUDIENCE (default `ferry-tunnel`); it is the
//                               default resource, so a client that names none gets a token for Ferry
//   OTHER_RESOURCE              a second resource (default `urn:example:other`), `aud` = itself: a token for it
//                               is a valid token of this provider with the wrong audience for Ferry
//   SIGNING_ALG                 RS256 (default), PS256, ES256 or EdDSA: the key the provider signs with
//   ADMIN_CLIENT_ID / ADMIN_CLIENT_SECRET
//                               a second client (default `ops` / `ops-secret`) whose access tokens carry
//                               `roles: ["ferry-admin"]`: an admin of Ferry's management API

import { generateKeyPairSync } from 'node:crypto';
import http from 'node:http';

import Provider, { errors } from 'oidc-provider';

const port = Number(process.argv[2] ?? process.env.PORT ?? 0);
const clientId = process.env.CLIENT_ID ?? 'demo';
const clientSecret = process.env.CLIENT_SECRET ?? 'demo-secret';
const ferryResource = process.env.FERRY_RESOURCE ?? 'urn:ferry:tunnel';
const ferryAudience = process.env.FERRY_AUDIENCE ?? 'ferry-tunnel';
const otherResource = process.env.OTHER_RESOURCE ?? 'urn:example:other';
const alg = process.env.SIGNING_ALG ?? 'RS256';
const adminClientId = process.env.ADMIN_CLIENT_ID ?? 'ops';
const adminClientSecret = process.env.ADMIN_CLIENT_SECRET ?? 'ops-secret';

function signingKey(algorithm) {
  const kinds = {
    RS256: ['rsa', { modulusLength: 2048 }],
    PS256: ['rsa', { modulusLength: 2048 }],
    ES256: ['ec', { namedCurve: 'P-256' }],
    EdDSA: ['ed25519', {}],
  };
  const kind = kinds[algorithm];
  if (!kind) {
    throw new Error(`SIGNING_ALG ${algorithm} is not one of ${Object.keys(kinds).join(', ')}`);
  }
  const { privateKey } = generateKeyPairSync(kind[0], kind[1]);
  return { ...privateKey.export({ format: 'jwk' }), kid: `test-${algorithm.toLowerCase()}`, alg: algorithm, use: 'sig' };
}

const resourceServers = {
  [ferryResource]: { scope: 'tunnel', audience: ferryAudience },
  [otherResource]: { scope: 'tunnel', audience: otherResource },
};

const configuration = {
  clients: [
    {
      client_id: clientId,
      client_secret: clientSecret,
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
      token_endpoint_auth_method: 'client_secret_basic',
      // Client metadata is checked against the algorithms the provider's keys allow.
      id_token_signed_response_alg: alg,
      scope: 'tunnel',
    },
    {
      client_id: adminClientId,
      client_secret: adminClientSecret,
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: alg,
      scope: 'tunnel',
    },
  ],
  // The admin client's tokens name its role, as an identity provider's role mapping would.
  extraTokenClaims: async (ctx, token) =>
    token.clientId === adminClientId ? { roles: ['ferry-admin'] } : undefined,
  jwks: { keys: [signingKey(alg)] },
  scopes: ['tunnel'],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => ferryResource,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resourceIndicator) => {
        const server = resourceServers[resourceIndicator];
        if (!server) {
          throw new errors.InvalidTarget();
        }
        return {
          ...server,
          accessTokenFormat: 'jwt',
          accessTokenTTL: 300,
          jwt: { sign: { alg } },
        };
      },
    },
  },
};

const server = http.createServer();
server.listen(port, '127.0.0.1', () => {
  const { port: bound } = server.address();
  const issuer = `http://127.0.0.1:${bound}`;
  const provider = new Provider(issuer, configuration);
  provider.on('server_error', (ctx, error) => console.error('server_error', error));
  provider.on('grant.error', (ctx, error) => console.error('grant.error', error.message, error.error_description ?? ''));
  server.on('request', provider.callback());
  console.log(`oidc-provider listening on ${issuer}`);
});

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
