#!/usr/bin/env node
// Figures for the lambdo daemon (prints them; it is not a test):
//   - idle RSS after 10 s of empty long polls
//   - CPU milliseconds per 1000 events and events per second, the queue pre-filled, through
//     fauxqs (SQS emulator) and the HTTPS test Fly API, at 10 events per Machine
// Usage: node bench/daemon.mjs [--events N] [--binary PATH]      (default: 2000, ./lambdo)
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { SendMessageBatchCommand } from '@aws-sdk/client-sqs';
import { startSqs, toMessageAttributes } from '../tests/lib/fauxqs.mjs';
import { startFlyApi } from '../tests/lib/flyapi.mjs';
import { testCerts } from '../tests/lib/certs.mjs';
import { ROOT } from '../tests/lib/tools.mjs';

const arg = (name, dflt) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : dflt;
};
const EVENTS = Number(arg('--events', 2000));
const BINARY = path.resolve(ROOT, arg('--binary', 'lambdo'));
const TICK_MS = 1000 / 100; // USER_HZ is 100 on Linux

function procStat(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const rss = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return { cpuMs: (Number(f[11]) + Number(f[12])) * TICK_MS, rssKb: Number(rss[1]) };
}

function start(env) {
  const p = spawn(BINARY, [], { env: { PATH: process.env.PATH, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  p.stderr.on('data', (d) => { err += d; if (err.length > 1e6) err = err.slice(-1e5); });
  p.log = () => err;
  return p;
}

async function stop(p) {
  p.kill('SIGTERM');
  await new Promise((resolve) => p.on('exit', resolve));
}

const sqs = await startSqs();
const certs = testCerts();
const fly = await startFlyApi({ token: 'bench-token', app: 'bench' });
const baseEnv = (url) => ({
  LAMBDO_SQS_QUEUE_URL: url, AWS_REGION: 'us-east-1', AWS_ACCESS_KEY_ID: 'AKIDBENCH',
  AWS_SECRET_ACCESS_KEY: 'bench-secret', LAMBDO_FLY_TOKEN: 'bench-token', LAMBDO_FLY_APP: 'bench',
  LAMBDO_FLY_REGION: 'iad', LAMBDO_FLY_API_URL: fly.url, SSL_CERT_FILE: certs.caFile,
  LAMBDO_LOG_LEVEL: 'warn',
  // the test Fly API has no rate limit: measure lambdo, not Fly's documented limits
  LAMBDO_FLY_CREATE_RATE: process.env.BENCH_CREATE_RATE || '100000', LAMBDO_FLY_CREATE_BURST: process.env.BENCH_CREATE_BURST || '10000',
  LAMBDO_FLY_GET_RATE: '100000', LAMBDO_FLY_GET_BURST: '10000',
});

// Idle: 10 s of empty 1-second long polls.
const idleQ = await sqs.createQueue('bench-idle', { baseUrl: sqs.endpoint });
const idle = start({ ...baseEnv(idleQ.url), LAMBDO_SQS_LONG_POLL_SECONDS: '1' });
await sleep(10000);
const idleStat = procStat(idle.pid);
await stop(idle);

// Throughput: EVENTS messages waiting, 10 per Machine.
const q = await sqs.createQueue('bench-load', { baseUrl: sqs.endpoint, visibilityTimeout: 120 });
const attrs = toMessageAttributes({ image: 'registry.fly.io/bench:1', size: 'shared-cpu-1x' });
for (let i = 0; i < EVENTS; i += 10) {
  const Entries = [];
  for (let j = i; j < Math.min(EVENTS, i + 10); j++)
    Entries.push({ Id: `e${j}`, MessageBody: JSON.stringify({ seq: j, payload: 'x'.repeat(200) }), MessageAttributes: attrs });
  await sqs.client.send(new SendMessageBatchCommand({ QueueUrl: q.url, Entries }));
}
const machines0 = fly.machines.length;
const t0 = process.hrtime.bigint();
const load = start({ ...baseEnv(q.url), LAMBDO_EVENTS_PER_MACHINE: '10', LAMBDO_SQS_LONG_POLL_SECONDS: '1' });
let last = procStat(load.pid);
for (;;) {
  const c = sqs.counts(q.url);
  last = procStat(load.pid);
  if (c.visible === 0 && c.inFlight === 0) break;
  await sleep(20);
}
const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
await stop(load);
const events = fly.machines.slice(machines0).reduce((s, m) => s + m.events.length, 0);

console.log(`lambdo daemon benchmark (${path.relative(ROOT, BINARY) || BINARY}, ${new Date().toISOString()})`);
console.log(`  idle RSS after 10 s of empty long polls: ${(idleStat.rssKb / 1024).toFixed(2)} MiB (${idleStat.rssKb} kB), CPU ${idleStat.cpuMs} ms`);
console.log(`  ${EVENTS} events pre-filled, 10 per Machine: ${events} events in ${fly.machines.length - machines0} Machines`);
console.log(`  wall ${seconds.toFixed(2)} s, ${(events / seconds).toFixed(0)} events/s`);
console.log(`  CPU ${last.cpuMs} ms total, ${(last.cpuMs / events * 1000).toFixed(1)} ms per 1000 events, peak-ish RSS ${last.rssKb} kB`);
console.log(`  TLS connections to the Fly API: ${fly.connections}`);
if (events !== EVENTS) console.log(`  WARNING: ${EVENTS - events} events did not reach a Machine`);
await fly.close();
await sqs.close();
