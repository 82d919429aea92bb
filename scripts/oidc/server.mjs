// A real OpenID Connect provider (node-oidc-provider) for airlock's tests, on
// loopback. Started by scripts/setup/oidc.sh; prints "issuer <url>" once it
// listens. Test-only: fixed accounts, plain HTML forms, in-memory storage.
//
// Environment:
//   OIDC_PORT            port on 127.0.0.1 (0 = any free port)
//   OIDC_CLIENT_ID       airlock's client id      (default "airlock")
//   OIDC_CLIENT_SECRET   airlock's client secret  (default "airlock-test-secret")
//
// Pages (what a browser or HTTP test fills in):
//   GET  /interaction/<uid>          login form (prompt=login) or consent form (prompt=consent)
//   POST /interaction/<uid>/login    fields: login, password, mfa (checkbox, value "otp"; optional)
//   POST /interaction/<uid>/confirm  consent "Allow" (no fields)
//   POST /interaction/<uid>/abort    consent "Deny" -> access_denied back at the client
//   GET  /device                     device-flow code entry (fields: xsrf, user_code), then
//                                    confirmation (fields: xsrf, user_code, confirm=yes), then the
//                                    same login/consent interaction as above
// Accounts: see ACCOUNTS below; every password is "password".
// MFA: ticking "mfa" logs in with amr ["pwd","otp"] and acr "urn:airlock:test:mfa";
// without it amr is ["pwd"] and acr "urn:airlock:test:pwd".

import http from 'node:http';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import Provider from 'oidc-provider';

const ACCOUNTS = {
  alice: { email: 'alice@example.com', groups: ['engineers'] },
  bob: { email: 'bob@example.com', groups: ['payments-eng', 'sre'] },
  carol: { email: 'carol@example.com', groups: ['security', 'airlock-admins'] },
  // A group name airlock must drop (not a valid GroupName) next to a valid one.
  dave: { email: 'dave@example.com', groups: ['payments-eng', 'Bad Group!'] },
  erin: { email: 'erin@example.com', groups: [] },
  // Identity attacks: another account presenting alice's name, and one whose
  // chosen user name is the reviewer group `sre`.
  'alice-impostor': { email: 'mallory@example.com', groups: [], username: 'alice' },
  'sre-squatter': { email: 'squatter@example.com', groups: [], username: 'sre' },
};
const PASSWORD = 'password';
const ACR_PWD = 'urn:airlock:test:pwd';
const ACR_MFA = 'urn:airlock:test:mfa';

const port = Number(process.env.OIDC_PORT || 0);
const clientId = process.env.OIDC_CLIENT_ID || 'airlock';
const clientSecret = process.env.OIDC_CLIENT_SECRET || 'airlock-test-secret';

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const page = (title, body) => `<!DOCTYPE html><html><head><meta charset="utf-8"><title>${esc(title)}</title></head>
<body><h1>${esc(title)}</h1>${body}</body></html>`;

function jwk(type, opts, alg) {
  const key = generateKeyPairSync(type, opts).privateKey.export({ format: 'jwk' });
  return { ...key, alg, use: 'sig', kid: `${alg.toLowerCase()}-${randomBytes(4).toString('hex')}` };
}

function findAccount(_ctx, id) {
  const a = ACCOUNTS[id];
  if (!a) return undefined;
  return {
    accountId: id,
    async claims() {
      return { sub: id, preferred_username: a.username || id, email: a.email, email_verified: true, groups: a.groups };
    },
  };
}

