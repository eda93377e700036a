// lambdo running inside its container image, against the test rig (tests/image.sh).
//
//   node tests/lib/image-dispatch.mjs --container NAME [--entrypoint /lambdo] [--user 65534:65534] -- RUNNER...
//
// Starts the rig on loopback (fauxqs behind the SigV4-verifying proxy, HTTPS test Fly API),
// then runs lambdo in the container twice, each time as
//   RUNNER... [--volume <dir with ca.pem>:/lambdo-test-ca:ro] --env K=V... NAME -- ENTRYPOINT
// e.g. RUNNER = "buildah --root R --runroot R2 --storage-driver vfs run --isolation chroot"
// (chroot isolation shares the host's network: lambdo reaches 127.0.0.1 and localhost).
//  1. dispatch: the test CA mounted and named by SSL_CERT_FILE; one message must become one
//     Machine whose events file is the body byte for byte, and the message must be deleted
//     after the create; every request correctly signed, the Fly contract met, no secret
//     logged, the process running as the image's user, SIGTERM -> exit status 0.
//  2. the image's own CA bundle (no SSL_CERT_FILE): lambdo must load it and start, then
//     refuse the test API's certificate (not from a public CA): no Machine, message kept.
// Prints "PASS what" / "FAIL what: why" lines (tests/image.sh counts them); exits 1 on a failure.
import { spawn } from 'node:child_process';
import { mkdtempSync, copyFileSync, chmodSync, rmSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startSqs } from './fauxqs.mjs';
import { startSqsProxy } from './sqsproxy.mjs';
import { startFlyApi } from './flyapi.mjs';
import { testCerts } from './certs.mjs';

const REGION = 'us-east-1';
const CREDS = { accessKeyId: 'AKIDLAMBDOIMAGE', secretAccessKey: 'lambdo/image+test+secret' };
const TOKEN = 'fo1_image_test_token_do_not_log';
const APP = 'lambdo-image';
const CA_DIR_IN_IMAGE = '/lambdo-test-ca';
const DEADLINE_MS = Number(process.env.LAMBDO_IMAGE_DISPATCH_TIMEOUT_MS || 60000);

function parseArgs(argv) {
  const o = { container: null, entrypoint: '/lambdo', user: '65534:65534', runner: [] };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--container') o.container = argv[++i];
    else if (argv[i] === '--entrypoint') o.entrypoint = argv[++i];
    else if (argv[i] === '--user') o.user = argv[++i];
    else if (argv[i] === '--') { o.runner = argv.slice(i + 1); break; }
    else throw new Error(`unknown argument ${argv[i]}`);
  }
  if (!o.container || o.runner.length === 0) {
    throw new Error('usage: image-dispatch.mjs --container NAME [--entrypoint /lambdo] [--user U:G] -- RUNNER...');
  }
  return o;
}

let failed = 0;
function check(what, ok, why = '') {
  if (ok) console.log(`PASS ${what}`);
  else { failed++; console.log(`FAIL ${what}${why ? `: ${why}` : ''}`); }
  return ok;
}

async function until(cond, timeoutMs) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > end) return null;
    await sleep(100);
  }
}

// Host pids of the processes below `pid` whose command name is `comm` (from /proc).
function descendants(pid, comm) {
  const kids = new Map();
  const names = new Map();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const close = stat.lastIndexOf(')');
      const ppid = Number(stat.slice(close + 2).split(' ')[1]);
      names.set(Number(d), stat.slice(stat.indexOf('(') + 1, close));
      if (!kids.has(ppid)) kids.set(ppid, []);
      kids.get(ppid).push(Number(d));
    } catch { /* gone meanwhile */ }
  }
  const found = [];
  const todo = [...(kids.get(pid) ?? [])];
  while (todo.length) {
    const p = todo.shift();
    if (names.get(p) === comm) found.push(p);
    todo.push(...(kids.get(p) ?? []));
  }
  return found;
}

// "uid:gid" (real ids) of a process, from /proc/PID/status.
function idsOf(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const id = (k) => status.match(new RegExp(`^${k}:\\s+(\\d+)`, 'm'))?.[1];
  return `${id('Uid')}:${id('Gid')}`;
}

const opts = parseArgs(process.argv.slice(2));
const certs = testCerts();
// Only the CA certificate goes into the container, readable by the image's non-root user.
const caDir = mkdtempSync(path.join(tmpdir(), 'lambdo-image-ca-'));
copyFileSync(certs.caFile, path.join(caDir, 'ca.pem'));
chmodSync(caDir, 0o755);
chmodSync(path.join(caDir, 'ca.pem'), 0o644);

