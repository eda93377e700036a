// The warm pool (issue #12, LAMBDO_POOL=N) end to end: lambdo against fauxqs behind the SigV4
// proxy and the HTTPS test Fly API with pool Machines, leases, the run recorder and Fly's
// per-Machine limits on (tests/lib/flyapi.mjs: pool: true, perMachineLimits: true). A fresh rig
// per test, so no test adopts another's pool. What is checked is what Fly and SQS saw, not
// lambdo's log: pool creates (skip_launch, metadata), runs via 'update' of the same Machines,
// each run's events file byte for byte, fly.overlaps() (a Machine running two groups at once)
// and which messages were deleted or returned. Image conventions: .../sleep:MS exits 0 after
// MS; the path before the last segment only makes the pool key differ.
//   node --test --test-concurrency=1 tests/pool.test.mjs
import { describe, it, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { spawnSync } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { SendMessageBatchCommand } from '@aws-sdk/client-sqs';
import { startRig, spawnLambdo, until } from './lib/accounting.mjs';
import { toMessageAttributes } from './lib/fauxqs.mjs';
import { freePort } from './lib/httpservers.mjs';
import { promtoolPath } from './lib/tools.mjs';

const T = { timeout: 180000 };
const NONCE = 'fly-machine-lease-nonce';

function get(port, path) {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode, body }));
    }).on('error', reject);
  });
}

