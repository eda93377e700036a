// lambdo against its peer (bench/peer: the same contract in Node with the AWS SDK and fetch),
// measured in the same run, alternating, on loopback test servers. Run it with bench/run;
// options and figures are described in bench/run's header (and `bench/run --help`).
import { spawn } from 'node:child_process';
import { copyFileSync, chmodSync, existsSync, mkdirSync, mkdtempSync, openSync, closeSync,
  readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { SendMessageBatchCommand } from '@aws-sdk/client-sqs';
import { startSqs, toMessageAttributes } from '../tests/lib/fauxqs.mjs';
import { startSqsProxy } from '../tests/lib/sqsproxy.mjs';
import { startFlyApi } from '../tests/lib/flyapi.mjs';
import { testCerts } from '../tests/lib/certs.mjs';
import { procStat, median, percentile, spread, dependencyClosure, fileBytes, machineInfo,
  gitRevision, TICK_MS } from './lib/measure.mjs';
import { ratioChart, fmtRatio } from './lib/svg.mjs';

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const HELP = `usage: bench/run [--quick] [--rounds N] [--events N] [--idle-seconds S]
                 [--latency-seconds S] [--rate N] [--binary PATH] [--image-size BYTES]
                 [--label TEXT] [--out DIR] [--max-seconds S]
  --quick            smoke run: 1 round, 500 events, 3 s idle, 4 s of latency traffic;
                     results go to bench/results/quick.{json,svg}
  --rounds N         rounds, each measuring lambdo and the peer alternately (3)
  --events N         messages pre-filled for the throughput figure (5000)
  --idle-seconds S   empty long polls before idle RSS is read (10)
  --latency-seconds S  seconds of steady traffic for the latency figure (15)
  --rate N           messages per second for the latency figure (20)
  --binary PATH      the lambdo binary (./lambdo, the static musl product: ./build.sh)
  --image-size BYTES lambdo's image size (else read from tests/out, where tests/image.sh
                     leaves it, if present)
  --label TEXT       what the binary is, for the report (e.g. "./lambdo at 1a2b3c4")
  --out DIR          where latest.json and latest.svg go (bench/results)
  --max-seconds S    bound on the whole run (900; --quick 240)`;

// ---- options ------------------------------------------------------------------------------
const argv = process.argv.slice(2);
if (argv.includes('--help') || argv.includes('-h')) { console.log(HELP); process.exit(0); }
const has = (n) => argv.includes(n);
const opt = (n, d) => {
  const i = argv.indexOf(n);
  if (i < 0) return d;
  if (i + 1 >= argv.length) { console.error(`bench/run: ${n} needs a value\n${HELP}`); process.exit(2); }
  return argv[i + 1];
};
const known = new Set(['--quick', '--rounds', '--events', '--idle-seconds', '--latency-seconds',
  '--rate', '--binary', '--image-size', '--out', '--max-seconds', '--label']);
for (let i = 0; i < argv.length; i++) {
  if (!known.has(argv[i])) { console.error(`bench/run: unknown argument ${argv[i]}\n${HELP}`); process.exit(2); }
  if (argv[i] !== '--quick') i++;
}
const QUICK = has('--quick');
const O = {
  quick: QUICK,
  rounds: Number(opt('--rounds', QUICK ? 1 : 3)),
  events: Number(opt('--events', QUICK ? 500 : 5000)),
  idleSeconds: Number(opt('--idle-seconds', QUICK ? 3 : 10)),
  latencySeconds: Number(opt('--latency-seconds', QUICK ? 4 : 15)),
  rate: Number(opt('--rate', 20)),
  perMachine: 10,
  maxSeconds: Number(opt('--max-seconds', QUICK ? 240 : 900)),
  binary: path.resolve(opt('--binary', path.join(ROOT, 'lambdo'))),
  imageSize: opt('--image-size', undefined),
  out: path.resolve(opt('--out', path.join(ROOT, 'bench', 'results'))),
  label: opt('--label', undefined),
};
for (const k of ['rounds', 'events', 'idleSeconds', 'latencySeconds', 'rate', 'maxSeconds']) {
  if (!(Number.isInteger(O[k]) && O[k] > 0)) { console.error(`bench/run: ${k} must be a positive integer`); process.exit(2); }
}
if (O.events % O.perMachine) { console.error(`bench/run: --events must be a multiple of ${O.perMachine}`); process.exit(2); }
if (!existsSync(O.binary)) { console.error(`bench/run: ${O.binary} is missing: run ./build.sh (or pass --binary)`); process.exit(2); }
const PEER = path.join(ROOT, 'bench', 'peer', 'lambdo-peer');

const say = (s) => process.stderr.write(`bench: ${s}\n`);
const children = new Set();
const killAll = () => { for (const c of children) { try { c.kill('SIGKILL'); } catch { /* gone */ } } };
process.on('exit', killAll);
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => { killAll(); process.exit(130); });
const deadline = setTimeout(() => {
  say(`the run took longer than ${O.maxSeconds} s (--max-seconds): stopping`);
  killAll();
  process.exit(1);
}, O.maxSeconds * 1000);
deadline.unref();

