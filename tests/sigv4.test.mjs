// Differential test of lambdo's SigV4 signer (sigv4.c, through tests/tool_sigv4) against
// the AWS JS SDK's signer, @smithy/signature-v4. Requests are generated deterministically
// from a seeded PRNG; each is described once and turned into both signers' inputs: the
// raw query string lambdo gets and the parsed query object Smithy takes come from the same
// decoded key/value pairs. Authorization and the added headers must agree byte for byte.
//
// Kept out of the generated set, because there Smithy is not what we compare against:
//  - a "Date" header: Smithy deletes it from the request (it is one of its "generated"
//    headers); lambdo signs it like any other header, as the SigV4 spec says.
//  - a query key "X-Amz-Signature": Smithy drops it (a presigning concern); lambdo signs it.
//  - repeated header names are one field in Smithy's model, so Smithy gets the values
//    joined with ',' after trimming each one; that is the AWS vectors' rule
//    (get-header-key-duplicate: "my-header1:value2,value2,value1").
//  - empty '&&' pieces and a key-less, '='-less parameter cannot be written as a query
//    object; lambdo skips empty pieces (unit-tested in t_sigv4.c).
// Of these, only the repeated headers touch something the AWS test vectors define, and
// there Smithy is fed the vectors' rule. Everywhere else the vectors cover (paths, query
// encoding and order, value folding, tokens, payload hashes) Smithy agrees with them, so
// nothing else had to be left out.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash, createHmac } from 'node:crypto';
import { SignatureV4 } from '@smithy/signature-v4';
import { Sha256 } from '@aws-crypto/sha256-js';
import { toolCommand } from './lib/tools.mjs';

const COUNT = 400;
const SEED = 0x5167f4;
const TOOL_TIMEOUT_MS = 240_000; // valgrind is slow

// mulberry32: small, seeded, the same sequence on every machine.
function prng(seed) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n) => Math.floor(next() * n);
  const pick = (arr) => arr[int(arr.length)];
  const chance = (p) => next() < p;
  return { next, int, pick, chance };
}

const METHODS = ['GET', 'POST', 'PUT', 'DELETE', 'HEAD'];
const SCOPES = [['us-east-1', 'sqs'], ['eu-west-3', 'service'], ['ap-southeast-2', 'execute-api']];
const DATES = ['2015-08-30T12:36:00Z', '2026-11-27T20:00:00Z', '2000-02-29T23:59:59Z'];
const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';

// Path pieces as they appear on the wire: already percent-encoded ones get encoded again.
const PATH_PIECES = [
  'a', 'Foo', 'bar-baz', 'x.y', '~user', '_', '123', 'queue', // unreserved
  ':', '@', '!', '$', '&', "'", '(', ')', '*', '+', ',', ';', '=', '[', ']', // reserved
  '%20', '%2F', '%41', '%e1%88%b4', '%25', '%2E%2E', '%', // percent-encoded (and a stray %)
  ' ', 'é', 'ሴ', '😀', 'naïve', '"', '<', '^', '|', '{', // space, UTF-8, others
];
const PATH_SPECIAL = ['.', '..', '', '...'];

// Query keys and values, decoded (as Smithy's query object holds them).
const QUERY_PIECES = [
  'Param1', 'value', 'Action', 'x', 'A', 'a', 'b-c', '~', '_', '.', '0',
  ' ', '+', '&', '=', '%', '#', '?', '/', ':', '@', '!', '$', "'", '(', ')', '*', ',', ';',
  '[', ']', '"', '<', '>', '\\', '^', '`', '{', '|', '}',
  'é', 'ሴ', '😀', 'ü', '中文',
];

