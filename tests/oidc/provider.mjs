// A real OpenID provider for Assay's single sign-on tests: the maintained
// `oidc-provider` package (a certified OpenID Connect implementation) on a
// loopback port, with one client (Assay). In place of a login page, the
// account named by the browser's `login_as` cookie (its `sub`) signs in
// and consents at once, so that a test can walk the flow with an HTTP
// client. An account may have its ID tokens spoiled, to show that Assay
// refuses them:
//   "signature": the payload changed after signing (the signature no longer matches),
//   "audience":  re-signed with the provider's own key for another audience,
//   "expired":   re-signed with the provider's own key, expired an hour ago,
//   "nonce":     re-signed with the provider's own key, for another nonce.
// An account's claims that are null are left out of its tokens.
//
// Usage: node provider.mjs '<json>', the JSON being
//   {"client": {"client_id", "client_secret", "redirect_uri"},
//    "accounts": [{"sub", "email", "email_verified", "groups",
//                  "spoil": null | "signature" | "audience" | "expired" | "nonce"}]}
// It prints {"issuer": "http://127.0.0.1:PORT"} once it listens, and exits
// when its standard input closes (when the test that started it ends).

import http from "node:http";
import Provider from "oidc-provider";
import { CompactSign, decodeProtectedHeader, exportJWK, generateKeyPair, importJWK } from "jose";

const { client, accounts } = JSON.parse(process.argv[2]);
const bySub = new Map(accounts.map((a) => [a.sub, a]));

const { privateKey } = await generateKeyPair("RS256", { extractable: true });
const signingJwk = { ...(await exportJWK(privateKey)), kid: "test-key", alg: "RS256", use: "sig" };
const signingKey = await importJWK(signingJwk, "RS256");

const server = http.createServer();
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: client.client_id,
      client_secret: client.client_secret,
      redirect_uris: [client.redirect_uri],
      grant_types: ["authorization_code"],
      response_types: ["code"],
    },
  ],
  jwks: { keys: [signingJwk] },
  cookies: { keys: ["assay-test-cookie-key"], names: { session: "op_session", interaction: "op_interaction", resume: "op_resume" } },
  pkce: { required: () => true },
  claims: { openid: ["sub"], email: ["email", "email_verified"], groups: ["groups"] },
  // The claims go in the ID token, where Assay reads them.
  conformIdTokenClaims: false,
  features: { devInteractions: { enabled: false } },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(ctx, id) {
    const account = bySub.get(id);
    if (!account) return undefined;
    const { spoil, ...given } = account;
    const claims = Object.fromEntries(Object.entries(given).filter(([, v]) => v !== null));
    return {
      accountId: id,
      async claims() {
        return { ...claims, sub: id };
      },
    };
  },
});

// The login and consent pages: the `login_as` account signs in and
// consents at once.
provider.use(async (ctx, next) => {
  const match = ctx.path.match(/^\/interaction\/([^/]+)$/);
  if (!match) return next();
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  let result;
  if (details.prompt.name === "login") {
    const sub = ctx.cookies.get("login_as") || accounts[0].sub;
    result = { login: { accountId: sub } };
  } else {
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: details.session.accountId, clientId: client.client_id });
    const missing = details.prompt.details;
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(" "));
    if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes || {})) {
      grant.addResourceScope(indicator, scopes.join(" "));
    }
    result = { consent: { grantId: await grant.save() } };
  }
  const to = await provider.interactionResult(ctx.req, ctx.res, result, { mergeWithLastSubmission: false });
  ctx.status = 303;
  ctx.redirect(to);
});

const encode = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
const decode = (part) => JSON.parse(Buffer.from(part, "base64url").toString());

async function resign(token, change) {
  const [, payload] = token.split(".");
  const claims = change(decode(payload));
  return new CompactSign(Buffer.from(JSON.stringify(claims)))
    .setProtectedHeader(decodeProtectedHeader(token))
    .sign(signingKey);
}

// Spoils the ID tokens of the accounts that ask for it.
provider.use(async (ctx, next) => {
  await next();
  if (ctx.oidc?.route !== "token" || ctx.status !== 200 || !ctx.body?.id_token) return;
  const token = ctx.body.id_token;
  const account = bySub.get(decode(token.split(".")[1]).sub);
  const now = Math.floor(Date.now() / 1000);
  switch (account?.spoil) {
    case "signature": {
      const [header, payload, signature] = token.split(".");
      const claims = { ...decode(payload), email: "mallory@example.com" };
      ctx.body = { ...ctx.body, id_token: `${header}.${encode(claims)}.${signature}` };
      break;
    }
    case "audience":
      ctx.body = { ...ctx.body, id_token: await resign(token, (c) => ({ ...c, aud: "someone-else" })) };
      break;
    case "expired":
      ctx.body = {
        ...ctx.body,
        id_token: await resign(token, (c) => ({ ...c, iat: now - 7200, exp: now - 3600 })),
      };
      break;
    case "nonce":
      ctx.body = { ...ctx.body, id_token: await resign(token, (c) => ({ ...c, nonce: "another-nonce" })) };
      break;
    default:
  }
});

server.on("request", provider.callback());
process.stdout.write(`${JSON.stringify({ issuer })}\n`);
process.stdin.on("end", () => process.exit(0));
process.stdin.on("close", () => process.exit(0));
process.stdin.resume();