// ---- the rig ------------------------------------------------------------------------------
const work = mkdtempSync(path.join(tmpdir(), 'lambdo-bench-'));
const lambdoBin = path.join(work, 'lambdo');   // a copy: a rebuild during the run changes nothing
copyFileSync(O.binary, lambdoBin);
chmodSync(lambdoBin, 0o755);
const lambdoSha = createHash('sha256').update(readFileSync(lambdoBin)).digest('hex');
const lambdoVersion = execFileSync(lambdoBin, ['--version'], { encoding: 'utf8' }).trim();

const certs = testCerts();
const KEY = { id: 'AKIDBENCHMARK0000001', secret: 'bench-secret-key' };
const sqs = await startSqs();
const proxy = await startSqsProxy({ target: sqs.endpoint, accessKeyId: KEY.id,
  secretAccessKey: KEY.secret, region: 'us-east-1', tls: true, keepAliveTimeoutMs: 60000 });
const fly = await startFlyApi({ token: 'bench-fly-token', app: 'bench' });

const IMPLS = {
  lambdo: { name: 'lambdo', cmd: lambdoBin, args: [] },
  peer: { name: 'peer', cmd: PEER, args: [] },
};

function baseEnv(queueUrl) {
  return {
    PATH: process.env.PATH, HOME: work,
    LAMBDO_SQS_QUEUE_URL: queueUrl, AWS_REGION: 'us-east-1', AWS_ACCESS_KEY_ID: KEY.id,
    AWS_SECRET_ACCESS_KEY: KEY.secret, AWS_ENDPOINT_URL_SQS: proxy.endpoint,
    LAMBDO_FLY_TOKEN: fly.token, LAMBDO_FLY_APP: fly.app, LAMBDO_FLY_REGION: 'iad',
    LAMBDO_FLY_REGIONS: 'ord', LAMBDO_FLY_API_URL: fly.url, SSL_CERT_FILE: certs.caFile,
    LAMBDO_LOG_LEVEL: 'warn', LAMBDO_MAX_MACHINES: '10',
    // lambdo's client-side limiter follows Fly's 1 create/s; the test API has no limit and the
    // peer has no limiter, so it is lifted to compare the work done, not the pacing.
    LAMBDO_FLY_CREATE_RATE: '1000000', LAMBDO_FLY_CREATE_BURST: '10000',
  };
}

let launches = 0;
function launch(impl, env) {
  const logFile = path.join(work, `${impl.name}-${++launches}.log`);
  const fd = openSync(logFile, 'w');
  const at = Date.now();
  const p = spawn(impl.cmd, impl.args, { env, stdio: ['ignore', fd, fd] });
  closeSync(fd);
  children.add(p);
  p.spawnedAt = at;
  p.logFile = logFile;
  p.exited = new Promise((resolve) => p.on('exit', (code, signal) => {
    children.delete(p);
    p.exitedAt = Date.now();
    resolve({ code, signal });
  }));
  return p;
}
const logTail = (p) => { try { return readFileSync(p.logFile, 'utf8').split('\n').slice(-15).join('\n'); } catch { return ''; } };