const HEADER_NAMES = [
  'Content-Type', 'X-Amz-Target', 'x-amz-meta-color', 'My-Header1', 'X-Custom_Name',
  'Accept', 'Content-Length', 'X-Forwarded-For', 'Via', 'x-amz-user-agent', 'A', 'z9',
  // not signed by either signer (hop-by-hop or rewritten in flight):
  'User-Agent', 'X-Amzn-Trace-Id', 'Connection', 'Proxy-Authorization', 'Sec-Fetch-Mode',
  'Expect', 'Cache-Control', 'Authorization', 'Referer', 'TE',
];
const HEADER_VALUES = [
  'value', '  leading', 'trailing   ', ' a   b \t c ', '\tx\t', '', ' ', 'application/x-amz-json-1.0',
  '"a   b   c"', 'héllo wörld', 'a,b', 'x: y', 'v1\n  v2', 'line1\r\n\tline2', '😀', 'AmazonSQS.ReceiveMessage',
  '\t \t', 'MiXeD CaSe', '=;,', '\u00a0nbsp\u00a0', 'vt\vff\f', // folded by neither signer
];
const BODIES = [
  null, '', 'Param1=value1', '{"QueueUrl":"http://localhost/1/q","MaxNumberOfMessages":10}',
  'héllo 😀\nsecond line\r\n', ' ',
];

const cased = (r, s) => r.pick([
  () => s, () => s.toLowerCase(), () => s.toUpperCase(),
  () => [...s].map((c) => (r.chance(0.5) ? c.toUpperCase() : c.toLowerCase())).join(''),
])();

const randomString = (r, alphabet, min, max) => {
  let s = '';
  for (let n = min + r.int(max - min + 1); n > 0; n--) s += alphabet[r.int(alphabet.length)];
  return s;
};

const hex2 = (b, lower) => {
  const h = b.toString(16).padStart(2, '0');
  return '%' + (lower ? h : h.toUpperCase());
};

// One decoded string as a raw query component, written in one of the many ways a client
// may: characters that would change the query's structure are always encoded, others
// sometimes, with upper- or lower-case hex, UTF-8 sometimes raw.
function rawQueryPart(r, s, isKey) {
  let out = '';
  for (const ch of s) {
    const mustEncode = ch === '&' || ch === '%' || ch === '#' || (isKey && ch === '=');
    if (mustEncode || r.chance(0.4)) {
      const lower = r.chance(0.3);
      for (const b of Buffer.from(ch, 'utf8')) out += hex2(b, lower);
    } else {
      out += ch;
    }
  }
  return out;
}

function genPath(r) {
  const segs = [];
  for (let n = r.int(6); n > 0; n--) {
    if (r.chance(0.25)) {
      segs.push(r.pick(PATH_SPECIAL));
    } else {
      let seg = '';
      for (let k = 1 + r.int(3); k > 0; k--) seg += r.pick(PATH_PIECES);
      segs.push(seg);
    }
  }
  return '/' + segs.join('/') + (segs.length && r.chance(0.3) ? '/' : '');
}

function genQuery(r) {
  const pairs = []; // [decodedKey, decodedValue | null (no '=')]
  const keys = [];
  for (let n = r.int(6); n > 0; n--) {
    let key;
    if (keys.length && r.chance(0.3)) {
      key = r.pick(keys); // a repeated key
    } else {
      key = '';
      for (let k = r.int(4); k > 0; k--) key += r.pick(QUERY_PIECES);
      if (key.toLowerCase() === 'x-amz-signature' || key === '__proto__') continue;
      keys.push(key);
    }
    let value = '';
    for (let k = r.int(4); k > 0; k--) value += r.pick(QUERY_PIECES);
    // No '=' at all: only for a non-empty key, else the piece is empty and carries nothing.
    pairs.push([key, key !== '' && value === '' && r.chance(0.5) ? null : value]);
  }
  if (!pairs.length) return { raw: r.chance(0.5) ? null : '', object: {} };
  const raw = pairs
    .map(([k, v]) => rawQueryPart(r, k, true) + (v === null ? '' : '=' + rawQueryPart(r, v, false)))
    .join('&');
  const object = {};
  for (const [k, v] of pairs) {
    const value = v === null ? '' : v;
    if (!Object.hasOwn(object, k)) object[k] = value;
    else if (Array.isArray(object[k])) object[k].push(value);
    else object[k] = [object[k], value];
  }
  return { raw, object };
}

