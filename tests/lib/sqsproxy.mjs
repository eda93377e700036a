// The SQS endpoint lambdo talks to in the integration tests: an HTTP(S) server on 127.0.0.1
// that checks every request's SigV4 signature the way SQS does, then forwards it unchanged
// to fauxqs (which checks nothing) and relays the answer.
//
//   const proxy = await startSqsProxy({ target: sqs.endpoint, accessKeyId, secretAccessKey,
//                                       sessionToken, region: 'us-east-1' });
//   const { url } = await sqs.createQueue('jobs', { baseUrl: proxy.endpoint });  // lambdo's URL
//
// Verification is independent of the client: the signature is recomputed with
// @smithy/signature-v4 from what arrived (method, raw path, query, exactly the headers named in
// SignedHeaders, X-Amz-Date, the body bytes) and the expected secret, and compared with the
// Authorization header. The credential scope (access key, date, region, service, terminator),
// the clock (15 minutes either way, like AWS), X-Amz-Security-Token (must be present, equal and
// signed when a session token is configured; must be absent otherwise) and
// x-amz-content-sha256 (when sent, must be the body's SHA-256) are checked too.
//
// Rejections use the AWS JSON 1.0 error shape SQS uses (awsQueryCompatible):
//   HTTP 403, content-type application/x-amz-json-1.0,
//   x-amzn-query-error: SignatureDoesNotMatch;Sender
//   {"__type":"com.amazon.coral.service#SignatureDoesNotMatch","message":"The request signature we calculated does not match..."}
// Status 403, not 400: SQS's JSON protocol is "query compatible", it keeps the HTTP status and
// error code the Query protocol had, and over the Query protocol SQS has always answered
// SignatureDoesNotMatch and InvalidClientTokenId with 403 Forbidden; clients on the JSON
// protocol (e.g. aws-sdk-go-v2 since SQS moved to JSON) report "StatusCode: 403 ...
// InvalidClientTokenId". Other codes: InvalidClientTokenId 403 (unknown access key, bad or
// missing session token: "The security token included in the request is invalid."),
// MissingAuthenticationToken 403 (no Authorization header), IncompleteSignature 400
// (Authorization or X-Amz-Date malformed or missing).
//
// Every request is recorded in proxy.requests (see `rec` in handle()). ReceiveMessage answers
// are filtered to the attributes the request named, like real SQS (fauxqs returns all message
// attributes when none are named; see fauxqs.mjs), with MD5OfMessageAttributes recomputed.
//
// Fault hook, consulted for correctly signed requests before forwarding:
//   proxy.fault = (op, body, rec) => null | {
//     delayMs,             wait first (then do the rest, or forward)
//     status, body, headers   answer this instead of forwarding (body object -> JSON)
//     reset: true          destroy the client connection instead of answering (not forwarded)
//     trickleMs: N         not forwarded: a 200 head promising 1 MiB, then one byte every N ms
//                          until the client goes away (rec.status 'trickled'), so that only a
//                          deadline for the whole request ends it, never a per-read timeout
//     resetAfterForward: true  forward, then destroy the connection (the answer is lost)
//     transform(json, status, rec)  forward, then answer what this returns (JSON) instead
//     request(body, rec)   forward what this returns (JSON object) instead of the request's
//                          body (the signature was checked on the original); undefined = as is
//   }
// sqsError(code, message, opts) builds {status, headers, body} in SQS's JSON error shape.
// Ready-made faults (each returns a spec for proxy.fault):
//   sqsInternalError()                 500 InternalError (Receiver)
//   sqsThrottled(kind)                 400 ThrottlingException (com.amazon.coral.availability,
//                                      "Rate exceeded") or kind 'RequestThrottled' (SQS's own)
//   failBatchEntries(body, pick, { code, message, senderFault })   for DeleteMessageBatch and
//     ChangeMessageVisibilityBatch: the entries pick(entry, i) chooses are NOT forwarded (fauxqs
//     never acts on them) and come back as Failed {Id, SenderFault, Code, Message}; the rest
//     are forwarded as usual. Defaults: InternalError, SenderFault false (SQS's side: worth a
//     retry). ReceiptHandleIsInvalid with senderFault true is how SQS reports a stale handle.
import http from 'node:http';
import https from 'node:https';
import { createHash, randomUUID, timingSafeEqual } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { SignatureV4, getCanonicalHeaders } from '@smithy/signature-v4';
import { Sha256 } from '@aws-crypto/sha256-js';
import { testCerts } from './certs.mjs';

