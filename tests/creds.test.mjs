// The AWS credentials provider (creds.c) through tests/tool_creds: the environment, web
// identity through a test STS over HTTPS (and a fake Fly API unix socket for fresh
// tokens), the shared files in a temporary HOME; their order, refresh before expiry with
// the tool's fake clock, the error texts, and that no secret (keys, session tokens, web
// identity tokens) ever appears in any output, stderr included.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import net from 'node:net';
import path from 'node:path';
import { testCerts } from './lib/certs.mjs';
import { stsServer, flySocket, runCreds, errorXml, jwt, ok } from './lib/sts.mjs';

const ROLE = 'arn:aws:iam::123456789012:role/jobs';
const hash8 = (s) => createHash('sha256').update(s).digest('hex').slice(0, 8);
const now = () => Math.floor(Date.now() / 1000);

function tempHome(t) {
  const dir = mkdtempSync(path.join(tmpdir(), 'lambdo-creds-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

// Secrets and long pieces of them (a JWT's segments) must appear nowhere.
function assertNoSecrets(r, secrets) {
  const pieces = [];
  for (const s of secrets.filter(Boolean)) {
    pieces.push(s);
    for (const part of s.split(/[./+=]/)) if (part.length >= 16) pieces.push(part);
  }
  for (const p of pieces) {
    assert.ok(!r.stdout.includes(p), `stdout holds a secret (${p.slice(0, 6)}...)`);
    assert.ok(!r.stderr.includes(p), `stderr holds a secret (${p.slice(0, 6)}...)`);
  }
}

// The environment of a web identity run against sts.
function webEnv(home, sts, extra = {}) {
  return {
    HOME: home,
    SSL_CERT_FILE: testCerts().caFile,
    AWS_ENDPOINT_URL_STS: sts.url,
    AWS_ROLE_ARN: ROLE,
    AWS_WEB_IDENTITY_TOKEN_FILE: path.join(home, 'token'),
    LAMBDO_FLY_API_SOCKET: path.join(home, 'no-such-socket'),
    ...extra,
  };
}

function writeToken(home, token) {
  writeFileSync(path.join(home, 'token'), token);
}

function writeAws(home, name, content) {
  mkdirSync(path.join(home, '.aws'), { recursive: true });
  writeFileSync(path.join(home, '.aws', name), content);
}

test('environment: source, key id and the hash of the secret, nothing secret printed', async (t) => {
  const home = tempHome(t);
  const env = {
    HOME: home, AWS_ACCESS_KEY_ID: 'AKIDENVEXAMPLE',
    AWS_SECRET_ACCESS_KEY: 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYENVSECRET', AWS_SESSION_TOKEN: 'envSessionToken0123456789',
  };
  const r = await runCreds(['--gets', '2'], env);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.deepEqual(r.lines[0], { source: 'environment', file_region: null });
  assert.equal(r.lines[1].access_key_id, 'AKIDENVEXAMPLE');
  assert.equal(r.lines[1].secret_hash, hash8(env.AWS_SECRET_ACCESS_KEY));
  assert.equal(r.lines[1].token_hash, hash8(env.AWS_SESSION_TOKEN));
  assert.equal(r.lines[1].expires_in, null);
  assert.deepEqual(r.lines[1].keys, ['AKIDENVEXAMPLE']);
  assert.deepEqual(r.lines[2], { ...r.lines[1], get: 2 });
  assertNoSecrets(r, [env.AWS_SECRET_ACCESS_KEY, env.AWS_SESSION_TOKEN]);
});

test('half a key pair is a configuration error naming the missing variable', async (t) => {
  const home = tempHome(t);
  let r = await runCreds([], { HOME: home, AWS_ACCESS_KEY_ID: 'AKIDENVEXAMPLE' });
  assert.equal(r.code, 2);
  assert.deepEqual(r.lines, [{ error: 'invalid', message:
    'AWS_SECRET_ACCESS_KEY: not set, but AWS_ACCESS_KEY_ID is (set both or neither)' }]);
  r = await runCreds([], { HOME: home, AWS_SECRET_ACCESS_KEY: 'onlyTheSecretEXAMPLE' });
  assert.equal(r.code, 2);
  assert.deepEqual(r.lines, [{ error: 'invalid', message:
    'AWS_ACCESS_KEY_ID: not set, but AWS_SECRET_ACCESS_KEY is (set both or neither)' }]);
  assertNoSecrets(r, ['onlyTheSecretEXAMPLE']);
});

test('web identity: one unsigned AssumeRoleWithWebIdentity with the token file\'s content', async (t) => {
  const home = tempHome(t);
  const sts = await stsServer();
  t.after(sts.close);
  const token = jwt({ exp: now() + 3600, sub: 'acme:jobs:machine-one' });
  writeToken(home, `${token}\n`);
  const r = await runCreds([], webEnv(home, sts, { AWS_ROLE_SESSION_NAME: 'my-session@jobs' }));
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.equal(sts.requests.length, 1);
  const q = sts.requests[0];
  assert.equal(q.method, 'POST');
  assert.equal(q.url, '/');
  assert.match(q.headers['content-type'], /^application\/x-www-form-urlencoded/);
  assert.deepEqual(q.form, {
    Action: 'AssumeRoleWithWebIdentity', Version: '2011-06-15', RoleArn: ROLE,
    RoleSessionName: 'my-session@jobs', WebIdentityToken: token, DurationSeconds: '3600',
  });
  assert.ok(q.body.includes('RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fjobs'), q.body);
  assert.ok(q.body.includes('RoleSessionName=my-session%40jobs'), q.body);
  // not signed: no credentials are needed to ask for credentials
  for (const h of ['authorization', 'x-amz-date', 'x-amz-security-token', 'x-amz-content-sha256']) {
    assert.equal(q.headers[h], undefined, h);
  }
  const c = sts.issued[0];
  assert.deepEqual(r.lines[0], { source: `web identity (role ${ROLE})`, file_region: null });
  assert.equal(r.lines[1].access_key_id, c.accessKeyId);
  assert.equal(r.lines[1].secret_hash, hash8(c.secretAccessKey));
  assert.equal(r.lines[1].token_hash, hash8(c.sessionToken));
  assert.ok(r.lines[1].expires_in > 3500 && r.lines[1].expires_in <= 3600, `${r.lines[1].expires_in}`);
  assertNoSecrets(r, [c.secretAccessKey, c.sessionToken, token]);
});

test('web identity: a generated session name, and any token percent-encoded', async (t) => {
  const home = tempHome(t);
  const sts = await stsServer();
  t.after(sts.close);
  const token = 'opaque+token/with=special~chars&more%20stuff;x';
  writeToken(home, token);
  const r = await runCreds([], webEnv(home, sts));
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.match(sts.requests[0].form.RoleSessionName, /^lambdo-[0-9a-f]{16}$/);
  assert.equal(sts.requests[0].form.WebIdentityToken, token);
  assert.ok(sts.requests[0].body.includes(
    'WebIdentityToken=opaque%2Btoken%2Fwith%3Dspecial~chars%26more%2520stuff%3Bx&'), sts.requests[0].body);
  assertNoSecrets(r, [sts.issued[0].secretAccessKey, sts.issued[0].sessionToken, token]);
});

test('order: the environment, then web identity, then the shared files', async (t) => {
  const home = tempHome(t);
  const sts = await stsServer();
  t.after(sts.close);
  const token = jwt({ exp: now() + 3600 });
  writeToken(home, token);
  writeAws(home, 'credentials', '[default]\naws_access_key_id = AKIDFILEEXAMPLE\naws_secret_access_key = fileSecretEXAMPLE0123\n');
  writeAws(home, 'config', '[default]\nregion = eu-central-1\n');
  const all = webEnv(home, sts, { AWS_ACCESS_KEY_ID: 'AKIDENVEXAMPLE', AWS_SECRET_ACCESS_KEY: 'envSecretEXAMPLE0123' });
  let r = await runCreds([], all);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.deepEqual(r.lines[0], { source: 'environment', file_region: 'eu-central-1' });
  assert.equal(r.lines[1].access_key_id, 'AKIDENVEXAMPLE');
  assert.equal(sts.requests.length, 0);

  r = await runCreds([], { ...all, AWS_ACCESS_KEY_ID: '', AWS_SECRET_ACCESS_KEY: '' });
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.equal(r.lines[0].source, `web identity (role ${ROLE})`);
  assert.equal(r.lines[1].access_key_id, sts.issued[0].accessKeyId);
  assert.equal(sts.requests.length, 1);

  r = await runCreds([], { ...all, AWS_ACCESS_KEY_ID: '', AWS_SECRET_ACCESS_KEY: '', AWS_ROLE_ARN: '',
    AWS_WEB_IDENTITY_TOKEN_FILE: '' });
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.deepEqual(r.lines[0], { source: `shared file profile default (${home}/.aws/credentials)`,
    file_region: 'eu-central-1' });
  assert.equal(r.lines[1].access_key_id, 'AKIDFILEEXAMPLE');
  assert.equal(r.lines[1].secret_hash, hash8('fileSecretEXAMPLE0123'));
  assert.equal(r.lines[1].token_hash, null);
  assert.equal(sts.requests.length, 1);
  assertNoSecrets(r, ['fileSecretEXAMPLE0123', 'envSecretEXAMPLE0123']);
});

test('shared files: AWS_PROFILE, [profile NAME] in the config file, file overrides', async (t) => {
  const home = tempHome(t);
  writeAws(home, 'credentials', [
    '# comment', '[default]', 'aws_access_key_id = AKIDDEFAULT', 'aws_secret_access_key = defaultSecret0123',
    '', '[work]', 'AWS_ACCESS_KEY_ID = AKIDWORKOLD', 'aws_secret_access_key=workSecret0123 ; note',
    'aws_session_token = workSessionToken0123456789', '[work]', 'aws_access_key_id = AKIDWORK', '',
  ].join('\r\n'));
  writeAws(home, 'config', [
    '[default]', 'region = eu-west-1', '[profile work]', 'region = us-west-2', 's3 =',
    '  max_concurrent_requests = 20', '[profile conf]', 'aws_access_key_id = AKIDCONF',
    'aws_secret_access_key = confSecret0123', '[profile sso]', 'sso_session = corp', '',
  ].join('\n'));
  let r = await runCreds([], { HOME: home, AWS_PROFILE: 'work' });
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.deepEqual(r.lines[0], { source: `shared file profile work (${home}/.aws/credentials)`,
    file_region: 'us-west-2' });
  assert.equal(r.lines[1].access_key_id, 'AKIDWORK');
  assert.equal(r.lines[1].secret_hash, hash8('workSecret0123'));
  assert.equal(r.lines[1].token_hash, hash8('workSessionToken0123456789'));

  r = await runCreds([], { HOME: home, AWS_PROFILE: 'conf' });
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.deepEqual(r.lines[0], { source: `shared file profile conf (${home}/.aws/config)`, file_region: null });
  assert.equal(r.lines[1].access_key_id, 'AKIDCONF');

  // AWS_SHARED_CREDENTIALS_FILE and AWS_CONFIG_FILE replace the default paths
  const other = path.join(home, 'other');
  writeFileSync(other, '[default]\naws_access_key_id = AKIDOTHER\naws_secret_access_key = otherSecret0123\n');
  r = await runCreds([], { HOME: home, AWS_SHARED_CREDENTIALS_FILE: other, AWS_CONFIG_FILE: other });
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.deepEqual(r.lines[0], { source: `shared file profile default (${other})`, file_region: null });
  assert.equal(r.lines[1].access_key_id, 'AKIDOTHER');

  r = await runCreds([], { HOME: home, AWS_PROFILE: 'sso' });
  assert.equal(r.code, 2);
  assert.equal(r.lines[0].message, `${home}/.aws/config: profile sso has no aws_access_key_id and `
    + 'aws_secret_access_key (role_arn, sso and credential_process profiles are not supported)');
  r = await runCreds([], { HOME: home, AWS_PROFILE: 'nope' });
  assert.equal(r.code, 2);
  assert.equal(r.lines[0].message, `AWS_PROFILE: profile nope is in neither ${home}/.aws/credentials `
    + `nor ${home}/.aws/config`);
  assertNoSecrets(r, ['defaultSecret0123', 'workSecret0123', 'workSessionToken0123456789', 'confSecret0123']);
});

test('no credentials anywhere, and malformed files, are clear start-up errors', async (t) => {
  const home = tempHome(t);
  let r = await runCreds([], { HOME: home });
  assert.equal(r.code, 2);
  assert.equal(r.lines[0].message, 'no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, '
    + `or AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE, or put profile default in ${home}/.aws/credentials`);
  writeAws(home, 'credentials', '[default]\naws_access_key_id = AKIDFILE\naws_secret_access_key brokenSecret0123\n');
  r = await runCreds([], { HOME: home });
  assert.equal(r.code, 2);
  assert.equal(r.lines[0].message, `${home}/.aws/credentials: line 3: expected [section] or key = value`);
  assertNoSecrets(r, ['brokenSecret0123']);
  r = await runCreds([], { HOME: home, AWS_WEB_IDENTITY_TOKEN_FILE: path.join(home, 'token') });
  assert.equal(r.code, 2);
  assert.equal(r.lines[0].message, 'AWS_WEB_IDENTITY_TOKEN_FILE is set but AWS_ROLE_ARN is not');
  r = await runCreds([], { HOME: home, AWS_ROLE_ARN: ROLE, LAMBDO_FLY_API_SOCKET: path.join(home, 'none') });
  assert.equal(r.code, 2);
  assert.equal(r.lines[0].message, 'AWS_ROLE_ARN is set but AWS_WEB_IDENTITY_TOKEN_FILE is not '
    + `(and there is no Fly API socket at ${home}/none)`);
});

// The tool's clock moves ahead by --skip between gets; STS's expirations follow it, so
// exchange n (made at fake time +skip*(n-1)) lasts `life` seconds of fake time.
const followClock = (life, skip) => ({ n }) => ok(life + skip * (n - 1));

test('refresh before expiry: short-lived credentials are exchanged again', async (t) => {
  const home = tempHome(t);
  const sts = await stsServer(followClock(120, 70));
  t.after(sts.close);
  const first = jwt({ exp: now() + 3600, n: 1 });
  writeToken(home, first);
  // 2 minutes of validity: refreshed once one minute is left
  const r = await runCreds(['--gets', '3', '--skip', '70'], webEnv(home, sts));
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.equal(sts.requests.length, 3);
  assert.equal(r.lines[1].access_key_id, sts.issued[0].accessKeyId);
  assert.equal(r.lines[2].access_key_id, sts.issued[1].accessKeyId);
  assert.equal(r.lines[3].access_key_id, sts.issued[2].accessKeyId);
  assert.equal(r.lines[2].secret_hash, hash8(sts.issued[1].secretAccessKey));
  assert.deepEqual(r.lines.slice(1).map((l) => l.exchanges), [1, 2, 3]);
  assert.match(r.stderr, /info +AWS credentials refreshed through STS \(role arn:aws:iam::123456789012:role\/jobs\), valid until \S+Z/);
  assertNoSecrets(r, [first, ...sts.issued.flatMap((c) => [c.secretAccessKey, c.sessionToken])]);
});

test('no refresh while plenty of time is left', async (t) => {
  const home = tempHome(t);
  const sts = await stsServer(followClock(120, 50));
  t.after(sts.close);
  writeToken(home, jwt({ exp: now() + 3600 }));
  const r = await runCreds(['--gets', '2', '--skip', '50'], webEnv(home, sts));
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.equal(sts.requests.length, 1);
  assert.equal(r.lines[2].access_key_id, r.lines[1].access_key_id);
});

test('a refresh reads the token file again, and threads share one exchange', async (t) => {
  const home = tempHome(t);
  const second = jwt({ exp: now() + 7200, n: 2 });
  const sts = await stsServer(async ({ n }) => {
    if (n === 1) writeToken(home, second);  // the file rotates, as Kubernetes and Fly do
    return ok(120 + 70 * (n - 1));
  });
  t.after(sts.close);
  const first = jwt({ exp: now() + 3600, n: 1 });
  writeToken(home, first);
  const r = await runCreds(['--gets', '2', '--skip', '70', '--threads', '8'], webEnv(home, sts));
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.equal(sts.requests.length, 2);
  assert.equal(sts.requests[0].form.WebIdentityToken, first);
  assert.equal(sts.requests[1].form.WebIdentityToken, second);
  assert.equal(sts.requests[0].form.RoleSessionName, sts.requests[1].form.RoleSessionName);
  assert.deepEqual(r.lines[1].keys, [sts.issued[0].accessKeyId]);
  // the refresher got the new ones; others, meanwhile, maybe the old (still valid) ones
  assert.ok(r.lines[2].keys.includes(sts.issued[1].accessKeyId), JSON.stringify(r.lines[2]));
  for (const k of r.lines[2].keys) assert.ok([sts.issued[0].accessKeyId, sts.issued[1].accessKeyId].includes(k));
  assertNoSecrets(r, [first, second, ...sts.issued.flatMap((c) => [c.secretAccessKey, c.sessionToken])]);
});

test('a failed refresh keeps valid credentials with a warning; expired ones are an error', async (t) => {
  const home = tempHome(t);
  const failing = ({ n }) => (n === 1 ? ok(120)
    : { status: 400, body: errorXml('ExpiredTokenException', 'Token expired: current date/time 1 must be before the expiration date/time 0') });
  const sts = await stsServer(failing);
  t.after(sts.close);
  writeToken(home, jwt({ exp: now() + 3600 }));
  let r = await runCreds(['--gets', '2', '--skip', '70'], webEnv(home, sts));
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.equal(sts.requests.length, 2);
  assert.equal(r.lines[2].access_key_id, r.lines[1].access_key_id);
  assert.ok(r.stderr.includes('AWS credentials: refresh failed (STS AssumeRoleWithWebIdentity failed: '
    + 'ExpiredTokenException: Token expired: current date/time 1 must be before the expiration date/time 0 '
    + '(HTTP 400)); the current ones stay in use, they expire in '), r.stderr);
  assert.match(r.stderr, /warn +AWS credentials: refresh failed .* they expire in \d+ s; trying again in 5 s\n/);

  const sts2 = await stsServer(failing);
  t.after(sts2.close);
  r = await runCreds(['--gets', '2', '--skip', '100'], webEnv(home, sts2));
  assert.equal(r.code, 1);
  assert.equal(r.lines.length, 3);
  assert.equal(r.lines[2].error, 'http');
  assert.match(r.lines[2].message, /^AWS credentials expired at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ and could not be refreshed: STS AssumeRoleWithWebIdentity failed: ExpiredTokenException: Token expired/);
  assertNoSecrets(r, sts.issued.concat(sts2.issued).flatMap((c) => [c.secretAccessKey, c.sessionToken]));
});

test('STS error answers at start-up: code and message, not retried', async (t) => {
  const cases = [
    ['ExpiredTokenException', 'Token expired: current date/time 1700000600 must be before the expiration date/time 1700000000'],
    ['InvalidIdentityToken', 'No OpenIDConnect provider found in your account for https://oidc.fly.io/acme'],
    ['AccessDenied', 'Not authorized to perform sts:AssumeRoleWithWebIdentity'],
  ];
  for (const [code, message] of cases) {
    const home = tempHome(t);
    const sts = await stsServer(() => ({ status: code === 'AccessDenied' ? 403 : 400, body: errorXml(code, message) }));
    const token = jwt({ exp: now() + 3600 });
    writeToken(home, token);
    const r = await runCreds([], webEnv(home, sts));
    await sts.close();
    assert.equal(r.code, 2, r.stdout + r.stderr);
    assert.equal(sts.requests.length, 1);
    assert.deepEqual(r.lines, [{ error: 'http', message:
      `STS AssumeRoleWithWebIdentity failed: ${code}: ${message} (HTTP ${code === 'AccessDenied' ? 403 : 400})` }]);
    assertNoSecrets(r, [token]);
  }
});

test('a malformed answer and a 500 are clear errors; 5xx and throttling are retried', async (t) => {
  const home = tempHome(t);
  writeToken(home, jwt({ exp: now() + 3600 }));
  let sts = await stsServer(() => ({ status: 200, body: '<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult>' }));
  let r = await runCreds([], webEnv(home, sts));
  await sts.close();
  assert.equal(r.code, 2);
  assert.equal(sts.requests.length, 1);
  assert.deepEqual(r.lines, [{ error: 'malformed', message:
    'STS AssumeRoleWithWebIdentity: answer not understood: malformed XML: truncated: an element is not closed at byte 68' }]);

  sts = await stsServer(() => ({ status: 200, body: '<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult><Credentials>'
    + '<AccessKeyId>ASIA</AccessKeyId></Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>' }));
  r = await runCreds([], webEnv(home, sts));
  await sts.close();
  assert.equal(r.lines[0].message, 'STS AssumeRoleWithWebIdentity: answer not understood: no <SecretAccessKey>');

  sts = await stsServer(() => ({ status: 500, body: 'Internal Server Error' }));
  r = await runCreds([], webEnv(home, sts));
  await sts.close();
  assert.equal(r.code, 2);
  assert.equal(sts.requests.length, 3);
  assert.deepEqual(r.lines, [{ error: 'http', message:
    'STS AssumeRoleWithWebIdentity failed: HTTP 500, no STS error in the answer' }]);

  sts = await stsServer(({ n }) => (n === 1
    ? { status: 400, body: errorXml('Throttling', 'Rate exceeded') }
    : n === 2 ? { status: 503, body: errorXml('ServiceUnavailable', 'try later', 'Receiver') } : ok()));
  r = await runCreds([], webEnv(home, sts));
  await sts.close();
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.equal(sts.requests.length, 3);
  assert.equal(r.lines[1].access_key_id, sts.issued[0].accessKeyId);
});

test('a token that STS echoes into its error never reaches the output', async (t) => {
  const home = tempHome(t);
  const token = jwt({ exp: now() + 3600, sub: 'acme:jobs:machine-echo' });
  writeToken(home, token);
  const sts = await stsServer(({ form }) => ({ status: 400, body: errorXml('InvalidIdentityToken',
    `Payload ${form.WebIdentityToken.split('.')[1].slice(0, 40)} in token ${form.WebIdentityToken}`) }));
  t.after(sts.close);
  const r = await runCreds([], webEnv(home, sts));
  assert.equal(r.code, 2);
  assert.match(r.lines[0].message, /^STS AssumeRoleWithWebIdentity failed: InvalidIdentityToken: Payload \[redacted\] in token \[redacted\]\.\[redacted\]\S* \(HTTP 400\)$/);
  assertNoSecrets(r, [token]);
});

test('Fly API socket: a fresh token when the file is missing or expired', async (t) => {
  const home = tempHome(t);
  const sts = await stsServer();
  t.after(sts.close);
  const flyTokens = [];
  const fly = await flySocket(home, () => {
    const tok = jwt({ exp: now() + 600, sub: `acme:jobs:machine-${flyTokens.length}` });
    flyTokens.push(tok);
    return { status: 200, body: `${tok}\n` };
  });
  t.after(fly.close);
  const env = webEnv(home, sts, { LAMBDO_FLY_API_SOCKET: fly.path });

  // no file: the socket's token goes to STS
  let r = await runCreds([], env);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.equal(fly.requests.length, 1);
  assert.equal(fly.requests[0].method, 'POST');
  assert.equal(fly.requests[0].url, '/v1/tokens/oidc');
  assert.equal(fly.requests[0].headers['content-type'], 'application/json');
  assert.deepEqual(JSON.parse(fly.requests[0].body), { aud: 'sts.amazonaws.com' });
  assert.equal(sts.requests[0].form.WebIdentityToken, flyTokens[0]);

  // an expired token in the file: the socket again
  const expired = jwt({ exp: now() - 30 });
  writeToken(home, expired);
  r = await runCreds([], env);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.equal(fly.requests.length, 2);
  assert.equal(sts.requests[1].form.WebIdentityToken, flyTokens[1]);

  // a valid token in the file: the file
  const valid = jwt({ exp: now() + 900 });
  writeToken(home, valid);
  r = await runCreds([], env);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.equal(fly.requests.length, 2);
  assert.equal(sts.requests[2].form.WebIdentityToken, valid);

  // AWS_ROLE_ARN alone is enough inside a Machine
  r = await runCreds([], { ...env, AWS_WEB_IDENTITY_TOKEN_FILE: '' });
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.equal(fly.requests.length, 3);
  assert.equal(sts.requests[3].form.WebIdentityToken, flyTokens[2]);
  assertNoSecrets(r, [...flyTokens, valid, ...sts.issued.flatMap((c) => [c.secretAccessKey, c.sessionToken])]);
});

test('Fly API socket errors and expired tokens without a socket are clear', async (t) => {
  const home = tempHome(t);
  const sts = await stsServer();
  t.after(sts.close);
  const fly = await flySocket(home, () => ({ status: 403, body: 'machine is not allowed to mint tokens' }));
  t.after(fly.close);
  let r = await runCreds([], webEnv(home, sts, { LAMBDO_FLY_API_SOCKET: fly.path }));
  assert.equal(r.code, 2);
  assert.deepEqual(r.lines, [{ error: 'http', message:
    `Fly API socket ${fly.path}: POST /v1/tokens/oidc answered HTTP 403: machine is not allowed to mint tokens` }]);
  assert.equal(sts.requests.length, 0);

  const expired = jwt({ exp: 1700000000 });
  writeToken(home, expired);
  r = await runCreds([], webEnv(home, sts));
  assert.equal(r.code, 2);
  assert.deepEqual(r.lines, [{ error: 'invalid', message:
    `AWS_WEB_IDENTITY_TOKEN_FILE ${home}/token holds a token that expired at 2023-11-14T22:13:20Z, `
    + `and there is no Fly API socket at ${home}/no-such-socket to get a fresh token` }]);
  assert.equal(sts.requests.length, 0);
  assertNoSecrets(r, [expired]);
});

test('Fly API socket trickling its answer: the whole exchange has 10 s, not each read', async (t) => {
  const home = tempHome(t);
  const sts = await stsServer();
  t.after(sts.close);
  const sockPath = path.join(home, 'fly-api.sock');
  // A byte every 500 ms of a 60000-byte answer: before the exchange had a deadline, the
  // 10 s limit applied to each read only, and this took 8 hours.
  const server = net.createServer((c) => {
    c.on('error', () => {});
    c.once('data', () => {
      c.write('HTTP/1.1 200 OK\r\nContent-Length: 60000\r\n\r\n');
      const timer = setInterval(() => c.write('x'), 500);
      c.on('close', () => clearInterval(timer));
    });
  });
  await new Promise((resolve) => server.listen(sockPath, resolve));
  t.after(() => new Promise((resolve) => server.close(resolve)));
  const t0 = Date.now();
  const r = await runCreds([], webEnv(home, sts, { LAMBDO_FLY_API_SOCKET: sockPath }), { timeoutMs: 60000 });
  assert.equal(r.code, 2, r.stdout + r.stderr);
  assert.deepEqual(r.lines, [{ error: 'timeout', message: `Fly API socket ${sockPath}: no complete answer within 10 s` }]);
  assert.ok(Date.now() - t0 < 40000, `took ${Date.now() - t0} ms`);
  assert.equal(sts.requests.length, 0);
});

test('transport errors: a refused connection is retried, an untrusted certificate is not', async (t) => {
  const home = tempHome(t);
  writeToken(home, jwt({ exp: now() + 3600 }));
  const sts = await stsServer();
  const port = new URL(sts.url).port;
  await sts.close();
  let r = await runCreds([], webEnv(home, sts));
  assert.equal(r.code, 2);
  assert.equal(r.lines[0].error, 'refused');
  assert.match(r.lines[0].message, new RegExp(`^STS AssumeRoleWithWebIdentity: .*localhost:${port}`));

  const live = await stsServer();
  t.after(live.close);
  r = await runCreds([], webEnv(home, live, { SSL_CERT_FILE: path.join(testCerts().dir, 'rogue-ca.pem') }));
  assert.equal(r.code, 2);
  assert.equal(r.lines[0].error, 'tls-untrusted');
  assert.match(r.lines[0].message, /^STS AssumeRoleWithWebIdentity: /);
  assert.equal(live.requests.length, 0);
});
