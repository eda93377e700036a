// The stable guard: instructions executed (callgrind's Ir) by lambdo for a fixed workload,
// compared with the baseline recorded in bench/callgrind-baseline.txt. Instruction counts do
// not depend on how busy the machine is, so a 20 % threshold is meaningful on a noisy CI box.
// Run it with bench/callgrind-guard (see there for the options).
//
// The workload (deterministic):
//   EVENTS (1000) messages with fixed bodies {"seq":N,"payload":"x"*200} and the same
//   attributes (image, size shared-cpu-1x, command) are put on a fresh fauxqs queue, reached
//   through the SigV4-checking proxy over HTTPS; the HTTPS test Fly API takes the creates.
//   `lambdo --once` under valgrind --tool=callgrind, LAMBDO_EVENTS_PER_MACHINE=10,
//   LAMBDO_MAX_MACHINES=1 (one job at a time: every receive gets exactly 10 messages, so the
//   number and order of requests is fixed: 100 receives, 100 creates, 100 deletes, then one
//   empty 1 s receive, after which --once exits by itself), LAMBDO_FLY_CREATE_RATE lifted (no
//   limiter sleeps), LAMBDO_VISIBILITY_TIMEOUT=600 (no message comes back however slow
//   valgrind is). Idle time costs no instructions (blocked in poll), so the count does not
//   depend on timing.
//   Start-up is measured separately (`lambdo --once` on an empty queue: configuration, CA
//   bundle, one TLS handshake, one empty receive, exit) and subtracted: the guarded figure is
//   the Ir of the 1000 events, the per-event work.
// Binary: ./lambdo, the static musl product. Under callgrind it repeats to about 0.01 % (3 runs,
// max-min over median, on a loaded 2-CPU box); the glibc build (build/glibc/lambdo, -O1 -g)
// to about 0.05 %. Either is far inside the 20 % threshold; the product is what ships.
// `--slow-ms 100` (every create answered 100 ms late: 10 s more idling) moves the count by
// 0.02 %: waiting costs no instructions.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { SendMessageBatchCommand } from '@aws-sdk/client-sqs';
import { startSqs, toMessageAttributes } from '../tests/lib/fauxqs.mjs';
import { startSqsProxy } from '../tests/lib/sqsproxy.mjs';
import { startFlyApi } from '../tests/lib/flyapi.mjs';
import { testCerts } from '../tests/lib/certs.mjs';
import { machineInfo, gitRevision } from './lib/measure.mjs';

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const argv = process.argv.slice(2);
const HELP = `usage: bench/callgrind-guard [--update] [--runs N] [--binary PATH] [--baseline FILE]
                            [--threshold PERCENT]
  (no option)      one measurement; exit 1 if it exceeds the baseline by more than the
                   threshold (20 %), printing both numbers and the ratio
  --update         measure and rewrite the baseline file
  --runs N         measure N times (repeatability); the guard uses the median
  --binary PATH    the lambdo binary (default: the baseline's, else ./lambdo, the static musl
                   product: it repeats better under callgrind than the glibc build)
  --baseline FILE  bench/callgrind-baseline.txt
  --threshold P    allowed growth in percent (20)
  --keep DIR       keep the callgrind.out files there (for callgrind_annotate)
  --slow-ms MS     the test Fly API answers every create MS ms late: the count must not change
                   (checks that idle time costs no instructions)`;
if (argv.includes('--help') || argv.includes('-h')) { console.log(HELP); process.exit(0); }
const opt = (n, d) => { const i = argv.indexOf(n); return i < 0 ? d : argv[i + 1]; };
const known = new Set(['--update', '--runs', '--binary', '--baseline', '--threshold', '--keep', '--slow-ms']);
for (let i = 0; i < argv.length; i++) {
  if (!known.has(argv[i])) { console.error(`callgrind-guard: unknown argument ${argv[i]}\n${HELP}`); process.exit(2); }
  if (argv[i] !== '--update') i++;
}
const UPDATE = argv.includes('--update');
const BASELINE = path.resolve(opt('--baseline', path.join(ROOT, 'bench', 'callgrind-baseline.txt')));
const THRESHOLD = Number(opt('--threshold', 20));
const RUNS = Number(opt('--runs', 1));
const EVENTS = 1000;
const PER_MACHINE = 10;