function genRequest(r, index) {
  const [region, service] = r.pick(SCOPES);
  const dateIso = r.pick(DATES);
  const amzDate = dateIso.replace(/[-:]/g, '');
  const token = r.chance(0.4) ? randomString(r, B64 + '=', 40, 600) : null;
  const body = r.pick(BODIES) ?? (r.chance(0.1) ? randomString(r, B64 + ' \n{}"é', 100, 2000) : null);
  const host = r.pick(['example.amazonaws.com', `sqs.${region}.amazonaws.com`, 'localhost:9324']);
  const headers = [[cased(r, 'Host'), r.chance(0.2) ? ` ${host}  ` : host]];
  for (let n = r.int(7); n > 0; n--) {
    const name = r.chance(0.3) && headers.length > 1 ? headers[1 + r.int(headers.length - 1)][0] : r.pick(HEADER_NAMES);
    headers.push([cased(r, name), r.pick(HEADER_VALUES)]);
  }
  // Headers the signer would add, sent already: they are signed as they are, not added.
  if (r.chance(0.2)) headers.push([cased(r, 'X-Amz-Date'), amzDate]);
  if (token && r.chance(0.3)) headers.push([cased(r, 'X-Amz-Security-Token'), token]);
  if (r.chance(0.15)) {
    headers.push([cased(r, 'x-amz-content-sha256'),
      r.pick(['UNSIGNED-PAYLOAD', 'STREAMING-UNSIGNED-PAYLOAD-TRAILER',
        createHash('sha256').update(body ?? '').digest('hex')])]);
  }
  // Shuffle, keeping the relative order of repeated names (their values' order counts).
  for (let i = headers.length - 1; i > 0; i--) {
    const j = r.int(i + 1);
    if (headers[i][0].toLowerCase() !== headers[j][0].toLowerCase()) [headers[i], headers[j]] = [headers[j], headers[i]];
  }
  const query = genQuery(r);
  return {
    index,
    method: r.pick(METHODS),
    path: genPath(r),
    query,
    headers,
    body,
    region,
    service,
    dateIso,
    amzDate,
    accessKeyId: 'AKID' + randomString(r, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567', 12, 16),
    secret: randomString(r, B64, r.chance(0.2) ? 61 : 40, r.chance(0.2) ? 120 : 40),
    token,
    // Mostly SQS-style signing; some S3-style (no normalization, path as sent), which
    // Smithy does with uriEscapePath false.
    normalize: r.chance(0.9),
    addSha: r.chance(0.3),
  };
}

const OWS = /^[ \t\r\n]+|[ \t\r\n]+$/g;

function toToolInput(d) {
  return {
    method: d.method,
    path: d.path,
    query: d.query.raw,
    headers: d.headers,
    body: d.body,
    region: d.region,
    service: d.service,
    amz_date: d.amzDate,
    access_key_id: d.accessKeyId,
    secret_access_key: d.secret,
    session_token: d.token,
    normalize_path: d.normalize,
    add_content_sha256: d.addSha,
  };
}

async function smithySign(d) {
  // Smithy's headers are an object: a repeated name becomes one field (see the top).
  const groups = new Map();
  for (const [name, value] of d.headers) {
    const lower = name.toLowerCase();
    if (!groups.has(lower)) groups.set(lower, { name, values: [] });
    groups.get(lower).values.push(value);
  }
  const headers = {};
  for (const { name, values } of groups.values()) {
    headers[name] = values.length === 1 ? values[0] : values.map((v) => v.replace(OWS, '')).join(',');
  }
  const signer = new SignatureV4({
    credentials: { accessKeyId: d.accessKeyId, secretAccessKey: d.secret, ...(d.token ? { sessionToken: d.token } : {}) },
    region: d.region,
    service: d.service,
    sha256: Sha256,
    uriEscapePath: d.normalize,
    applyChecksum: d.addSha,
  });
  const request = {
    method: d.method,
    protocol: 'https:',
    hostname: 'example.amazonaws.com',
    path: d.path,
    query: d.query.object,
    headers,
    ...(d.body === null ? {} : { body: d.body }),
  };
  const signed = await signer.sign(request, { signingDate: new Date(d.dateIso) });
  // Added: what the signed request carries that the request did not, or carries changed.
  const before = Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]));
  const added = Object.entries(signed.headers)
    .filter(([k, v]) => before[k.toLowerCase()] !== v)
    .map(([k, v]) => [k.toLowerCase(), v]);
  return { authorization: signed.headers.authorization, added };
}

