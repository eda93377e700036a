// The largest messages SQS accepts go all the way through: ten 1 MiB messages (1,048,576
// bytes counting the image attribute, SQS's own limit) whose bodies are all '"' and '\',
// so every byte is escaped in the ReceiveMessage answer (about 20 MiB for ten), plus a
// small one. Each reaches its own Machine byte for byte (events file, base64 in the
// create body), is received once, and is deleted.
//   node --test tests/large.test.mjs
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { startSqs } from './lib/fauxqs.mjs';
import { startSqsProxy } from './lib/sqsproxy.mjs';
import { startFlyApi } from './lib/flyapi.mjs';
import { testCerts } from './lib/certs.mjs';
import { lambdoCommand } from './lib/tools.mjs';

const REGION = 'us-east-1';
const CREDS = { accessKeyId: 'AKIDLAMBDOLARGE', secretAccessKey: 'lambdo/large+test+secret' };
const TOKEN = 'fo1_large_test_token';
const APP = 'lambdo-large';
const MAX = 1048576;

// A JSON string body of exactly `size` bytes made only of '"' and '\' (\" and \\ escapes).
function escapeHeavyBody(size) {
  const pairs = Math.floor((size - 2) / 2);
  let inner = '';
  for (let i = 0; i < pairs; i++) inner += i % 2 ? '\\\\' : '\\"';
  return `"${inner}"${size % 2 ? ' ' : ''}`;
}

describe('lambdo with 1 MiB messages', () => {
  let sqs, proxy, fly, certs;

  before(async () => {
    certs = testCerts();
    sqs = await startSqs({ region: REGION });
    proxy = await startSqsProxy({ target: sqs.endpoint, ...CREDS, region: REGION });
    fly = await startFlyApi({ token: TOKEN, app: APP });
  });
  after(async () => {
    await fly?.close();
    await proxy?.close();
    await sqs?.close();
  });

  // lambdo --once against url; resolves when it exits (or after 180 s: exit null).
  async function lambdoOnce(url) {
    const [cmd, ...args] = lambdoCommand(['--once']);
    const proc = spawn(cmd, args, { env: { PATH: process.env.PATH,
      LAMBDO_SQS_QUEUE_URL: url, AWS_REGION: REGION,
      AWS_ACCESS_KEY_ID: CREDS.accessKeyId, AWS_SECRET_ACCESS_KEY: CREDS.secretAccessKey,
      LAMBDO_FLY_TOKEN: TOKEN, LAMBDO_FLY_APP: APP, LAMBDO_FLY_REGION: 'iad',
      LAMBDO_FLY_API_URL: fly.url, SSL_CERT_FILE: certs.caFile,
      LAMBDO_VISIBILITY_TIMEOUT: '120', LAMBDO_SQS_LONG_POLL_SECONDS: '1',
      LAMBDO_FLY_CREATE_RATE: '100', LAMBDO_FLY_CREATE_BURST: '100', LAMBDO_LOG_LEVEL: 'debug',
    }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    proc.stdout.on('data', (d) => { out += d; });
    proc.stderr.on('data', (d) => { out += d; });
    const exit = await Promise.race([new Promise((resolve) => proc.on('exit', (code) => resolve({ code }))),
      sleep(180000, null, { ref: false })]);
    if (!exit) proc.kill('SIGKILL');
    return { exit, out };
  }

  it('ten 1 MiB messages in one receive and a small one: each runs, byte for byte, received once', async () => {
    const { url } = await sqs.createQueue('large1', { baseUrl: proxy.endpoint, visibilityTimeout: 120 });
    const image = 'registry.fly.io/large:1';
    const attrSize = 'image'.length + 'String'.length + image.length;
    const big = escapeHeavyBody(MAX - attrSize);
    assert.equal(Buffer.byteLength(big) + attrSize, MAX);
    for (let i = 0; i < 10; i++) await sqs.send(url, big, { image });
    await sqs.send(url, '{"id":"small"}', { image });
    const { exit, out } = await lambdoOnce(url);
    assert.ok(exit, `lambdo --once did not exit in 180 s:\n${out.slice(-4000)}`);
    assert.equal(exit.code, 0, out.slice(-4000));
    assert.doesNotMatch(out, /over the limit|too large/i);

    const bigOnes = fly.machines.filter((m) => m.eventsRaw?.length > MAX / 2);
    assert.equal(bigOnes.length, 10, 'each 1 MiB event runs alone (two do not fit in LAMBDO_MAX_EVENTS_BYTES)');
    for (const m of bigOnes) assert.ok(m.eventsRaw.equals(Buffer.from(`[${big}]`)), 'the events file holds the body, byte for byte');
    assert.equal(fly.machines.filter((m) => m.events?.some((e) => e?.id === 'small')).length, 1);
    const c = await sqs.counts(url);
    assert.equal(c.visible + c.inFlight, 0, 'every message deleted');
    const receives = proxy.requests.filter((q) => q.op === 'ReceiveMessage' && q.body.QueueUrl === url);
    assert.equal(receives[0].body.MaxNumberOfMessages, 10);
    const ids = receives.flatMap((q) => q.response?.Messages ?? []).map((m) => m.MessageId);
    assert.equal(ids.length, 11, 'each message received once');
    assert.equal(new Set(ids).size, 11);
    assert.ok(receives.some((q) => q.response?.Messages?.length === 10), 'the ten big ones came in one answer');
  });

  it('an answer over the cap is not read: the next receives ask for half as many messages', async () => {
    const { url } = await sqs.createQueue('large2', { baseUrl: proxy.endpoint, visibilityTimeout: 120 });
    for (let i = 0; i < 3; i++) await sqs.send(url, `{"id":"f${i}"}`, { image: 'registry.fly.io/large:2' });
    // What an SQS escaping more than JSON must would send: over SQS_RECEIVE_MAX_BODY
    // (20.6 MiB), answered by the proxy itself, so no message is taken from the queue.
    const huge = Buffer.alloc(10 * (2 * MAX + 65536) + 1, ' ');
    proxy.fault = (op, body) => (op === 'ReceiveMessage' && body.QueueUrl === url && body.MaxNumberOfMessages > 5
      ? { status: 200, body: huge } : null);
    let r;
    try { r = await lambdoOnce(url); } finally { proxy.fault = null; }
    const { exit, out } = r;
    assert.ok(exit, `lambdo --once did not exit in 180 s:\n${out.slice(-4000)}`);
    assert.equal(exit.code, 0, out.slice(-4000));
    assert.match(out, /over the limit of 21626880; asking for at most 5 messages from now on/);
    const receives = proxy.requests.filter((q) => q.op === 'ReceiveMessage' && q.body.QueueUrl === url)
      .map((q) => q.body.MaxNumberOfMessages);
    assert.equal(receives[0], 10);
    assert.ok(receives.length >= 2 && receives.slice(1).every((n) => n === 5), `MaxNumberOfMessages asked: ${receives}`);
    for (let i = 0; i < 3; i++)
      assert.equal(fly.machines.filter((m) => m.events?.some((e) => e?.id === `f${i}`)).length, 1, `f${i} ran once`);
    const c = await sqs.counts(url);
    assert.equal(c.visible + c.inFlight, 0, 'every message deleted');
  });
});
