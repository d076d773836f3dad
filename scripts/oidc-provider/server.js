// A real OpenID Connect provider for Ferry's end-to-end tests (tests/auth_oidc.rs, tests/oidc_sign_in.rs):
// panva/oidc-provider with client-credentials clients, two resource servers (so that access tokens are JWTs with
// an audience), and an authorization-code client with accounts for the dashboard's sign-in.
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
//   VIEWER_CLIENT_ID / OPERATOR_CLIENT_ID
//                               two more clients (default `watch` / `team`, secret = id + `-secret`) whose access
//                               tokens carry `roles: ["ferry-viewer"]`, and `roles: ["ferry-operator"]` with
//                               `ferry_tenants: ["acme"]`
//   SIGN_IN_CLIENT_ID / SIGN_IN_CLIENT_SECRET
//                               the authorization-code client of Ferry's dashboard sign-in (default
//                               `ferry-dashboard` / `dashboard-secret`): PKCE (S256) required, client_secret_basic
//   SIGN_IN_REDIRECT_URI        its redirect URI (default `http://127.0.0.1/api/v1/session/oidc/callback`); the
//                               client is a native one, so on a loopback address any port is accepted
//                               (RFC 8252 §7.3) and a test need not know Ferry's port before starting this
//
// Sign-in uses the provider's development login form (devInteractions: any password; POST the form, then the
// consent form). The accounts and the claims of their ID tokens (scope `profile`):
//   ada    roles ["ferry-admin"]
//   otto   roles ["ferry-operator"], ferry_tenants ["acme"]
//   vera   roles ["ferry-viewer"]
//   nemo   roles ["staff"] (no role in Ferry)
//   any other login: no roles

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
const viewerClientId = process.env.VIEWER_CLIENT_ID ?? 'watch';
const operatorClientId = process.env.OPERATOR_CLIENT_ID ?? 'team';
const signInClientId = process.env.SIGN_IN_CLIENT_ID ?? 'ferry-dashboard';
const signInClientSecret = process.env.SIGN_IN_CLIENT_SECRET ?? 'dashboard-secret';
const signInRedirectUri = process.env.SIGN_IN_REDIRECT_URI ?? 'http://127.0.0.1/api/v1/session/oidc/callback';

// The people who can sign in, and what their ID tokens say.
const accounts = {
  ada: { roles: ['ferry-admin'] },
  otto: { roles: ['ferry-operator'], ferry_tenants: ['acme'] },
  vera: { roles: ['ferry-viewer'] },
  nemo: { roles: ['staff'] },
};

// What the role clients' access tokens carry, as an identity provider's role mapping would.
const clientClaims = {
  [adminClientId]: { roles: ['ferry-admin'] },
  [viewerClientId]: { roles: ['ferry-viewer'] },
  [operatorClientId]: { roles: ['ferry-operator'], ferry_tenants: ['acme'] },
};

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
  // The ID token from the token endpoint carries the scopes' claims (roles), as Keycloak's can.
  conformIdTokenClaims: false,
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
    ...[[adminClientId, adminClientSecret], [viewerClientId, `${viewerClientId}-secret`],
      [operatorClientId, `${operatorClientId}-secret`]].map(([id, secret]) => ({
      client_id: id,
      client_secret: secret,
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: alg,
      scope: 'tunnel',
    })),
    {
      client_id: signInClientId,
      client_secret: signInClientSecret,
      application_type: 'native',
      grant_types: ['authorization_code'],
      redirect_uris: [signInRedirectUri],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: alg,
    },
  ],
  extraTokenClaims: async (ctx, token) => clientClaims[token.clientId],
  findAccount: async (ctx, id) => ({
    accountId: id,
    claims: async () => ({ sub: id, preferred_username: id, ...(accounts[id] ?? {}) }),
  }),
  claims: {
    openid: ['sub'],
    profile: ['preferred_username', 'roles', 'ferry_tenants'],
    email: ['email', 'email_verified'],
  },
  // PKCE (S256) for every authorization request, confidential client or not.
  pkce: { required: () => true },
  jwks: { keys: [signingKey(alg)] },
  scopes: ['openid', 'profile', 'email', 'tunnel'],
  features: {
    // The development login and consent forms, driven by the tests with plain HTTP.
    devInteractions: { enabled: true },
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