async function stop(p) {
  const t = Date.now();
  p.kill('SIGTERM');
  const timer = setTimeout(() => p.kill('SIGKILL'), 15000);
  const r = await p.exited;
  clearTimeout(timer);
  if (r.code !== 0) say(`WARNING: ${p.spawnfile} exited with ${r.code ?? r.signal} after SIGTERM:\n${logTail(p)}`);
  return { stopMs: p.exitedAt - t, ...r };
}

// Resolves with the first ReceiveMessage for queueUrl to reach the proxy (rec.at: its arrival).
function firstReceive(queueUrl, p, timeoutMs = 20000) {
  return new Promise((resolve, reject) => {
    const done = (v, e) => { clearTimeout(timer); proxy.onRequest = null; e ? reject(e) : resolve(v); };
    const timer = setTimeout(() => done(null, new Error(`no ReceiveMessage within ${timeoutMs} ms:\n${logTail(p)}`)), timeoutMs);
    const hit = proxy.requests.find((r) => r.op === 'ReceiveMessage' && r.body?.QueueUrl === queueUrl);
    if (hit) return done(hit);
    proxy.onRequest = (rec) => { if (rec.op === 'ReceiveMessage' && rec.body?.QueueUrl === queueUrl) done(rec); };
    p.exited.then((r) => done(null, new Error(`exited (${r.code ?? r.signal}) before its first ReceiveMessage:\n${logTail(p)}`)));
  });
}

const ATTRS = toMessageAttributes({ image: 'registry.fly.io/bench-jobs:1', size: 'shared-cpu-1x',
  command: '["node","handler.js"]' });
const bodyOf = (seq) => `{"seq":${seq},"payload":"${'x'.repeat(200)}"}`;

async function prefill(queueUrl, n) {
  const batches = [];
  for (let i = 0; i < n; i += 10) {
    const Entries = [];
    for (let j = i; j < Math.min(n, i + 10); j++) Entries.push({ Id: `e${j}`, MessageBody: bodyOf(j), MessageAttributes: ATTRS });
    batches.push(Entries);
  }
  for (let i = 0; i < batches.length; i += 16) {
    await Promise.all(batches.slice(i, i + 16).map((Entries) =>
      sqs.client.send(new SendMessageBatchCommand({ QueueUrl: queueUrl, Entries }))));
  }
}

function resetServers() {
  proxy.reset();
  proxy.fault = null;
  proxy.onRequest = null;
  fly.requests.length = 0;
  fly.machines.length = 0;
  fly.violations.length = 0;
  fly.fault = null;
  sqs.requests.length = 0;
}
const seqsOf = (m) => (m.events ?? []).map((e) => e?.seq);
const connSnap = () => ({ fly: fly.connections, sqs: proxy.connections, resumed: fly.resumed + proxy.resumed });

// ---- phase A: start-up and idle -----------------------------------------------------------
async function phaseIdle(impl, round) {
  resetServers();
  const q = await sqs.createQueue(`idle-${round}-${impl.name}`);
  const p = launch(impl, { ...baseEnv(q.url), LAMBDO_SQS_LONG_POLL_SECONDS: '1' });
  const rec = await firstReceive(q.url, p);
  const s0 = procStat(p.pid);
  await sleep(O.idleSeconds * 1000);
  const s1 = procStat(p.pid);
  const receives = proxy.ops('ReceiveMessage').length;
  const st = await stop(p);
  return { startMs: rec.at - p.spawnedAt, startCpuMs: s0.cpuMs, idleRssKb: s1.rssKb,
    idleCpuMs: s1.cpuMs - s0.cpuMs, idleReceives: receives, threads: s1.threads, comm: s1.comm,
    stopMs: st.stopMs, exit: st.code };
}