// The value of one series on a /metrics page (undefined when absent).
function value(text, series) {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

describe('warm pool (LAMBDO_POOL)', () => {
  let rig;
  beforeEach(async () => { rig = await startRig({ flyOptions: { pool: true, perMachineLimits: true } }); });
  afterEach(async () => { await rig.close(); });

  const tail = (...runs) => runs.map((r, i) => `\n--- lambdo ${i} log (tail):\n${r.out.slice(-4000)}`).join('');
  const poolEnv = (extra = {}) => ({ LAMBDO_POOL: '2', LAMBDO_ACK: 'exit', LAMBDO_EVENTS_PER_MACHINE: '5',
    LAMBDO_VISIBILITY_TIMEOUT: '10', LAMBDO_RETRY_DELAY: '1', LAMBDO_LOG_LEVEL: 'debug', ...extra });

  // count messages for image, bodies with spacing and number spellings a re-serializer would
  // change: [{id (MessageId), body, key}].
  async function send(url, count, key, image) {
    const sent = [];
    for (let i = 0; i < count; i += 10) {
      const Entries = [];
      for (let j = i; j < Math.min(count, i + 10); j++) {
        Entries.push({ Id: `e${j}`, MessageBody: `{"id":"${key}-${j}",  "n": 1.50, "big": 12345678901234567890}`,
          MessageAttributes: toMessageAttributes({ image, size: 'shared-cpu-1x' }) });
      }
      const out = await rig.sqs.client.send(new SendMessageBatchCommand({ QueueUrl: url, Entries }));
      if (out.Failed?.length) throw new Error(`SendMessageBatch failed: ${JSON.stringify(out.Failed)}`);
      for (const s of out.Successful) {
        const e = Entries.find((x) => x.Id === s.Id);
        sent.push({ id: s.MessageId, body: e.MessageBody, key: JSON.parse(e.MessageBody).id });
      }
    }
    return sent;
  }

  const poolMachines = () => rig.fly.machines.filter((m) => m.body.skip_launch === true);
  const poolCreates = () => rig.fly.creates().filter((q) => q.status === 200 && q.body?.skip_launch === true);
  const deleted = (url) => new Set(rig.batchDone('DeleteMessageBatch', url).map((d) => d.id));
  // Entries returned to the queue with VisibilityTimeout v (LAMBDO_RETRY_DELAY, not a heartbeat).
  const returned = (url, v = 1) => rig.batchDone('ChangeMessageVisibilityBatch', url).filter((e) => e.visibility === v);
  const liveLease = (m) => m.lease && m.lease.expiresAtMs > Date.now();

  // The runs that carried any of sent: [{run, msgs}] with msgs the sent messages in the run's
  // order (matched on the body's "id"); a run's events file must be exactly their bodies, byte
  // for byte, and its context file must name the same messages.
  function runsOf(sent) {
    const byKey = new Map(sent.map((m) => [m.key, m]));
    const out = [];
    for (const run of rig.fly.runs) {
      if (!Array.isArray(run.events) || !run.events.some((e) => byKey.has(e?.id))) continue;
      const msgs = run.events.map((e) => byKey.get(e?.id));
      assert.ok(msgs.every(Boolean), `run on ${run.machineId} mixes in events not sent here: ${run.eventsText}`);
      assert.equal(run.eventsText, `[${msgs.map((m) => m.body).join(',')}]`, 'the events file is the bodies, byte for byte');
      assert.deepEqual(run.meta?.map((e) => e.messageId), msgs.map((m) => m.id), 'the context file names the same messages');
      out.push({ run, msgs });
    }
    return out;
  }

  // Waits until every message of sent was deleted.
  async function waitDeleted(url, sent, runs, timeoutMs = 60000) {
    await until(() => { const d = deleted(url); return sent.every((m) => d.has(m.id)); },
      () => `${sent.length} messages deleted (${sent.filter((m) => deleted(url).has(m.id)).length} so far)${tail(...runs)}`,
      timeoutMs, 100);
  }

  // Exit mode: every message of sent was deleted after a run that carried it exited 0; none lost
  // (deleted unrun), none left in the queue. Returns runsOf(sent).
  function assertHandled(url, sent, runs) {
    const list = runsOf(sent);
    const dels = rig.batchDone('DeleteMessageBatch', url);
    for (const m of sent) {
      const d = dels.find((x) => x.id === m.id);
      assert.ok(d, `message ${m.key} not deleted${tail(...runs)}`);
      const ok = list.find(({ run, msgs }) => msgs.includes(m) && run.end === 'exit' && run.exitCode === 0);
      assert.ok(ok, `message ${m.key} deleted without a run that exited 0${tail(...runs)}`);
      assert.ok(ok.run.endedAt <= d.at, `message ${m.key} deleted before its run ended`);
    }
    assert.ok(rig.empty(url), 'nothing left in the queue');
    assert.deepEqual(rig.fly.overlaps().map((o) => o.machineId), [], 'no Machine ran two groups at once');
    assert.deepEqual(rig.fly.violations, [], 'every create and update body met the contract');
    return list;
  }

  // Every accepted update carried the nonce of a lease lambdo acquired on that Machine.
  function assertUpdatesLeased() {
    const nonces = new Map();
    for (const q of rig.fly.requests) {
      if (q.op === 'Machines_create_lease' && q.status === 200) nonces.set(q.response.data.nonce, q.machineId);
      if (q.op === 'Machines_create' && q.status === 200 && q.response?.nonce) nonces.set(q.response.nonce, q.response.id);
    }
    const updates = rig.fly.requests.filter((q) => q.op === 'Machines_update' && q.status === 200);
    assert.ok(updates.length > 0, 'some update');
    for (const u of updates) {
      assert.equal(nonces.get(u.headers[NONCE]), u.machineId, `update of ${u.machineId} without its lease's nonce`);
    }
  }

  it('reuses at most LAMBDO_POOL Machines of a key: created stopped, later groups are updates of them; metrics count them', T, async () => {
    const q = await rig.queue('reuse');
    const port = await freePort();
    const image = 'registry.fly.io/reuse/sleep:300';
    const r = rig.lambdo(q.url, poolEnv({ LAMBDO_METRICS_ADDR: `127.0.0.1:${port}` }));
    const sent = [];
    for (let b = 0; b < 4; b++) {
      const batch = await send(q.url, 10, `b${b}`, image);   // two groups of 5
      sent.push(...batch);
      await waitDeleted(q.url, batch, [r]);
    }
    const list = assertHandled(q.url, sent, [r]);
    const creates = poolCreates();
    assert.ok(creates.length >= 1 && creates.length <= 2, `${creates.length} pool creates for LAMBDO_POOL=2${tail(r)}`);
    assert.equal(rig.fly.creates().filter((c) => c.status === 200).length, creates.length, 'every create was a pool create');
    const key = creates[0].body.config.metadata.lambdo_pool;
    assert.match(key, /^[0-9a-f]{16}$/);
    for (const c of creates) {
      const { config } = c.body;
      assert.equal(config.metadata.managed_by, 'lambdo');
      assert.equal(config.metadata.lambdo_pool, key, 'one key for one (image, size, command)');
      assert.notEqual(config.auto_destroy, true);
      assert.deepEqual(config.restart, { policy: 'no' });
      assert.equal(config.image, image);
    }
    const ids = new Set(poolMachines().map((m) => m.id));
    assert.ok(list.length >= 8, `${list.length} runs for 8 groups of 5`);
    assert.ok(list.every(({ run }) => run.via === 'update' && ids.has(run.machineId)),
      `every group ran as an update of a pool Machine: ${JSON.stringify(list.map(({ run }) => [run.via, run.machineId]))}`);
    for (const u of rig.fly.requests.filter((x) => x.op === 'Machines_update' && x.status === 200)) {
      assert.equal(u.body.config.metadata.lambdo_pool, key, 'an update keeps the pool key (a restart finds the Machine by it)');
      assert.equal(u.body.config.image, image);
    }
    assertUpdatesLeased();
    const limited = Object.values(rig.fly.machineRateLimited).reduce((s, n) => s + n, 0);
    assert.ok(limited <= 2, `per-Machine 429s: ${JSON.stringify(rig.fly.machineRateLimited)} (lambdo keeps Fly's per-Machine limits)`);

    // Metrics: every run was a dispatch, warm (an existing stopped Machine) or new.
    let body;
    await until(async () => {
      body = (await get(port, '/metrics')).body;
      return value(body, 'lambdo_pool_machines{state="busy"}') === 0
        && value(body, 'lambdo_pool_dispatches_total{via="warm"}') + value(body, 'lambdo_pool_dispatches_total{via="new"}') === list.length;
    }, () => `pool metrics settled:\n${body}`, 20000, 200);
    assert.equal(value(body, 'lambdo_pool_dispatches_total{via="new"}'), creates.length, body);
    assert.equal(value(body, 'lambdo_pool_dispatches_total{via="warm"}'), list.length - creates.length, body);
    assert.equal(value(body, 'lambdo_pool_machines{state="idle"}'), poolMachines().filter((m) => m.state === 'stopped').length, body);
    const pt = spawnSync(promtoolPath(), ['check', 'metrics'], { input: body, encoding: 'utf8' });
    if (pt.error) throw pt.error;
    assert.equal(pt.status, 0, `${pt.stdout}${pt.stderr}`);
    assert.equal((await r.stop()).code, 0, tail(r));
  });

  it('LAMBDO_ACK=create: deletes once the update was accepted, and still runs one group at a time per Machine', T, async () => {
    const q = await rig.queue('create');
    const r = rig.lambdo(q.url, poolEnv({ LAMBDO_POOL: '1', LAMBDO_ACK: 'create' }));
    const sent = await send(q.url, 15, 'c', 'registry.fly.io/create/sleep:500');   // three groups of 5
    await waitDeleted(q.url, sent, [r]);
    await until(() => runsOf(sent).every(({ run }) => run.end !== undefined) && runsOf(sent).length >= 3, 'the runs to end');
    const list = runsOf(sent);
    const dels = rig.batchDone('DeleteMessageBatch', q.url);
    for (const m of sent) {
      const { run } = list.find((x) => x.msgs.includes(m));
      const update = rig.fly.requests.find((x) => x.seq === run.requestSeq);
      assert.equal(update.op, 'Machines_update');
      assert.ok(dels.find((d) => d.id === m.id).at >= update.at, `message ${m.key} deleted before its update`);
    }
    assert.equal(poolCreates().length, 1, tail(r));
    assert.deepEqual(rig.fly.overlaps(), [], 'no update of a running pool Machine');
    assert.deepEqual(rig.fly.violations, []);
    assert.equal((await r.stop()).code, 0, tail(r));
  });

  it('a restarted lambdo finds its pool by listing the app: no new create, the same Machines updated', T, async () => {
    const q = await rig.queue('restart');
    const image = 'registry.fly.io/restart/sleep:200';
    const a = rig.lambdo(q.url, poolEnv());
    const first = await send(q.url, 10, 'first', image);
    await waitDeleted(q.url, first, [a]);
    assert.equal((await a.stop()).code, 0, tail(a));
    const pool = poolMachines();
    assert.ok(pool.length >= 1 && pool.length <= 2, tail(a));
    assert.deepEqual(pool.map((m) => m.state), pool.map(() => 'stopped'), 'a stopping lambdo keeps its pool');
    assert.deepEqual(pool.filter(liveLease).map((m) => m.id), [], 'and releases its leases');
    const creates0 = rig.fly.creates().length;

    const b = rig.lambdo(q.url, poolEnv());
    // As many groups as the pool has Machines: the first lambdo may have made only one (its
    // groups can arrive in two receives, the second after the first group ended), and a
    // second group at once would then rightly create the pool's second Machine.
    const second = await send(q.url, pool.length * 5, 'second', image);
    await waitDeleted(q.url, second, [b]);
    const list = assertHandled(q.url, second, [b]);
    assert.ok(rig.fly.requests.some((x) => x.op === 'Machines_list' && x.status === 200), 'listed the app');
    assert.equal(rig.fly.creates().length, creates0, `no create after the restart${tail(b)}`);
    const ids = new Set(pool.map((m) => m.id));
    assert.ok(list.every(({ run }) => run.via === 'update' && ids.has(run.machineId)), 'the old Machines ran the new groups');
    assert.equal((await b.stop()).code, 0, tail(b));
  });

  // A Machine destroyed with fly machine destroy (or reaped) between two groups: Fly answers 404
  // for it (gone), or still shows it for a while with state "destroyed".
  for (const [label, forget] of [['gone: 404 from then on', true], ['still shown, state "destroyed"', false]]) {
    it(`a pool Machine destroyed underneath (${label}): the next group runs on a new one, nothing lost`, T, async () => {
      const q = await rig.queue('gone');
      const r = rig.lambdo(q.url, poolEnv({ LAMBDO_POOL: '1' }));
      const first = await send(q.url, 5, 'g1', 'registry.fly.io/gone/sleep:200');
      await waitDeleted(q.url, first, [r]);
      const [{ run }] = runsOf(first);
      rig.fly.destroyMachine(run.machineId, { forget });
      const second = await send(q.url, 5, 'g2', 'registry.fly.io/gone/sleep:200');
      await waitDeleted(q.url, second, [r]);
      assertHandled(q.url, [...first, ...second], [r]);
      const [{ run: next }] = runsOf(second);
      assert.notEqual(next.machineId, run.machineId, 'not on the destroyed Machine');
      assert.equal(poolCreates().length, 2, `one new Machine after the destroy${tail(r)}`);
      assert.equal(rig.fly.creates().filter((c) => c.status === 200).length, 2);
      assert.equal((await r.stop()).code, 0, tail(r));
    });
  }

  it('an update refused with 422: the messages return, the Machine is destroyed, the group runs on a new one', T, async () => {
    const q = await rig.queue('refused');
    let refused = 0;
    rig.fly.fault = (req) => (req.op === 'Machines_update' && refused++ === 0
      ? { status: 422, body: { error: 'invalid config: the test refuses this update' } } : null);
    const r = rig.lambdo(q.url, poolEnv({ LAMBDO_POOL: '1' }));
    const sent = await send(q.url, 5, 'refused', 'registry.fly.io/refused/sleep:200');
    await waitDeleted(q.url, sent, [r]);
    assertHandled(q.url, sent, [r]);
    const [bad, good] = poolMachines();
    assert.ok(bad && good, `two pool Machines: the refused one and its replacement${tail(r)}`);
    assert.deepEqual(bad.runs, [], 'the refused Machine never ran');
    await until(() => bad.state === 'destroyed', () => `the refused Machine destroyed${tail(r)}`, 20000);
    assert.ok(good.runs.some((x) => x.exitCode === 0), 'the replacement ran the group');
    const back = returned(q.url);
    assert.deepEqual(back.map((e) => e.id).sort(), sent.map((m) => m.id).sort(),
      `the group's messages returned with LAMBDO_RETRY_DELAY once${tail(r)}`);
    assert.ok(back.every((e) => e.at < good.runs[0].startedAt), 'returned before the group ran again');
    assert.match(r.out, /422/);
    assert.equal((await r.stop()).code, 0, tail(r));
  });

  it('a 429 on an update is retried on the same Machine: nothing returned, nothing destroyed', T, async () => {
    const q = await rig.queue('429');
    let limited = 0;
    rig.fly.fault = (req) => (req.op === 'Machines_update' && limited++ === 0 ? { status: 429, retryAfter: 1 } : null);
    const r = rig.lambdo(q.url, poolEnv({ LAMBDO_POOL: '1' }));
    const sent = await send(q.url, 5, 'rl', 'registry.fly.io/ratelimited/sleep:200');
    await waitDeleted(q.url, sent, [r]);
    assertHandled(q.url, sent, [r]);
    const pool = poolMachines();
    assert.equal(pool.length, 1, tail(r));
    assert.equal(pool[0].state, 'stopped');
    assert.equal(pool[0].runs.length, 1);
    const updates = rig.fly.requests.filter((x) => x.op === 'Machines_update');
    assert.deepEqual(updates.map((x) => x.status), [429, 200]);
    assert.ok(updates[1].at - updates[0].at >= 900, 'waited for Retry-After');
    assert.deepEqual(returned(q.url), [], 'nothing returned to the queue');
    assert.equal((await r.stop()).code, 0, tail(r));
  });

  it('a Machine that exits non-zero in exit mode: messages returned, the Machine kept and reused', T, async () => {
    const q = await rig.queue('nonzero');
    rig.fly.exitPolicy = () => ({ code: rig.fly.runs.length === 1 ? 3 : 0, afterMs: 200 });
    const r = rig.lambdo(q.url, poolEnv({ LAMBDO_POOL: '1' }));
    const sent = await send(q.url, 5, 'nz', 'registry.fly.io/nonzero/job:1');
    await waitDeleted(q.url, sent, [r]);
    assertHandled(q.url, sent, [r]);
    const pool = poolMachines();
    assert.equal(pool.length, 1, `kept, not replaced${tail(r)}`);
    assert.deepEqual(pool[0].runs.map((x) => [x.via, x.exitCode]), [['update', 3], ['update', 0]]);
    assert.equal(pool[0].state, 'stopped', 'not destroyed');
    const back = returned(q.url);
    assert.deepEqual(back.map((e) => e.id).sort(), sent.map((m) => m.id).sort(), 'returned with LAMBDO_RETRY_DELAY');
    assert.ok(back.every((e) => e.at >= pool[0].runs[0].endedAt && e.at <= pool[0].runs[1].startedAt));
    assert.match(r.out, /exited 3/);
    assert.equal((await r.stop()).code, 0, tail(r));
  });

  it('a pool Machine still running at LAMBDO_MACHINE_TIMEOUT: destroyed, its messages returned, the group runs on a new one', T, async () => {
    const q = await rig.queue('timeout');
    rig.fly.exitPolicy = () => (rig.fly.runs.length === 1 ? { never: true } : { code: 0, afterMs: 200 });
    const r = rig.lambdo(q.url, poolEnv({ LAMBDO_POOL: '1', LAMBDO_MACHINE_TIMEOUT: '2' }));
    const sent = await send(q.url, 5, 'to', 'registry.fly.io/timeout/job:1');
    await waitDeleted(q.url, sent, [r]);
    assertHandled(q.url, sent, [r]);
    const [stuck, fresh] = poolMachines();
    assert.ok(stuck && fresh, `the stuck Machine and its replacement${tail(r)}`);
    await until(() => stuck.state === 'destroyed', () => `the stuck Machine destroyed${tail(r)}`, 20000);
    assert.equal(stuck.runs.length, 1);
    assert.ok(stuck.runs[0].endedAt - stuck.runs[0].startedAt >= 1900, 'not stopped before LAMBDO_MACHINE_TIMEOUT');
    assert.deepEqual(fresh.runs.map((x) => x.exitCode), [0]);
    assert.deepEqual(returned(q.url).map((e) => e.id).sort(), sent.map((m) => m.id).sort(), 'returned with LAMBDO_RETRY_DELAY');
    assert.equal((await r.stop()).code, 0, tail(r));
  });

  it('refreshes the lease of a Machine that runs longer than it: the lease never lapses mid-run', T, async () => {
    rig.fly.leaseTtlScale = 0.05;   // lambdo's 60 s leases last 3 s
    const q = await rig.queue('refresh');
    const r = rig.lambdo(q.url, poolEnv({ LAMBDO_POOL: '1' }));
    const sent = await send(q.url, 5, 'rf', 'registry.fly.io/refresh/sleep:8000');
    let running = 0, lapsed = 0;
    const sampler = setInterval(() => {
      const m = poolMachines()[0];
      if (m?.state !== 'started') return;
      running++;
      if (!liveLease(m)) lapsed++;
    }, 100);
    try {
      await waitDeleted(q.url, sent, [r]);
    } finally {
      clearInterval(sampler);
    }
    assertHandled(q.url, sent, [r]);
    assert.ok(running >= 40, `sampled the run ${running} times`);
    assert.equal(lapsed, 0, `no lease during ${lapsed} of ${running} samples of the run${tail(r)}`);
    const [m] = poolMachines();
    const refreshes = rig.fly.requests.filter((x) => x.op === 'Machines_create_lease' && x.machineId === m.id
      && x.status === 200 && x.headers[NONCE]);
    assert.ok(refreshes.length >= 2, `${refreshes.length} refreshes in an 8 s run of 3 s leases`);
    assert.equal((await r.stop()).code, 0, tail(r));
  });

  it('a Machine leased by someone else (409): lambdo moves on to a new one and leaves it alone', T, async () => {
    const q = await rig.queue('leased');
    const image = 'registry.fly.io/leased/sleep:200';
    const r = rig.lambdo(q.url, poolEnv());
    const first = await send(q.url, 5, 'l1', image);
    await waitDeleted(q.url, first, [r]);
    const [held] = poolMachines();
    await until(() => !liveLease(held), () => `lambdo to release its lease${tail(r)}`, 10000);
    rig.fly.holdLease(held.id, 600);
    const second = await send(q.url, 5, 'l2', image);
    await waitDeleted(q.url, second, [r]);
    assertHandled(q.url, [...first, ...second], [r]);
    const [{ run }] = runsOf(second);
    assert.notEqual(run.machineId, held.id);
    assert.equal(held.runs.length, 1, 'the leased Machine ran nothing more');
    assert.equal(held.state, 'stopped', 'and was not destroyed');
    assert.ok(rig.fly.requests.some((x) => x.op === 'Machines_create_lease' && x.machineId === held.id && x.status === 409),
      'lambdo tried it and was refused');
    assert.equal((await r.stop()).code, 0, tail(r));
  });

  it('a new image pushed under the same tag reaches the pool on the next group (the tag is sent, not a digest)', T, async () => {
    const q = await rig.queue('image');
    const image = 'registry.fly.io/image/sleep:200';
    const r = rig.lambdo(q.url, poolEnv({ LAMBDO_POOL: '1' }));
    const d0 = rig.fly.imageDigest(image);
    const first = await send(q.url, 5, 'i1', image);
    await waitDeleted(q.url, first, [r]);
    const d1 = rig.fly.pushImage(image);
    const second = await send(q.url, 5, 'i2', image);
    await waitDeleted(q.url, second, [r]);
    assertHandled(q.url, [...first, ...second], [r]);
    const [a] = runsOf(first), [b] = runsOf(second);
    assert.equal(a.run.machineId, b.run.machineId, 'the same pool Machine');
    assert.deepEqual([a.run.image, a.run.imageDigest], [image, d0]);
    assert.deepEqual([b.run.via, b.run.image, b.run.imageDigest], ['update', image, d1], 'resolved again at the update');
    assert.equal((await r.stop()).code, 0, tail(r));
  });

  it('at LAMBDO_POOL=1, three groups of one key run one after the other on the one Machine, kept hidden meanwhile', T, async () => {
    const q = await rig.queue('atn', { visibilityTimeout: 3 });
    const port = await freePort();
    const r = rig.lambdo(q.url, poolEnv({ LAMBDO_POOL: '1', LAMBDO_EVENTS_PER_MACHINE: '2', LAMBDO_VISIBILITY_TIMEOUT: '3',
      LAMBDO_METRICS_ADDR: `127.0.0.1:${port}` }));
    const gauges = async () => {
      const b = (await get(port, '/metrics')).body;
      return [value(b, 'lambdo_pool_machines{state="busy"}'), value(b, 'lambdo_pool_machines{state="idle"}')];
    };
    await r.waitLog(/metrics: serving/, 20000);
    const sent = await send(q.url, 6, 'n', 'registry.fly.io/atn/sleep:1500');
    let seen;
    await until(async () => { seen = await gauges(); return seen[0] === 1 && seen[1] === 0; },
      () => `gauges busy 1, idle 0 while the Machine runs, last [busy, idle] = ${seen}`, 30000, 100);
    await waitDeleted(q.url, sent, [r], 90000);
    await until(async () => { seen = await gauges(); return seen[0] === 0 && seen[1] === 1; },
      () => `gauges busy 0, idle 1 afterwards, last [busy, idle] = ${seen}`, 10000, 100);
    const list = assertHandled(q.url, sent, [r]);
    assert.equal(poolCreates().length, 1, tail(r));
    const twice = sent.filter((m) => list.filter(({ msgs }) => msgs.includes(m)).length > 1).map((m) => m.key);
    assert.deepEqual(twice, [], `each group ran once (none expired while waiting): ${list.map(({ run }) => run.eventsText).join(' ')}`);
    assert.ok(list.length >= 3, `${list.length} runs`);
    assert.equal(new Set(list.map(({ run }) => run.machineId)).size, 1);
    const byStart = list.map(({ run }) => run).sort((x, y) => x.startSeq - y.startSeq);
    for (let i = 1; i < byStart.length; i++) assert.ok(byStart[i].startSeq > byStart[i - 1].endSeq, 'one after the other');
    assert.equal((await r.stop()).code, 0, tail(r));
  });

  it('destroys pool Machines idle for LAMBDO_POOL_IDLE_SECONDS, and creates none while nothing comes', T, async () => {
    const q = await rig.queue('idle');
    const r = rig.lambdo(q.url, poolEnv({ LAMBDO_POOL_IDLE_SECONDS: '2' }));
    const sent = await send(q.url, 10, 'idle', 'registry.fly.io/idle/sleep:200');
    await waitDeleted(q.url, sent, [r]);
    assertHandled(q.url, sent, [r]);
    const pool = poolMachines();
    await until(() => pool.every((m) => m.state === 'destroyed'), () => `the idle Machines destroyed${tail(r)}`, 30000, 100);
    for (const m of pool) {
      const idle = m.destroyedAt - m.runs.at(-1).endedAt;
      assert.ok(idle >= 1900, `Machine ${m.id} destroyed after ${idle} ms idle, before LAMBDO_POOL_IDLE_SECONDS=2`);
    }
    const creates = rig.fly.creates().length;
    await sleep(3000);
    assert.equal(rig.fly.creates().length, creates, 'no Machine created without traffic');
    assert.equal((await r.stop()).code, 0, tail(r));
  });

  describe('two lambdo processes on one queue and one pool', () => {
    it('every message handled exactly as sent, no Machine runs two groups at once', T, async () => {
      rig.fly.leaseTtlScale = 0.1;
      const q = await rig.queue('two');
      const env = poolEnv();
      const a = rig.lambdo(q.url, env);
      const b = rig.lambdo(q.url, env);
      const sent = await send(q.url, 60, 'two', 'registry.fly.io/two/sleep:400');
      await waitDeleted(q.url, sent, [a, b], 120000);
      const list = assertHandled(q.url, sent, [a, b]);
      const twice = sent.filter((m) => list.filter(({ msgs }) => msgs.includes(m)).length > 1).map((m) => m.key);
      assert.deepEqual(twice, [], 'no message ran twice');
      assert.ok(poolCreates().length <= 4, `${poolCreates().length} pool creates: at most LAMBDO_POOL=2 each`);
      assert.ok(list.every(({ run }) => run.via === 'update'));
      assertUpdatesLeased();
      assert.equal((await a.stop()).code, 0, tail(a));
      assert.equal((await b.stop()).code, 0, tail(b));
    });

    it('one SIGKILLed mid-run: the survivor handles every message once its leases and visibility expire', T, async () => {
      rig.fly.leaseTtlScale = 0.1;   // 60 s leases last 6 s
      const q = await rig.queue('kill', { visibilityTimeout: 5 });
      const env = poolEnv({ LAMBDO_VISIBILITY_TIMEOUT: '5' });
      const a = rig.lambdo(q.url, env);
      const b = rig.lambdo(q.url, env);
      const sent = await send(q.url, 60, 'kill', 'registry.fly.io/kill/sleep:1500');
      // Kill a while Machines run and some messages are still to come.
      await until(() => rig.fly.runs.filter((x) => x.end === undefined).length >= 2 && deleted(q.url).size >= 5,
        () => `runs under way${tail(a, b)}`, 60000);
      await a.kill9();
      const killedAt = Date.now();
      await waitDeleted(q.url, sent, [a, b], 150000);
      const list = assertHandled(q.url, sent, [a, b]);
      assert.ok(rig.fly.runs.some((x) => x.startedAt > killedAt), 'the survivor ran groups after the kill');
      assert.ok(list.every(({ run }) => run.via === 'update'));
      assert.equal((await b.stop()).code, 0, tail(b));
    });
  });

  describe('lambdo check and configuration', () => {
    const check = async (url, extra) => {
      const run = spawnLambdo(rig.env(url, extra), { args: ['check'] });
      const { code } = await run.done(60000);
      return { code, out: run.out };
    };
    const poolRows = (out) => out.split('\n').filter((l) => l.slice(6, 18).trim() === 'pool');

    it('check shows LAMBDO_POOL and the idle time, then one row per key: Machines, states, leases', T, async () => {
      const q = await rig.queue('check', { redriveToDlq: 5 });
      const off = await check(q.url, {});
      assert.equal(off.code, 0, off.out);
      assert.deepEqual(poolRows(off.out), [], 'no pool row with LAMBDO_POOL unset');
      const empty = await check(q.url, { LAMBDO_POOL: '3', LAMBDO_POOL_IDLE_SECONDS: '900' });
      assert.equal(empty.code, 0, empty.out);
      assert.match(poolRows(empty.out)[0] ?? '', /LAMBDO_POOL=3.*(900|15 ?min)/, empty.out);
      assert.ok(!/key [0-9a-f]{16}/.test(empty.out), `no key row for an app without pool Machines:\n${empty.out}`);

      const r = rig.lambdo(q.url, poolEnv());
      const sent = await send(q.url, 10, 'chk', 'registry.fly.io/check/sleep:200');
      await waitDeleted(q.url, sent, [r]);
      assert.equal((await r.stop()).code, 0, tail(r));
      const n = poolMachines().length;
      const key = poolMachines()[0].metadata.lambdo_pool;
      const c = await check(q.url, { LAMBDO_POOL: '2', LAMBDO_POOL_IDLE_SECONDS: '900' });
      assert.equal(c.code, 0, c.out);
      const rows = poolRows(c.out);
      assert.equal(rows.length, 2, c.out);
      assert.match(rows[0], /LAMBDO_POOL=2/);
      assert.match(rows[1], new RegExp(`key ${key}: ${n} Machines`), c.out);
      assert.match(rows[1], new RegExp(`\\b${n} stopped\\b`), c.out);
      assert.match(rows[1], /\b0 leased\b/, c.out);
      rig.fly.holdLease(poolMachines()[0].id, 600);
      const held = await check(q.url, { LAMBDO_POOL: '2' });
      assert.equal(held.code, 0, held.out);
      assert.match(poolRows(held.out)[1] ?? '', /\b1 leased\b/, held.out);
      for (const s of [rig.fly.token]) assert.ok(!c.out.includes(s), 'no secret in the output');
    });

    it('refuses a bad LAMBDO_POOL or LAMBDO_POOL_IDLE_SECONDS, and LAMBDO_POOL with the local backend (exit 2, named)', T, async () => {
      const q = await rig.queue('conf');
      for (const [extra, name] of [
        [{ LAMBDO_POOL: '101' }, 'LAMBDO_POOL'], [{ LAMBDO_POOL: '-1' }, 'LAMBDO_POOL'], [{ LAMBDO_POOL: 'many' }, 'LAMBDO_POOL'],
        [{ LAMBDO_POOL: '2', LAMBDO_POOL_IDLE_SECONDS: '0' }, 'LAMBDO_POOL_IDLE_SECONDS'],
        [{ LAMBDO_POOL: '2', LAMBDO_POOL_IDLE_SECONDS: '604801' }, 'LAMBDO_POOL_IDLE_SECONDS'],
        [{ LAMBDO_POOL: '2', LAMBDO_BACKEND: 'local', LAMBDO_LOCAL_COMMAND: '["true"]', LAMBDO_FLY_TOKEN: undefined,
          LAMBDO_FLY_APP: undefined, LAMBDO_FLY_REGION: undefined, LAMBDO_FLY_REGIONS: undefined, LAMBDO_FLY_API_URL: undefined },
        'LAMBDO_POOL'],
      ]) {
        const run = spawnLambdo(rig.env(q.url, extra));
        const { code } = await run.done(30000);
        assert.equal(code, 2, `${JSON.stringify(extra)}: ${run.out}`);
        assert.match(run.out, new RegExp(`${name}(?![A-Z_])`), JSON.stringify(extra));
      }
      assert.deepEqual(rig.fly.requests, [], 'no Fly call before the configuration is valid');
    });
  });
});
