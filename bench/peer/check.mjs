// The peer keeps lambdo's contract: one scenario run against both, with the same environment,
// through the SigV4-checking SQS proxy (HTTPS) and the HTTPS test Fly API (which rejects any
// create body that breaks the contract). Exit 0 when both pass and produce the same Machines.
//   node bench/peer/check.mjs [--binary PATH]      (default ./lambdo)
// Scenario: 12 messages for image a (shared-cpu-1x, a command), 2 for image b (default size, no
// command; one body with a 20-digit number that must survive byte for byte), 4 invalid ones
// (body not JSON, size not a preset, command not an array of strings, no image); 5 events per
// Machine; the primary region answers 503 once (failover to ord), ord answers 429 once
// (Retry-After 1). Expected: Machines a[0..4], a[5..9], a[10,11], b[0,1] with the right guest,
// cmd, env and events file; the 14 valid messages deleted, the 4 invalid ones still in flight;
// SIGTERM -> exit 0.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startSqs } from '../../tests/lib/fauxqs.mjs';
import { startSqsProxy } from '../../tests/lib/sqsproxy.mjs';
import { startFlyApi, guestForPreset } from '../../tests/lib/flyapi.mjs';
import { testCerts } from '../../tests/lib/certs.mjs';

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..', '..');
const i = process.argv.indexOf('--binary');
const LAMBDO = path.resolve(ROOT, i > 0 ? process.argv[i + 1] : 'lambdo');
const PEER = path.join(ROOT, 'bench', 'peer', 'lambdo-peer');
if (!existsSync(LAMBDO)) { console.error(`check: ${LAMBDO} is missing (./build.sh)`); process.exit(2); }

const A = { image: 'registry.fly.io/a:1', size: 'shared-cpu-1x', command: '["node","handler.js"]' };
const B = { image: 'registry.fly.io/b:1' };
const messages = [
  ...Array.from({ length: 10 }, (_, k) => [`{"a":${k}}`, A]),
  ['{"bad":', A],
  ['{"a":10}', A],
  ['{}', { ...A, size: 'huge' }],
  ['{"a":11}', A],
  ['{}', { ...A, command: '["node",1]' }],
  ['{"b":0,"big":12345678901234567890}', B],
  ['{}', { size: 'shared-cpu-1x' }],
  ['{"b":1}', B],
];
const expected = [
  { image: A.image, preset: 'shared-cpu-1x', cmd: ['node', 'handler.js'], events: `[${[0, 1, 2, 3, 4].map((k) => `{"a":${k}}`).join(',')}]` },
  { image: A.image, preset: 'shared-cpu-1x', cmd: ['node', 'handler.js'], events: `[${[5, 6, 7, 8, 9].map((k) => `{"a":${k}}`).join(',')}]` },
  { image: A.image, preset: 'shared-cpu-1x', cmd: ['node', 'handler.js'], events: '[{"a":10},{"a":11}]' },
  { image: B.image, preset: 'performance-2x', cmd: undefined, events: '[{"b":0,"big":12345678901234567890},{"b":1}]' },
];
const key = (m) => JSON.stringify([m.image, m.preset, m.cmd ?? null, m.events]);

const certs = testCerts();
const KEY = { id: 'AKIDCHECK00000000001', secret: 'check-secret' };
const sqs = await startSqs();
const proxy = await startSqsProxy({ target: sqs.endpoint, accessKeyId: KEY.id, secretAccessKey: KEY.secret, tls: true });
const fly = await startFlyApi({ token: 'check-token', app: 'check' });
let failures = 0;
const check = (what, ok, detail = '') => {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}${ok || !detail ? '' : `: ${detail}`}`);
  if (!ok) failures++;
};

async function scenario(name, cmd) {
  fly.machines.length = 0;
  fly.requests.length = 0;
  fly.violations.length = 0;
  proxy.reset();
  fly.setRegionFault('iad', { status: 503, times: 1 });
  fly.setRegionFault('ord', { status: 429, retryAfter: 1, times: 1 });
  const q = await sqs.createQueue(`check-${name}`, { baseUrl: proxy.endpoint });
  for (const [body, attrs] of messages) await sqs.send(q.url, body, attrs);
  const p = spawn(cmd, [], { env: {
    PATH: process.env.PATH, HOME: process.env.HOME ?? '/tmp',
    LAMBDO_SQS_QUEUE_URL: q.url, AWS_REGION: 'us-east-1', AWS_ACCESS_KEY_ID: KEY.id,
    AWS_SECRET_ACCESS_KEY: KEY.secret, AWS_ENDPOINT_URL_SQS: proxy.endpoint,
    LAMBDO_FLY_TOKEN: fly.token, LAMBDO_FLY_APP: fly.app, LAMBDO_FLY_REGION: 'iad',
    LAMBDO_FLY_REGIONS: 'ord', LAMBDO_FLY_API_URL: fly.url, SSL_CERT_FILE: certs.caFile,
    LAMBDO_SQS_LONG_POLL_SECONDS: '1', LAMBDO_EVENTS_PER_MACHINE: '5', LAMBDO_VISIBILITY_TIMEOUT: '60',
    LAMBDO_LOG_LEVEL: 'warn', LAMBDO_FLY_CREATE_RATE: '1000', LAMBDO_FLY_CREATE_BURST: '100',
  }, stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  p.stderr.on('data', (d) => { log += d; });
  const exited = new Promise((resolve) => p.on('exit', (c, s) => resolve(c ?? s)));
  const until = Date.now() + 20000;
  while (Date.now() < until) {
    const c = sqs.counts(q.url);
    if (fly.machines.length >= expected.length && c.visible === 0 && c.inFlight === 4) break;
    await sleep(50);
  }
  await sleep(300);
  p.kill('SIGTERM');
  const code = await exited;
  const got = fly.machines.map((m) => ({ image: m.image, preset: m.preset, cmd: m.cmd, events: m.eventsText }));
  console.log(`-- ${name}`);
  check(`${name}: no contract violation`, fly.violations.length === 0, JSON.stringify(fly.violations.map((v) => v.errors)));
  check(`${name}: the expected Machines`, JSON.stringify(got.map(key).sort()) === JSON.stringify(expected.map(key).sort()),
    JSON.stringify(got, null, 1));
  check(`${name}: guests are the presets`, fly.machines.every((m) => JSON.stringify(m.guest) === JSON.stringify(guestForPreset(m.preset))));
  check(`${name}: failover to ord after a 503, 429 retried`, fly.machines.some((m) => m.region === 'ord')
    && fly.requests.some((r) => r.status === 429));
  const c = sqs.counts(q.url);
  check(`${name}: valid messages deleted, the 4 invalid ones left in flight`, c.visible === 0 && c.inFlight === 4, JSON.stringify(c));
  check(`${name}: every SQS request correctly signed`, proxy.rejected.length === 0);
  check(`${name}: SIGTERM exits 0`, code === 0, `exit ${code}\n${log.slice(-2000)}`);
  fly.clearRegionFault('iad');
  fly.clearRegionFault('ord');
  return got.map(key).sort();
}

const a = await scenario('lambdo', LAMBDO);
const b = await scenario('peer', PEER);
check('lambdo and the peer create the same Machines', JSON.stringify(a) === JSON.stringify(b));
await fly.close();
await proxy.close();
await sqs.close();
console.log(failures ? `check: ${failures} failed` : 'check: the peer keeps lambdo\'s contract');
process.exit(failures ? 1 : 0);
