// lambdo under faults, one test per fault, each ending with the message accounting of
// tests/lib/accounting.mjs: every message sent is in a Machine (create mode) or in a Machine
// that exited 0 (exit mode), or still in its queue or dead-letter queue. Zero lost, always;
// duplicates are printed (one "[account]" line per test).
//   node --test tests/faults.test.mjs
// The Fly side is the HTTPS test Fly API with its image conventions (registry.fly.io/exit:3,
// .../oom, .../sleep:500, .../hang); the SQS side is fauxqs behind the signature-checking proxy,
// whose fault hook makes the SQS faults. Short visibility timeouts (2-3 s) and 1 s long polls.
import { describe, it, before, after, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import https from 'node:https';
import { SQSClient, ReceiveMessageCommand, DeleteMessageBatchCommand, ChangeMessageVisibilityBatchCommand }
  from '@aws-sdk/client-sqs';
import { startRig, account, until, spawnLambdo, prng, REGIONS, TOKEN, APP, CREDS, REGION } from './lib/accounting.mjs';
import { startFlyApi, exitSpecForImage, guestForPreset, EVENTS_PATH } from './lib/flyapi.mjs';
import { sqsInternalError, sqsThrottled, failBatchEntries } from './lib/sqsproxy.mjs';

const T = (s) => ({ timeout: s * 1000 });
const img = (name) => `registry.fly.io/${name}`;

// The fault extensions of the rig themselves (flyapi.mjs, sqsproxy.mjs), so that a failure
// below is lambdo's and not the rig's.
describe('fault rig', () => {
  let rig;
  before(async () => { rig = await startRig(); });
  after(async () => { await rig.close(); });

  function fly(method, p, body, fl = rig.fly) {
    const payload = body === undefined ? null : Buffer.from(JSON.stringify(body));
    const u = new URL(fl.url);
    return new Promise((resolve, reject) => {
      const req = https.request({ hostname: u.hostname, port: u.port, method, path: p, ca: rig.certs.ca, agent: false,
        headers: { authorization: `Bearer ${TOKEN}`, ...(payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {}) } },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let json; try { json = JSON.parse(text); } catch { /* not JSON */ }
          resolve({ status: res.statusCode, headers: res.headers, json });
        });
      });
      req.on('error', reject);
      req.end(payload);
    });
  }
  const createBody = (image, region = 'iad') => ({ region, config: { image, guest: guestForPreset('shared-cpu-1x'),
    env: { EVENTS_PATH }, files: [{ guest_path: EVENTS_PATH, raw_value: Buffer.from('[{"id":"rig"}]').toString('base64') }],
    auto_destroy: true, restart: { policy: 'no' }, metadata: { managed_by: 'lambdo' } } });
  const machines = `/v1/apps/${APP}/machines`;

  it('image conventions: exit:N, exit:N-MS, oom[:MS], sleep:MS, hang', async () => {
    assert.deepEqual(exitSpecForImage('registry.fly.io/exit:3'), { code: 3, afterMs: 200, oomKilled: false });
    assert.deepEqual(exitSpecForImage('registry.fly.io/team/exit:2-50'), { code: 2, afterMs: 50, oomKilled: false });
    assert.deepEqual(exitSpecForImage('registry.fly.io/oom'), { code: 137, afterMs: 200, oomKilled: true });
    assert.deepEqual(exitSpecForImage('registry.fly.io/sleep:500'), { code: 0, afterMs: 500, oomKilled: false });
    assert.deepEqual(exitSpecForImage('registry.fly.io/hang'), { never: true });
    assert.equal(exitSpecForImage('registry.fly.io/slow:1'), null);
    const a = (await fly('POST', machines, createBody('registry.fly.io/oom:50'))).json;
    const b = (await fly('POST', machines, createBody('registry.fly.io/exit:4-50'))).json;
    const w = await fly('GET', `${machines}/${a.id}/wait?state=stopped&timeout=5`);
    assert.equal(w.status, 200);
    await fly('GET', `${machines}/${b.id}/wait?state=stopped&timeout=5`);
    const ea = (await fly('GET', `${machines}/${a.id}/events`)).json.find((e) => e.type === 'exit');
    const eb = (await fly('GET', `${machines}/${b.id}/events`)).json.find((e) => e.type === 'exit');
    assert.deepEqual([ea.request.exit_event.exit_code, ea.request.exit_event.oom_killed], [137, true]);
    assert.deepEqual([eb.request.exit_event.exit_code, eb.request.exit_event.oom_killed], [4, false]);
    assert.equal(rig.fly.machine(a.id).state, 'destroyed');
    rig.fly.setRegionExit('ord', { code: 9, afterMs: 10 });
    const c = (await fly('POST', machines, createBody('registry.fly.io/sleep:60000', 'ord'))).json;
    await fly('GET', `${machines}/${c.id}/wait?state=stopped&timeout=5`);
    assert.equal(rig.fly.machine(c.id).exitCode, 9, 'a region exit beats the image');
    rig.clearFaults();
  });

  it('forgetDestroyedAfterMs, resetAfterCreate, rate limits', async () => {
    rig.fly.forgetDestroyedAfterMs = 0;
    const m = (await fly('POST', machines, createBody('registry.fly.io/sleep:10'))).json;
    await sleep(100);
    assert.equal((await fly('GET', `${machines}/${m.id}/events`)).status, 404);
    assert.equal(rig.fly.machine(m.id).gone, true);
    rig.clearFaults();
    const f = rig.fly.setRegionFault('ams', { resetAfterCreate: true, times: 1 });
    const n = rig.fly.machines.length;
    await assert.rejects(fly('POST', machines, createBody('registry.fly.io/job:1', 'ams')), /ECONNRESET|socket hang up/);
    assert.equal(rig.fly.machines.length, n + 1, 'created, though the answer was lost');
    assert.equal(f.fired, 1);
    const limited = await startFlyApi({ token: TOKEN, app: APP, rateLimits: { create: { rate: 1, burst: 3 }, get: { rate: 2, burst: 1 } } });
    try {
      const st = [];
      for (let i = 0; i < 5; i++) st.push((await fly('POST', machines, createBody('registry.fly.io/job:1'), limited)).status);
      assert.deepEqual(st, [200, 200, 200, 429, 429]);
      const r = await fly('POST', machines, createBody('registry.fly.io/job:1'), limited);
      assert.equal(r.headers['retry-after'], '1');
      const g = [await fly('GET', machines, undefined, limited), await fly('GET', machines, undefined, limited)];
      assert.deepEqual(g.map((x) => x.status), [200, 429]);
      assert.deepEqual(limited.rateLimited, { create: 3, get: 1 });
    } finally { await limited.close(); }
  });

  it('SQS faults: InternalError, throttling, batch entries that really fail', async () => {
    const q = await rig.queue('rigsqs');
    const sent = await rig.send(q.url, 3);
    const client = new SQSClient({ endpoint: rig.proxy.endpoint, region: REGION, credentials: CREDS, maxAttempts: 1 });
    try {
      rig.proxy.fault = () => sqsInternalError();
      await assert.rejects(client.send(new ReceiveMessageCommand({ QueueUrl: q.url })), (e) => e.$metadata.httpStatusCode === 500 && e.name === 'InternalError');
      rig.proxy.fault = () => sqsThrottled();
      await assert.rejects(client.send(new ReceiveMessageCommand({ QueueUrl: q.url })), (e) => e.$metadata.httpStatusCode === 400 && e.name === 'ThrottlingException');
      rig.proxy.fault = () => sqsThrottled('RequestThrottled');
      await assert.rejects(client.send(new ReceiveMessageCommand({ QueueUrl: q.url })), (e) => e.name === 'RequestThrottled');
      rig.proxy.fault = null;
      const got = (await client.send(new ReceiveMessageCommand({ QueueUrl: q.url, MaxNumberOfMessages: 10, VisibilityTimeout: 30 }))).Messages;
      assert.equal(got.length, 3);
      rig.proxy.fault = (op, body) => (op === 'ChangeMessageVisibilityBatch' ? failBatchEntries(body, (e, i) => i === 0) : null);
      const cv = await client.send(new ChangeMessageVisibilityBatchCommand({ QueueUrl: q.url,
        Entries: got.map((m, i) => ({ Id: `m${i}`, ReceiptHandle: m.ReceiptHandle, VisibilityTimeout: 0 })) }));
      assert.deepEqual(cv.Failed.map((x) => [x.Id, x.SenderFault, x.Code]), [['m0', false, 'InternalError']]);
      assert.equal(rig.sqs.counts(q.url).visible, 2, 'the failed entry was not acted on');
      rig.proxy.fault = (op, body) => (op === 'DeleteMessageBatch' ? failBatchEntries(body, () => true) : null);
      const all = await client.send(new DeleteMessageBatchCommand({ QueueUrl: q.url,
        Entries: [{ Id: 'm0', ReceiptHandle: got[0].ReceiptHandle }] }));
      assert.equal(all.Failed.length, 1);
      assert.equal(rig.sqs.counts(q.url).inFlight, 1, 'still there');
      const acc = account({ sent, fly: rig.fly, sqs: rig.sqs, queueUrl: q.url, label: 'rig self-test', quiet: true });
      assert.deepEqual(acc.lost, []);
      assert.equal(acc.inQueue, 3);
    } finally {
      rig.proxy.fault = null;
      client.destroy();
    }
  });
});