function readBaseline() {
  if (!existsSync(BASELINE)) return null;
  const kv = {};
  for (const line of readFileSync(BASELINE, 'utf8').split('\n')) {
    const m = /^([a-z_]+):\s*(.*)$/.exec(line.trim());
    if (m) kv[m[1]] = m[2];
  }
  return kv;
}
const baseline = readBaseline();
const BINARY = path.resolve(ROOT, opt('--binary', baseline?.binary ?? 'lambdo'));
const say = (s) => process.stderr.write(`callgrind-guard: ${s}\n`);
if (!existsSync(BINARY)) { say(`${BINARY} is missing: run ./build.sh (or pass --binary)`); process.exit(2); }
if (!UPDATE && !baseline) { say(`no baseline at ${path.relative(ROOT, BASELINE)}: run with --update first`); process.exit(2); }

const KEEP = opt('--keep', undefined);
const work = KEEP ? path.resolve(KEEP) : mkdtempSync(path.join(tmpdir(), 'lambdo-callgrind-'));
mkdirSync(work, { recursive: true });
const certs = testCerts();
const KEY = { id: 'AKIDCALLGRIND0000001', secret: 'callgrind-secret' };
const sqs = await startSqs();
const proxy = await startSqsProxy({ target: sqs.endpoint, accessKeyId: KEY.id, secretAccessKey: KEY.secret,
  region: 'us-east-1', tls: true, keepAliveTimeoutMs: 600000 });
const fly = await startFlyApi({ token: 'callgrind-token', app: 'callgrind' });
const SLOW_MS = Number(opt('--slow-ms', 0));
if (SLOW_MS > 0) fly.fault = (req) => (req.op === 'Machines_create' ? { delayMs: SLOW_MS } : null);
const ATTRS = toMessageAttributes({ image: 'registry.fly.io/bench-jobs:1', size: 'shared-cpu-1x',
  command: '["node","handler.js"]' });
let queues = 0;

