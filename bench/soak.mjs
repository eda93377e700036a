#!/usr/bin/env node
// Soak: lambdo under steady traffic for a long time, watching its memory (not run in CI).
//   node bench/soak.mjs [--minutes 10] [--rate 20] [--mode create|exit] [--binary lambdo]
//                       [--sample 10] [--per-machine 5]
// Sends --rate messages per second (4 images, so groups form) to fauxqs for --minutes, through
// the HTTPS test Fly API (in exit mode the images are registry.fly.io/sleep:MS, so the Machines
// exit 0 after 100-600 ms and lambdo waits for them). Every --sample seconds it reads lambdo's
// VmRSS from /proc/<pid>/status and prints a row; at the end a table with start / end / max and
// a verdict line: "flat" or "GROWING" (see verdict() for the rule), then the message accounting
// (tests/lib/accounting.mjs) of everything sent.
// The default binary is the release build ./lambdo (musl, static); --binary build/asan/lambdo
// works too but AddressSanitizer's quarantine makes RSS climb for a while by design.
import { spawn } from 'node:child_process';
import { readFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { SendMessageBatchCommand } from '@aws-sdk/client-sqs';
import { startSqs, toMessageAttributes } from '../tests/lib/fauxqs.mjs';
import { startFlyApi } from '../tests/lib/flyapi.mjs';
import { testCerts } from '../tests/lib/certs.mjs';
import { ROOT } from '../tests/lib/tools.mjs';
import { account } from '../tests/lib/accounting.mjs';

const arg = (name, dflt) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : dflt;
};
const MINUTES = Number(arg('--minutes', 10));
const RATE = Number(arg('--rate', 20));
const MODE = arg('--mode', 'create');
const SAMPLE_S = Number(arg('--sample', 10));
const PER_MACHINE = arg('--per-machine', '5');
const BINARY = path.resolve(ROOT, arg('--binary', 'lambdo'));
if (!existsSync(BINARY)) throw new Error(`${BINARY} is missing: run ./build.sh (or pass --binary)`);
if (!['create', 'exit'].includes(MODE)) throw new Error('--mode create|exit');

function rssKb(pid) {
  const s = readFileSync(`/proc/${pid}/status`, 'utf8');
  return { rss: Number(/VmRSS:\s+(\d+) kB/.exec(s)[1]), hwm: Number(/VmHWM:\s+(\d+) kB/.exec(s)[1]) };
}
function cpuMs(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) * 10;
}

// flat unless lambdo's RSS, after a warm-up (the first 20 % of the samples, at least one),
// ended more than max(128 KiB, 10 %) above where it started, or rose steadily over the second
// half (least-squares slope whose fitted rise over that half exceeds max(64 KiB, 5 %)).
function verdict(samples) {
  const warm = Math.max(1, Math.floor(samples.length * 0.2));
  const rest = samples.slice(warm);
  if (rest.length < 3) return { flat: true, why: 'too few samples to tell' };
  const start = rest[0].rss;
  const end = rest.at(-1).rss;
  const half = rest.slice(Math.floor(rest.length / 2));
  const n = half.length;
  const mx = half.reduce((s, x) => s + x.t, 0) / n;
  const my = half.reduce((s, x) => s + x.rss, 0) / n;
  const slope = half.reduce((s, x) => s + (x.t - mx) * (x.rss - my), 0)
    / (half.reduce((s, x) => s + (x.t - mx) ** 2, 0) || 1);       // kB per second
  const fittedRise = slope * (half.at(-1).t - half[0].t);
  const growth = end - start;
  const tooMuch = growth > Math.max(128, start * 0.10);
  const steady = fittedRise > Math.max(64, start * 0.05);
  return { flat: !tooMuch && !steady, growth, slopeKbPerMin: slope * 60, fittedRise,
    why: `after warm-up: ${start} kB -> ${end} kB (${growth >= 0 ? '+' : ''}${growth} kB); second half slope ${(slope * 60).toFixed(1)} kB/min (fitted ${fittedRise.toFixed(0)} kB)` };
}

const sqs = await startSqs();
const certs = testCerts();
const fly = await startFlyApi({ token: 'soak-token', app: 'soak', imageBehaviour: true });
const q = await sqs.createQueue('soak', { baseUrl: sqs.endpoint, visibilityTimeout: 30 });
const env = {
  PATH: process.env.PATH,
  LAMBDO_SQS_QUEUE_URL: q.url, AWS_REGION: 'us-east-1', AWS_ACCESS_KEY_ID: 'AKIDSOAK',
  AWS_SECRET_ACCESS_KEY: 'soak-secret', LAMBDO_FLY_TOKEN: 'soak-token', LAMBDO_FLY_APP: 'soak',
  LAMBDO_FLY_REGION: 'iad', LAMBDO_FLY_REGIONS: 'ord', LAMBDO_FLY_API_URL: fly.url,
  SSL_CERT_FILE: certs.caFile, LAMBDO_LOG_LEVEL: 'warn', LAMBDO_SQS_LONG_POLL_SECONDS: '1',
  LAMBDO_EVENTS_PER_MACHINE: PER_MACHINE, LAMBDO_VISIBILITY_TIMEOUT: '30', LAMBDO_ACK: MODE,
  // Steady traffic needs more than Fly's default create rate at --rate 20.
  LAMBDO_FLY_CREATE_RATE: '50', LAMBDO_FLY_CREATE_BURST: '50', LAMBDO_FLY_GET_RATE: '100',
  LAMBDO_FLY_GET_BURST: '100', LAMBDO_MAX_MACHINES: '50',
};
const proc = spawn(BINARY, [], { env, stdio: ['ignore', 'ignore', 'pipe'] });
let log = '';
proc.stderr.on('data', (d) => { log += d; if (log.length > 1e6) log = log.slice(-1e5); });
let exited = null;
proc.on('exit', (code, signal) => { exited = { code, signal }; });