export const SIGNATURE_MESSAGE = 'The request signature we calculated does not match the signature'
  + ' you provided. Check your AWS Secret Access Key and signing method. Consult the service'
  + ' documentation for details.';
const TOKEN_MESSAGE = 'The security token included in the request is invalid.';
const AUTH_STATUS = { SignatureDoesNotMatch: 403, InvalidClientTokenId: 403,
  MissingAuthenticationToken: 403, IncompleteSignature: 400 };
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding',
  'upgrade', 'te', 'trailer', 'content-length']);
const JSON_TYPE = 'application/x-amz-json-1.0';

// An answer in SQS's JSON error shape, for fault hooks, e.g.
//   sqsError('OverLimit', 'Too many messages', { status: 403 })
//   sqsError('ServiceUnavailable', 'Service is unavailable', { status: 503, fault: 'Receiver' })
export function sqsError(code, message, { status = 400, queryCode, fault = 'Sender',
  namespace = 'com.amazonaws.sqs' } = {}) {
  return { status, headers: { 'x-amzn-query-error': `${queryCode ?? code};${fault}` },
    body: { __type: `${namespace}#${code}`, message } };
}

export function sqsInternalError() {
  return sqsError('InternalError', 'We encountered an internal error. Please try again.',
    { status: 500, fault: 'Receiver' });
}

export function sqsThrottled(kind = 'ThrottlingException') {
  if (kind === 'RequestThrottled') {
    return sqsError('RequestThrottled', 'Request is throttled.', { status: 400 });
  }
  return sqsError('ThrottlingException', 'Rate exceeded', { status: 400,
    namespace: 'com.amazon.coral.availability' });
}

export function failBatchEntries(body, pick, { code = 'InternalError',
  message = 'We encountered an internal error. Please try again.', senderFault = false } = {}) {
  const entries = Array.isArray(body?.Entries) ? body.Entries : [];
  const failed = [];
  const kept = [];
  entries.forEach((e, i) => (pick(e, i) ? failed : kept).push(e));
  if (failed.length === 0) return null;
  const failedOut = failed.map((e) => ({ Id: e.Id, SenderFault: senderFault, Code: code, Message: message }));
  if (kept.length === 0) {
    return { status: 200, body: { Successful: [], Failed: failedOut }, failedEntries: failed };
  }
  return {
    failedEntries: failed,
    request: (b) => ({ ...b, Entries: kept }),
    transform: (json, status) => (status === 200
      ? { ...json, Successful: json.Successful ?? [], Failed: [...(json.Failed ?? []), ...failedOut] }
      : json),
  };
}

function authError(code, message) {
  return sqsError(code, message, { status: AUTH_STATUS[code], namespace: 'com.amazon.coral.service' });
}

const sha256hex = (buf) => createHash('sha256').update(buf).digest('hex');

function amzDateToDate(s) {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(s);
  if (!m) return null;
  const d = new Date(Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6]));
  return Number.isNaN(d.getTime()) ? null : d;
}
const toAmzDate = (ms) => new Date(ms).toISOString().replace(/[-:]/g, '').replace(/\.\d{3}/, '');

function parseQuery(q) {
  const out = {};
  if (!q) return out;
  const dec = (s) => { try { return decodeURIComponent(s); } catch { return s; } };
  for (const part of q.split('&')) {
    if (part === '') continue;
    const i = part.indexOf('=');
    const k = dec(i < 0 ? part : part.slice(0, i));
    const v = i < 0 ? '' : dec(part.slice(i + 1));
    if (k in out) out[k] = [].concat(out[k], v);
    else out[k] = v;
  }
  return out;
}