// ---- phase B: throughput on a pre-filled queue ---------------------------------------------
async function phaseLoad(impl, round) {
  resetServers();
  const q = await sqs.createQueue(`load-${round}-${impl.name}`, { visibilityTimeout: 120 });
  await prefill(q.url, O.events);
  let open;
  const gate = new Promise((resolve) => { open = resolve; });
  let arrived;
  const first = new Promise((resolve) => { arrived = resolve; });
  proxy.fault = async (op, body) => {
    if (op === 'ReceiveMessage' && body?.QueueUrl === q.url) { arrived(); await gate; }
    return null;
  };
  const p = launch(impl, { ...baseEnv(q.url), LAMBDO_SQS_LONG_POLL_SECONDS: '1',
    LAMBDO_EVENTS_PER_MACHINE: String(O.perMachine), LAMBDO_VISIBILITY_TIMEOUT: '120' });
  await Promise.race([first, sleep(20000).then(() => { throw new Error(`${impl.name}: no ReceiveMessage:\n${logTail(p)}`); })]);
  await sleep(300);                       // start-up is over: measure from here
  const s0 = procStat(p.pid);
  const c0 = connSnap();
  const h0 = process.cpuUsage();
  const t0 = performance.now();
  open();
  const limit = t0 + (QUICK ? 60000 : 180000);
  let s1;
  let t1;
  for (;;) {
    const c = sqs.counts(q.url);
    if (c.visible === 0 && c.inFlight === 0) { s1 = procStat(p.pid); t1 = performance.now(); break; }
    if (performance.now() > limit) throw new Error(`${impl.name}: queue not drained in time (${JSON.stringify(c)}):\n${logTail(p)}`);
    await sleep(5);
  }
  const harness = process.cpuUsage(h0);
  const c1 = connSnap();
  const st = await stop(p);
  const seqs = fly.machines.flatMap(seqsOf);
  const unique = new Set(seqs);
  const creates = fly.creates().length;
  const sqsRequests = proxy.requests.length;
  const r = {
    events: seqs.length, uniqueEvents: unique.size, machines: fly.machines.length,
    creates, violations: fly.violations.length, wallMs: t1 - t0,
    cpuMs: s1.cpuMs - s0.cpuMs, userMs: s1.userMs - s0.userMs, sysMs: s1.sysMs - s0.sysMs,
    hwmKb: s1.hwmKb, rssKb: s1.rssKb,
    cpuMsPer1000: ((s1.cpuMs - s0.cpuMs) / O.events) * 1000,
    eventsPerSec: O.events / ((t1 - t0) / 1000),
    harnessCpuMs: (harness.user + harness.system) / 1000,
    flyConnections: c1.fly - c0.fly, flyRequests: fly.requests.length,
    sqsConnections: c1.sqs - c0.sqs, sqsRequests, resumedConnections: c1.resumed - c0.resumed,
    sqsOps: Object.fromEntries(['ReceiveMessage', 'DeleteMessageBatch', 'ChangeMessageVisibilityBatch']
      .map((op) => [op, proxy.ops(op).length])),
    exit: st.code,
  };
  if (r.uniqueEvents !== O.events || r.violations) {
    throw new Error(`${impl.name}: ${r.uniqueEvents} of ${O.events} events reached a Machine, ${r.violations} contract violations: ${JSON.stringify(fly.violations[0]?.errors)}`);
  }
  return r;
}