describe('lambdo under faults', () => {
  let rig;
  // The running test: its messages (send) and lambdo's ack mode (start), so that a test that
  // failed before its own accounting still gets one printed in afterEach.
  let current = null;
  let logs = 0;
  // it() that marks the test passed, so afterEach knows to print lambdo's log on a failure.
  const test = (name, opts, fn) => it(name, opts, async (t) => { await fn(t); current.ok = true; });
  before(async () => { rig = await startRig(); });
  after(async () => { await rig.close(); });
  beforeEach((t) => { current = { name: t.name, sends: [], runs: [], mode: 'create', done: false, ok: false }; });
  afterEach(async () => {
    await rig.stopAll();
    rig.clearFaults();
    if (current && !current.ok) {
      current.runs.forEach((r, i) => {
        const file = path.join(tmpdir(), `lambdo-faults-${process.pid}-${++logs}-${i}.log`);
        writeFileSync(file, r.out);
        console.log(`--- lambdo log (last 25 lines of ${file}, exit ${JSON.stringify(r.exited)}):\n`
          + r.out.trim().split('\n').slice(-25).join('\n'));
      });
    }
    if (current && !current.done) {
      for (const { q, sent } of current.sends) {
        account({ sent, fly: rig.fly, sqs: rig.sqs, queueUrl: q.url, dlqUrl: q.dlqUrl, mode: current.mode,
          label: `${current.name} (accounted after the failure)` });
      }
    }
  });
  async function send(q, count, opts) {
    const sent = await rig.send(q.url, count, opts);
    current.sends.push({ q, sent });
    return sent;
  }
  function start(q, env) {
    current.mode = env.LAMBDO_ACK ?? 'create';
    const r = rig.lambdo(q.url, env);
    current.runs.push(r);
    return r;
  }

  // Stops lambdo (SIGTERM, exit status 0), then the accounting: zero lost, no contract violation.
  async function finish(r, sent, q, mode, label) {
    current.done = true;
    const stop = await r.stop();
    assert.equal(stop.code, 0, `lambdo's exit status after SIGTERM\n${r.out.slice(-3000)}`);
    const acc = account({ sent, fly: rig.fly, sqs: rig.sqs, queueUrl: q.url, dlqUrl: q.dlqUrl, mode, label });
    assert.deepEqual(acc.lost, [], `messages lost\n${acc.summary}\n--- log:\n${r.out.slice(-3000)}`);
    assert.deepEqual(rig.fly.violations, [], 'every create body met the contract');
    return acc;
  }
  const settled = (q) => () => rig.empty(q.url);
  const creates = (pred = () => true) => rig.fly.creates().filter(pred);

  // ---------------------------------------------------------------------------- Fly, create mode

  test('Fly 500 in every region: nothing deleted; everything runs once Fly recovers', T(45), async () => {
    const q = await rig.queue('f500');
    for (const region of REGIONS) rig.fly.setRegionFault(region, { status: 500 });
    const sent = await send(q, 6, { attrs: (i) => ({ image: img(`outage:${i % 2}`) }) });
    const c0 = creates().length;
    const r = start(q, { LAMBDO_ACK: 'create' });
    await until(() => creates().length - c0 >= 6, 'a create attempt in every region for both groups', 20000);
    assert.equal(rig.requests('DeleteMessageBatch', q.url).length, 0, 'nothing deleted while Fly fails');
    for (const region of REGIONS) rig.fly.clearRegionFault(region);
    await until(settled(q), 'delivery after recovery', 25000);
    const acc = await finish(r, sent, q, 'create', 'fly 500 then recovery');
    assert.equal(acc.dispatched, 6);
  });

  test('Fly 503 by region: fails over, never creates where capacity is short', T(30), async () => {
    const q = await rig.queue('f503');
    const iad = rig.fly.setRegionFault('iad', { status: 503 });
    const ord = rig.fly.setRegionFault('ord', { status: 503, times: 2 });
    const sent = await send(q, 10, { attrs: (i) => ({ image: img(`cap:${i % 5}`) }) });
    // The client-side create limiter is tested on its own below.
    const r = start(q, { LAMBDO_ACK: 'create', LAMBDO_FLY_CREATE_RATE: '100', LAMBDO_FLY_CREATE_BURST: '100' });
    await until(settled(q), 'every message dispatched', 20000);
    const acc = await finish(r, sent, q, 'create', 'fly 503 by region');
    const mine = rig.machinesFor(sent);
    assert.ok(mine.every((m) => m.region === 'ord' || m.region === 'ams'), `regions: ${mine.map((m) => m.region)}`);
    assert.ok(iad.fired >= 5 && ord.fired === 2, `iad fired ${iad.fired}, ord ${ord.fired}`);
    assert.equal(acc.dispatched, 10);
  });

  test('Fly 429 with Retry-After: waits, retries the same region, never counts it against the message', T(40), async () => {
    const q = await rig.queue('f429');
    // More 429s than the old per-region retry budget (5): a 429 must never give a message up.
    let left = 8;
    rig.fly.fault = (req) => (req.op === 'Machines_create' && left > 0 ? (left--, { status: 429, retryAfter: 1 }) : null);
    const sent = await send(q, 4, { attrs: (i) => ({ image: img(`limited:${i}`) }) });
    const c0 = creates().length;
    const r = start(q, { LAMBDO_ACK: 'create', LAMBDO_VISIBILITY_TIMEOUT: '30' });
    await until(settled(q), 'every message dispatched after the 429s (not after the 30 s visibility timeout)', 25000);
    const acc = await finish(r, sent, q, 'create', 'fly 429 burst');
    const attempts = creates().slice(c0);
    assert.equal(attempts.filter((a) => a.status === 429).length, 8);
    assert.ok(attempts.every((a) => a.body?.region === 'iad'), `a 429 does not fail over: ${attempts.map((a) => `${a.body?.region}:${a.status}`)}`);
    for (let i = 0; i < 4; i++) {
      const mine = attempts.filter((a) => a.body?.config?.image === img(`limited:${i}`));
      for (let k = 1; k < mine.length; k++) {
        if (mine[k - 1].status !== 429) continue;
        const gap = mine[k].at - mine[k - 1].at;
        assert.ok(gap >= 950, `limited:${i}: retried ${gap} ms after a 429 with Retry-After: 1`);
      }
    }
    const receives = rig.received(q.url);
    assert.equal(receives.length, 4, `each message received once: ${receives.map((m) => m.id)}`);
    assert.equal(acc.dispatched, 4);
    assert.deepEqual(acc.duplicates, {});
  });

  test('Fly create rate limit (1/s, burst 3): 429s seen for 50 groups, default limiter vs none', T(150), async () => {
    // Two test Fly APIs that enforce Fly's create limit, one lambdo each, run side by side.
    const limits = { create: { rate: 1, burst: 3 } };
    const flyA = await startFlyApi({ token: TOKEN, app: APP, imageBehaviour: true, rateLimits: limits });
    const flyB = await startFlyApi({ token: TOKEN, app: APP, imageBehaviour: true, rateLimits: limits });
    try {
      const qa = await rig.queue('rlA', { visibilityTimeout: 120 });
      const qb = await rig.queue('rlB', { visibilityTimeout: 120 });
      const sentA = await rig.send(qa.url, 50, { key: 'rlA' });
      const sentB = await rig.send(qb.url, 50, { key: 'rlB' });
      const common = { LAMBDO_ACK: 'create', LAMBDO_EVENTS_PER_MACHINE: '1', LAMBDO_VISIBILITY_TIMEOUT: '120' };
      const ra = spawnLambdo(rig.env(qa.url, { ...common, LAMBDO_FLY_API_URL: flyA.url }));
      const rb = spawnLambdo(rig.env(qb.url, { ...common, LAMBDO_FLY_API_URL: flyB.url,
        LAMBDO_FLY_CREATE_RATE: '1000', LAMBDO_FLY_CREATE_BURST: '1000' }));
      current.runs.push(ra, rb);
      current.done = true;   // accounted below, against their own Fly APIs
      let waitErr = null;
      try {
        await until(() => rig.empty(qa.url) && rig.empty(qb.url), 'both queues dispatched',
          110000, 200);
      } catch (e) {
        waitErr = e;
      } finally {
        await Promise.all([ra.stop().catch(() => {}), rb.stop().catch(() => {})]);
      }
      const withLimiter = flyA.rateLimited.create;
      const without = flyB.rateLimited.create;
      console.log(`[rate] 50 groups against Fly's 1 create/s (burst 3): default limiter ${withLimiter} x 429 `
        + `(${flyA.machines.length} machines), LAMBDO_FLY_CREATE_RATE=1000/BURST=1000 ${without} x 429 `
        + `(${flyB.machines.length} machines)`);
      const a = account({ sent: sentA, fly: flyA, sqs: rig.sqs, queueUrl: qa.url, mode: 'create', label: 'rate: default limiter' });
      const b = account({ sent: sentB, fly: flyB, sqs: rig.sqs, queueUrl: qb.url, mode: 'create', label: 'rate: no limiter' });
      assert.deepEqual(a.lost, []);
      assert.deepEqual(b.lost, []);
      if (waitErr) throw waitErr;
      assert.equal(a.dispatched, 50);
      assert.equal(b.dispatched, 50);
      assert.ok(without > 0, 'the test API enforced the limit on the unlimited run');
      assert.ok(withLimiter <= 5, `the default limiter (1/s, burst 3) still met ${withLimiter} 429s`);
    } finally {
      await flyA.close();
      await flyB.close();
    }
  });

  test('create mode: groups waiting for the create limiter keep their messages hidden', T(40), async () => {
    // 8 groups, the default limiter (1 create/s, burst 3): the last group waits ~5 s for its
    // token, longer than the 2 s visibility timeout. Its messages must not come back meanwhile.
    const q = await rig.queue('climit');
    const sent = await send(q, 8, { attrs: (i) => ({ image: img(`queued:${i}`) }) });
    const r = start(q, { LAMBDO_ACK: 'create', LAMBDO_VISIBILITY_TIMEOUT: '2' });
    await until(settled(q), 'every message dispatched', 25000);
    const acc = await finish(r, sent, q, 'create', 'waiting for the create limiter');
    const receives = rig.received(q.url);
    assert.equal(receives.length, 8, `each message received once, got ${receives.length} receives`);
    assert.deepEqual(acc.duplicates, {});
    assert.equal(acc.runs, 8);
  });

  test('slow Fly (creates take 2 s, visibility 3 s): nothing lost', T(40), async () => {
    const q = await rig.queue('fslow');
    rig.fly.fault = (req) => (req.op === 'Machines_create' ? { delayMs: 2000 } : null);
    const sent = await send(q, 6, { attrs: (i) => ({ image: img(`slowfly:${i % 3}`) }) });
    const r = start(q, { LAMBDO_ACK: 'create' });
    await until(settled(q), 'every message dispatched', 30000);
    const acc = await finish(r, sent, q, 'create', 'slow fly');
    assert.equal(acc.dispatched, 6);
  });

  test('Fly connection resets, before and after the create: fails over, nothing lost', T(40), async () => {
    const q = await rig.queue('freset');
    const before = rig.fly.setRegionFault('iad', { reset: true, times: 2 });
    const afterCreate = rig.fly.setRegionFault('ord', { resetAfterCreate: true, times: 1 });
    const sent = await send(q, 3, { attrs: (i) => ({ image: img(`reset:${i}`) }) });
    const r = start(q, { LAMBDO_ACK: 'create' });
    await until(settled(q), 'every message dispatched', 30000);
    const acc = await finish(r, sent, q, 'create', 'fly connection resets');
    assert.equal(before.fired, 2);
    assert.equal(afterCreate.fired, 1);
    assert.equal(acc.dispatched, 3);
  });

  // ---------------------------------------------------------------------------- exit mode

  const exitEnv = (extra = {}) => ({ LAMBDO_ACK: 'exit', LAMBDO_SHUTDOWN_TIMEOUT: '2', ...extra });

  test('exit mode: exit 0 deletes the messages, only after the Machine stopped', T(30), async () => {
    const q = await rig.queue('x0');
    const sent = await send(q, 6, { attrs: (i) => ({ image: img(`sleep:${800 + (i % 3)}`) }) });
    const r = start(q, exitEnv());
    await until(settled(q), 'every message deleted', 20000);
    const acc = await finish(r, sent, q, 'exit', 'exit 0 deletes');
    assert.equal(acc.succeeded, 6);
    assert.deepEqual(acc.reruns, {}, 'each message ran once');
    const waits = rig.fly.requests.filter((x) => x.op === 'Machines_wait' && /state=stopped/.test(x.path));
    assert.ok(waits.length >= 3, `waited for the Machines to stop (${waits.length} waits)`);
    const mine = rig.machinesFor(sent);
    const key = new Map(sent.map((s) => [s.id, JSON.parse(s.body).id]));
    const deleted = rig.batchDone('DeleteMessageBatch', q.url);
    assert.equal(deleted.length, 6);
    for (const d of deleted) {
      const m = mine.find((x) => x.events.some((e) => e.id === key.get(d.id)));
      assert.ok(m && m.exitedAt !== undefined && d.at >= m.exitedAt,
        `message ${d.id} deleted at ${d.at}, its Machine exited at ${m?.exitedAt}`);
    }
  });

  test('exit mode: exit 1 returns the messages; redrive moves them to the DLQ after maxReceiveCount', T(40), async () => {
    const q = await rig.queue('x1', { redriveToDlq: 2 });
    const sent = await send(q, 2, { attrs: () => ({ image: img('exit:1') }) });
    const r = start(q, exitEnv({ LAMBDO_RETRY_DELAY: '0', LAMBDO_VISIBILITY_TIMEOUT: '30' }));
    // Returned at once (retry delay 0), not after the 30 s visibility timeout.
    await until(() => rig.sqs.counts(q.dlqUrl).visible === 2, 'both messages in the DLQ', 25000);
    const acc = await finish(r, sent, q, 'exit', 'exit 1 returns, then DLQ');
    assert.equal(rig.batchDone('DeleteMessageBatch', q.url).length, 0, 'nothing deleted');
    assert.equal(acc.inDlq, 2);
    assert.equal(acc.succeeded, 0);
    assert.equal(rig.machinesFor(sent).length, 2, 'one Machine per receive (maxReceiveCount 2)');
  });

  test('exit mode: an OOM-killed Machine returns its messages after LAMBDO_RETRY_DELAY', T(30), async () => {
    const q = await rig.queue('xoom');
    const sent = await send(q, 2, { attrs: () => ({ image: img('oom:300') }) });
    const r = start(q, exitEnv({ LAMBDO_RETRY_DELAY: '2', LAMBDO_VISIBILITY_TIMEOUT: '30' }));
    await until(() => rig.machinesFor(sent).length >= 2, 'a second run after the OOM kill', 15000);
    const [first, second] = rig.machinesFor(sent);
    const acc = await finish(r, sent, q, 'exit', 'oom returns');
    assert.equal(first.oomKilled, true);
    assert.equal(rig.batchDone('DeleteMessageBatch', q.url).length, 0, 'nothing deleted');
    const returned = rig.batchDone('ChangeMessageVisibilityBatch', q.url).filter((c) => c.visibility === 2);
    assert.ok(returned.length >= 2, `returned with visibility LAMBDO_RETRY_DELAY=2: ${JSON.stringify(returned)}`);
    const gap = rig.fly.requests.find((x) => x.seq === second.requestSeq).at - first.exitedAt;
    assert.ok(gap >= 1800, `re-run ${gap} ms after the OOM kill, retry delay 2 s`);
    assert.equal(acc.succeeded, 0);
  });

  // A 2xx create answer without an id: lambdo cannot wait for, stop or destroy that Machine,
  // so it is a failed create (the messages return; the Machine may still run: at least once).
  // iad answers first with no "id", then with "id": "", then normally.
  async function noMachineId(mode) {
    const q = await rig.queue(`noid${mode}`);
    const missing = rig.fly.setRegionFault('iad', { createdId: null, times: 1 });
    const c0 = rig.fly.creates().length;
    const sent = await send(q, 2, { attrs: () => ({ image: img('sleep:300') }) });
    const r = start(q, { LAMBDO_ACK: mode, LAMBDO_VISIBILITY_TIMEOUT: '2' });
    await until(() => missing.fired === 1, 'the create answered without an id', 10000);
    const empty = rig.fly.setRegionFault('iad', { createdId: '', times: 1 });
    await until(settled(q), 'every message handled after the two id-less answers', 25000);
    const acc = await finish(r, sent, q, mode, `${mode} mode: 2xx without a Machine id`);
    assert.equal(empty.fired, 1);
    const errors = r.out.split('\n').filter((l) => /^\S+ error /.test(l));
    assert.equal(errors.length, 2, `one error line per id-less answer:\n${r.out.slice(-3000)}`);
    for (const l of errors) assert.match(l, /no Machine created: .*HTTP 200: the answer names no usable Machine id/);
    assert.doesNotMatch(r.out, /Machine id is empty/);
    const creates = rig.fly.creates().slice(c0);
    assert.equal(creates.length, 3, 'no other region tried after an id-less 2xx');
    assert.equal(rig.received(q.url).length, 6, 'each message received three times');
    const deletes = rig.batchDone('DeleteMessageBatch', q.url);
    assert.equal(deletes.length, 2, 'deleted once, after the create that named its Machine');
    assert.ok(deletes.every((d) => d.at > creates[2].at), 'nothing deleted before the third create');
    assert.equal(acc.succeeded, 2);
  }

  test('exit mode: a 2xx create answer without a usable Machine id is a failed create, logged once', T(45),
    () => noMachineId('exit'));
  test('create mode: a 2xx create answer without a usable Machine id deletes nothing', T(45),
    () => noMachineId('create'));

  test('exit mode: a Machine running longer than the visibility timeout keeps its messages hidden', T(30), async () => {
    const q = await rig.queue('xlong');
    const sent = await send(q, 2, { attrs: () => ({ image: img('sleep:7000') }) });
    const r = start(q, exitEnv({ LAMBDO_VISIBILITY_TIMEOUT: '2' }));
    await until(settled(q), 'deleted after the Machine exited 0', 20000);
    const acc = await finish(r, sent, q, 'exit', 'long machine, heartbeats');
    assert.equal(rig.machinesFor(sent).length, 1, 'no second Machine while the first ran');
    assert.equal(rig.received(q.url).length, 2, 'each message received once');
    const beats = rig.batchDone('ChangeMessageVisibilityBatch', q.url);
    assert.ok(beats.length >= 4, `visibility heartbeats: ${beats.length}`);
    assert.equal(acc.succeeded, 2);
    assert.deepEqual(acc.duplicates, {});
  });

  test('exit mode: heartbeats whose entries fail (InternalError) are retried; nothing runs twice', T(30), async () => {
    const q = await rig.queue('xbeatfail');
    const rng = prng(7);
    let failedEntries = 0;
    // Half the entries fail, but one receipt handle at most twice in a row: lambdo retries
    // a Failed entry within the same heartbeat (sqs.c: 5 attempts), so none may lapse.
    const streak = new Map();
    rig.proxy.fault = (op, body) => {
      if (op !== 'ChangeMessageVisibilityBatch' || body?.Entries?.[0]?.VisibilityTimeout === 0) return null;
      const f = failBatchEntries(body, (e) => {
        const fail = (streak.get(e.ReceiptHandle) ?? 0) < 2 && rng.chance(0.5);
        streak.set(e.ReceiptHandle, fail ? (streak.get(e.ReceiptHandle) ?? 0) + 1 : 0);
        return fail;
      });
      if (f) failedEntries += f.failedEntries.length;
      return f;
    };
    const sent = await send(q, 4, { attrs: () => ({ image: img('sleep:6000') }) });
    const r = start(q, exitEnv({ LAMBDO_VISIBILITY_TIMEOUT: '3' }));
    await until(settled(q), 'deleted after the Machine exited 0', 20000);
    const acc = await finish(r, sent, q, 'exit', 'heartbeat Failed entries');
    assert.ok(failedEntries > 0, 'some heartbeat entries failed');
    assert.equal(acc.succeeded, 4);
    assert.deepEqual(acc.duplicates, {}, 'a failed heartbeat entry was retried before the message reappeared');
  });

  test('exit mode: LAMBDO_MACHINE_TIMEOUT stops and destroys the Machine and returns its messages', T(30), async () => {
    const q = await rig.queue('xtimeout');
    const sent = await send(q, 1, { attrs: () => ({ image: img('hang:1') }) });
    const r = start(q, exitEnv({ LAMBDO_MACHINE_TIMEOUT: '2', LAMBDO_VISIBILITY_TIMEOUT: '30' }));
    await until(() => rig.machinesFor(sent).length >= 2, 'the message to come back and run again', 15000);
    const first = rig.machinesFor(sent)[0];
    const acc = await finish(r, sent, q, 'exit', 'machine timeout');
    assert.equal(first.state, 'destroyed');
    const killed = rig.fly.requests.filter((x) => x.machineId === first.id && ['Machines_stop', 'Machines_delete'].includes(x.op));
    assert.ok(killed.length >= 1, 'lambdo stopped or deleted the Machine');
    const ranFor = first.destroyedAt - rig.fly.requests.find((x) => x.seq === first.requestSeq).at;
    assert.ok(ranFor >= 1800 && ranFor < 6000, `destroyed ${ranFor} ms after its create (timeout 2 s)`);
    assert.equal(rig.batchDone('DeleteMessageBatch', q.url).length, 0, 'nothing deleted');
    assert.equal(acc.inQueue, 1);
  });

  test('exit mode: a Machine already gone (404) before its exit is read counts as unknown: returned', T(30), async () => {
    const q = await rig.queue('xgone', { redriveToDlq: 3 });
    rig.fly.forgetDestroyedAfterMs = 0;
    const sent = await send(q, 1, { attrs: () => ({ image: img('sleep:300') }) });
    const r = start(q, exitEnv({ LAMBDO_VISIBILITY_TIMEOUT: '30' }));
    await until(() => rig.machinesFor(sent).length >= 2, 'the message returned and run again', 15000);
    assert.equal(r.exited, null, `lambdo is still running\n${r.out.slice(-2000)}`);
    const acc = await finish(r, sent, q, 'exit', 'gone machine (404)');
    assert.equal(rig.batchDone('DeleteMessageBatch', q.url).length, 0, 'an unknown exit deletes nothing');
    assert.ok(rig.fly.requests.some((x) => x.status === 404 && x.machineId), 'lambdo met the 404');
    assert.equal(acc.inQueue + acc.inDlq, 1);
  });

  test('exit mode: SIGTERM waits for a running Machine up to LAMBDO_SHUTDOWN_TIMEOUT, then returns the rest', T(30), async () => {
    const q = await rig.queue('xterm');
    const quick = await send(q, 1, { key: 'quick', attrs: () => ({ image: img('sleep:1500') }) });
    const stuck = await send(q, 1, { key: 'stuck', attrs: () => ({ image: img('hang:2') }) });
    const sent = [...quick, ...stuck];
    const r = start(q, exitEnv({ LAMBDO_SHUTDOWN_TIMEOUT: '3', LAMBDO_VISIBILITY_TIMEOUT: '30' }));
    await until(() => rig.machinesFor(sent).length === 2, 'both Machines running', 10000);
    const t0 = Date.now();
    r.signal('SIGTERM');
    const exit = await Promise.race([r.exit, sleep(10000).then(() => null)]);
    assert.ok(exit, 'lambdo exited after SIGTERM');
    const took = Date.now() - t0;
    assert.equal(exit.code, 0, r.out.slice(-2000));
    assert.ok(took >= 2500 && took < 6000, `exit ${took} ms after SIGTERM (shutdown timeout 3 s)`);
    current.done = true;
    const acc = account({ sent, fly: rig.fly, sqs: rig.sqs, queueUrl: q.url, mode: 'exit', label: 'sigterm in exit mode' });
    assert.deepEqual(acc.lost, []);
    assert.equal(acc.succeeded, 1, 'the Machine that finished in time had its message deleted');
    assert.ok(rig.empty(q.url) === false && rig.sqs.counts(q.url).visible === 1,
      `the stuck one was returned at once (visible now, not after 30 s): ${JSON.stringify(rig.sqs.counts(q.url))}`);
  });

  // ---------------------------------------------------------------------------- SQS, create mode

  const sqsOps = new Set(['ReceiveMessage', 'DeleteMessageBatch', 'ChangeMessageVisibilityBatch']);

  test('SQS 500 InternalError on every other call: retried, nothing lost', T(45), async () => {
    const q = await rig.queue('s500');
    const seen = {};
    let left = 20;
    rig.proxy.fault = (op) => {
      if (!sqsOps.has(op) || left <= 0) return null;
      seen[op] = (seen[op] ?? 0) + 1;
      if (seen[op] % 2 === 0) return null;
      left--;
      return sqsInternalError();
    };
    const sent = await send(q, 10, { attrs: (i) => ({ image: img(`s500:${i % 3}`) }) });
    const r = start(q, { LAMBDO_ACK: 'create' });
    await until(settled(q), 'every message dispatched', 35000);
    const acc = await finish(r, sent, q, 'create', 'sqs 500');
    assert.ok(rig.requests('DeleteMessageBatch', q.url).some((x) => x.status === 500), 'a delete met a 500');
    assert.ok(rig.requests('ReceiveMessage', q.url).some((x) => x.status === 500), 'a receive met a 500');
    assert.equal(acc.dispatched, 10);
  });

  test('SQS throttling (ThrottlingException, RequestThrottled): retried with backoff, nothing lost', T(45), async () => {
    const q = await rig.queue('sthrottle');
    // Fewer consecutive throttles per op than sqs.c's attempts (receive 3, batch 5).
    const budget = { ReceiveMessage: 2, DeleteMessageBatch: 4 };
    let k = 0;
    rig.proxy.fault = (op, body) => {
      if (!(budget[op] > 0) || body?.QueueUrl !== q.url) return null;
      budget[op]--;
      return sqsThrottled(k++ % 2 ? 'RequestThrottled' : 'ThrottlingException');
    };
    const sent = await send(q, 10, { attrs: (i) => ({ image: img(`throttle:${i % 3}`) }) });
    const r = start(q, { LAMBDO_ACK: 'create', LAMBDO_VISIBILITY_TIMEOUT: '10' });
    await until(settled(q), 'every message dispatched', 35000);
    const acc = await finish(r, sent, q, 'create', 'sqs throttling');
    assert.deepEqual(budget, { ReceiveMessage: 0, DeleteMessageBatch: 0 }, 'every throttling fault fired');
    const throttled = rig.requests('DeleteMessageBatch', q.url).filter((x) => x.status === 400);
    assert.equal(throttled.length, 4);
    assert.equal(acc.dispatched, 10);
    assert.deepEqual(acc.duplicates, {}, 'throttled deletes were retried at once, not left to the visibility timeout');
  });

  test('SQS answering slowly (1.5 s each): nothing lost', T(45), async () => {
    const q = await rig.queue('sslow');
    rig.proxy.fault = (op) => (sqsOps.has(op) ? { delayMs: 1500 } : null);
    const sent = await send(q, 10, { attrs: (i) => ({ image: img(`sqsslow:${i % 3}`) }) });
    const r = start(q, { LAMBDO_ACK: 'create' });
    await until(settled(q), 'every message dispatched', 35000);
    const acc = await finish(r, sent, q, 'create', 'sqs slow');
    assert.equal(acc.dispatched, 10);
  });

  test('SIGTERM while a DeleteMessageBatch is trickled: its 30 s deadline ends it, lambdo exits in bounded time', T(120), async () => {
    const q = await rig.queue('strickle');
    let trickled = 0;
    // A byte every second: each read is well within the 30 s per-read timeout, so before
    // every request had a deadline this delete, the job and the shutdown never ended.
    rig.proxy.fault = (op, body) => (op === 'DeleteMessageBatch' && body?.QueueUrl === q.url && trickled++ === 0
      ? { trickleMs: 1000 } : null);
    const sent = await send(q, 1, { attrs: () => ({ image: img('trickle:1') }) });
    const r = start(q, { LAMBDO_ACK: 'create', LAMBDO_VISIBILITY_TIMEOUT: '300' });
    await until(() => trickled === 1, 'the first delete is being trickled', 20000);
    const started = rig.requests('DeleteMessageBatch', q.url)[0].at;
    r.signal('SIGTERM');
    const exit = await Promise.race([r.exit, sleep(75000, null, { ref: false })]);
    const took = Date.now() - started;
    assert.ok(exit, `lambdo did not exit within 75 s of SIGTERM\n${r.out.slice(-3000)}`);
    assert.equal(exit.code, 0, r.out.slice(-3000));
    assert.match(r.out, /DeleteMessageBatch failed: request timeout after 30000 ms, while reading response body/);
    assert.ok(took >= 29000 && took < 75000, `exited ${took} ms after the trickled delete began (deadline 30 s)`);
    const deletes = rig.requests('DeleteMessageBatch', q.url);
    assert.deepEqual(deletes.map((x) => x.status), ['trickled', 200], 'the delete was retried after its deadline');
    current.done = true;
    const acc = account({ sent, fly: rig.fly, sqs: rig.sqs, queueUrl: q.url, mode: 'create', label: 'trickled delete, SIGTERM' });
    assert.deepEqual(acc.lost, []);
    assert.equal(acc.dispatched, 1);
    assert.equal(rig.sqs.counts(q.url).inFlight + rig.sqs.counts(q.url).visible, 0, 'deleted by the retry');
  });

  test('SQS connection resets (before forwarding, and after a delete was done): nothing lost', T(45), async () => {
    const q = await rig.queue('sreset');
    let k = 0;
    let deletesReset = 0;
    rig.proxy.fault = (op) => {
      if (!sqsOps.has(op)) return null;
      if (op === 'DeleteMessageBatch' && deletesReset < 2) { deletesReset++; return { resetAfterForward: true }; }
      return k++ % 3 === 0 && k < 30 ? { reset: true } : null;
    };
    const sent = await send(q, 10, { attrs: (i) => ({ image: img(`sqsreset:${i % 3}`) }) });
    const r = start(q, { LAMBDO_ACK: 'create' });
    await until(settled(q), 'every message dispatched', 35000);
    const acc = await finish(r, sent, q, 'create', 'sqs resets');
    assert.equal(deletesReset, 2);
    assert.equal(acc.dispatched, 10);
  });

  test('SQS DeleteMessageBatch with Failed entries (SenderFault false): retried, nothing runs twice', T(30), async () => {
    const q = await rig.queue('sfailed');
    const rng = prng(42);
    let failedEntries = 0;
    let batches = 0;
    rig.proxy.fault = (op, body) => {
      if (op !== 'DeleteMessageBatch' || batches >= 10) return null;
      const f = failBatchEntries(body, () => rng.chance(0.5));
      if (f) { batches++; failedEntries += f.failedEntries.length; }
      return f;
    };
    const sent = await send(q, 12, { attrs: (i) => ({ image: img(`failed:${i % 4}`) }) });
    const r = start(q, { LAMBDO_ACK: 'create', LAMBDO_VISIBILITY_TIMEOUT: '30', LAMBDO_EVENTS_PER_MACHINE: '3' });
    // Settles well within the 30 s visibility timeout only if the failed entries are retried.
    await until(settled(q), 'every message deleted (failed entries retried)', 15000);
    const acc = await finish(r, sent, q, 'create', 'delete Failed entries');
    assert.ok(failedEntries > 0, 'some entries failed');
    assert.equal(acc.dispatched, 12);
    assert.deepEqual(acc.duplicates, {});
  });

  test('SQS stale receipt handle (ReceiptHandleIsInvalid) on delete: logged, not fatal', T(30), async () => {
    const q = await rig.queue('sstale');
    let once = true;
    rig.proxy.fault = (op, body) => {
      if (op !== 'DeleteMessageBatch' || !once) return null;
      once = false;
      return failBatchEntries(body, () => true, { code: 'ReceiptHandleIsInvalid',
        message: 'The input receipt handle is invalid.', senderFault: true });
    };
    const sent = await send(q, 2, { attrs: () => ({ image: img('stale:1') }) });
    const r = start(q, { LAMBDO_ACK: 'create', LAMBDO_VISIBILITY_TIMEOUT: '2' });
    await until(settled(q), 'the messages, back after the visibility timeout, dispatched again', 20000);
    assert.equal(r.exited, null, 'lambdo kept running');
    const acc = await finish(r, sent, q, 'create', 'stale receipt handle');
    for (const m of sent) assert.match(r.out, new RegExp(`${m.id}.*ReceiptHandleIsInvalid|ReceiptHandleIsInvalid.*${m.id}`));
    assert.equal(acc.dispatched, 2);
  });
});