// Ir of `lambdo --once` on a fresh queue holding n messages.
async function measure(n) {
  const q = await sqs.createQueue(`cg-${++queues}`, { visibilityTimeout: 600 });
  for (let i = 0; i < n; i += 10) {
    const Entries = [];
    for (let j = i; j < Math.min(n, i + 10); j++) {
      Entries.push({ Id: `e${j}`, MessageBody: `{"seq":${j},"payload":"${'x'.repeat(200)}"}`, MessageAttributes: ATTRS });
    }
    await sqs.client.send(new SendMessageBatchCommand({ QueueUrl: q.url, Entries }));
  }
  fly.machines.length = 0;
  fly.requests.length = 0;
  proxy.reset();
  const conn0 = { fly: fly.connections, sqs: proxy.connections };
  const out = path.join(work, `callgrind.out.${queues}`);
  const env = {
    PATH: process.env.PATH, HOME: work,
    LAMBDO_SQS_QUEUE_URL: q.url, AWS_REGION: 'us-east-1', AWS_ACCESS_KEY_ID: KEY.id,
    AWS_SECRET_ACCESS_KEY: KEY.secret, AWS_ENDPOINT_URL_SQS: proxy.endpoint,
    LAMBDO_FLY_TOKEN: fly.token, LAMBDO_FLY_APP: fly.app, LAMBDO_FLY_REGION: 'iad',
    LAMBDO_FLY_API_URL: fly.url, SSL_CERT_FILE: certs.caFile, LAMBDO_LOG_LEVEL: 'warn',
    LAMBDO_SQS_LONG_POLL_SECONDS: '1', LAMBDO_EVENTS_PER_MACHINE: String(PER_MACHINE),
    LAMBDO_MAX_MACHINES: '1', LAMBDO_VISIBILITY_TIMEOUT: '600',
    LAMBDO_FLY_CREATE_RATE: '1000000', LAMBDO_FLY_CREATE_BURST: '10000',
  };
  const args = ['--tool=callgrind', `--callgrind-out-file=${out}`, '--dump-instr=no',
    '--collect-jumps=no', BINARY, '--once'];
  const t0 = Date.now();
  const p = spawn('valgrind', args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  p.stderr.on('data', (d) => { err += d; });
  const timer = setTimeout(() => p.kill('SIGKILL'), 600000);
  const code = await new Promise((resolve) => p.on('exit', (c, s) => resolve(c ?? s)));
  clearTimeout(timer);
  const seconds = (Date.now() - t0) / 1000;
  const events = fly.machines.reduce((s, m) => s + (m.events?.length ?? 0), 0);
  const counts = sqs.counts(q.url);
  if (code !== 0 || events !== n || counts.visible + counts.inFlight !== 0 || fly.violations.length) {
    throw new Error(`the workload did not complete: exit ${code}, ${events}/${n} events in Machines, queue ${JSON.stringify(counts)}, ${fly.violations.length} violations\n${err.slice(-3000)}`);
  }
  const text = readFileSync(out, 'utf8');
  const m = /^(?:totals|summary):\s*(\d+)/m.exec(text);
  if (!m) throw new Error(`no totals in ${out}`);
  const ops = {};
  for (const r of proxy.requests) ops[r.op] = (ops[r.op] ?? 0) + 1;
  return { ir: Number(m[1]), seconds, creates: fly.creates().length, sqsOps: ops,
    tlsConnections: { fly: fly.connections - conn0.fly, sqs: proxy.connections - conn0.sqs } };
}

let results;
try {
  results = [];
  for (let r = 0; r < RUNS; r++) {
    const base = await measure(0);
    const full = await measure(EVENTS);
    const net = full.ir - base.ir;
    results.push({ startup: base.ir, total: full.ir, net, seconds: full.seconds, creates: full.creates, sqsOps: full.sqsOps, tls: full.tlsConnections });
    say(`run ${r + 1}: ${net.toLocaleString('en-US')} Ir for ${EVENTS} events (total ${full.ir.toLocaleString('en-US')}, start-up ${base.ir.toLocaleString('en-US')}; ${full.creates} creates, ${JSON.stringify(full.sqsOps)}; TLS connections Fly ${full.tlsConnections.fly}, SQS ${full.tlsConnections.sqs}; ${full.seconds.toFixed(1)} s under valgrind)`);
  }
} finally {
  await fly.close();
  await proxy.close();
  await sqs.close();
  if (!KEEP) rmSync(work, { recursive: true, force: true });
}

const nets = results.map((r) => r.net).sort((a, b) => a - b);
const med = nets[nets.length >> 1];
const spread = ((nets.at(-1) - nets[0]) / med) * 100;
if (RUNS > 1) {
  console.log(`callgrind-guard: ${RUNS} runs: ${nets.map((x) => x.toLocaleString('en-US')).join(', ')} Ir; median ${med.toLocaleString('en-US')}; spread (max-min)/median ${spread.toFixed(4)} %`);
}
const rel = path.relative(ROOT, BINARY);
if (UPDATE) {
  const mi = machineInfo();
  writeFileSync(BASELINE, [
    '# lambdo instruction-count baseline (valgrind --tool=callgrind), read by bench/callgrind-guard.',
    '# Workload: 1000 messages, fixed bodies {"seq":N,"payload":"x"*200}, same image/size/command,',
    '# LAMBDO_EVENTS_PER_MACHINE=10, LAMBDO_MAX_MACHINES=1, `lambdo --once` through fauxqs behind the',
    '# SigV4 proxy over HTTPS and the HTTPS test Fly API (100 receives, 100 creates, 100 deletes).',
    '# ir = Ir of that run minus Ir of `lambdo --once` on an empty queue (start-up, excluded).',
    ...(RUNS > 1 ? [`# Spread of the ${RUNS} runs when recorded: ${spread.toFixed(4)} % (max-min)/median.`] : []),
    '# Rewrite with: bench/callgrind-guard --update --runs 3',
    `ir: ${med}`,
    `startup_ir: ${results[0].startup}`,
    `events: ${EVENTS}`,
    `events_per_machine: ${PER_MACHINE}`,
    `binary: ${rel}`,
    `valgrind: ${(await import('node:child_process')).execFileSync('valgrind', ['--version'], { encoding: 'utf8' }).trim()}`,
    `revision: ${gitRevision(ROOT)}`,
    `machine: ${mi.nproc} x ${mi.cpu}, ${mi.kernel}`,
    `date: ${new Date().toISOString()}`,
    '',
  ].join('\n'));
  console.log(`callgrind-guard: baseline ${path.relative(ROOT, BASELINE)} = ${med.toLocaleString('en-US')} Ir (${rel})`);
  process.exit(0);
}
const want = Number(baseline.ir);
const ratio = med / want;
const ok = ratio <= 1 + THRESHOLD / 100;
console.log(`callgrind-guard: ${med.toLocaleString('en-US')} Ir now, ${want.toLocaleString('en-US')} Ir baseline (${baseline.binary}, ${baseline.revision}); ratio ${ratio.toFixed(4)} (limit ${(1 + THRESHOLD / 100).toFixed(2)}): ${ok ? 'ok' : 'GREW by more than ' + THRESHOLD + ' %'}`);
if (rel !== baseline.binary) say(`note: measured ${rel}, the baseline was taken with ${baseline.binary}`);
process.exit(ok ? 0 : 1);