// Checks one request. req = { method, url (raw path and query), headers (lower-case names, as
// node gives them), body (Buffer) }. Returns { ok: true } or { ok: false, code, message,
// reason (precise, for test output), canonicalRequest?, stringToSign? }.
export async function verifySigV4(req, { accessKeyId, secretAccessKey, sessionToken, region,
  service = 'sqs', now = Date.now(), maxSkewMs = 15 * 60 * 1000,
  requireSignedSessionToken = true } = {}) {
  const h = req.headers;
  const body = req.body ?? Buffer.alloc(0);
  const fail = (code, message, reason, extra = {}) => ({ ok: false, code, message, reason, ...extra });
  const auth = h.authorization;
  if (auth === undefined) {
    return fail('MissingAuthenticationToken', 'Request is missing Authentication Token',
      'no Authorization header');
  }
  const am = /^(\S+) (.*)$/s.exec(String(auth));
  if (!am || am[1] !== 'AWS4-HMAC-SHA256') {
    return fail('IncompleteSignature', `Unsupported AWS 'algorithm': '${am ? am[1] : auth}'`,
      `Authorization does not start with "AWS4-HMAC-SHA256 ": ${auth}`);
  }
  const params = {};
  for (const part of am[2].split(',')) {
    const i = part.indexOf('=');
    if (i < 0) continue;
    params[part.slice(0, i).trim()] = part.slice(i + 1).trim();
  }
  const missing = ['Credential', 'SignedHeaders', 'Signature'].filter((k) => !params[k]);
  if (missing.length) {
    return fail('IncompleteSignature', missing.map((k) => `Authorization header requires '${k}' parameter.`)
      .join(' ') + ` Authorization=${auth}`, `Authorization lacks ${missing.join(', ')}: ${auth}`);
  }
  const cred = params.Credential.split('/');
  if (cred.length !== 5) {
    return fail('IncompleteSignature', `Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term, got '${params.Credential}'`,
      `malformed Credential ${params.Credential}`);
  }
  const [akid, scopeDate, scopeRegion, scopeService, terminator] = cred;
  if (akid !== accessKeyId) {
    return fail('InvalidClientTokenId', TOKEN_MESSAGE, `access key ${akid}, expected ${accessKeyId}`);
  }
  const amzDate = h['x-amz-date'];
  if (amzDate === undefined) {
    return fail('IncompleteSignature', "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. Authorization=" + auth,
      'no X-Amz-Date header');
  }
  const date = amzDateToDate(amzDate);
  if (!date) {
    return fail('IncompleteSignature', `Date must be in ISO-8601 'basic format'. Got '${amzDate}'. See http://en.wikipedia.org/wiki/ISO_8601`,
      `bad X-Amz-Date ${amzDate}`);
  }
  if (scopeDate !== amzDate.slice(0, 8)) {
    return fail('SignatureDoesNotMatch', `Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '${scopeDate}' != '${amzDate.slice(0, 8)}', from 'x-amz-date'.`,
      `credential scope date ${scopeDate} != X-Amz-Date ${amzDate}`);
  }
  if (scopeRegion !== region) {
    return fail('SignatureDoesNotMatch', `Credential should be scoped to a valid region, not '${scopeRegion}'. `,
      `credential scope region ${scopeRegion}, expected ${region}`);
  }
  if (scopeService !== service) {
    return fail('SignatureDoesNotMatch', `Credential should be scoped to correct service: '${service}'. `,
      `credential scope service ${scopeService}, expected ${service}`);
  }
  if (terminator !== 'aws4_request') {
    return fail('SignatureDoesNotMatch', `Credential should be scoped with a valid terminator: 'aws4_request', not '${terminator}'. `,
      `credential scope terminator ${terminator}`);
  }
  const skew = date.getTime() - now;
  if (skew < -maxSkewMs) {
    return fail('SignatureDoesNotMatch', `Signature expired: ${amzDate} is now earlier than ${toAmzDate(now - maxSkewMs)} (${toAmzDate(now)} - ${maxSkewMs / 60000} min.)`,
      `X-Amz-Date ${amzDate} is ${-skew} ms in the past`);
  }
  if (skew > maxSkewMs) {
    return fail('SignatureDoesNotMatch', `Signature not yet current: ${amzDate} is still later than ${toAmzDate(now + maxSkewMs)} (${toAmzDate(now)} + ${maxSkewMs / 60000} min.)`,
      `X-Amz-Date ${amzDate} is ${skew} ms in the future`);
  }
  const signed = params.SignedHeaders.split(';');
  const sigFail = (reason, extra) => fail('SignatureDoesNotMatch', SIGNATURE_MESSAGE, reason, extra);
  if (signed.some((n) => n === '' || n !== n.toLowerCase())) {
    return sigFail(`SignedHeaders must be non-empty lower-case names: ${params.SignedHeaders}`);
  }
  if (signed.join(';') !== [...new Set(signed)].sort().join(';')) {
    return sigFail(`SignedHeaders must be sorted and unique: ${params.SignedHeaders}`);
  }
  if (!signed.includes('host')) {
    return fail('SignatureDoesNotMatch', "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.",
      `host not in SignedHeaders ${params.SignedHeaders}`);
  }
  if (!signed.includes('x-amz-date')) {
    return sigFail(`x-amz-date not in SignedHeaders ${params.SignedHeaders}`);
  }
  const absent = signed.filter((n) => h[n] === undefined);
  if (absent.length) return sigFail(`signed header(s) not in the request: ${absent.join(', ')}`);
  const token = h['x-amz-security-token'];
  if (sessionToken) {
    if (token !== sessionToken) {
      return fail('InvalidClientTokenId', TOKEN_MESSAGE,
        token === undefined ? 'no X-Amz-Security-Token header' : 'X-Amz-Security-Token differs from the session token');
    }
    if (requireSignedSessionToken && !signed.includes('x-amz-security-token')) {
      return sigFail('x-amz-security-token is not in SignedHeaders');
    }
  } else if (token !== undefined) {
    return fail('InvalidClientTokenId', TOKEN_MESSAGE, 'X-Amz-Security-Token sent but no session token is in use');
  }
  const bodyHash = sha256hex(body);
  const claimed = h['x-amz-content-sha256'];
  if (claimed !== undefined && claimed !== bodyHash) {
    return sigFail(`x-amz-content-sha256 ${claimed} is not the SHA-256 of the body (${bodyHash})`);
  }

  const url = String(req.url ?? '/');
  const qi = url.indexOf('?');
  const request = {
    method: req.method, protocol: 'http:', hostname: 'verify.invalid',
    path: qi < 0 ? url : url.slice(0, qi), query: parseQuery(qi < 0 ? '' : url.slice(qi + 1)),
    headers: Object.fromEntries(signed.map((n) => [n, String(h[n])])), body,
  };
  const tokenSigned = sessionToken && signed.includes('x-amz-security-token');
  const signer = new SignatureV4({ service, region, sha256: Sha256, uriEscapePath: true, applyChecksum: false,
    credentials: { accessKeyId, secretAccessKey, ...(tokenSigned ? { sessionToken } : {}) } });
  const signableHeaders = new Set(signed);
  const expected = await signer.sign(request, { signingDate: date, signableHeaders });
  const em = /SignedHeaders=([^,]*), Signature=([0-9a-f]{64})$/.exec(expected.headers.authorization);
  if (!em) throw new Error(`verifySigV4: unexpected signer output ${expected.headers.authorization}`);
  const got = Buffer.from(params.Signature);
  const want = Buffer.from(em[2]);
  if (em[1] === params.SignedHeaders && got.length === want.length && timingSafeEqual(got, want)) {
    return { ok: true };
  }
  // What we expected, for the test output (AWS used to put the same in its message).
  const canonicalRequest = signer.createCanonicalRequest({ ...request, headers: { ...request.headers } },
    getCanonicalHeaders({ headers: request.headers }, undefined, signableHeaders), claimed ?? bodyHash);
  const stringToSign = `AWS4-HMAC-SHA256\n${amzDate}\n${scopeDate}/${region}/${service}/aws4_request\n${sha256hex(canonicalRequest)}`;
  return sigFail(`signature ${params.Signature} != expected ${em[2]}`, { canonicalRequest, stringToSign });
}

