// lambdo's peer: the same contract in plain Node, the way a team would write it in an
// afternoon with the AWS SDK v3 (@aws-sdk/client-sqs) and fetch. It exists to be measured
// against lambdo (bench/run); it is not shipped. Start it with bench/peer/lambdo-peer, which
// turns SSL_CERT_FILE into NODE_EXTRA_CA_CERTS.
//
// Same environment as lambdo (README "Configuration"), so the two can be swapped in one run:
//   LAMBDO_SQS_QUEUE_URL, AWS_REGION | AWS_DEFAULT_REGION, AWS_ACCESS_KEY_ID,
//   AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_ENDPOINT_URL_SQS | AWS_ENDPOINT_URL,
//   LAMBDO_FLY_TOKEN | FLY_API_TOKEN, LAMBDO_FLY_APP | FLY_APP_NAME, LAMBDO_FLY_REGION |
//   FLY_REGION, LAMBDO_FLY_REGIONS, LAMBDO_FLY_API_URL, LAMBDO_SQS_LONG_POLL_SECONDS,
//   LAMBDO_EVENTS_PER_MACHINE, LAMBDO_VISIBILITY_TIMEOUT, LAMBDO_MAX_MACHINES (creates in
//   flight), LAMBDO_LOG_LEVEL, SSL_CERT_FILE (through the wrapper).
// What it does, in create mode only (lambdo's default):
//   long poll -> validate the attributes (image required, size a preset, command a JSON array
//   of strings) and the body (JSON.parse) -> group by (image, size, command), at most
//   LAMBDO_EVENTS_PER_MACHINE per group, in the order received -> POST /v1/apps/{app}/machines
//   with lambdo's body -> DeleteMessageBatch. Invalid messages are logged and left alone (they
//   come back after the visibility timeout). Region failover on 5xx, 408,
//   insufficient_capacity, timeouts and connection errors; 429 waits for Retry-After (capped at
//   30 s; 1, 2, 4, 8, 16 s without one) and retries the same region up to 5 times. SIGTERM /
//   SIGINT: abort the long poll, finish the creates and deletes under way, hand back messages
//   not started (visibility 0), exit 0.
// Not done (lambdo does them): exit mode, heartbeats, batching window, client-side rate limits,
// the events byte cap, strict RFC 8259 checks beyond JSON.parse.
import { createHash } from 'node:crypto';
import { SQSClient, ReceiveMessageCommand, DeleteMessageBatchCommand,
  ChangeMessageVisibilityBatchCommand } from '@aws-sdk/client-sqs';

const env = process.env;
const EVENTS_PATH = '/tmp/events.json';
const LEVELS = { debug: 0, info: 1, warn: 2, error: 3 };

function usage(msg) {
  process.stderr.write(`lambdo-peer: configuration: ${msg}\n`);
  process.exit(2);
}
const pick = (...names) => names.map((n) => env[n]).find((v) => v !== undefined && v !== '');
function int(name, lo, hi, dflt) {
  const v = env[name];
  if (v === undefined || v === '') return dflt;
  if (!/^\d+$/.test(v) || Number(v) < lo || Number(v) > hi) usage(`${name}: must be ${lo} to ${hi}, got "${v}"`);
  return Number(v);
}