// ---- phase C: latency at a steady rate, one event per Machine ------------------------------
async function phaseLatency(impl, round) {
  resetServers();
  const q = await sqs.createQueue(`lat-${round}-${impl.name}`, { visibilityTimeout: 30 });
  const p = launch(impl, { ...baseEnv(q.url), LAMBDO_SQS_LONG_POLL_SECONDS: '20',
    LAMBDO_EVENTS_PER_MACHINE: '1' });
  await firstReceive(q.url, p);
  await sleep(500);
  const creates = [];   // [arrival, body]: the create request, as soon as the Fly API has it
  fly.fault = (req) => {
    if (req.op === 'Machines_create' && req.body) creates.push([performance.now(), req.body]);
    return null;
  };
  const c0 = connSnap();
  const n = O.rate * O.latencySeconds;
  const sentAt = new Array(n);
  const sends = [];
  const start = performance.now() + 20;
  for (let i = 0; i < n; i++) {
    const wait = start + (i * 1000) / O.rate - performance.now();
    if (wait > 0) await sleep(wait);
    sentAt[i] = performance.now();
    sends.push(sqs.send(q.url, `{"seq":${i},"sent":${Date.now()},"payload":"${'y'.repeat(100)}"}`,
      { image: 'registry.fly.io/bench-jobs:1', size: 'shared-cpu-1x' }));
  }
  await Promise.all(sends);
  const until = performance.now() + 15000;
  while (fly.machines.length < n && performance.now() < until) await sleep(20);
  await sleep(200);
  const c1 = connSnap();
  const st = await stop(p);
  const createdAt = new Map();
  for (const [t, body] of creates) {
    try {
      const ev = JSON.parse(Buffer.from(body.config.files[0].raw_value, 'base64').toString('utf8'));
      for (const e of ev) if (!createdAt.has(e.seq)) createdAt.set(e.seq, t);
    } catch { /* counted as missing */ }
  }
  const lat = [];
  for (let i = 0; i < n; i++) if (createdAt.has(i)) lat.push(createdAt.get(i) - sentAt[i]);
  if (fly.violations.length) throw new Error(`${impl.name}: contract violations: ${JSON.stringify(fly.violations[0].errors)}`);
  return { sent: n, matched: lat.length, p50Ms: percentile(lat, 50), p99Ms: percentile(lat, 99),
    maxMs: Math.max(...lat), meanMs: lat.reduce((a, b) => a + b, 0) / lat.length,
    flyConnections: c1.fly - c0.fly, flyRequests: fly.requests.length,
    sqsConnections: c1.sqs - c0.sqs, sqsRequests: proxy.requests.length, exit: st.code };
}

// ---- sizes --------------------------------------------------------------------------------
function imageSize() {
  if (O.imageSize !== undefined) return { bytes: Number(O.imageSize), from: '--image-size' };
  const dir = path.join(ROOT, 'tests', 'out');
  if (!existsSync(dir)) return null;
  for (const f of readdirSync(dir).filter((n) => n.endsWith('.log')).map((n) => path.join(dir, n))) {
    const m = /size: uncompressed .* = (\d+) bytes/.exec(readFileSync(f, 'utf8'));
    if (m) return { bytes: Number(m[1]), from: path.relative(ROOT, f) };
  }
  return null;
}

const closure = dependencyClosure(path.join(ROOT, 'bench', 'peer'));
const peerSources = ['peer.mjs', 'lambdo-peer', 'package.json']
  .reduce((s, f) => s + fileBytes(path.join(ROOT, 'bench', 'peer', f)), 0);
const nodeBytes = fileBytes(process.execPath);
const sizes = {
  lambdo: { binaryBytes: fileBytes(lambdoBin), image: imageSize() },
  peer: { nodeBinaryBytes: nodeBytes, nodeBinary: process.execPath, closureBytes: closure.bytes,
    closurePackages: closure.packages, closureFiles: closure.files, sourceBytes: peerSources,
    totalBytes: nodeBytes + closure.bytes + peerSources,
    counted: 'the node executable (shared libraries and the OS it needs not counted), every file of the installed dependency closure of @aws-sdk/client-sqs (apparent sizes; types, maps and docs the packages ship included), and the peer\'s own files' },
};

