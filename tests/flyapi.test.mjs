// Self-tests of the test Fly Machines API's warm-pool side (tests/lib/flyapi.mjs, issue #12):
// skip_launch pool creates, update, start, leases and their nonce, per-Machine rate limits and
// the run recorder that a pool test uses to prove no Machine ran two groups at once.
// The create-path rules are in tests/rig.test.mjs.
//   node --test --test-concurrency=1 tests/flyapi.test.mjs
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { startFlyApi, guestForPreset, EVENTS_PATH } from './lib/flyapi.mjs';

const TOKEN = 'fly-test-token-pool';
const APP = 'lambdo-pool-app';
const NONCE = 'fly-machine-lease-nonce';
const b64 = (s) => Buffer.from(s).toString('base64');

// A pool Machine's create body: stopped, kept (no auto_destroy), tagged with its pool key.
function poolCreate({ image = 'registry.fly.io/worker:1', key = 'k1', region = 'iad' } = {}) {
  return { region, skip_launch: true, config: { image, guest: guestForPreset('shared-cpu-1x'), env: {},
    restart: { policy: 'no' }, metadata: { managed_by: 'lambdo', lambdo_pool: key } } };
}

// An update body giving a pool Machine one group's events.
function groupUpdate(eventsText, { image = 'registry.fly.io/worker:1', key = 'k1', skipLaunch } = {}) {
  return { ...(skipLaunch ? { skip_launch: true } : {}), config: { image, guest: guestForPreset('shared-cpu-1x'),
    env: { EVENTS_PATH }, files: [{ guest_path: EVENTS_PATH, raw_value: b64(eventsText) }],
    restart: { policy: 'no' }, metadata: { managed_by: 'lambdo', lambdo_pool: key } } };
}