const sqs = await startSqs({ region: REGION });
const proxy = await startSqsProxy({ target: sqs.endpoint, ...CREDS, region: REGION });
const fly = await startFlyApi({ token: TOKEN, app: APP });
const runs = [];

// Runs lambdo in the container with env (plus the test CA mount when mountCa).
function runInImage(name, env, { mountCa }) {
  const args = [...opts.runner.slice(1), ...(mountCa ? ['--volume', `${caDir}:${CA_DIR_IN_IMAGE}:ro`] : []),
    ...Object.entries(env).flatMap(([k, v]) => ['--env', `${k}=${v}`]), opts.container, '--', opts.entrypoint];
  console.log(`# ${name}: env ${Object.entries(env).map(([k, v]) => `${k}=${/SECRET|TOKEN/.test(k) ? '***' : v}`).join(' ')}`);
  console.log(`# ${name}: ${opts.runner[0]} ${args.map((a) => (a.includes('=') ? `${a.split('=')[0]}=...` : a)).join(' ')}`);
  const child = spawn(opts.runner[0], args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const r = { name, child, out: '', exit: null };
  child.stdout.on('data', (d) => { r.out += d; });
  child.stderr.on('data', (d) => { r.out += d; });
  r.exited = new Promise((resolve) => child.on('exit', (code, signal) => { r.exit = { code, signal }; resolve(r.exit); }));
  // `buildah run` answers SIGTERM by SIGKILLing its child, so a stop signals lambdo's own
  // process (a descendant of the runner: chroot isolation keeps the host's pids), as a
  // container engine's stop would; lambdo's exit status comes back through the runner.
  r.pids = () => (r.exit ? [] : descendants(child.pid, 'lambdo'));
  r.stop = async () => {
    for (const p of r.pids()) process.kill(p, 'SIGTERM');
    const stopped = await Promise.race([r.exited, sleep(15000).then(() => null)]);
    if (!stopped) child.kill('SIGKILL');
    return stopped;
  };
  runs.push(r);
  return r;
}

const baseEnv = (url) => ({
  LAMBDO_SQS_QUEUE_URL: url,
  AWS_REGION: REGION,
  AWS_ACCESS_KEY_ID: CREDS.accessKeyId,
  AWS_SECRET_ACCESS_KEY: CREDS.secretAccessKey,
  LAMBDO_FLY_TOKEN: TOKEN,
  LAMBDO_FLY_APP: APP,
  LAMBDO_FLY_REGION: 'iad',
  LAMBDO_FLY_API_URL: fly.url,
  LAMBDO_SQS_LONG_POLL_SECONDS: '1',
  LAMBDO_LOG_LEVEL: 'debug',
});

const noSecrets = (text) => !text.includes(CREDS.secretAccessKey) && !text.includes(TOKEN);

async function dispatch() {
  console.log(`# rig: sqs proxy ${proxy.endpoint}, fly api ${fly.url}`);
  const { url } = await sqs.createQueue('image-dispatch', { baseUrl: proxy.endpoint, visibilityTimeout: 30 });
  // Bytes a re-serialising client would change: spacing, a number beyond double precision,
  // escapes next to raw UTF-8, a slash escape and a trailing space inside a string.
  const body = '{"id":"img-1",  "n":12345678901234567890.123456789e-5, "s":"\\u00e9é \\ud83d\\ude00 \\/ ","k":[ 1,2 ]}';
  const image = 'registry.fly.io/lambdo-image-test:1';
  await sqs.send(url, body, { image, size: 'shared-cpu-2x', command: '["run", "--once"]' });

  const r = runInImage('dispatch', { ...baseEnv(url), SSL_CERT_FILE: `${CA_DIR_IN_IMAGE}/ca.pem` }, { mountCa: true });
  const settled = await until(() => {
    if (r.exit) return 'exited';
    const c = sqs.counts(url);
    return fly.machines.length >= 1 && c.visible === 0 && c.inFlight === 0 && c.delayed === 0 ? 'done' : null;
  }, DEADLINE_MS);
  check('dispatch: lambdo kept running until the message was dispatched', settled === 'done',
    settled === 'exited' ? `it exited early (${JSON.stringify(r.exit)})` : `nothing after ${DEADLINE_MS} ms`);
  await sleep(500);   // a second Machine or a late request would show up here

  check('dispatch: exactly one Machine was created', fly.machines.length === 1, `${fly.machines.length} machines`);
  const m = fly.machines[0];
  if (m) {
    check('dispatch: its events file is the message body byte for byte',
      m.eventsRaw.equals(Buffer.from(`[${body}]`, 'utf8')), `got ${m.eventsRaw.toString('utf8')}`);
    check('dispatch: it runs the message\'s image, size and command in the primary region',
      m.image === image && m.preset === 'shared-cpu-2x' && JSON.stringify(m.cmd) === '["run","--once"]' && m.region === 'iad',
      `image ${m.image}, preset ${m.preset}, cmd ${JSON.stringify(m.cmd)}, region ${m.region}`);
  }
  check('dispatch: every create body met the Fly contract', fly.violations.length === 0, JSON.stringify(fly.violations));
  const c = sqs.counts(url);
  check('dispatch: the message was deleted (queue empty, nothing in flight)',
    c.visible === 0 && c.inFlight === 0 && c.delayed === 0, JSON.stringify(c));
  const deletes = proxy.ops('DeleteMessageBatch').concat(proxy.ops('DeleteMessage'));
  const created = fly.creates().find((q) => q.status === 200);
  const createdAt = created ? created.at + created.ms : Infinity;   // when its answer was sent
  check('dispatch: it was deleted after its Machine was created',
    deletes.length > 0 && deletes.every((q) => q.status === 200 && q.at >= createdAt),
    deletes.map((q) => `${q.op}:${q.status}`).join(' ') || 'no delete request');
  check('dispatch: every SQS request was correctly SigV4-signed', proxy.rejected.length === 0 && proxy.requests.length > 0,
    proxy.rejected.map((q) => q.reason).join('; ') || `${proxy.requests.length} requests`);
  check('dispatch: TLS to the Fly API verified against the mounted test CA', fly.tlsErrors.length === 0 && fly.connections > 0,
    fly.tlsErrors.map(String).join('; '));

  const pids = r.pids();
  check('dispatch: lambdo is one process under the runner', pids.length === 1, `pids: ${pids.join(',') || 'none'}`);
  if (pids.length === 1) {
    const ids = idsOf(pids[0]);
    check(`dispatch: lambdo runs as the image's user ${opts.user}, not root`, ids === opts.user && !ids.startsWith('0:'), ids);
  }
  const stopped = await r.stop();
  check('dispatch: SIGTERM stops lambdo with exit status 0', stopped && stopped.code === 0,
    stopped ? JSON.stringify(stopped) : 'still running 15 s after SIGTERM');
  check('dispatch: no secret appears in lambdo\'s output', noSecrets(r.out));
}

async function defaultBundle() {
  const { url } = await sqs.createQueue('image-default-ca', { baseUrl: proxy.endpoint, visibilityTimeout: 30 });
  await sqs.send(url, '{"id":"img-ca"}', { image: 'registry.fly.io/lambdo-image-test:1' });
  const machinesBefore = fly.machines.length;
  const tlsErrorsBefore = fly.tlsErrors.length;
  const r = runInImage('default CA bundle', baseEnv(url), { mountCa: false });
  const seen = await until(() => (r.exit ? 'exited'
    : fly.tlsErrors.length > tlsErrorsBefore && /starting/.test(r.out) ? 'refused' : null), 20000);
  check('default CA bundle: lambdo loads /etc/ssl/certs/ca-certificates.crt and starts', seen !== 'exited' && /starting/.test(r.out),
    seen === 'exited' ? `it exited: ${JSON.stringify(r.exit)}` : 'no start-up line');
  check('default CA bundle: the test API\'s certificate (not from a public CA) is refused', seen === 'refused',
    `TLS errors on the server: ${fly.tlsErrors.length - tlsErrorsBefore}`);
  check('default CA bundle: no Machine created, the message is kept', fly.machines.length === machinesBefore
    && (() => { const c = sqs.counts(url); return c.visible + c.inFlight + c.delayed === 1; })(),
  `${fly.machines.length - machinesBefore} machines, queue ${JSON.stringify(sqs.counts(url))}`);
  const stopped = await r.stop();
  check('default CA bundle: SIGTERM stops lambdo with exit status 0', stopped && stopped.code === 0,
    stopped ? JSON.stringify(stopped) : 'still running 15 s after SIGTERM');
  check('default CA bundle: no secret appears in lambdo\'s output', noSecrets(r.out));
}

try {
  await dispatch();
  await defaultBundle();
} catch (e) {
  check('the container runs completed', false, e.stack || String(e));
} finally {
  for (const r of runs) {
    if (!r.exit) { for (const p of r.pids()) process.kill(p, 'SIGKILL'); r.child.kill('SIGKILL'); }
    console.log(`# --- lambdo in the image (${r.name}) said:`);
    for (const line of r.out.split('\n').filter(Boolean)) console.log(`#   ${line}`);
  }
  await fly.close();
  await proxy.close();
  await sqs.close();
  rmSync(caDir, { recursive: true, force: true });
  rmSync(certs.dir, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