async function start() {
  // Listen first: the issuer URL needs the port.
  const server = http.createServer();
  await new Promise((ok) => server.listen(port, '127.0.0.1', ok));
  const issuer = `http://127.0.0.1:${server.address().port}`;

  const provider = new Provider(issuer, {
    clients: [{
      client_id: clientId,
      client_secret: clientSecret,
      client_name: 'airlock',
      // native: http://127.0.0.1 redirect URIs match on any port (RFC 8252 7.3),
      // because tests start airlock on random ports.
      application_type: 'native',
      redirect_uris: ['http://127.0.0.1/ui/oidc/callback', 'http://localhost/ui/oidc/callback'],
      grant_types: ['authorization_code', 'urn:ietf:params:oauth:grant-type:device_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    }],
    findAccount,
    claims: {
      // amr/acr/auth_time ride with `openid`: standalone claims would only be
      // released when asked for with the `claims` parameter.
      openid: ['sub', 'acr', 'amr', 'auth_time'],
      profile: ['preferred_username'],
      email: ['email', 'email_verified'],
      groups: ['groups'],
    },
    scopes: ['openid', 'profile', 'email', 'groups', 'offline_access'],
    // Put scope claims in the ID token (airlock reads only the ID token).
    conformIdTokenClaims: false,
    acrValues: [ACR_PWD, ACR_MFA],
    pkce: { required: () => true },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    // Fresh keys per start: an RSA key (RS256, the default ID token alg) and an
    // EC key, so airlock must pick the right key by `kid`.
    jwks: { keys: [jwk('rsa', { modulusLength: 2048 }, 'RS256'), jwk('ec', { namedCurve: 'P-256' }, 'ES256')] },
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    ttl: { DeviceCode: 600, Interaction: 600, Session: 3600, Grant: 3600, AccessToken: 600, IdToken: 600, AuthorizationCode: 60 },
    features: {
      devInteractions: { enabled: false },
      deviceFlow: {
        enabled: true,
        charset: 'base-20',
        mask: '****-****',
        async userCodeInputSource(ctx, form, _out, err) {
          const msg = err ? '<p id="error">The code is wrong or expired; try again.</p>' : '<p>Enter the code shown by airlock.</p>';
          ctx.body = page('Device login', `${msg}${form}<button type="submit" form="op.deviceInputForm">Continue</button>`);
        },
        async userCodeConfirmSource(ctx, form, client, _info, userCode) {
          ctx.body = page('Confirm device', `<p>${esc(client.clientName || client.clientId)} shows <code id="user_code">${esc(userCode)}</code>.</p>${form}<button type="submit" form="op.deviceConfirmForm">Continue</button>`);
        },
        async successSource(ctx) {
          ctx.body = page('Signed in', '<p id="done">You are signed in; return to your terminal.</p>');
        },
      },
      rpInitiatedLogout: { enabled: false },
      revocation: { enabled: true },
    },
    async renderError(ctx, out) {
      ctx.type = 'html';
      ctx.body = page('Error', `<pre id="error">${esc(JSON.stringify(out))}</pre>`);
    },
  });
  provider.on('server_error', (_ctx, err) => console.error('server_error', err));

  const callback = provider.callback();
  server.on('request', (req, res) => {
    const m = req.url.match(/^\/interaction\/([A-Za-z0-9_-]+)(\/(login|confirm|abort))?(\?.*)?$/);
    if (!m) return callback(req, res);
    interaction(provider, req, res, m[3]).catch((e) => {
      console.error('interaction error', e);
      res.writeHead(400, { 'content-type': 'text/html; charset=utf-8' });
      res.end(page('Error', `<pre id="error">${esc(e.message)}</pre>`));
    });
  });
  console.log(`issuer ${issuer}`);
}

async function readForm(req) {
  let body = '';
  for await (const chunk of req) {
    body += chunk;
    if (body.length > 10000) throw new Error('form too large');
  }
  return Object.fromEntries(new URLSearchParams(body));
}

function html(res, status, text) {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8' });
  res.end(text);
}

async function interaction(provider, req, res, action) {
  const details = await provider.interactionDetails(req, res);
  const { uid, prompt, params } = details;
  if (req.method === 'GET' && !action) {
    if (prompt.name === 'login') {
      return html(res, 200, page('Sign in', `<form method="post" action="/interaction/${uid}/login">
<label>User <input name="login" autofocus></label>
<label>Password <input name="password" type="password"></label>
<label><input type="checkbox" name="mfa" value="otp"> I used my second factor (one-time code)</label>
<button type="submit" id="submit">Sign in</button></form>
<p>Client: ${esc(params.client_id)}</p>`));
    }
    return html(res, 200, page('Allow access', `<p>${esc(params.client_id)} asks for: ${esc(params.scope)}</p>
<form method="post" action="/interaction/${uid}/confirm"><button type="submit" id="allow">Allow</button></form>
<form method="post" action="/interaction/${uid}/abort"><button type="submit" id="deny">Deny</button></form>`));
  }
  if (req.method !== 'POST') return html(res, 405, page('Error', 'use POST'));
  if (action === 'login') {
    const form = await readForm(req);
    const login = String(form.login || '').trim();
    if (!ACCOUNTS[login] || form.password !== PASSWORD) {
      return html(res, 200, page('Sign in', `<p id="error">Unknown user or wrong password.</p>
<form method="post" action="/interaction/${uid}/login"><input name="login"><input name="password" type="password">
<input type="checkbox" name="mfa" value="otp"><button type="submit" id="submit">Sign in</button></form>`));
    }
    const mfa = form.mfa === 'otp';
    return provider.interactionFinished(req, res, {
      login: { accountId: login, amr: mfa ? ['pwd', 'otp'] : ['pwd'], acr: mfa ? ACR_MFA : ACR_PWD },
    }, { mergeWithLastSubmission: false });
  }
  if (action === 'confirm') {
    const { grantId, session, params: p } = details;
    const grant = grantId ? await provider.Grant.find(grantId) : new provider.Grant({ accountId: session.accountId, clientId: p.client_id });
    grant.addOIDCScope(String(p.scope || 'openid'));
    const id = await grant.save();
    return provider.interactionFinished(req, res, { consent: { grantId: id } }, { mergeWithLastSubmission: true });
  }
  return provider.interactionFinished(req, res, {
    error: 'access_denied', error_description: 'the user denied access',
  }, { mergeWithLastSubmission: false });
}

start().catch((e) => {
  console.error(e);
  process.exit(1);
});