function runTool(inputs) {
  const [cmd, ...args] = toolCommand('tool_sigv4');
  const res = spawnSync(cmd, args, {
    input: inputs.map((i) => JSON.stringify(i)).join('\n') + '\n',
    encoding: 'utf8',
    timeout: TOOL_TIMEOUT_MS,
    maxBuffer: 256 * 1024 * 1024,
  });
  assert.equal(res.error, undefined, `tool_sigv4 did not run: ${res.error}`);
  assert.equal(res.status, 0, `tool_sigv4 exited with ${res.status} (signal ${res.signal}):\n${res.stderr}`);
  const lines = res.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l));
  assert.equal(lines.length, inputs.length, 'tool_sigv4 answered a different number of lines');
  return lines;
}

const sortPairs = (pairs) => pairs.map(([n, v]) => [n.toLowerCase(), v]).sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));

const describe = (d) => JSON.stringify(toToolInput(d));

// The signature of a string to sign, by the book: the key from the secret and the scope
// (the string to sign's third line), then HMAC-SHA256.
function expectedSignature(secret, stringToSign) {
  let key = Buffer.from('AWS4' + secret, 'utf8');
  for (const part of stringToSign.split('\n')[2].split('/')) key = createHmac('sha256', key).update(part).digest();
  return createHmac('sha256', key).update(stringToSign).digest('hex');
}

const r = prng(SEED);
const requests = Array.from({ length: COUNT }, (_, i) => genRequest(r, i));
let toolAnswers = null;
const tool = () => (toolAnswers ??= runTool(requests.map(toToolInput)));

test('generated requests cover what they should', { timeout: 10_000 }, () => {
  // Guards against a generator change that quietly stops exercising a feature.
  const has = (f) => requests.filter(f).length;
  const checks = {
    'session token': has((d) => d.token),
    'x-amz-content-sha256 added': has((d) => d.addSha),
    'S3-style path': has((d) => !d.normalize),
    'dot segment': has((d) => /\/\.\.?(\/|$)/.test(d.path)),
    'double slash': has((d) => d.path.includes('//')),
    'encoded path': has((d) => /%[0-9a-fA-F]{2}/.test(d.path)),
    'UTF-8 path': has((d) => /[^\x00-\x7f]/.test(d.path)),
    'space in path': has((d) => d.path.includes(' ')),
    'repeated query key': has((d) => Object.values(d.query.object).some(Array.isArray)),
    'query key without =': has((d) => d.query.raw && d.query.raw.split('&').some((p) => p && !p.includes('='))),
    'empty query value': has((d) => Object.values(d.query.object).flat().includes('')),
    'UTF-8 query': has((d) => Object.entries(d.query.object).flat(2).some((s) => /[^\x00-\x7f]/.test(s))),
    'repeated header': has((d) => new Set(d.headers.map(([n]) => n.toLowerCase())).size < d.headers.length),
    'tab in header': has((d) => d.headers.some(([, v]) => v.includes('\t'))),
    'multi-line header': has((d) => d.headers.some(([, v]) => v.includes('\n'))),
    'body': has((d) => d.body),
    'X-Amz-Date sent': has((d) => d.headers.some(([n]) => n.toLowerCase() === 'x-amz-date')),
    'token sent': has((d) => d.headers.some(([n]) => n.toLowerCase() === 'x-amz-security-token')),
    'payload hash sent': has((d) => d.headers.some(([n]) => n.toLowerCase() === 'x-amz-content-sha256')),
  };
  for (const m of METHODS) checks[`method ${m}`] = has((d) => d.method === m);
  for (const [what, n] of Object.entries(checks)) assert.ok(n >= 3, `only ${n} generated requests have: ${what}`);
});

