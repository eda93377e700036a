#!/usr/bin/env node
// The warm pool's figures (issue #12; figures, not a test): events per second and dispatch
// latency of lambdo in create mode and with LAMBDO_POOL=8, against the HTTPS test Fly API
// applying Fly's default limits (1 create per second per app, burst 3; per Machine 1 action per
// second, burst 3, and 5 gets per second, burst 10) and jobs that run about 1 s
// (registry.fly.io/bench/sleep:1000 with the image conventions). Both modes: LAMBDO_ACK=exit,
// LAMBDO_EVENTS_PER_MACHINE=10, one key, LAMBDO_MAX_MACHINES=16, lambdo already running and
// idle when the events are sent; events/s = events / (first send -> last delete).
// The pool mode first runs a warm-up round (8 groups, so the pool holds 8 stopped Machines)
// that is not counted. Dispatch latency, per event: its run's start (test Fly API, run.startedAt)
// minus the message's firstReceiveTimestamp (its entry in /tmp/events.meta.json).
// Usage: node bench/pool.mjs [--events N] [--pool N] [--json] [--binary PATH]
//        (defaults: 400 events, pool 8, ./lambdo: the static build, ./build.sh)
import { spawn } from 'node:child_process';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { SendMessageBatchCommand } from '@aws-sdk/client-sqs';
import { startSqs, toMessageAttributes } from '../tests/lib/fauxqs.mjs';
import { startFlyApi } from '../tests/lib/flyapi.mjs';
import { testCerts } from '../tests/lib/certs.mjs';
import { ROOT } from '../tests/lib/tools.mjs';
import { percentile } from './lib/measure.mjs';

const USAGE = 'usage: node bench/pool.mjs [--events N] [--pool N] [--json] [--binary PATH]';
const argv = process.argv.slice(2);
const opts = { events: 400, pool: 8, json: false, binary: 'lambdo' };
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  if (a === '--json') opts.json = true;
  else if (['--events', '--pool', '--binary'].includes(a) && i + 1 < argv.length) opts[a.slice(2)] = argv[++i];
  else { console.error(`bench/pool.mjs: bad argument ${a}\n${USAGE}`); process.exit(2); }
}
const EVENTS = Number(opts.events), POOL = Number(opts.pool);
if (!(EVENTS >= 10) || !(POOL >= 1 && POOL <= 100)) { console.error(USAGE); process.exit(2); }
const BINARY = path.resolve(ROOT, opts.binary);
const PER_MACHINE = 10;
const IMAGE = 'registry.fly.io/bench/sleep:1000';
const TOKEN = 'bench-pool-token';
const APP = 'bench-pool';
const say = (s) => { if (!opts.json) console.log(s); };

const sqs = await startSqs();
const certs = testCerts();