const cfg = {
  queueUrl: pick('LAMBDO_SQS_QUEUE_URL') ?? usage('LAMBDO_SQS_QUEUE_URL is required'),
  flyToken: pick('LAMBDO_FLY_TOKEN', 'FLY_API_TOKEN') ?? usage('LAMBDO_FLY_TOKEN (or FLY_API_TOKEN) is required'),
  app: pick('LAMBDO_FLY_APP', 'FLY_APP_NAME') ?? usage('LAMBDO_FLY_APP (or FLY_APP_NAME) is required'),
  api: (pick('LAMBDO_FLY_API_URL') ?? 'https://api.machines.dev').replace(/\/+$/, ''),
  longPoll: int('LAMBDO_SQS_LONG_POLL_SECONDS', 0, 20, 10),
  perMachine: int('LAMBDO_EVENTS_PER_MACHINE', 1, 10, 5),
  visibility: int('LAMBDO_VISIBILITY_TIMEOUT', 1, 43200, 30),
  maxInFlight: int('LAMBDO_MAX_MACHINES', 1, 1000, 10),
  logLevel: LEVELS[env.LAMBDO_LOG_LEVEL ?? 'info'] ?? usage(`LAMBDO_LOG_LEVEL: debug, info, warn or error, got "${env.LAMBDO_LOG_LEVEL}"`),
};
const primary = pick('LAMBDO_FLY_REGION', 'FLY_REGION');
cfg.regions = [...(primary ? [primary] : []),
  ...(env.LAMBDO_FLY_REGIONS ?? '').split(',').map((s) => s.trim()).filter(Boolean)];
if (cfg.regions.length === 0) usage('LAMBDO_FLY_REGION (or LAMBDO_FLY_REGIONS) is required');
if (!env.AWS_ACCESS_KEY_ID || !env.AWS_SECRET_ACCESS_KEY) usage('AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are required');
const awsRegion = pick('AWS_REGION', 'AWS_DEFAULT_REGION')
  ?? /^sqs\.([a-z0-9-]+)\./.exec(new URL(cfg.queueUrl).hostname)?.[1]
  ?? usage('AWS_REGION is required (the queue URL names no region)');

const log = (level, msg) => {
  if (LEVELS[level] >= cfg.logLevel) process.stderr.write(`${new Date().toISOString()} ${level} ${msg}\n`);
};

// Fly's presets (README: size attribute) -> config.guest.
const PRESETS = {};
for (const n of [1, 2, 4, 6, 8]) PRESETS[`shared-cpu-${n}x`] = { cpu_kind: 'shared', cpus: n, memory_mb: 256 * n };
for (const n of [1, 2, 4, 6, 8, 10, 12, 14, 16]) PRESETS[`performance-${n}x`] = { cpu_kind: 'performance', cpus: n, memory_mb: 2048 * n };
for (const [name, gpu] of [['a100-40gb', 'a100-pcie-40gb'], ['a100-80gb', 'a100-sxm4-80gb'], ['l40s', 'l40s'], ['a10', 'a10']]) {
  PRESETS[name] = { cpu_kind: 'performance', cpus: 8, memory_mb: 32768, gpus: 1, gpu_kind: gpu };
}

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
const sqs = new SQSClient({ region: awsRegion, endpoint: pick('AWS_ENDPOINT_URL_SQS', 'AWS_ENDPOINT_URL') });

// ---- stop ---------------------------------------------------------------------------------
const stop = new AbortController();
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    if (!stop.signal.aborted) log('info', `${sig}: stopping`);
    stop.abort();
  });
}
const pause = (ms) => new Promise((resolve) => {
  if (stop.signal.aborted) return resolve(false);
  const t = setTimeout(() => { stop.signal.removeEventListener('abort', onAbort); resolve(true); }, ms);
  const onAbort = () => { clearTimeout(t); resolve(false); };
  stop.signal.addEventListener('abort', onAbort, { once: true });
});

// ---- messages -----------------------------------------------------------------------------
// The reason a message is invalid, or null; fills m.spec = {image, size, command}.
function invalid(m) {
  const attr = (k) => m.MessageAttributes?.[k]?.StringValue;
  const image = attr('image');
  if (image === undefined || image === '') return 'image attribute missing';
  if (/[\s\x00-\x1f\x7f]/.test(image)) return 'image has spaces or control characters';
  const size = attr('size') ?? 'performance-2x';
  if (!Object.hasOwn(PRESETS, size)) return `size "${size}" is not a Fly preset`;
  const command = attr('command');
  let cmd;
  if (command !== undefined) {
    try { cmd = JSON.parse(command); } catch { return 'command is not JSON'; }
    if (!Array.isArray(cmd) || cmd.length === 0 || !cmd.every((s) => typeof s === 'string')) {
      return 'command is not a JSON array of strings';
    }
  }
  try { JSON.parse(m.Body); } catch (e) { return `body is not JSON: ${e.message}`; }
  m.spec = { image, size, command, cmd };
  return null;
}