async function withFly(opts, fn) {
  const fly = await startFlyApi({ token: TOKEN, app: APP, tls: false, pool: true, ...opts });
  const api = async (method, path, body, headers = {}) => {
    const res = await fetch(`${fly.url}/v1/apps/${APP}/machines${path}`, { method,
      headers: { authorization: `Bearer ${TOKEN}`, ...(body ? { 'content-type': 'application/json' } : {}), ...headers },
      body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await res.text();
    return { status: res.status, json: text ? JSON.parse(text) : undefined, headers: res.headers };
  };
  try {
    return await fn(fly, api);
  } finally {
    await fly.close();
  }
}

// Creates a pool Machine and returns its id.
async function poolMachine(api, opts) {
  const r = await api('POST', '', poolCreate(opts));
  assert.equal(r.status, 200, JSON.stringify(r.json));
  return r.json.id;
}

describe('test Fly API: pool Machines', () => {
  it('skip_launch creates a stopped Machine that runs nothing, its metadata kept, shown and listed', () => withFly({}, async (fly, api) => {
    const id = await poolMachine(api, { key: 'alpha', region: 'ord' });
    const other = await poolMachine(api, { key: 'beta', region: 'iad' });
    assert.equal(fly.machine(id).state, 'stopped');
    assert.deepEqual(fly.runs, [], 'nothing ran');
    const shown = await api('GET', `/${id}`);
    assert.equal(shown.json.state, 'stopped');
    assert.deepEqual(shown.json.config.metadata, { managed_by: 'lambdo', lambdo_pool: 'alpha' });
    const list = await api('GET', '');
    assert.deepEqual(list.json.map((m) => [m.id, m.config.metadata.lambdo_pool]).sort(),
      [[id, 'alpha'], [other, 'beta']].sort());
    const ord = await api('GET', '?region=ord');
    assert.deepEqual(ord.json.map((m) => m.id), [id], 'region filter');
    const stillStopped = await api('GET', `/${id}/wait?state=stopped&timeout=1`);
    assert.equal(stillStopped.status, 200);
    assert.deepEqual(fly.violations, []);
  }));

  it('without option pool, skip_launch stays a violation; a pool Machine must not auto_destroy', async () => {
    await withFly({ pool: false }, async (fly, api) => {
      const r = await api('POST', '', poolCreate());
      assert.equal(r.status, 400);
      assert.match(r.json.error, /skip_launch/);
    });
    await withFly({}, async (fly, api) => {
      const body = poolCreate();
      body.config.auto_destroy = true;
      const r = await api('POST', '', body);
      assert.equal(r.status, 400);
      assert.match(r.json.error, /auto_destroy must not be true/);
      assert.equal(fly.machines.length, 0);
    });
  });

  it('update replaces the files, bumps the version, starts the Machine; an exit leaves it stopped for the next group', () => withFly({ imageBehaviour: true }, async (fly, api) => {
    const id = await poolMachine(api, { image: 'registry.fly.io/exit:0-100' });
    const v0 = fly.machine(id).instanceId;
    const u1 = await api('POST', `/${id}`, groupUpdate('[{"g":1}, 1.50]', { image: 'registry.fly.io/exit:3-100' }));
    assert.equal(u1.status, 200, JSON.stringify(u1.json));
    assert.equal(u1.json.state, 'started');
    assert.notEqual(u1.json.instance_id, v0, 'version bumped');
    const m = fly.machine(id);
    assert.equal(m.eventsText, '[{"g":1}, 1.50]', 'files decoded as for creates');
    assert.equal((await api('GET', `/${id}/wait?state=stopped&timeout=5`)).status, 200);
    assert.equal(m.state, 'stopped', 'no auto_destroy: kept');
    assert.equal(m.exitCode, 3, 'image behaviour of the updated config');

    const u2 = await api('POST', `/${id}`, groupUpdate('[{"g":2}]', { image: 'registry.fly.io/exit:0-100' }));
    assert.equal(u2.status, 200);
    assert.notEqual(u2.json.instance_id, u1.json.instance_id);
    assert.deepEqual(fly.machine(id).events, [{ g: 2 }]);
    const oldVersion = await api('GET', `/${id}/wait?state=stopped&timeout=1&instance_id=${u1.json.instance_id}`);
    assert.equal(oldVersion.status, 200, 'an earlier instance has stopped');
    assert.equal((await api('GET', `/${id}/wait?state=stopped&timeout=5&instance_id=${u2.json.instance_id}`)).status, 200);
    assert.deepEqual(m.runs.map((r) => [r.via, r.eventsText, r.end, r.exitCode]),
      [['update', '[{"g":1}, 1.50]', 'exit', 3], ['update', '[{"g":2}]', 'exit', 0]]);
    assert.deepEqual(fly.overlaps(), []);

    const held = await api('POST', `/${id}`, groupUpdate('[3]', { skipLaunch: true }));
    assert.equal(held.status, 200);
    assert.equal(held.json.state, 'stopped', 'skip_launch: not started');
    assert.equal(m.runs.length, 2);
    const bad = groupUpdate('[4]');
    bad.config.files[0].raw_value = 'not base64!';
    const r = await api('POST', `/${id}`, bad);
    assert.equal(r.status, 400);
    assert.match(r.json.error, /base64/);
    assert.equal(fly.violations.length, 1);
    assert.deepEqual(m.events, [3], 'a refused update changes nothing');
  }));

  it('start runs a stopped Machine again; starting a started one is a no-op', () => withFly({}, async (fly, api) => {
    const id = await poolMachine(api);
    await api('POST', `/${id}`, groupUpdate('[1]', { skipLaunch: true }));
    const s = await api('POST', `/${id}/start`);
    assert.deepEqual([s.status, s.json.previous_state], [200, 'stopped']);
    assert.equal(fly.machine(id).state, 'started');
    const again = await api('POST', `/${id}/start`);
    assert.deepEqual([again.status, again.json.previous_state], [200, 'started']);
    assert.deepEqual(fly.runs.map((r) => r.via), ['start']);
    const stop = await api('POST', `/${id}/stop`);
    assert.equal(stop.status, 200);
    assert.deepEqual([fly.machine(id).state, fly.runs[0].end], ['stopped', 'stop']);
  }));

  it('the run recorder reports an update of a running Machine as two groups at once', () => withFly({}, async (fly, api) => {
    const id = await poolMachine(api);
    await api('POST', `/${id}`, groupUpdate('[1]'));    // no scripted exit: keeps running
    assert.deepEqual(fly.overlaps(), []);
    await api('POST', `/${id}`, groupUpdate('[2]'));
    const o = fly.overlaps();
    assert.equal(o.length, 1);
    assert.deepEqual([o[0].machineId, o[0].first.eventsText, o[0].first.end, o[0].second.eventsText],
      [id, '[1]', 'replaced', '[2]']);
    // Sequential runs (the first exited before the second began) are no overlap.
    const seq = await poolMachine(api);
    await api('POST', `/${seq}`, groupUpdate('[3]'));
    fly.exitMachine(seq, 0);
    await api('POST', `/${seq}`, groupUpdate('[4]'));
    assert.equal(fly.overlaps().length, 1, 'still only the first Machine');
  }));
});

describe('test Fly API: registry and test hooks', () => {
  it('a tag resolves at each create and update; pushImage gives it a new digest; start keeps the config\'s', () => withFly({}, async (fly, api) => {
    const tag = 'registry.fly.io/worker:1';
    const d0 = fly.imageDigest(tag);
    assert.match(d0, /^sha256:[0-9a-f]{64}$/);
    assert.equal(fly.imageDigest(tag), d0, 'stable until pushed');
    assert.notEqual(fly.imageDigest('registry.fly.io/worker:2'), d0, 'per tag');
    assert.equal(fly.imageDigest('registry.fly.io/worker'), fly.imageDigest('registry.fly.io/worker:latest'));
    const pinned = `registry.fly.io/worker@sha256:${'ab'.repeat(32)}`;
    assert.equal(fly.imageDigest(pinned), `sha256:${'ab'.repeat(32)}`, 'a digest reference is itself');

    const id = await poolMachine(api, { image: tag });
    assert.equal(fly.machine(id).imageDigest, d0);
    assert.equal((await api('GET', `/${id}`)).json.image_ref.digest, d0);
    await api('POST', `/${id}`, groupUpdate('[1]', { image: tag }));
    fly.exitMachine(id, 0);
    const d1 = fly.pushImage(tag);
    assert.notEqual(d1, d0);
    assert.equal(fly.imageDigest(tag), d1);
    assert.equal(fly.imageDigest(pinned), `sha256:${'ab'.repeat(32)}`, 'a push moves the tag, not a digest');
    assert.equal(fly.machine(id).imageDigest, d0, 'a push alone changes no Machine');
    await api('POST', `/${id}/start`);
    fly.exitMachine(id, 0);
    await api('POST', `/${id}`, groupUpdate('[2]', { image: tag }));
    assert.deepEqual(fly.runs.map((r) => [r.via, r.image, r.imageDigest]),
      [['update', tag, d0], ['start', tag, d0], ['update', tag, d1]]);
    assert.equal((await api('GET', `/${id}`)).json.image_ref.digest, d1);
  }));

  it('destroyMachine destroys underneath (forget: a 404 from then on); holdLease leases it for the test', () => withFly({}, async (fly, api) => {
    const a = await poolMachine(api);
    const b = await poolMachine(api);
    await api('POST', `/${a}`, groupUpdate('[1]'));
    fly.destroyMachine(a);
    assert.deepEqual([fly.machine(a).state, fly.runs[0].end], ['destroyed', 'destroy']);
    assert.equal((await api('GET', `/${a}`)).json.state, 'destroyed');
    fly.destroyMachine(a, { forget: true });
    assert.equal((await api('GET', `/${a}`)).status, 404);
    assert.equal((await api('POST', `/${a}/lease?ttl=60`)).status, 404);

    const l = fly.holdLease(b, 60);
    assert.match(l.nonce, /^[0-9a-f]{24}$/);
    assert.equal((await api('POST', `/${b}/lease?ttl=60`)).status, 409);
    assert.equal((await api('POST', `/${b}`, groupUpdate('[2]'), { [NONCE]: l.nonce })).status, 200);
    fly.destroyMachine(b);
    assert.equal(fly.machine(b).lease, null, 'a destroyed Machine holds no lease');
  }));
});

describe('test Fly API: leases', () => {
  it('a lease is exclusive: 409 to others, its nonce required on every write, released with it', () => withFly({}, async (fly, api) => {
    const id = await poolMachine(api);
    const a = await api('POST', `/${id}/lease?ttl=60`);
    assert.equal(a.status, 200);
    assert.equal(a.json.status, 'success');
    const { nonce, expires_at: exp } = a.json.data;
    assert.match(nonce, /^[0-9a-f]{24}$/);
    assert.ok(Math.abs(exp - (Date.now() / 1000 + 60)) < 5, `expires_at ${exp}`);

    const taken = await api('POST', `/${id}/lease`, { ttl: 60 });
    assert.equal(taken.status, 409);
    assert.match(taken.json.message, /lease currently held by/);
    for (const [method, path, body] of [['POST', `/${id}`, groupUpdate('[1]')], ['POST', `/${id}/start`],
      ['POST', `/${id}/stop`], ['DELETE', `/${id}`], ['DELETE', `/${id}/lease`]]) {
      for (const headers of [{}, { [NONCE]: 'wrong' }]) {
        const r = await api(method, path, body, headers);
        assert.equal(r.status, 409, `${method} ${path} ${JSON.stringify(headers)}`);
        assert.match(r.json.error, /^aborted: .*lease currently held by/);
      }
    }
    assert.equal(fly.leaseRefusals, 11);
    assert.deepEqual([fly.machine(id).state, fly.runs.length], ['stopped', 0], 'refused calls changed nothing');

    const shown = await api('GET', `/${id}/lease`);
    assert.equal(shown.status, 200);
    assert.equal(shown.json.data.expires_at, exp);
    assert.equal(shown.json.data.nonce, undefined, 'show does not hand out the nonce');

    const refreshed = await api('POST', `/${id}/lease?ttl=120`, undefined, { [NONCE]: nonce });
    assert.equal(refreshed.json.data.nonce, nonce, 'refresh keeps the nonce');
    assert.ok(refreshed.json.data.expires_at > exp);
    const u = await api('POST', `/${id}`, groupUpdate('[1]'), { [NONCE]: nonce });
    assert.equal(u.status, 200);
    assert.equal(fly.runs.length, 1);
    assert.equal((await api('POST', `/${id}/stop`, undefined, { [NONCE]: nonce })).status, 200);
    assert.equal((await api('DELETE', `/${id}/lease`, undefined, { [NONCE]: nonce })).status, 200);
    assert.equal((await api('GET', `/${id}/lease`)).status, 404);
    assert.deepEqual((await api('DELETE', `/${id}/lease`)).json, { error: 'lease not found' });
    const b = await api('POST', `/${id}/lease?ttl=60`);
    assert.equal(b.status, 200, 'free again');
    assert.notEqual(b.json.data.nonce, nonce);
  }));

  it('a lease expires after its ttl (scaled by leaseTtlScale)', () => withFly({ leaseTtlScale: 0.5 }, async (fly, api) => {
    const id = await poolMachine(api);
    const a = await api('POST', `/${id}/lease?ttl=2`);   // 1 s
    assert.equal(a.status, 200);
    assert.equal((await api('POST', `/${id}/start`)).status, 409, 'held');
    await sleep(1500);
    assert.equal((await api('GET', `/${id}/lease`)).status, 404, 'expired');
    assert.equal((await api('POST', `/${id}/start`)).status, 200, 'free after expiry');
    assert.equal((await api('POST', `/${id}/lease?ttl=2`)).status, 200);
  }));

  it('create with lease_ttl leases the new Machine and answers its nonce', () => withFly({}, async (fly, api) => {
    const r = await api('POST', '', { ...poolCreate(), lease_ttl: 30 });
    assert.equal(r.status, 200);
    assert.match(r.json.nonce, /^[0-9a-f]{24}$/);
    assert.equal((await api('POST', `/${r.json.id}`, groupUpdate('[1]'))).status, 409);
    assert.equal((await api('POST', `/${r.json.id}`, groupUpdate('[1]'), { [NONCE]: r.json.nonce })).status, 200);
  }));
});

describe('test Fly API: per-Machine rate limits', () => {
  // Rates far below Fly's keep a slow machine from refilling a bucket mid-test; true means Fly's.
  const slow = { action: { rate: 0.01, burst: 3 }, get: { rate: 0.01, burst: 10 } };

  it('perMachineLimits: true is Fly\'s: actions 1/s burst 3, gets 5/s burst 10', () => withFly({ perMachineLimits: true }, async (fly) => {
    assert.deepEqual(fly.perMachineLimits, { action: { rate: 1, burst: 3 }, get: { rate: 5, burst: 10 } });
  }));

  it('perMachineLimits: 429 past the burst, per Machine and per action; gets at their own rate', () => withFly({ perMachineLimits: slow }, async (fly, api) => {
    const id = await poolMachine(api);
    const other = await poolMachine(api);
    const stops = [];
    for (let i = 0; i < 4; i++) stops.push(await api('POST', `/${id}/stop`));
    assert.deepEqual(stops.map((r) => r.status), [200, 200, 200, 429]);
    assert.deepEqual(stops[3].json, { error: 'rate limit exceeded' });
    assert.ok(Number(stops[3].headers.get('retry-after')) >= 1);
    assert.equal((await api('POST', `/${other}/stop`)).status, 200, 'another Machine has its own bucket');
    assert.equal((await api('POST', `/${id}`, groupUpdate('[1]', { skipLaunch: true }))).status, 200,
      'update has its own bucket');
    const gets = [];
    for (let i = 0; i < 11; i++) gets.push((await api('GET', `/${id}`)).status);
    assert.deepEqual(gets, [...Array(10).fill(200), 429]);
    assert.deepEqual(fly.machineRateLimited, { update: 0, start: 0, stop: 1, lease: 0, get: 1 });
    const { nonce } = (await api('POST', `/${id}/lease`)).json.data;
    assert.deepEqual([(await api('POST', `/${id}/lease`)).status, (await api('POST', `/${id}/lease`)).status], [409, 409]);
    assert.equal((await api('POST', `/${id}/lease`)).status, 429, 'lease past its burst');
    assert.equal((await api('POST', `/${id}/start`, undefined, { [NONCE]: nonce })).status, 200, 'start has its own bucket');
  }));

  it('a bucket refills at its rate', () => withFly({ perMachineLimits: { action: { rate: 5, burst: 1 }, get: slow.get } }, async (fly, api) => {
    const id = await poolMachine(api);
    assert.equal((await api('POST', `/${id}/stop`)).status, 200);
    assert.equal((await api('POST', `/${id}/stop`)).status, 429);
    await sleep(500);
    assert.equal((await api('POST', `/${id}/stop`)).status, 200, 'a token back after 200 ms');
  }));

  it('without the option there is no per-Machine limit', () => withFly({}, async (fly, api) => {
    const id = await poolMachine(api);
    for (let i = 0; i < 6; i++) assert.equal((await api('POST', `/${id}/stop`)).status, 200);
    for (let i = 0; i < 15; i++) assert.equal((await api('GET', `/${id}`)).status, 200);
  }));
});
