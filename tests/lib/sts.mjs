// A test AWS STS (AssumeRoleWithWebIdentity over the Query API, XML answers) on HTTPS, a
// fake Fly API unix socket (POST /v1/tokens/oidc), and a runner for tests/tool_creds.
//   stsServer(respond)   respond({form, headers, n}) -> {status, body}; default: success
//   okXml({...}), errorXml(code, message), jwt(claims)
//   flySocket(dir, respond)   an HTTP server on a unix socket in dir
//   runCreds(args, env)  tool_creds with exactly env (plus PATH), never process.env's AWS_*
import { spawn } from 'node:child_process';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import { testCerts } from './certs.mjs';
import { toolCommand } from './tools.mjs';

const xmlEscape = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;')
  .replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&apos;');

// A success answer shaped like STS's, with the credentials where STS puts them and
// lookalike elements elsewhere.
export function okXml({ accessKeyId, secretAccessKey, sessionToken, expiration }) {
  return `<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>acme:jobs:machine</SubjectFromWebIdentityToken>
    <Audience>sts.amazonaws.com</Audience>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::123456789012:assumed-role/jobs/lambdo</Arn>
      <AssumedRoleId>AROAEXAMPLE:lambdo</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <SessionToken>${xmlEscape(sessionToken)}</SessionToken>
      <SecretAccessKey>${xmlEscape(secretAccessKey)}</SecretAccessKey>
      <Expiration>${new Date(expiration * 1000).toISOString()}</Expiration>
      <AccessKeyId>${xmlEscape(accessKeyId)}</AccessKeyId>
    </Credentials>
    <Provider>oidc.fly.io/acme</Provider>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata>
    <RequestId>ad4156e9-bce1-11e2-82e6-6b6efEXAMPLE</RequestId>
  </ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>
`;
}

export function errorXml(code, message, type = 'Sender') {
  return `<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <Error>
    <Type>${type}</Type>
    <Code>${xmlEscape(code)}</Code>
    <Message>${xmlEscape(message)}</Message>
  </Error>
  <RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId>
</ErrorResponse>
`;
}

const b64url = (s) => Buffer.from(s).toString('base64url');

// An unsigned JWT-shaped token: lambdo only reads its exp claim.
export function jwt(claims) {
  return `${b64url(JSON.stringify({ alg: 'RS256', typ: 'JWT', kid: 'test' }))}.${
    b64url(JSON.stringify({ iss: 'https://oidc.fly.io/acme', aud: 'sts.amazonaws.com', ...claims }))}.${
    b64url('not-a-real-signature-0123456789')}`;
}

let issued = 0;

// Fresh credentials per call, so a refresh is visible in the access key id.
export function freshCredentials(lifetimeSeconds = 3600) {
  issued++;
  return {
    accessKeyId: `ASIATEST${String(issued).padStart(8, '0')}`,
    secretAccessKey: `stsSecret/${issued}/${Math.random().toString(36).slice(2)}+Key`,
    sessionToken: `FwoGZXIvYXdzE${issued}${'Ab0/+'.repeat(60)}${Math.random().toString(36).slice(2)}`,
    expiration: Math.floor(Date.now() / 1000) + lifetimeSeconds,
  };
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function closer(server) {
  const sockets = new Set();
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  return () => new Promise((resolve) => {
    for (const s of sockets) s.destroy();
    server.close(() => resolve());
  });
}

// requests[] holds {method, url, headers, body, form}; issued[] the credentials handed out.
export async function stsServer(respond) {
  const certs = testCerts();
  const requests = [];
  const issuedCreds = [];
  const server = https.createServer({ cert: certs.localhost.cert, key: certs.localhost.key },
    async (req, res) => {
      const body = await readBody(req);
      const form = Object.fromEntries(new URLSearchParams(body));
      const r = { method: req.method, url: req.url, headers: req.headers, body, form };
      requests.push(r);
      let answer;
      try {
        answer = respond ? await respond({ ...r, n: requests.length }) : undefined;
      } catch (err) {
        answer = { status: 599, body: String(err) };
      }
      if (!answer) {
        const c = freshCredentials();
        issuedCreds.push(c);
        answer = { status: 200, body: okXml(c) };
      }
      if (answer.credentials) issuedCreds.push(answer.credentials);
      res.writeHead(answer.status, { 'Content-Type': 'text/xml', 'x-amzn-RequestId': 'test' });
      res.end(answer.body);
    });
  const close = closer(server);
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `https://localhost:${server.address().port}/`,
    requests,
    issued: issuedCreds,
    close,
  };
}

// A success answer with fresh credentials of the given lifetime (recorded in issued[]).
export function ok(lifetimeSeconds = 3600) {
  const c = freshCredentials(lifetimeSeconds);
  return { status: 200, body: okXml(c), credentials: c };
}

// The Fly API socket: respond({method, url, headers, body, n}) -> {status, body}.
export async function flySocket(dir, respond) {
  const socketPath = path.join(dir, 'fly-api.sock');
  const requests = [];
  const server = http.createServer(async (req, res) => {
    const body = await readBody(req);
    const r = { method: req.method, url: req.url, headers: req.headers, body };
    requests.push(r);
    const answer = await respond({ ...r, n: requests.length });
    res.writeHead(answer.status, { 'Content-Type': 'text/plain' });
    res.end(answer.body);
  });
  const close = closer(server);
  await new Promise((resolve) => server.listen(socketPath, resolve));
  return { path: socketPath, requests, close };
}

// Runs tool_creds with exactly env (plus PATH and the sanitizer options), so the test
// machine's own AWS variables never leak in. Resolves {code, stdout, stderr, lines}.
export function runCreds(args, env, { timeoutMs = 120000 } = {}) {
  const [cmd, ...rest] = toolCommand('tool_creds', args);
  const base = { PATH: process.env.PATH };
  for (const k of ['ASAN_OPTIONS', 'UBSAN_OPTIONS', 'LSAN_OPTIONS']) {
    if (process.env[k]) base[k] = process.env[k];
  }
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, rest, { env: { ...base, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.stdout.on('data', (d) => { stdout += d; });
    child.stderr.on('data', (d) => { stderr += d; });
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (signal) return reject(new Error(`tool_creds killed by ${signal}\n${stdout}\n${stderr}`));
      let lines;
      try {
        lines = stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l));
      } catch (err) {
        return reject(new Error(`tool_creds printed something that is not JSON: ${stdout}\n${stderr}`));
      }
      resolve({ code, stdout, stderr, lines });
    });
  });
}