function start(env) {
  const p = spawn(BINARY, [], { env: { PATH: process.env.PATH, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  p.stderr.on('data', (d) => { log += d; if (log.length > 1e6) log = log.slice(-1e5); });
  p.log = () => log;
  p.exited = new Promise((resolve) => p.on('exit', resolve));
  return p;
}

async function send(url, round, count) {
  const attrs = toMessageAttributes({ image: IMAGE, size: 'shared-cpu-1x' });
  for (let i = 0; i < count; i += 10) {
    const Entries = [];
    for (let j = i; j < Math.min(count, i + 10); j++) {
      Entries.push({ Id: `e${j}`, MessageBody: JSON.stringify({ round, seq: j }), MessageAttributes: attrs });
    }
    await sqs.client.send(new SendMessageBatchCommand({ QueueUrl: url, Entries }));
  }
}

async function drained(url, p, what, timeoutMs) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const c = sqs.counts(url);
    if (c.visible === 0 && c.inFlight === 0 && c.delayed === 0) return;
    if (Date.now() > end) throw new Error(`${what}: not done after ${timeoutMs / 1000} s (${JSON.stringify(c)})\n${p.log().slice(-3000)}`);
    await sleep(20);
  }
}

// One mode: a fresh test Fly API and queue, lambdo started with extra, an optional warm-up
// round, then EVENTS events measured.
async function measure(name, extra, warmupEvents) {
  const fly = await startFlyApi({ token: TOKEN, app: APP, pool: true, imageBehaviour: true,
    rateLimits: { create: { rate: 1, burst: 3 } }, perMachineLimits: true });
  const q = await sqs.createQueue(`bench-pool-${name}`, { baseUrl: sqs.endpoint, visibilityTimeout: 30 });
  const p = start({
    LAMBDO_SQS_QUEUE_URL: q.url, AWS_REGION: 'us-east-1', AWS_ACCESS_KEY_ID: 'AKIDBENCH',
    AWS_SECRET_ACCESS_KEY: 'bench-secret', LAMBDO_FLY_TOKEN: TOKEN, LAMBDO_FLY_APP: APP,
    LAMBDO_FLY_REGION: 'iad', LAMBDO_FLY_API_URL: fly.url, SSL_CERT_FILE: certs.caFile,
    LAMBDO_LOG_LEVEL: 'warn', LAMBDO_ACK: 'exit', LAMBDO_EVENTS_PER_MACHINE: String(PER_MACHINE),
    LAMBDO_MAX_MACHINES: '16', LAMBDO_SQS_LONG_POLL_SECONDS: '2', ...extra,
  });
  try {
    if (warmupEvents) {
      await send(q.url, 'warmup', warmupEvents);
      await drained(q.url, p, `${name} warm-up`, 120000);
      await sleep(1500);   // the warm-up's leases released, the pool idle
    } else {
      await sleep(1000);   // lambdo up and polling
    }
    const creates0 = fly.creates().filter((c) => c.status === 200).length;
    const limited0 = { create: fly.rateLimited.create, machine: { ...fly.machineRateLimited } };
    const t0 = Date.now();
    await send(q.url, 'measure', EVENTS);
    await drained(q.url, p, name, 900000);
    const seconds = (Date.now() - t0) / 1000;

    const runs = fly.runs.filter((r) => r.events?.some((e) => e.round === 'measure'));
    const latency = new Map();   // messageId -> ms, its first run
    let events = 0;
    for (const r of runs) {
      if (r.exitCode === 0) events += r.events.length;
      for (const m of r.meta ?? []) if (!latency.has(m.messageId)) latency.set(m.messageId, r.startedAt - m.firstReceiveTimestamp);
    }
    const lat = [...latency.values()];
    const machineLimited = Object.entries(fly.machineRateLimited).reduce((s, [k, v]) => s + v - limited0.machine[k], 0);
    return {
      mode: name, events: EVENTS, eventsRun: events, seconds, eventsPerSecond: EVENTS / seconds,
      runs: runs.length, runsVia: Object.fromEntries(['create', 'update', 'start'].map((v) => [v, runs.filter((r) => r.via === v).length])),
      machinesCreated: fly.creates().filter((c) => c.status === 200).length - creates0,
      dispatchP50Ms: percentile(lat, 50), dispatchP99Ms: percentile(lat, 99), latencySamples: lat.length,
      createRateLimited: fly.rateLimited.create - limited0.create, machineRateLimited: machineLimited,
      overlaps: fly.overlaps().length, violations: fly.violations.length,
    };
  } finally {
    p.kill('SIGTERM');
    await Promise.race([p.exited, sleep(20000).then(() => p.kill('SIGKILL'))]);
    await fly.close();
  }
}

say(`lambdo warm pool benchmark (${path.relative(ROOT, BINARY) || BINARY}, ${new Date().toISOString()})`);
say(`  ${EVENTS} events, ${PER_MACHINE} per Machine, one key, jobs of 1 s; test Fly API with Fly's limits`);
const create = await measure('create', {}, 0);
const pool = await measure(`pool`, { LAMBDO_POOL: String(POOL) }, POOL * PER_MACHINE);
pool.mode = `pool (LAMBDO_POOL=${POOL}, after a warm-up of ${POOL} groups, not counted)`;
create.mode = 'create (LAMBDO_MAX_MACHINES=16)';
const ratio = { eventsPerSecond: pool.eventsPerSecond / create.eventsPerSecond,
  dispatchP50: create.dispatchP50Ms / pool.dispatchP50Ms, dispatchP99: create.dispatchP99Ms / pool.dispatchP99Ms };
await sqs.close();

if (opts.json) {
  console.log(JSON.stringify({ binary: BINARY, at: new Date().toISOString(), create, pool, ratio }, null, 2));
} else {
  const rows = [['mode', 'events/s', 'wall s', 'dispatch p50', 'p99', 'creates', 'runs (update)', '429s (create, per Machine)']];
  for (const m of [create, pool]) {
    rows.push([m.mode, m.eventsPerSecond.toFixed(1), m.seconds.toFixed(1), `${m.dispatchP50Ms.toFixed(0)} ms`,
      `${m.dispatchP99Ms.toFixed(0)} ms`, String(m.machinesCreated), `${m.runs} (${m.runsVia.update})`,
      `${m.createRateLimited}, ${m.machineRateLimited}`]);
  }
  const w = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  for (const r of rows) say(`  ${r.map((c, i) => (i ? c.padStart(w[i]) : c.padEnd(w[i]))).join('  ')}`);
  say(`  pool / create: events/s x${ratio.eventsPerSecond.toFixed(2)} (goal >= 5), dispatch p50 1/${ratio.dispatchP50.toFixed(2)}, p99 1/${ratio.dispatchP99.toFixed(2)} (goal: lower p50)`);
  for (const m of [create, pool]) {
    if (m.eventsRun !== EVENTS) say(`  WARNING ${m.mode}: ${m.eventsRun} of ${EVENTS} events ran to exit 0 (retries counted)`);
    if (m.overlaps || m.violations) say(`  WARNING ${m.mode}: ${m.overlaps} overlapping runs, ${m.violations} contract violations`);
  }
}