function groups(messages) {
  const open = new Map();
  const out = [];
  for (const m of messages) {
    const why = invalid(m);
    if (why) {
      log('warn', `message ${m.MessageId} (receive count ${m.Attributes?.ApproximateReceiveCount ?? '?'}) is invalid: ${why}`);
      continue;
    }
    const key = JSON.stringify([m.spec.image, m.spec.size, m.spec.command ?? null]);
    let g = open.get(key);
    if (!g || g.messages.length >= cfg.perMachine) {
      g = { spec: m.spec, messages: [] };
      open.set(key, g);
      out.push(g);
    }
    g.messages.push(m);
  }
  for (const g of out) {
    const h = createHash('sha256');
    for (const m of g.messages) h.update(`${m.MessageId}\n`);
    g.id = h.digest('hex').slice(0, 16);
  }
  return out;
}

function createBody(g, region) {
  const events = `[${g.messages.map((m) => m.Body).join(',')}]`;
  const config = {
    image: g.spec.image,
    guest: PRESETS[g.spec.size],
    env: { EVENTS_PATH },
    files: [{ guest_path: EVENTS_PATH, raw_value: Buffer.from(events, 'utf8').toString('base64') }],
    auto_destroy: true,
    restart: { policy: 'no' },
  };
  if (g.spec.cmd) config.init = { cmd: g.spec.cmd };
  config.metadata = { managed_by: 'lambdo-peer', lambdo_group: g.id };
  return JSON.stringify({ region, config });
}

// ---- Fly ----------------------------------------------------------------------------------
class Fatal extends Error {}

// Creates the group's Machine, trying each region in turn. Returns the Machine, or throws.
async function createMachine(g) {
  let last;
  for (const region of cfg.regions) {
    for (let attempt = 0; ; attempt++) {
      let res;
      let text;
      try {
        res = await fetch(`${cfg.api}/v1/apps/${encodeURIComponent(cfg.app)}/machines`, {
          method: 'POST',
          headers: { authorization: `Bearer ${cfg.flyToken}`, 'content-type': 'application/json' },
          body: createBody(g, region),
          signal: AbortSignal.timeout(60000),
        });
        text = await res.text();
      } catch (e) {
        const cause = e.cause?.code ?? e.cause?.message ?? e.message;
        if (/CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS/.test(String(e.cause?.code ?? ''))) {
          throw new Fatal(`Fly API TLS: ${cause}`);
        }
        last = `${region}: ${cause}`;
        log('warn', `group ${g.id}: create in ${region} failed (${cause}); next region`);
        break;
      }
      let json;
      try { json = JSON.parse(text); } catch { json = undefined; }
      if (res.ok && json?.id) return { ...json, region: json.region ?? region };
      const why = `${res.status} ${json?.error ?? text.slice(0, 200)}`;
      if (res.status === 429 && attempt < 5) {
        const ra = Number(res.headers.get('retry-after'));
        const wait = Math.min(30, Number.isFinite(ra) && ra >= 0 && res.headers.has('retry-after') ? ra : 2 ** attempt);
        log('warn', `group ${g.id}: rate limited in ${region}; retrying in ${wait} s`);
        if (!await pause(wait * 1000)) throw new Error('stopping');
        continue;
      }
      if (res.status >= 500 || res.status === 408 || json?.status === 'insufficient_capacity') {
        last = `${region}: ${why}`;
        log('warn', `group ${g.id}: create in ${region} failed (${why}); next region`);
        break;
      }
      throw new Fatal(`Fly API: ${why}`);
    }
  }
  throw new Error(`every region failed (last: ${last})`);
}