// MD5OfMessageAttributes as SQS computes it (sorted names; each: len+name, len+type,
// transport byte 1 = String/Number, 2 = Binary, len+value; lengths 4-byte big-endian).
export function md5OfMessageAttributes(attrs) {
  const parts = [];
  const lp = (b) => { const n = Buffer.alloc(4); n.writeUInt32BE(b.length); parts.push(n, b); };
  for (const name of Object.keys(attrs).sort()) {
    const a = attrs[name];
    lp(Buffer.from(name, 'utf8'));
    lp(Buffer.from(a.DataType, 'utf8'));
    if (a.DataType.startsWith('Binary')) {
      parts.push(Buffer.from([2]));
      lp(Buffer.from(a.BinaryValue ?? '', 'base64'));
    } else {
      parts.push(Buffer.from([1]));
      lp(Buffer.from(a.StringValue ?? '', 'utf8'));
    }
  }
  return createHash('md5').update(Buffer.concat(parts)).digest('hex');
}

// Real SQS's rule for MessageAttributeNames: "All" or ".*" = everything, "foo.*" = names
// starting with "foo.", anything else an exact (case-sensitive) name.
export function messageAttributeWanted(names, name) {
  return names.some((n) => n === 'All' || n === '.*' || n === name
    || (n.endsWith('.*') && name.startsWith(n.slice(0, -1))));
}