console.log(`lambdo soak: ${path.relative(ROOT, BINARY) || BINARY}, mode ${MODE}, ${RATE} messages/s for ${MINUTES} min, `
  + `RSS every ${SAMPLE_S} s (${new Date().toISOString()})`);
console.log('    t(s)   RSS(kB)   HWM(kB)   CPU(ms)     sent  in Machines   queued');

const sent = [];
const images = MODE === 'exit'
  ? [0, 1, 2, 3].map((i) => `registry.fly.io/sleep:${100 + 150 * i}`)
  : [0, 1, 2, 3].map((i) => `registry.fly.io/soak:${i}`);
let seq = 0;
let producing = true;
const producer = (async () => {
  const tickMs = 100;
  let due = 0;
  const t0 = Date.now();
  while (producing) {
    const want = Math.floor(((Date.now() - t0) / 1000) * RATE) - due;
    for (let left = want; left > 0; left -= 10) {
      const Entries = [];
      for (let j = 0; j < Math.min(10, left); j++, seq++) {
        Entries.push({ Id: `e${j}`, MessageBody: JSON.stringify({ id: `soak-${seq}`, pad: 'x'.repeat(100 + (seq % 400)) }),
          MessageAttributes: toMessageAttributes({ image: images[seq % images.length], size: 'shared-cpu-1x' }) });
      }
      const out = await sqs.client.send(new SendMessageBatchCommand({ QueueUrl: q.url, Entries }));
      for (const s of out.Successful ?? []) sent.push({ id: s.MessageId, body: Entries.find((e) => e.Id === s.Id).MessageBody });
      due += Entries.length;
    }
    await sleep(tickMs);
  }
})();

const samples = [];
let early = false;
const t0 = Date.now();
const end = t0 + MINUTES * 60000;
const inMachines = () => fly.machines.reduce((s, m) => s + (m.events?.length ?? 0), 0);
for (;;) {
  await sleep(Math.min(SAMPLE_S * 1000, Math.max(0, end - Date.now())));
  if (exited) { early = true; break; }
  const t = Math.round((Date.now() - t0) / 1000);
  const { rss, hwm } = rssKb(proc.pid);
  const c = sqs.counts(q.url);
  const row = { t, rss, hwm, cpu: cpuMs(proc.pid), sent: sent.length, done: inMachines(), queued: c.visible + c.inFlight };
  samples.push(row);
  console.log(`${String(row.t).padStart(8)}${String(rss).padStart(10)}${String(hwm).padStart(10)}${String(row.cpu).padStart(10)}`
    + `${String(row.sent).padStart(9)}${String(row.done).padStart(13)}${String(row.queued).padStart(9)}`);
  if (Date.now() >= end) break;
}
producing = false;
await producer;
if (!exited) {
  const drainEnd = Date.now() + 30000;
  while (Date.now() < drainEnd && sqs.counts(q.url).visible + sqs.counts(q.url).inFlight > 0) await sleep(200);
  proc.kill('SIGTERM');
  await Promise.race([new Promise((r) => proc.on('exit', r)), sleep(30000)]);
}

if (early) {
  console.log(`lambdo exited early: ${JSON.stringify(exited)}\n${log.slice(-3000)}`);
}
if (samples.length) {
  const rs = samples.map((s) => s.rss);
  const v = verdict(samples);
  console.log(`\nRSS (kB): start ${rs[0]}, end ${rs.at(-1)}, max ${Math.max(...rs)}, min ${Math.min(...rs)}; `
    + `${samples.length} samples over ${samples.at(-1).t} s`);
  console.log(`throughput: ${sent.length} messages sent, ${inMachines()} events in ${fly.machines.length} Machines, `
    + `CPU ${samples.at(-1).cpu} ms`);
  console.log(`verdict: ${v.flat ? 'flat' : 'GROWING'} (${v.why})`);
}
account({ sent, fly, sqs, queueUrl: q.url, mode: MODE, label: 'soak' });
console.log(`exit: ${JSON.stringify(exited)}`);
await fly.close();
await sqs.close();
