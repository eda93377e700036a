// The lambdo daemon end to end, driven from outside: fauxqs (SQS emulator) behind a proxy that
// verifies every request's SigV4 signature, and an HTTPS test Fly Machines API built from the
// OpenAPI contract that validates every create body. Messages are sent with @aws-sdk/client-sqs.
//   node --test tests/daemon.test.mjs
import { describe, it, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { startSqs } from './lib/fauxqs.mjs';
import { startSqsProxy } from './lib/sqsproxy.mjs';
import { startFlyApi, guestForPreset } from './lib/flyapi.mjs';
import { testCerts } from './lib/certs.mjs';
import path from 'node:path';
import { readdirSync } from 'node:fs';
import { lambdoCommand, ROOT } from './lib/tools.mjs';

const REGION = 'us-east-1';
const CREDS = { accessKeyId: 'AKIDLAMBDOTEST', secretAccessKey: 'lambdo/daemon+test+secret' };
const TOKEN = 'fo1_daemon_test_token_do_not_log';
const APP = 'lambdo-jobs';
const SECRETS = [CREDS.secretAccessKey, TOKEN];

// Waits until cond() is truthy, polling; fails with what was seen.
async function until(cond, what, timeoutMs = 15000) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(50);
  }
}

// Starts lambdo with exactly env (nothing inherited but PATH), collecting its output.
function startLambdo(argv, env) {
  const [cmd, ...args] = lambdoCommand(argv);
  const proc = spawn(cmd, args, { env: { PATH: process.env.PATH, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const run = { proc, out: '', exited: null };
  proc.stdout.on('data', (d) => { run.out += d; });
  proc.stderr.on('data', (d) => { run.out += d; });
  run.exit = new Promise((resolve) => proc.on('exit', (code, signal) => {
    run.exited = { code, signal };
    resolve(run.exited);
  }));
  run.waitLog = (re, timeoutMs) => until(() => re.test(run.out), `log ${re}\n--- log:\n${run.out}`, timeoutMs);
  run.stop = async () => {
    if (!run.exited) proc.kill('SIGTERM');
    const t0 = Date.now();
    const r = await Promise.race([run.exit, sleep(15000).then(() => null)]);
    if (!r) { proc.kill('SIGKILL'); throw new Error(`lambdo did not exit after SIGTERM\n${run.out}`); }
    return { ...r, ms: Date.now() - t0 };
  };
  return run;
}

function assertNoSecrets(text) {
  for (const s of SECRETS) assert.ok(!text.includes(s), `a secret appeared in lambdo's output:\n${text}`);
}

describe('lambdo daemon', () => {
  let sqs, proxy, fly, certs, n = 0;
  const running = [];

  before(async () => {
    certs = testCerts();
    sqs = await startSqs({ region: REGION });
    proxy = await startSqsProxy({ target: sqs.endpoint, ...CREDS, region: REGION });
    fly = await startFlyApi({ token: TOKEN, app: APP });
  });
  after(async () => {
    await fly.close();
    await proxy.close();
    await sqs.close();
  });
  afterEach(async () => {
    for (const r of running.splice(0)) if (!r.exited) await r.stop().catch(() => {});
    for (const region of ['iad', 'ord', 'ams']) fly.clearRegionFault(region);
    fly.fault = null;
    fly.onCreate = null;
    proxy.fault = null;
  });

  async function queue(opts = {}) {
    return sqs.createQueue(`daemon${++n}`, { baseUrl: proxy.endpoint, visibilityTimeout: 30, ...opts });
  }

  function lambdo(url, extra = {}, args = []) {
    const r = startLambdo(args, {
      LAMBDO_SQS_QUEUE_URL: url,
      AWS_REGION: REGION,
      AWS_ACCESS_KEY_ID: CREDS.accessKeyId,
      AWS_SECRET_ACCESS_KEY: CREDS.secretAccessKey,
      LAMBDO_FLY_TOKEN: TOKEN,
      LAMBDO_FLY_APP: APP,
      LAMBDO_FLY_REGION: 'iad',
      LAMBDO_FLY_REGIONS: 'ord,ams',
      LAMBDO_FLY_API_URL: fly.url,
      SSL_CERT_FILE: certs.caFile,
      LAMBDO_SQS_LONG_POLL_SECONDS: '1',
      LAMBDO_VISIBILITY_TIMEOUT: '2',
      LAMBDO_LOG_LEVEL: 'debug',
      ...extra,
    });
    running.push(r);
    return r;
  }

  const machinesFor = (ids) => fly.machines.filter((m) => m.events.some((e) => ids.includes(e.id)));
  const settled = async (url) => { const c = await sqs.counts(url); return c.visible === 0 && c.inFlight === 0; };

  it('groups by image, size and command, passes bodies byte for byte, deletes after create', async () => {
    const { url } = await queue();
    const img = `registry.fly.io/grouping:${n}`;
    const sent = [
      { body: '{"id":"a1","big":12345678901234567890.123456789e-5,"k":[1,  2]}', attrs: { image: img } },
      { body: '{"id":"a2", "unicode":"\\u00e9\u00e9 \\ud83d\\ude00"}', attrs: { image: img, size: 'performance-2x' } },
      { body: '{"id":"b1"}', attrs: { image: `${img}-b`, size: 'shared-cpu-1x' } },
      { body: '{"id":"c1"}', attrs: { image: img, command: '["run","--fast"]' } },
      { body: '{"id":"c2"}', attrs: { image: img, command: '[ "run", "--fast" ]' } },
      { body: '{"id":"g1"}', attrs: { image: img, size: 'a100-40gb' } },
    ];
    for (const m of sent) await sqs.send(url, m.body, m.attrs);
    const before = fly.machines.length;
    const r = lambdo(url, { LAMBDO_ENV: 'production' });
    await until(() => fly.machines.length - before >= 4 && settled(url), 'four machines and an empty queue');
    await sleep(300);
    const stop = await r.stop();
    assert.equal(stop.code, 0, r.out);
    assert.deepEqual(fly.violations, [], 'every create body met the contract');

    const mine = fly.machines.slice(before);
    assert.equal(mine.length, 4, `one machine per group:\n${r.out}`);
    const byId = (id) => mine.find((m) => m.events.some((e) => e.id === id));
    const perf = byId('a1');
    assert.equal(perf, byId('a2'), 'absent size groups with explicit performance-2x');
    assert.equal(perf.eventsRaw.toString('utf8'), `[${sent[0].body},${sent[1].body}]`, 'events file is the bodies, byte for byte');
    assert.deepEqual(perf.guest, guestForPreset('performance-2x'));
    assert.equal(perf.cmd, undefined);
    assert.equal(perf.env.EVENTS_PATH, '/tmp/events.json');
    assert.equal(perf.region, 'iad');

    const b = byId('b1');
    assert.deepEqual(b.guest, guestForPreset('shared-cpu-1x'));
    assert.equal(b.eventsRaw.toString(), '[{"id":"b1"}]');

    const c = byId('c1');
    assert.equal(c, byId('c2'), 'commands compare by meaning, not spacing');
    assert.deepEqual(c.cmd, ['run', '--fast']);

    assert.deepEqual(byId('g1').guest, guestForPreset('a100-40gb'));
    assert.ok(mine.every((m) => m.metadata && Object.keys(m.metadata).length > 0));

    // Deleted only after their Machine existed: every DeleteMessageBatch came after a create.
    const deletes = proxy.requests.filter((q) => q.op === 'DeleteMessageBatch' && q.body.QueueUrl === url);
    assert.equal(deletes.reduce((s, q) => s + q.body.Entries.length, 0), 6);
    // Production logs: every line is one JSON object.
    for (const line of r.out.trim().split('\n')) assert.doesNotThrow(() => JSON.parse(line), line);
    assert.match(r.out, /machine \S+ created in iad for 2 events/);
    assertNoSecrets(r.out);
  });

  it('splits a group at LAMBDO_EVENTS_PER_MACHINE, keeping receive order', async () => {
    const { url } = await queue();
    const img = `registry.fly.io/split:${n}`;
    for (let i = 1; i <= 5; i++) await sqs.send(url, `{"seq":${i}}`, { image: img });
    const before = fly.machines.length;
    const r = lambdo(url, { LAMBDO_EVENTS_PER_MACHINE: '2' });
    await until(async () => fly.machines.length - before >= 3 && settled(url), 'three machines');
    assert.equal((await r.stop()).code, 0);
    // Groups run concurrently, so Machines may be created in any order; each one's events
    // are consecutive and in receive order.
    const seqs = fly.machines.slice(before).map((m) => m.events.map((e) => e.seq)).sort((a, b) => a[0] - b[0]);
    assert.deepEqual(seqs.map((s) => s.length), [2, 2, 1]);
    assert.deepEqual(seqs.flat(), [1, 2, 3, 4, 5]);
  });

  it('fails over to the next region on 503 insufficient capacity', async () => {
    const { url } = await queue();
    const fault = fly.setRegionFault('iad', { status: 503 });
    await sqs.send(url, '{"id":"fo1"}', { image: 'registry.fly.io/failover:1' });
    const r = lambdo(url);
    await until(() => machinesFor(['fo1']).length === 1 && settled(url), 'machine in the fallback region');
    assert.equal((await r.stop()).code, 0);
    assert.equal(machinesFor(['fo1'])[0].region, 'ord');
    assert.ok(fault.fired >= 1);
    assert.match(r.out, /iad.*503/);
    assertNoSecrets(r.out);
  });

  it('waits for Retry-After on 429 and retries the same region', async () => {
    const { url } = await queue();
    const fault = fly.setRegionFault('iad', { status: 429, retryAfter: 1, times: 1 });
    await sqs.send(url, '{"id":"rl1"}', { image: 'registry.fly.io/ratelimit:1' });
    const creates0 = fly.creates().length;
    const r = lambdo(url);
    await until(() => machinesFor(['rl1']).length === 1 && settled(url), 'machine after the 429');
    assert.equal((await r.stop()).code, 0);
    const attempts = fly.creates().slice(creates0);
    assert.equal(fault.fired, 1);
    assert.equal(machinesFor(['rl1'])[0].region, 'iad', 'same region after a 429');
    assert.deepEqual(attempts.map((q) => q.status), [429, 200]);
    const gap = attempts[1].at - attempts[0].at;
    assert.ok(gap >= 950, `waited only ${gap} ms for Retry-After: 1`);
    assert.match(r.out, /iad.*429/);
  });

  it('deletes nothing when every region fails; the messages come back and run once Fly recovers', async () => {
    const { url } = await queue();
    for (const region of ['iad', 'ord', 'ams']) fly.setRegionFault(region, { status: 500 });
    await sqs.send(url, '{"id":"down1"}', { image: 'registry.fly.io/outage:1' });
    const creates0 = fly.creates().length;
    const r = lambdo(url);
    await until(() => fly.creates().length - creates0 >= 3, 'a create attempt in every region');
    await r.waitLog(/no Machine created/);
    assert.equal(proxy.requests.filter((q) => q.op === 'DeleteMessageBatch' && q.body.QueueUrl === url).length, 0,
      'nothing deleted while Fly fails');
    assert.deepEqual(fly.creates().slice(creates0, creates0 + 3).map((q) => q.body.region), ['iad', 'ord', 'ams']);
    for (const region of ['iad', 'ord', 'ams']) fly.clearRegionFault(region);
    await until(() => machinesFor(['down1']).length === 1 && settled(url), 'delivery after recovery', 20000);
    assert.equal((await r.stop()).code, 0);
    assert.equal(machinesFor(['down1']).length, 1);
  });

  it('never dispatches or deletes invalid messages; they reach the dead-letter queue', async () => {
    const { url, dlqUrl } = await queue({ redriveToDlq: 2 });
    const img = 'registry.fly.io/valid:1';
    const bad = [
      await sqs.send(url, '{"id":"noimage"}', {}),
      await sqs.send(url, '{"id":"badsize"}', { image: img, size: 'huge' }),
      await sqs.send(url, '{"id":"badcmd"}', { image: img, command: 'run --fast' }),
      await sqs.send(url, '{"id": broken', { image: img }),
    ];
    await sqs.send(url, '{"id":"good"}', { image: img });
    const r = lambdo(url, { LAMBDO_VISIBILITY_TIMEOUT: '1' });
    await until(() => machinesFor(['good']).length === 1, 'the valid message dispatched');
    await until(async () => (await sqs.counts(dlqUrl)).visible === 4, 'invalid messages in the DLQ', 20000);
    assert.equal((await r.stop()).code, 0);
    const dispatched = fly.machines.flatMap((m) => m.events.map((e) => e.id));
    for (const id of ['noimage', 'badsize', 'badcmd']) assert.ok(!dispatched.includes(id));
    const good = machinesFor(['good']);
    assert.equal(good.length, 1);
    assert.equal(good[0].eventsRaw.toString(), '[{"id":"good"}]', 'invalid neighbours do not corrupt the group');
    for (const id of bad) assert.match(r.out, new RegExp(`message ${id} is invalid`));
    assert.match(r.out, /attribute size: "huge" is not a Fly preset/);
    assert.match(r.out, /attribute command/);
    assert.match(r.out, /body is not valid JSON/);
    assert.match(r.out, /image/);
    const deleted = proxy.requests.filter((q) => q.op === 'DeleteMessageBatch' && q.body.QueueUrl === url)
      .flatMap((q) => q.body.Entries.map((e) => e.ReceiptHandle));
    assert.equal(deleted.length, 1, 'only the valid message was deleted');
  });

  it('exits 1 with a clear message when the AWS secret is wrong', async () => {
    const { url } = await queue();
    const wrong = 'this-is-the-wrong-secret';
    const r = lambdo(url, { AWS_SECRET_ACCESS_KEY: wrong });
    const exit = await Promise.race([r.exit, sleep(10000).then(() => null)]);
    assert.ok(exit, `lambdo kept running with a wrong secret:\n${r.out}`);
    assert.equal(exit.code, 1, r.out);
    assert.match(r.out, /SignatureDoesNotMatch/);
    assert.match(r.out, /HTTP 403/);
    assert.ok(!r.out.includes(wrong), 'the secret is not printed');
    assertNoSecrets(r.out);
  });

  it('finishes a slow create on SIGTERM, deletes its messages, exits 0', async () => {
    const { url } = await queue();
    fly.setRegionFault('iad', { delayMs: 2500, times: 1 });
    await sqs.send(url, '{"id":"slow1"}', { image: 'registry.fly.io/slow:1' });
    const creates0 = fly.requests.filter((q) => q.op === 'Machines_create').length;
    const r = lambdo(url, { LAMBDO_VISIBILITY_TIMEOUT: '30' });
    await until(() => fly.requests.filter((q) => q.op === 'Machines_create').length > creates0, 'the create to start');
    const stop = await r.stop();
    assert.equal(stop.code, 0, r.out);
    assert.ok(stop.ms < 5000, `exit took ${stop.ms} ms`);
    assert.equal(machinesFor(['slow1']).length, 1, 'the create in flight was finished');
    assert.ok(await settled(url), 'and its message deleted: nothing lost, nothing left to run twice');
  });

  it('exit mode: deletes after exit 0, returns the messages after a non-zero exit', async () => {
    const { url } = await queue();
    // Each Machine exits after 300 ms with the code its event asks for.
    fly.onCreate = (m) => setTimeout(() => fly.exitMachine(m.id, m.events[0].code), 300);
    await sqs.send(url, '{"id":"ok1","code":0}', { image: 'registry.fly.io/exit:0' });
    await sqs.send(url, '{"id":"bad1","code":3}', { image: 'registry.fly.io/exit:3' });
    const r = lambdo(url, { LAMBDO_ACK: 'exit', LAMBDO_VISIBILITY_TIMEOUT: '30', LAMBDO_RETRY_DELAY: '60' });
    await r.waitLog(/exited 0 after/);
    await r.waitLog(/exited 3 after .* go back to the queue/);
    await until(async () => (await sqs.counts(url)).delayed + (await sqs.counts(url)).inFlight + (await sqs.counts(url)).visible === 1
      && proxy.requests.some((q) => q.op === 'ChangeMessageVisibilityBatch' && q.body.QueueUrl === url
        && q.body.Entries.some((e) => e.VisibilityTimeout === 60)), 'the failed message returned with LAMBDO_RETRY_DELAY');
    assert.equal((await r.stop()).code, 0);
    const deletes = proxy.requests.filter((q) => q.op === 'DeleteMessageBatch' && q.body.QueueUrl === url);
    assert.equal(deletes.length, 1, 'only the successful group was deleted');
    assert.equal(machinesFor(['ok1', 'bad1']).length, 2);
    // The wait and the exit code came from the Machines API.
    assert.ok(fly.requests.some((q) => q.op === 'Machines_wait'));
    assertNoSecrets(r.out);
  });

  it('exit mode: keeps messages hidden with heartbeats while a Machine outlives the visibility timeout', async () => {
    const { url } = await queue({ visibilityTimeout: 3 });
    fly.onCreate = (m) => setTimeout(() => fly.exitMachine(m.id, 0), 5000);
    await sqs.send(url, '{"id":"long1"}', { image: 'registry.fly.io/long:1' });
    const r = lambdo(url, { LAMBDO_ACK: 'exit', LAMBDO_VISIBILITY_TIMEOUT: '3' });
    await r.waitLog(/exited 0 after/, 15000);
    await until(() => settled(url), 'the message deleted');
    assert.equal((await r.stop()).code, 0);
    assert.equal(machinesFor(['long1']).length, 1, 'never delivered twice while its Machine ran');
    const beats = proxy.requests.filter((q) => q.op === 'ChangeMessageVisibilityBatch' && q.body.QueueUrl === url);
    assert.ok(beats.length >= 2, `heartbeats: ${beats.length}`);
    assert.ok(beats.every((q) => q.body.Entries.every((e) => e.VisibilityTimeout === 3)));
  });

  it('runs groups concurrently, at most LAMBDO_MAX_MACHINES at a time', async () => {
    const { url } = await queue();
    let running = 0, peak = 0;
    fly.onCreate = (m) => { running++; peak = Math.max(peak, running);
      setTimeout(() => { running--; fly.exitMachine(m.id, 0); }, 600); };
    for (let i = 0; i < 6; i++) await sqs.send(url, `{"id":"cc${i}"}`, { image: `registry.fly.io/conc:${i}` });
    const t0 = Date.now();
    const r = lambdo(url, { LAMBDO_ACK: 'exit', LAMBDO_MAX_MACHINES: '3', LAMBDO_VISIBILITY_TIMEOUT: '30',
      LAMBDO_FLY_CREATE_RATE: '100', LAMBDO_FLY_CREATE_BURST: '100', LAMBDO_FLY_GET_RATE: '100', LAMBDO_FLY_GET_BURST: '100' });
    await until(async () => machinesFor(['cc0', 'cc1', 'cc2', 'cc3', 'cc4', 'cc5']).length === 6 && settled(url), 'six groups done');
    assert.equal((await r.stop()).code, 0);
    assert.equal(peak, 3, 'three Machines at once, never more');
    // Groups waiting for a slot keep their messages hidden (heartbeats): none ran twice.
    const ids = fly.machines.flatMap((m) => m.events.map((e) => e.id)).filter((id) => /^cc/.test(id));
    assert.deepEqual([...ids].sort(), ['cc0', 'cc1', 'cc2', 'cc3', 'cc4', 'cc5']);
    assert.ok(Date.now() - t0 >= 1200, 'two rounds of 600 ms Machines');
  });

  it('runs groups on at most LAMBDO_MAX_MACHINES worker threads; groups queued for one stay hidden', async () => {
    // One receive brings three groups for one worker: two wait in the queue for longer than
    // the visibility timeout, so the main thread must heartbeat them, and no thread is started
    // per group (lambdo's threads: the main one and the worker).
    const { url } = await queue({ visibilityTimeout: 2 });
    fly.onCreate = (m) => setTimeout(() => fly.exitMachine(m.id, 0), 2500);
    const ids = ['wq0', 'wq1', 'wq2'];
    for (const id of ids) await sqs.send(url, `{"id":"${id}"}`, { image: `registry.fly.io/${id}:1` });
    const r = lambdo(url, { LAMBDO_ACK: 'exit', LAMBDO_MAX_MACHINES: '1', LAMBDO_VISIBILITY_TIMEOUT: '2',
      LAMBDO_FLY_GET_RATE: '100', LAMBDO_FLY_GET_BURST: '100' });
    let threads = 0, received = false, reappeared = 0;
    const sampler = setInterval(async () => {
      try { threads = Math.max(threads, readdirSync(`/proc/${r.proc.pid}/task`).length); } catch { /* exited */ }
      const c = await sqs.counts(url);
      if (c.inFlight === 3) received = true;
      else if (received && c.visible > 0) reappeared = Math.max(reappeared, c.visible);
    }, 50);
    try {
      await until(async () => machinesFor(ids).length === 3 && settled(url), 'three groups done', 30000);
    } finally {
      clearInterval(sampler);
    }
    assert.equal((await r.stop()).code, 0);
    const seen = fly.machines.flatMap((m) => m.events.map((e) => e.id)).filter((id) => /^wq/.test(id));
    assert.deepEqual([...seen].sort(), ids, 'each group ran once: the queued ones were kept hidden');
    assert.equal(reappeared, 0, 'no message of a queued group became visible again');
    assert.equal(threads, 2, `threads: main + 1 worker, whatever the number of groups`);
  });

  it('resumes one TLS session on every connection to a server after the first, across worker threads', async () => {
    // A server of its own each (clean counters), both over TLS and keeping sessions. Four
    // groups at once, with slow creates: four workers, whose first Fly connections start
    // together (the first handshake goes alone, the others wait for its session), and SQS
    // connections for their deletes.
    const tlsFly = await startFlyApi({ token: TOKEN, app: APP });
    const tlsProxy = await startSqsProxy({ target: sqs.endpoint, ...CREDS, region: REGION, tls: true });
    try {
      const { url } = await sqs.createQueue(`daemon${++n}`, { baseUrl: tlsProxy.endpoint, visibilityTimeout: 30 });
      tlsFly.setRegionFault('iad', { delayMs: 1500 });
      const ids = ['rs0', 'rs1', 'rs2', 'rs3'];
      const send = (id) => sqs.send(url, `{"id":"${id}"}`, { image: `registry.fly.io/${id}:1` });
      await Promise.all(ids.map(send));
      const r = lambdo(url, { LAMBDO_FLY_API_URL: tlsFly.url, LAMBDO_MAX_MACHINES: '4',
        LAMBDO_VISIBILITY_TIMEOUT: '30' });
      await until(async () => tlsFly.machines.length === 4 && settled(url), 'four groups done', 30000);
      assert.equal((await r.stop()).code, 0, r.out);
      assert.ok(new Set(tlsFly.requests.map((q) => q.conn)).size >= 4, `four workers, a Fly connection each:\n${r.out}`);
      assert.equal(tlsFly.resumed, tlsFly.connections - 1, `Fly: ${tlsFly.connections} connections`);
      assert.ok(tlsProxy.connections >= 3, `SQS: receive, then the workers' deletes (${tlsProxy.connections})`);
      assert.equal(tlsProxy.resumed, tlsProxy.connections - 1, `SQS: ${tlsProxy.connections} connections`);
    } finally {
      await tlsFly.close();
      await tlsProxy.close();
    }
  });

  it('fills a group across receives within LAMBDO_BATCH_WINDOW_MS', async () => {
    const { url } = await queue();
    const img = 'registry.fly.io/window:1';
    const r = lambdo(url, { LAMBDO_BATCH_WINDOW_MS: '3000', LAMBDO_EVENTS_PER_MACHINE: '25', LAMBDO_VISIBILITY_TIMEOUT: '10' });
    await until(() => proxy.requests.some((q) => q.op === 'ReceiveMessage' && q.body.QueueUrl === url), 'a receive');
    for (let i = 0; i < 25; i++) await sqs.send(url, `{"id":"w${i}"}`, { image: img });
    await until(async () => machinesFor(['w0']).length === 1 && settled(url), 'the window to close');
    assert.equal((await r.stop()).code, 0);
    const m = machinesFor(['w0']);
    assert.equal(m.length, 1);
    assert.equal(m[0].events.length, 25, 'one Machine for the 25 events received over several receives');
  });

  it('keeps messages alive while a batching window longer than their visibility is open', async () => {
    const { url } = await queue({ visibilityTimeout: 3 });
    const r = lambdo(url, { LAMBDO_BATCH_WINDOW_MS: '5000', LAMBDO_EVENTS_PER_MACHINE: '50', LAMBDO_VISIBILITY_TIMEOUT: '3' });
    await until(() => proxy.requests.some((q) => q.op === 'ReceiveMessage' && q.body.QueueUrl === url), 'a receive');
    for (let i = 0; i < 4; i++) await sqs.send(url, `{"id":"kw${i}"}`, { image: 'registry.fly.io/window:2' });
    await until(async () => machinesFor(['kw0']).length === 1 && settled(url), 'the window to close', 20000);
    assert.equal((await r.stop()).code, 0);
    const m = machinesFor(['kw0', 'kw1', 'kw2', 'kw3']);
    assert.equal(m.length, 1, 'one Machine: no message expired and came back while the window was open');
    assert.equal(m[0].events.length, 4);
    const beats = proxy.requests.filter((q) => q.op === 'ChangeMessageVisibilityBatch' && q.body.QueueUrl === url);
    assert.ok(beats.reduce((n, q) => n + q.body.Entries.length, 0) >= 4, 'every waiting message got a heartbeat');
    assert.ok(beats.every((q) => q.body.Entries.every((e) => e.VisibilityTimeout === 3)));
  });

  it('--once: handles what is queued, then exits 0 only if every message was handled', async () => {
    const { url } = await queue();
    for (let i = 0; i < 3; i++) await sqs.send(url, `{"id":"once${i}"}`, { image: `registry.fly.io/once:${i}` });
    let r = lambdo(url, {}, ['--once']);
    let exit = await Promise.race([r.exit, sleep(20000).then(() => null)]);
    assert.ok(exit, `--once did not exit:\n${r.out}`);
    assert.equal(exit.code, 0, r.out);
    assert.equal(machinesFor(['once0', 'once1', 'once2']).length, 3);
    assert.ok(await settled(url));
    assert.match(r.out, /every message was handled/);

    // An invalid message is not handled: exit 1 (and it stays queued for the DLQ).
    await sqs.send(url, '{"id":"once-bad"}', { image: 'registry.fly.io/once:bad', size: 'huge' });
    await sqs.send(url, '{"id":"once-good"}', { image: 'registry.fly.io/once:good' });
    r = lambdo(url, {}, ['--once']);
    exit = await Promise.race([r.exit, sleep(20000).then(() => null)]);
    assert.ok(exit, `--once did not exit:\n${r.out}`);
    assert.equal(exit.code, 1, r.out);
    assert.match(r.out, /--once: 1 messages were not handled/);
    assert.equal(machinesFor(['once-good']).length, 1);
  });

  it('--once in exit mode waits for the Machines and fails when one exits non-zero', async () => {
    const { url } = await queue();
    fly.onCreate = (m) => setTimeout(() => fly.exitMachine(m.id, m.events[0].code), 200);
    await sqs.send(url, '{"id":"oe0","code":0}', { image: 'registry.fly.io/oe:0' });
    await sqs.send(url, '{"id":"oe1","code":0}', { image: 'registry.fly.io/oe:1' });
    let r = lambdo(url, { LAMBDO_ACK: 'exit', LAMBDO_VISIBILITY_TIMEOUT: '30' }, ['--once']);
    let exit = await Promise.race([r.exit, sleep(20000).then(() => null)]);
    assert.ok(exit, r.out);
    assert.equal(exit.code, 0, r.out);
    assert.ok(await settled(url));
    await sqs.send(url, '{"id":"oe2","code":2}', { image: 'registry.fly.io/oe:2' });
    r = lambdo(url, { LAMBDO_ACK: 'exit', LAMBDO_VISIBILITY_TIMEOUT: '30' }, ['--once']);
    exit = await Promise.race([r.exit, sleep(20000).then(() => null)]);
    assert.ok(exit, r.out);
    assert.equal(exit.code, 1, r.out);
    assert.match(r.out, /exited 2 after/);
  });

  it('LAMBDO_BACKEND=local runs each group as a child process with the runtime and a handler', async () => {
    const { url } = await queue();
    const local = {
      LAMBDO_BACKEND: 'local', LAMBDO_ACK: 'exit', LAMBDO_FLY_TOKEN: '', LAMBDO_FLY_APP: '', LAMBDO_FLY_REGION: '',
      LAMBDO_FLY_REGIONS: '', LAMBDO_FLY_API_URL: '',
      LAMBDO_LOCAL_COMMAND: JSON.stringify([process.execPath, path.join(ROOT, 'runtimes/js/runtime.mjs')]),
      LAMBDO_HANDLER: path.join(ROOT, 'runtimes/js/sample-project'),
    };
    await sqs.send(url, '{"user": 42, "action": "resize", "image": "cat.png", "width": 640}', { image: 'local' });
    await sqs.send(url, '{"user": 42, "action": "notify", "order": 9007199254740993}', { image: 'local' });
    const creates0 = fly.creates().length;
    let r = lambdo(url, local, ['--once']);
    let exit = await Promise.race([r.exit, sleep(30000).then(() => null)]);
    assert.ok(exit, r.out);
    assert.equal(exit.code, 0, r.out);
    assert.match(r.out, /\[group [0-9a-f]{16}\] notified user 42 about order 9007199254740993/);
    assert.match(r.out, /\[group [0-9a-f]{16}\] resized cat.png to 640px/);
    assert.match(r.out, /exited 0 after .* deleting 2 messages/);
    assert.ok(await settled(url));
    assert.equal(fly.creates().length, creates0, 'no Fly API call in local mode');
    assertNoSecrets(r.out);

    // A handler that throws: exit 1, the messages go back to the queue.
    await sqs.send(url, '{"user": 1, "action": "explode"}', { image: 'local' });
    r = lambdo(url, { ...local, LAMBDO_RETRY_DELAY: '60' }, ['--once']);
    exit = await Promise.race([r.exit, sleep(30000).then(() => null)]);
    assert.ok(exit, r.out);
    assert.equal(exit.code, 1, r.out);
    assert.match(r.out, /unknown action/);
    assert.match(r.out, /exited 1 .*go back to the queue/);
    const c = await sqs.counts(url);
    assert.equal(c.visible + c.inFlight + c.delayed, 1, 'the failed message is still queued');
  });

  it('stops a long poll at once on SIGTERM and on SIGINT', async () => {
    const { url } = await queue();
    for (const sig of ['SIGTERM', 'SIGINT']) {
      const r = lambdo(url, { LAMBDO_SQS_LONG_POLL_SECONDS: '20' });
      await until(() => proxy.requests.some((q) => q.op === 'ReceiveMessage' && q.body.QueueUrl === url && q.body.WaitTimeSeconds === 20), 'a long poll');
      await sleep(200);
      const t0 = Date.now();
      r.proc.kill(sig);
      const exit = await r.exit;
      assert.equal(exit.code, 0, r.out);
      assert.ok(Date.now() - t0 < 5000, `${sig}: exit took ${Date.now() - t0} ms`);
      assert.match(r.out, /starting: queue .* app lambdo-jobs, regions iad,ord,ams, api https:\/\/localhost:\d+/);
    }
  });
});

describe('lambdo command line and configuration', () => {
  const base = {
    LAMBDO_SQS_QUEUE_URL: 'http://127.0.0.1:9/000000000000/q',
    AWS_REGION: REGION, AWS_ACCESS_KEY_ID: CREDS.accessKeyId, AWS_SECRET_ACCESS_KEY: CREDS.secretAccessKey,
    LAMBDO_FLY_TOKEN: TOKEN, LAMBDO_FLY_APP: APP, LAMBDO_FLY_REGION: 'iad',
  };

  async function runOnce(env, args = []) {
    const [cmd, ...rest] = lambdoCommand(args);
    const p = spawn(cmd, rest, { env: { PATH: process.env.PATH, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '', err = '';
    p.stdout.on('data', (d) => { out += d; });
    p.stderr.on('data', (d) => { err += d; });
    const code = await new Promise((resolve) => p.on('exit', resolve));
    return { code, out, err };
  }

  it('exits 2 when no AWS credentials can be found anywhere, naming the places it looked', async () => {
    const env = { ...base };
    delete env.AWS_ACCESS_KEY_ID;
    delete env.AWS_SECRET_ACCESS_KEY;
    const r = await runOnce(env);
    assert.equal(r.code, 2, r.err);
    assert.match(r.err, /no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_ROLE_ARN/);
  });

  it('--version and --help need no configuration', async () => {
    const v = await runOnce({}, ['--version']);
    assert.equal(v.code, 0);
    assert.match(v.out, /^lambdo \d+\.\d+\.\d+/);
    const h = await runOnce({}, ['--help']);
    assert.equal(h.code, 0);
    for (const name of ['LAMBDO_SQS_QUEUE_URL', 'LAMBDO_FLY_TOKEN', 'FLY_API_TOKEN', 'LAMBDO_FLY_REGIONS',
      'LAMBDO_EVENTS_PER_MACHINE', 'AWS_ENDPOINT_URL_SQS', 'SSL_CERT_FILE']) assert.match(h.out, new RegExp(name));
    const bad = await runOnce({}, ['--frobnicate']);
    assert.equal(bad.code, 2);
    assert.match(bad.err, /unknown argument "--frobnicate"/);
  });

  const cases = [
    ['LAMBDO_SQS_QUEUE_URL', undefined, /LAMBDO_SQS_QUEUE_URL: required/],
    ['LAMBDO_SQS_QUEUE_URL', 'not a url', /LAMBDO_SQS_QUEUE_URL: /],
    ['LAMBDO_FLY_TOKEN', undefined, /LAMBDO_FLY_TOKEN \(or FLY_API_TOKEN\): required/],
    ['LAMBDO_FLY_APP', undefined, /LAMBDO_FLY_APP \(or FLY_APP_NAME\): required/],
    ['LAMBDO_FLY_REGION', undefined, /LAMBDO_FLY_REGION \(or FLY_REGION\): required unless LAMBDO_FLY_REGIONS/],
    ['LAMBDO_FLY_API_URL', 'ftp://x', /LAMBDO_FLY_API_URL: /],
    ['LAMBDO_SQS_LONG_POLL_SECONDS', '30', /LAMBDO_SQS_LONG_POLL_SECONDS: must be a whole number from 0 to 20/],
    ['LAMBDO_EVENTS_PER_MACHINE', '0', /LAMBDO_EVENTS_PER_MACHINE: must be a whole number from 1 to 10/],
    ['LAMBDO_VISIBILITY_TIMEOUT', 'soon', /LAMBDO_VISIBILITY_TIMEOUT: must be a whole number/],
    ['LAMBDO_LOG_LEVEL', 'loud', /LAMBDO_LOG_LEVEL: must be debug, info, warn or error/],
    ['AWS_ACCESS_KEY_ID', undefined, /AWS_ACCESS_KEY_ID: not set, but AWS_SECRET_ACCESS_KEY is/],
    ['AWS_SECRET_ACCESS_KEY', undefined, /AWS_SECRET_ACCESS_KEY: not set, but AWS_ACCESS_KEY_ID is/],
    ['AWS_REGION', undefined, /AWS_REGION: not set, the queue URL host "127.0.0.1" does not name a region, and the AWS config file names none/],
    ['AWS_ENDPOINT_URL_SQS', 'sqs.local', /AWS_ENDPOINT_URL_SQS: /],
    ['SSL_CERT_FILE', '/nonexistent/ca.pem', /\/nonexistent\/ca\.pem/],
  ];
  for (const [name, value, expect] of cases) {
    it(`exits 2 naming ${name}=${value ?? '(unset)'}`, async () => {
      const env = { ...base };
      if (value === undefined) delete env[name]; else env[name] = value;
      const r = await runOnce(env);
      assert.equal(r.code, 2, r.err);
      assert.match(r.err, expect);
      assert.equal(r.err.trim().split('\n').length, 1, `one line: ${r.err}`);
      assert.equal(r.out, '');
      assertNoSecrets(r.err);
    });
  }
});