// ---- the run ------------------------------------------------------------------------------
const machine = machineInfo();
say(`${machine.nproc} CPUs, ${machine.cpu}, ${machine.kernel}; ${lambdoVersion}; node ${process.version}`);
say(`${O.rounds} round(s): idle ${O.idleSeconds} s, ${O.events} events at ${O.perMachine} per Machine, latency ${O.rate}/s for ${O.latencySeconds} s`);
const t00 = Date.now();
// Warm-up, not measured: the harness's JIT and TLS server code, and the page cache for both.
for (const name of ['lambdo', 'peer']) {
  resetServers();
  const q = await sqs.createQueue(`warmup-${name}`);
  const p = launch(IMPLS[name], { ...baseEnv(q.url), LAMBDO_SQS_LONG_POLL_SECONDS: '1' });
  await firstReceive(q.url, p);
  await stop(p);
}
const rounds = [];
for (let r = 0; r < O.rounds; r++) {
  const order = r % 2 === 0 ? ['lambdo', 'peer'] : ['peer', 'lambdo'];
  const res = { round: r + 1, order, lambdo: {}, peer: {} };
  for (const [phase, fn] of [['idle', phaseIdle], ['load', phaseLoad], ['latency', phaseLatency]]) {
    for (const name of order) {
      const x = await fn(IMPLS[name], r + 1);
      res[name][phase] = x;
      const brief = phase === 'idle' ? `start ${x.startMs} ms, idle RSS ${(x.idleRssKb / 1024).toFixed(1)} MiB`
        : phase === 'load' ? `${x.cpuMsPer1000.toFixed(0)} CPU ms/1000 events (user ${x.userMs}, sys ${x.sysMs} ms in all), ${x.eventsPerSec.toFixed(0)} events/s, TLS ${x.flyConnections}+${x.sqsConnections} (${x.resumedConnections} resumed) for ${x.flyRequests}+${x.sqsRequests} requests`
          : `p50 ${x.p50Ms.toFixed(1)} ms, p99 ${x.p99Ms.toFixed(1)} ms (${x.matched}/${x.sent})`;
      say(`round ${r + 1} ${phase.padEnd(7)} ${name.padEnd(6)} ${brief}`);
    }
  }
  rounds.push(res);
}
await fly.close();
await proxy.close();
await sqs.close();
rmSync(work, { recursive: true, force: true });