test('lambdo and @smithy/signature-v4 sign alike', { timeout: TOOL_TIMEOUT_MS + 60_000 }, async (t) => {
  const answers = tool();
  const mismatches = [];
  for (const d of requests) {
    const c = answers[d.index];
    if (c.error) {
      mismatches.push(`#${d.index}: lambdo refused it (${c.error}: ${c.message})\n  ${describe(d)}`);
      continue;
    }
    const s = await smithySign(d);
    const cAdded = sortPairs(c.added);
    const sAdded = sortPairs(s.added);
    if (c.authorization !== s.authorization || JSON.stringify(cAdded) !== JSON.stringify(sAdded)) {
      mismatches.push(`#${d.index}:\n  input    ${describe(d)}\n  lambdo   ${c.authorization}\n  smithy   ${s.authorization}` +
        `\n  lambdo added ${JSON.stringify(cAdded)}\n  smithy added ${JSON.stringify(sAdded)}` +
        `\n  lambdo canonical request:\n${c.canonical_request}`);
    }
  }
  const msg = `compared ${requests.length} requests with @smithy/signature-v4, ${mismatches.length} differ`;
  t.diagnostic(msg);
  assert.equal(mismatches.length, 0, `${msg}; first ones:\n${mismatches.slice(0, 3).join('\n\n')}`);
});

test("the tool's canonical request and string to sign are what was signed", { timeout: TOOL_TIMEOUT_MS + 60_000 }, () => {
  const answers = tool();
  let checked = 0;
  for (const d of requests) {
    const c = answers[d.index];
    assert.equal(c.error, undefined, `#${d.index} refused: ${c.message}`);
    const sts = c.string_to_sign.split('\n');
    assert.equal(sts.length, 4);
    assert.equal(sts[0], 'AWS4-HMAC-SHA256');
    assert.equal(sts[1], d.amzDate);
    assert.equal(sts[2], `${d.amzDate.slice(0, 8)}/${d.region}/${d.service}/aws4_request`);
    assert.equal(sts[3], createHash('sha256').update(c.canonical_request, 'utf8').digest('hex'), `#${d.index}`);
    const sig = expectedSignature(d.secret, c.string_to_sign);
    assert.ok(c.authorization.endsWith(`, Signature=${sig}`), `#${d.index}: signature is not HMAC(string_to_sign)`);
    checked++;
  }
  assert.equal(checked, COUNT);
});

// tool_sigv4 keeps one struct sigv4_key for all its lines, as an SQS client does for its
// requests: each request twice in a row (the second reuses the first one's key), then with
// another secret (same scope: the key must be derived again), then the next request (other
// scope and secret, mostly).
test('the signing key cache is reused for the same day, region, service and secret only', { timeout: TOOL_TIMEOUT_MS + 60_000 }, () => {
  const inputs = requests.slice(0, 100).map(toToolInput).flatMap((x) => [x, x, { ...x, secret_access_key: `${x.secret_access_key}R` }]);
  const answers = runTool(inputs);
  answers.forEach((c, i) => {
    assert.equal(c.error, undefined, `line ${i} refused: ${c.message}`);
    const sig = expectedSignature(inputs[i].secret_access_key, c.string_to_sign);
    assert.ok(c.authorization.endsWith(`, Signature=${sig}`), `line ${i}: not signed with its own secret and scope`);
  });
  for (let i = 0; i < answers.length; i += 3) {
    assert.equal(answers[i + 1].authorization, answers[i].authorization, `line ${i + 1}: the reused key signs differently`);
    assert.notEqual(answers[i + 2].authorization, answers[i].authorization, `line ${i + 2}: another secret, the same signature`);
  }
});

test('the tool reports refused requests and goes on', { timeout: 60_000 }, () => {
  const base = toToolInput(requests[0]);
  const answers = runTool([
    { ...base, headers: [['X-Other', '1']] },              // no Host
    { ...base, amz_date: '2015-08-30T12:36:00Z', headers: [['Host', 'h']] }, // bad date
    base,
  ]);
  assert.equal(answers[0].error, 'invalid');
  assert.match(answers[0].message, /Host/);
  assert.equal(answers[1].error, 'invalid');
  assert.match(answers[1].message, /amz_date/);
  assert.equal(answers[2].error, undefined);
  assert.match(answers[2].authorization, /^AWS4-HMAC-SHA256 Credential=AKID/);
  for (const a of answers) assert.ok(!JSON.stringify(a).includes(base.secret_access_key), 'secret leaked');
});