// Filters a ReceiveMessage answer (in place) to what `request` asked for, like real SQS.
export function filterReceiveAnswer(answer, request = {}) {
  const maNames = request.MessageAttributeNames ?? [];
  const sysNames = [...(request.AttributeNames ?? []), ...(request.MessageSystemAttributeNames ?? [])];
  for (const m of answer?.Messages ?? []) {
    const kept = {};
    for (const [k, v] of Object.entries(m.MessageAttributes ?? {})) {
      if (messageAttributeWanted(maNames, k)) kept[k] = v;
    }
    if (Object.keys(kept).length) {
      m.MessageAttributes = kept;
      m.MD5OfMessageAttributes = md5OfMessageAttributes(kept);
    } else {
      delete m.MessageAttributes;
      delete m.MD5OfMessageAttributes;
    }
    if (m.Attributes) {
      if (!sysNames.includes('All')) {
        for (const k of Object.keys(m.Attributes)) if (!sysNames.includes(k)) delete m.Attributes[k];
      }
      if (Object.keys(m.Attributes).length === 0) delete m.Attributes;
    }
  }
  return answer;
}

// Options: target (fauxqs endpoint), accessKeyId, secretAccessKey, sessionToken, region,
// service ('sqs'), tls (false: http://127.0.0.1:PORT; true: https://localhost:PORT with the
// test CA's localhost certificate), maxSkewMs, requireSignedSessionToken (true),
// filterAttributes (true), now() (clock for the skew check), keepAliveTimeoutMs.
export async function startSqsProxy({ target, accessKeyId, secretAccessKey, sessionToken,
  region = 'us-east-1', service = 'sqs', tls = false, maxSkewMs = 15 * 60 * 1000,
  requireSignedSessionToken = true, filterAttributes = true, now = () => Date.now(),
  keepAliveTimeoutMs } = {}) {
  if (!target || !accessKeyId || !secretAccessKey) throw new Error('startSqsProxy: target, accessKeyId and secretAccessKey are required');
  const targetUrl = new URL(target);
  const upstreamLib = targetUrl.protocol === 'https:' ? https : http;
  const agent = new upstreamLib.Agent({ keepAlive: true });
  const aborter = new AbortController();
  const sockets = new Set();
  const waiters = new Set();
  let seq = 0;
  let connSeq = 0;

  const proxy = {
    endpoint: undefined,
    requests: [],          // every request, see rec below
    connections: 0,        // TCP connections accepted so far
    resumed: 0,            // TLS connections that resumed a session (by ID: the proxy keeps them)
    get openConnections() { return sockets.size; },
    get rejected() { return proxy.requests.filter((r) => r.authorized === false); },
    fault: null,
    onRequest: null,       // (rec) => void, when a correctly signed request arrives
    onResponse: null,      // (rec) => void, when any request has been answered (or reset)
    ops(op) { return proxy.requests.filter((r) => r.op === op); },
    reset() { proxy.requests.length = 0; },   // forgets requests (connections keeps counting)
    // Resolves with the `count`-th answered request matching `match` (an op name or a
    // predicate on rec), counting ones already answered; rejects after timeoutMs.
    waitFor(match, { count = 1, timeoutMs = 10000 } = {}) {
      const test = typeof match === 'function' ? match : (r) => r.op === match;
      const hit = () => proxy.requests.filter((r) => r.done && test(r))[count - 1];
      const found = hit();
      if (found) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        const w = {
          check() { const r = hit(); if (r) { clearTimeout(w.timer); waiters.delete(w); resolve(r); } },
          timer: setTimeout(() => {
            waiters.delete(w);
            reject(new Error(`sqs proxy: no ${count} x ${typeof match === 'function' ? 'matching request' : match} within ${timeoutMs} ms; seen: ${proxy.requests.map((r) => `${r.op}:${r.status}`).join(' ')}`));
          }, timeoutMs),
        };
        waiters.add(w);
      });
    },
    close,
  };

  const finish = (rec) => {
    rec.done = true;
    rec.ms = Date.now() - rec.at;
    try { proxy.onResponse?.(rec); } catch (e) { rec.observerError = e; }
    for (const w of [...waiters]) w.check();
  };

  const reply = (res, rec, { status, headers = {}, body }) => {
    const payload = body === undefined ? Buffer.alloc(0)
      : Buffer.isBuffer(body) ? body : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
    const hdrs = { 'content-type': JSON_TYPE, 'x-amzn-requestid': randomUUID(), ...headers,
      'content-length': payload.length };
    rec.status = status;
    try { rec.response = JSON.parse(payload.toString('utf8')); } catch { rec.response = payload.toString('utf8'); }
    if (!res.destroyed) res.writeHead(status, hdrs).end(payload);
    finish(rec);
  };

  const resetConn = (req, rec) => {
    rec.status = 'reset';
    req.socket.destroy();
    finish(rec);
  };

  const trickle = (res, rec, ms) => new Promise((resolve) => {
    rec.status = 'trickled';
    res.writeHead(200, { 'content-type': JSON_TYPE, 'content-length': 1 << 20 });
    const timer = setInterval(() => res.write(' '), ms);
    res.once('close', () => { clearInterval(timer); finish(rec); resolve(); });
  });

  const forward = (req, res, body) => new Promise((resolve, reject) => {
    const headers = {};
    for (const [k, v] of Object.entries(req.headers)) if (!HOP_BY_HOP.has(k)) headers[k] = v;
    headers['content-length'] = body.length;
    const up = upstreamLib.request({ protocol: targetUrl.protocol, hostname: targetUrl.hostname,
      port: targetUrl.port, method: req.method, path: req.url, headers, agent,
      signal: aborter.signal });
    up.on('response', (ures) => {
      const chunks = [];
      ures.on('data', (c) => chunks.push(c));
      ures.on('end', () => resolve({ status: ures.statusCode, headers: ures.headers, body: Buffer.concat(chunks) }));
      ures.on('error', reject);
    });
    up.on('error', reject);
    // The client went away (lambdo killed, timeout): stop waiting upstream too.
    res.once('close', () => { if (!res.writableFinished) up.destroy(); });
    up.end(body);
  });

  async function handle(req, res, ctx) {
    const chunks = [];
    for await (const c of req) chunks.push(c);
    const raw = Buffer.concat(chunks);
    const targetHeader = req.headers['x-amz-target'];
    let body;
    try { body = raw.length ? JSON.parse(raw.toString('utf8')) : undefined; } catch { body = raw.toString('utf8'); }
    const rec = {
      seq: ++seq, conn: req.socket.lambdoConn, at: Date.now(), method: req.method, path: req.url,
      op: targetHeader ? String(targetHeader).replace(/^AmazonSQS\./, '') : null,
      headers: { ...req.headers }, body, raw,
      authorized: undefined, reason: undefined, status: undefined, response: undefined, done: false,
    };
    proxy.requests.push(rec);
    ctx.rec = rec;
    const v = await verifySigV4({ method: req.method, url: req.url, headers: req.headers, body: raw },
      { accessKeyId, secretAccessKey, sessionToken, region, service, now: now(), maxSkewMs,
        requireSignedSessionToken });
    rec.authorized = v.ok;
    if (!v.ok) {
      rec.reason = v.reason;
      rec.rejection = v;
      return reply(res, rec, authError(v.code, v.message));
    }
    try { proxy.onRequest?.(rec); } catch (e) { rec.observerError = e; }
    const f = proxy.fault ? await proxy.fault(rec.op, body, rec) : null;
    if (f) {
      rec.fault = f;
      if (f.delayMs) await sleep(f.delayMs, undefined, { signal: aborter.signal });
      if (f.reset) return resetConn(req, rec);
      if (f.trickleMs) return trickle(res, rec, f.trickleMs);
      if (f.status) return reply(res, rec, f);
    }
    let fwd = raw;
    if (f?.request) {
      const nb = await f.request(body, rec);
      if (nb !== undefined) {
        rec.forwardedBody = nb;
        fwd = Buffer.from(JSON.stringify(nb));
      }
    }
    const up = await forward(req, res, fwd);
    if (f?.resetAfterForward) {
      rec.forwardedStatus = up.status;
      return resetConn(req, rec);
    }
    let out = up.body;
    const isJson = String(up.headers['content-type'] ?? '').includes('json');
    if (isJson && ((rec.op === 'ReceiveMessage' && up.status === 200 && filterAttributes) || f?.transform)) {
      let json = JSON.parse(up.body.toString('utf8'));
      if (rec.op === 'ReceiveMessage' && up.status === 200 && filterAttributes) json = filterReceiveAnswer(json, body);
      if (f?.transform) json = (await f.transform(json, up.status, rec)) ?? json;
      out = Buffer.from(JSON.stringify(json));
    }
    const headers = {};
    for (const [k, val] of Object.entries(up.headers)) if (!HOP_BY_HOP.has(k) && k !== 'date') headers[k] = val;
    return reply(res, rec, { status: up.status, headers, body: out });
  }

  const onRequest = (req, res) => {
    const ctx = {};
    handle(req, res, ctx).catch((err) => {
      const { rec } = ctx;
      if (aborter.signal.aborted || req.socket.destroyed) {
        if (rec && !rec.done) { rec.status = 'aborted'; finish(rec); }
        return;
      }
      if (rec) rec.error = err;
      if (!res.headersSent) {
        const e = sqsError('InternalFailure', `test proxy: ${err.message}`, { status: 500, fault: 'Receiver',
          namespace: 'com.amazon.coral.service' });
        if (rec) reply(res, rec, e); else res.writeHead(500).end();
      } else req.socket.destroy();
    });
  };

  const server = tls
    ? https.createServer({ key: testCerts().localhost.key, cert: testCerts().localhost.cert }, onRequest)
    : http.createServer(onRequest);
  if (keepAliveTimeoutMs !== undefined) server.keepAliveTimeout = keepAliveTimeoutMs;
  // rec.conn numbers the connection a request came on (TLS: the TLS connection).
  server.on('connection', (s) => {
    proxy.connections++;
    if (!tls) s.lambdoConn = ++connSeq;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  if (tls) {
    server.on('secureConnection', (s) => {
      s.lambdoConn = ++connSeq;
      if (s.isSessionReused()) proxy.resumed++;
    });
    server.on('tlsClientError', () => {});
    // Node's TLS server resumes session IDs only with a cache of its own: a real server has one.
    const cache = new Map();
    server.on('newSession', (id, data, cb) => { cache.set(id.toString('hex'), data); cb(); });
    server.on('resumeSession', (id, cb) => cb(null, cache.get(id.toString('hex')) || null));
  }
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => { server.off('error', reject); resolve(); });
  });
  const { port } = server.address();
  proxy.endpoint = tls ? `https://localhost:${port}` : `http://127.0.0.1:${port}`;
  proxy.port = port;

  let closing;
  function close() {
    closing ??= new Promise((resolve) => {
      aborter.abort();
      for (const w of waiters) clearTimeout(w.timer);
      waiters.clear();
      server.close(() => resolve());
      for (const s of sockets) s.destroy();
      agent.destroy();
    });
    return closing;
  }
  return proxy;
}