// ---- summary ------------------------------------------------------------------------------
const col = (name, f) => rounds.map((r) => f(r[name]));
const handshakes = (x) => {
  const conns = x.load.flyConnections + x.load.sqsConnections + x.latency.flyConnections + x.latency.sqsConnections;
  const reqs = x.load.flyRequests + x.load.sqsRequests + x.latency.flyRequests + x.latency.sqsRequests;
  return (conns / reqs) * 1000;
};
// lambdo keeps its connections: at most one per request in flight (LAMBDO_MAX_MACHINES Fly
// creates, as many SQS batch calls, plus the long poll), per process.
const connBound = { fly: 10, sqs: 11 };
const figures = [
  { key: 'size', label: 'binary / install size', unit: 'MiB', scale: 1 / 1048576, better: 'lower',
    lambdo: [sizes.lambdo.binaryBytes], peer: [sizes.peer.totalBytes],
    detail: 'lambdo: the static binary; peer: node + npm closure', short: 'binary vs node + npm' },
  ...(sizes.lambdo.image ? [{ key: 'image', label: 'image (FROM scratch) / install', unit: 'MiB', scale: 1 / 1048576,
    better: 'lower', lambdo: [sizes.lambdo.image.bytes], peer: [sizes.peer.totalBytes],
    detail: 'lambdo: binary + CA bundle; peer: without any OS', short: 'image vs node + npm' }] : []),
  { key: 'idleRss', label: `idle RSS after ${O.idleSeconds} s of long polls`, unit: 'MiB', scale: 1 / 1024, better: 'lower',
    lambdo: col('lambdo', (x) => x.idle.idleRssKb), peer: col('peer', (x) => x.idle.idleRssKb),
    goal: 1 / 20, goalText: '≤ 1/20' },
  { key: 'start', label: 'start → first ReceiveMessage', unit: 'ms', scale: 1, better: 'lower',
    lambdo: col('lambdo', (x) => x.idle.startMs), peer: col('peer', (x) => x.idle.startMs) },
  { key: 'cpu', label: 'CPU per 1000 events', unit: 'ms', scale: 1, better: 'lower',
    lambdo: col('lambdo', (x) => x.load.cpuMsPer1000), peer: col('peer', (x) => x.load.cpuMsPer1000),
    goal: 1 / 25, goalText: '≤ 1/25', detail: `${O.events} events, ${O.perMachine} per Machine`, short: `${O.perMachine} per Machine` },
  { key: 'eps', label: 'events per second', unit: '/s', scale: 1, better: 'higher',
    lambdo: col('lambdo', (x) => x.load.eventsPerSec), peer: col('peer', (x) => x.load.eventsPerSec),
    detail: 'bounded by the test servers' },
  { key: 'p50', label: `latency p50, ${O.rate} msg/s`, unit: 'ms', scale: 1, better: 'lower',
    lambdo: col('lambdo', (x) => x.latency.p50Ms), peer: col('peer', (x) => x.latency.p50Ms),
    goal: 1, goalText: 'no worse', detail: 'SendMessage → create request' },
  { key: 'p99', label: `latency p99, ${O.rate} msg/s`, unit: 'ms', scale: 1, better: 'lower',
    lambdo: col('lambdo', (x) => x.latency.p99Ms), peer: col('peer', (x) => x.latency.p99Ms) },
  { key: 'tls', label: 'TLS handshakes (full or resumed) per 1000 requests', unit: '', scale: 1, better: 'lower',
    lambdo: col('lambdo', handshakes), peer: col('peer', handshakes),
    goalText: 'one per connection', detail: 'Fly + SQS, load and latency phases', short: 'Fly + SQS' },
];
for (const f of figures) {
  f.l = spread(f.lambdo.map((v) => v * f.scale));
  f.p = spread(f.peer.map((v) => v * f.scale));
  f.ratio = f.l.median / f.p.median;
  if (f.key === 'p50') f.met = f.l.median <= f.p.median;
  else if (f.key === 'tls') {
    f.met = rounds.every((r) => ['load', 'latency'].every((ph) =>
      r.lambdo[ph].flyConnections <= connBound.fly && r.lambdo[ph].sqsConnections <= connBound.sqs));
  } else if (f.goal !== undefined) f.met = f.ratio <= f.goal;
}

const fmt = (v) => {
  if (!Number.isFinite(v)) return 'n/a';
  const a = Math.abs(v);
  return a >= 1000 ? v.toFixed(0) : a >= 100 ? v.toFixed(0) : a >= 10 ? v.toFixed(1) : a >= 1 ? v.toFixed(2) : v.toFixed(3);
};
const cell = (s, unit) => (s.n > 1 ? `${fmt(s.median)} (${fmt(s.min)}–${fmt(s.max)})` : fmt(s.median)) + (unit && unit !== '/s' ? ` ${unit}` : '');
const rowsOut = figures.map((f) => [f.label, cell(f.l, f.unit), cell(f.p, f.unit), fmtRatio(f.ratio),
  f.goalText ? `${f.goalText}: ${f.met ? 'met' : 'NOT met'}` : '']);