// ---- SQS batches --------------------------------------------------------------------------
async function batch(g, op) {
  for (let i = 0; i < g.messages.length; i += 10) {
    const part = g.messages.slice(i, i + 10);
    const Entries = part.map((m, j) => ({ Id: `m${j}`, ReceiptHandle: m.ReceiptHandle,
      ...(op === 'return' ? { VisibilityTimeout: 0 } : {}) }));
    try {
      const out = await sqs.send(op === 'delete'
        ? new DeleteMessageBatchCommand({ QueueUrl: cfg.queueUrl, Entries })
        : new ChangeMessageVisibilityBatchCommand({ QueueUrl: cfg.queueUrl, Entries }));
      for (const f of out.Failed ?? []) {
        log('error', `group ${g.id}: message ${part[Number(f.Id.slice(1))].MessageId} was not ${op === 'delete' ? 'deleted' : 'returned'}: ${f.Code}: ${f.Message}`);
      }
    } catch (e) {
      log('error', `group ${g.id}: ${op} of ${part.length} messages failed: ${e.name}: ${e.message}`);
    }
  }
}

async function handle(g) {
  if (stop.signal.aborted) return batch(g, 'return');
  try {
    const m = await createMachine(g);
    log('info', `group ${g.id}: machine ${m.id} created in ${m.region} for ${g.messages.length} events (image ${g.spec.image}, size ${g.spec.size})`);
  } catch (e) {
    if (stop.signal.aborted && e.message === 'stopping') return batch(g, 'return');
    log('error', `group ${g.id} (${g.messages.length} events, image ${g.spec.image}): no Machine created: ${e.message}; its messages return after the visibility timeout`);
    if (e instanceof Fatal && /TLS/.test(e.message)) { stop.abort(); process.exitCode = 1; }
    return undefined;
  }
  return batch(g, 'delete');
}

// ---- main loop ----------------------------------------------------------------------------
const inFlight = new Set();
let wake = null;
const notify = () => { const w = wake; wake = null; w?.(); };
stop.signal.addEventListener('abort', notify);
async function waitForSlot() {
  while (inFlight.size >= cfg.maxInFlight && !stop.signal.aborted) await new Promise((r) => { wake = r; });
}

log('info', `lambdo-peer starting: queue ${cfg.queueUrl}, app ${cfg.app}, regions ${cfg.regions.join(',')}, api ${cfg.api}, up to ${cfg.maxInFlight} creates`);
let firstDone = false;
let failures = 0;
while (!stop.signal.aborted) {
  await waitForSlot();
  if (stop.signal.aborted) break;
  const room = (cfg.maxInFlight - inFlight.size) * cfg.perMachine;
  let out;
  try {
    out = await sqs.send(new ReceiveMessageCommand({
      QueueUrl: cfg.queueUrl, MaxNumberOfMessages: Math.max(1, Math.min(10, room)),
      WaitTimeSeconds: cfg.longPoll, VisibilityTimeout: cfg.visibility,
      MessageAttributeNames: ['image', 'size', 'command'],
      MessageSystemAttributeNames: ['ApproximateReceiveCount'],
    }), { abortSignal: stop.signal });
  } catch (e) {
    if (stop.signal.aborted) break;
    const status = e.$metadata?.httpStatusCode;
    if (!firstDone && status >= 400 && status < 500 && status !== 429) {
      log('error', `SQS ReceiveMessage: ${e.name}: ${e.message}`);
      process.exitCode = 1;
      break;
    }
    const ms = Math.floor(Math.random() * Math.min(30000, 1000 * 2 ** failures++));
    log('error', `SQS ReceiveMessage: ${e.name}: ${e.message}; retrying in ${ms} ms`);
    await pause(ms);
    continue;
  }
  firstDone = true;
  failures = 0;
  for (const g of groups(out.Messages ?? [])) {
    const p = handle(g).finally(() => { inFlight.delete(p); notify(); });
    inFlight.add(p);
  }
}
if (inFlight.size) log('info', `stopping: waiting for ${inFlight.size} groups in flight`);
await Promise.all(inFlight);
sqs.destroy();
log('info', 'stopped');
process.exit(process.exitCode ?? 0);