const head = ['figure', 'lambdo', 'peer (Node, AWS SDK)', 'lambdo/peer', 'goal'];
const table = [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`,
  ...rowsOut.map((r) => `| ${r.join(' | ')} |`)].join('\n');
const machineLine = `${machine.nproc} × ${machine.cpu}, ${machine.memoryMiB} MiB, ${machine.kernel}, ${machine.os}, Node ${machine.node}`;
const revision = gitRevision(ROOT);
const elapsed = Math.round((Date.now() - t00) / 1000);
console.log(`\nlambdo vs peer — ${new Date().toISOString()}, ${O.rounds} round(s), medians (min–max)${QUICK ? ' [--quick]' : ''}`);
console.log(`machine: ${machineLine}`);
console.log(`lambdo: ${lambdoVersion}, ${O.label ?? path.relative(ROOT, O.binary)} (${sizes.lambdo.binaryBytes} bytes, sha256 ${lambdoSha.slice(0, 12)}); repository at ${revision}`);
console.log(`peer: bench/peer (Node ${process.version}, @aws-sdk/client-sqs + fetch), ${sizes.peer.closurePackages} npm packages\n`);
console.log(table);
console.log(`\nnotes: CPU from /proc/<pid>/stat utime+stime (${TICK_MS} ms ticks), from the first ReceiveMessage to the drained queue; RSS = VmRSS;`);
console.log('  the peer is one node process; lambdo\'s Fly create rate limit is lifted (LAMBDO_FLY_CREATE_RATE) for both');
console.log(`  handshakes: every TCP connection to the HTTPS test servers is one TLS handshake; goal met when lambdo never used more connections than requests in flight (Fly ≤ ${connBound.fly}, SQS ≤ ${connBound.sqs} per process and phase)`);
console.log(`  image: ${sizes.lambdo.image ? `${sizes.lambdo.image.bytes} bytes (${sizes.lambdo.image.from})` : 'unknown (run tests/image.sh or pass --image-size)'}; peer install: ${sizes.peer.counted}`);
console.log(`  ${elapsed} s in all`);

const result = {
  date: new Date().toISOString(), quick: QUICK, elapsedSeconds: elapsed, machine, revision,
  lambdo: { version: lambdoVersion, binary: path.relative(ROOT, O.binary) || O.binary, label: O.label, sha256: lambdoSha },
  loadavgAtEnd: machineInfo().loadavg,
  peer: { path: 'bench/peer', node: process.version, sdk: JSON.parse(readFileSync(path.join(ROOT, 'node_modules/@aws-sdk/client-sqs/package.json'), 'utf8')).version },
  options: { ...O, out: undefined, binary: undefined, label: undefined }, sizes,
  method: {
    rig: 'fauxqs (SQS emulator) behind the SigV4-checking proxy over HTTPS, and the HTTPS test Fly API, all on 127.0.0.1 in the benchmark process; both servers resume TLS sessions by ID (lambdo, TLS 1.2), as real servers do; the peer resumes with TLS 1.3 tickets',
    idle: `spawn, first ReceiveMessage (arrival at the proxy), then ${O.idleSeconds} s of empty 1 s long polls; VmRSS`,
    load: `${O.events} messages pre-filled, ${O.perMachine} per Machine, 1 s long poll; the first ReceiveMessage is held until the process has started, CPU and time from its release to the drained queue (every message deleted)`,
    latency: `${O.rate} messages/s for ${O.latencySeconds} s, LAMBDO_EVENTS_PER_MACHINE=1, 20 s long poll; time from just before SendMessage to the create request's arrival at the Fly API`,
    tls: 'TCP connections accepted by the HTTPS servers (one handshake each) per 1000 requests they served, load and latency phases',
  },
  summary: Object.fromEntries(figures.map((f) => [f.key, { label: f.label, unit: f.unit, lambdo: f.l, peer: f.p,
    ratio: f.ratio, goal: f.goalText, met: f.met }])),
  table, rounds,
};
mkdirSync(O.out, { recursive: true });
const base = path.join(O.out, QUICK && !has('--out') ? 'quick' : 'latest');
writeFileSync(`${base}.json`, `${JSON.stringify(result, null, 2)}\n`);
writeFileSync(`${base}.svg`, ratioChart({
  title: `lambdo vs a Node peer (AWS SDK + fetch): lambdo / peer, medians of ${O.rounds} round(s)`,
  subtitle: `${machineLine.slice(0, 110)}; ${new Date().toISOString().slice(0, 10)}`,
  rows: figures.map((f) => ({ label: f.label, ratio: f.ratio, better: f.better, goal: f.goal,
    goalText: f.goalText, met: f.met,
    detail: `${fmt(f.l.median)} vs ${fmt(f.p.median)}${f.unit && f.unit !== '/s' ? ` ${f.unit}` : ''}${f.short ? `, ${f.short}` : ''}` })),
}));
console.log(`\nwrote ${path.relative(ROOT, base)}.json and .svg`);
