// Message accounting for the fault and chaos tests, and the rig they share.
//
//   account({ sent, fly, sqs, queueUrl, dlqUrl, mode, label })
//     sent   [{ id: MessageId, body }] as sent (bodies unique within the set; the tests use
//            {"id": "<unique key>", ...} bodies)
//     mode   'create' (LAMBDO_ACK=create): a message is done once its body is in some Machine's
//            events file; 'exit' (LAMBDO_ACK=exit): once it was in a Machine that exited 0
//            (not OOM-killed, not stopped by lambdo)
//   A message is ACCOUNTED FOR when it is done, or still in its queue (visible, delayed or in
//   flight: fauxqs's own records, so an in-flight message counts without waiting for its
//   visibility timeout), or in the dead-letter queue. Anything else was deleted without being
//   done: LOST. Returns
//     { lost: [ids], duplicates: {id: count}, dispatched, succeeded, inQueue, inDlq, runs,
//       reruns: {id: count}, machines, summary }
//   duplicates: create mode, messages in more than one Machine; exit mode, messages in more
//   than one Machine that exited 0 (re-runs after a failure are `reruns`, by design).
//   dispatched: distinct messages that reached any Machine; succeeded: distinct messages done.
//   A one-line summary is printed (console.log) unless quiet.
//
// Matching a Machine's events to messages: each event (parsed from the events file) is
// re-serialized canonically (JSON.stringify of the parsed value) and looked up among the sent
// bodies, canonicalized the same way, so key order, spacing and number spelling in a body do
// not matter, and no message id has to be carried in the body (though the tests do).
//
// The rig (startRig): fauxqs behind the SigV4-checking proxy, the HTTPS test Fly API with the
// image conventions on (registry.fly.io/exit:3, .../oom, .../sleep:500, see flyapi.mjs), and
// spawnLambdo(), which runs the binary of tools.mjs's lambdoCommand() with exactly the env given.
import { spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { SendMessageBatchCommand } from '@aws-sdk/client-sqs';
import { startSqs, toMessageAttributes } from './fauxqs.mjs';
import { startSqsProxy } from './sqsproxy.mjs';
import { startFlyApi } from './flyapi.mjs';
import { testCerts } from './certs.mjs';
import { lambdoCommand } from './tools.mjs';

export const REGION = 'us-east-1';
export const CREDS = { accessKeyId: 'AKIDLAMBDOFAULTS', secretAccessKey: 'lambdo/faults+test+secret' };
export const TOKEN = 'fo1_faults_test_token_do_not_log';
export const APP = 'lambdo-faults';
export const REGIONS = ['iad', 'ord', 'ams'];

const canon = (v) => JSON.stringify(v);

function canonBody(body) {
  try { return canon(JSON.parse(body)); } catch { return `raw:${body}`; }
}

function idsIn(q) {
  const ids = new Map();
  const add = (m) => { if (m?.messageId) ids.set(m.messageId, m); };
  for (const m of q.ready) add(m);
  for (const m of q.delayed) add(m);
  for (const e of q.inflight) add(e.message);
  return ids;
}

export function account({ sent, fly, sqs, queueUrl, dlqUrl, mode = 'create', label = '', quiet = false }) {
  if (mode !== 'create' && mode !== 'exit') throw new Error(`account: mode ${mode}`);
  const byBody = new Map();
  for (const m of sent) {
    const k = canonBody(m.body);
    if (byBody.has(k)) throw new Error(`account: two sent messages with the same body ${m.body}`);
    byBody.set(k, m.id);
  }
  const runs = new Map();     // id -> machines that got it
  const oks = new Map();      // id -> machines that got it and exited 0
  let machines = 0;
  for (const mach of fly.machines) {
    if (!Array.isArray(mach.events)) continue;
    let mine = false;
    for (const ev of mach.events) {
      const id = byBody.get(canon(ev));
      if (!id) continue;
      mine = true;
      runs.set(id, (runs.get(id) ?? 0) + 1);
      if (mach.exitCode === 0 && !mach.oomKilled) oks.set(id, (oks.get(id) ?? 0) + 1);
    }
    if (mine) machines++;
  }
  const queued = idsIn(sqs.peek(queueUrl));
  const dlq = dlqUrl ? idsIn(sqs.peek(dlqUrl)) : new Map();
  const done = mode === 'create' ? runs : oks;
  const lost = [];
  for (const m of sent) {
    if (!done.has(m.id) && !queued.has(m.id) && !dlq.has(m.id)) lost.push(m.id);
  }
  const duplicates = {};
  for (const [id, n] of done) if (n > 1) duplicates[id] = n;
  const reruns = {};
  for (const [id, n] of runs) if (n > 1) reruns[id] = n;
  const sentIds = new Set(sent.map((m) => m.id));
  const inQueue = [...queued.keys()].filter((id) => sentIds.has(id)).length;
  const inDlq = [...dlq.keys()].filter((id) => sentIds.has(id)).length;
  const nd = Object.keys(duplicates).length;
  const extra = Object.values(duplicates).reduce((s, n) => s + n - 1, 0);
  const r = {
    lost, duplicates, reruns, dispatched: runs.size, succeeded: done.size, inQueue, inDlq, runs: machines,
    duplicateDeliveries: extra,
  };
  r.summary = `[account] ${label ? `${label}: ` : ''}mode ${mode}, sent ${sent.length}, dispatched ${r.dispatched}, `
    + `succeeded ${r.succeeded}, in queue ${inQueue}, in DLQ ${inDlq}, machines ${machines}, `
    + `LOST ${lost.length}${lost.length ? ` ${JSON.stringify(lost)}` : ''}, `
    + `duplicates ${nd} (${extra} extra deliveries)${nd ? ` ${JSON.stringify(duplicates)}` : ''}`
    + (mode === 'exit' ? `, re-run ${Object.keys(reruns).length}` : '');
  if (!quiet) console.log(r.summary);
  return r;
}

// Waits until cond() is truthy, polling; throws naming what after timeoutMs.
export async function until(cond, what, timeoutMs = 15000, everyMs = 50) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${typeof what === 'function' ? what() : what}`);
    await sleep(everyMs);
  }
}

// Starts lambdo with argv and exactly env (nothing inherited but PATH; an undefined value
// leaves a variable unset). The log is kept (its last maxLog characters). run.stop() =
// SIGTERM and wait (SIGKILL and throw after stopMs); run.done(ms) = wait for the exit (SIGKILL
// and throw after ms); run.kill9(); run.exit resolves {code, signal}.
export function spawnLambdo(env, { maxLog = 4e6, stopMs = 20000, args: argv = [] } = {}) {
  const [cmd, ...args] = lambdoCommand(argv);
  const proc = spawn(cmd, args, { env: { PATH: process.env.PATH, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const run = { proc, out: '', exited: null, startedAt: Date.now() };
  const take = (d) => {
    run.out += d;
    if (run.out.length > maxLog) run.out = run.out.slice(-maxLog / 2);
  };
  proc.stdout.on('data', take);
  proc.stderr.on('data', take);
  run.exit = new Promise((resolve) => proc.on('exit', (code, signal) => {
    run.exited = { code, signal };
    resolve(run.exited);
  }));
  run.waitLog = (re, timeoutMs) => until(() => re.test(run.out), () => `log ${re}\n--- log:\n${run.out.slice(-3000)}`, timeoutMs);
  run.signal = (sig) => { if (!run.exited) proc.kill(sig); };
  run.kill9 = async () => {
    if (!run.exited) proc.kill('SIGKILL');
    return run.exit;
  };
  run.done = async (ms = 40000) => {
    const r = await Promise.race([run.exit, sleep(ms).then(() => null)]);
    if (!r) {
      proc.kill('SIGKILL');
      await run.exit;
      throw new Error(`lambdo did not exit within ${ms} ms\n${run.out.slice(-3000)}`);
    }
    return r;
  };
  run.stop = async (ms = stopMs) => {
    if (!run.exited) proc.kill('SIGTERM');
    const t0 = Date.now();
    const r = await Promise.race([run.exit, sleep(ms).then(() => null)]);
    if (!r) {
      proc.kill('SIGKILL');
      await run.exit;
      throw new Error(`lambdo did not exit within ${ms} ms of SIGTERM\n${run.out.slice(-3000)}`);
    }
    return { ...r, ms: Date.now() - t0 };
  };
  return run;
}

// The whole rig. flyOptions go to startFlyApi (imageBehaviour defaults to true).
export async function startRig({ flyOptions = {} } = {}) {
  const certs = testCerts();
  const sqs = await startSqs({ region: REGION });
  const proxy = await startSqsProxy({ target: sqs.endpoint, ...CREDS, region: REGION });
  const fly = await startFlyApi({ token: TOKEN, app: APP, imageBehaviour: true, ...flyOptions });
  let n = 0;
  const running = new Set();
  const rig = {
    sqs, proxy, fly, certs,
    // A fresh queue behind the proxy (lambdo's URL). opts as sqs.createQueue.
    async queue(prefix = 'q', opts = {}) {
      return sqs.createQueue(`${prefix}${++n}`, { baseUrl: proxy.endpoint, visibilityTimeout: 30, ...opts });
    },
    env(url, extra = {}) {
      return {
        LAMBDO_SQS_QUEUE_URL: url, AWS_REGION: REGION, AWS_ACCESS_KEY_ID: CREDS.accessKeyId,
        AWS_SECRET_ACCESS_KEY: CREDS.secretAccessKey, LAMBDO_FLY_TOKEN: TOKEN, LAMBDO_FLY_APP: APP,
        LAMBDO_FLY_REGION: REGIONS[0], LAMBDO_FLY_REGIONS: REGIONS.slice(1).join(','),
        LAMBDO_FLY_API_URL: fly.url, SSL_CERT_FILE: certs.caFile, LAMBDO_SQS_LONG_POLL_SECONDS: '1',
        LAMBDO_VISIBILITY_TIMEOUT: '3', LAMBDO_LOG_LEVEL: 'info', ...extra,
      };
    },
    lambdo(url, extra = {}, opts = {}) {
      const r = spawnLambdo(rig.env(url, extra), opts);
      running.add(r);
      r.exit.then(() => running.delete(r));
      return r;
    },
    // Sends count messages, SendMessageBatch by 10. body(i) -> string (default
    // {"id":"<key>-<i>","seq":i}); attrs(i) -> attribute map. Returns [{id, body, key}].
    async send(url, count, { key = `m${n}`, body, attrs = () => ({ image: 'registry.fly.io/job:1' }) } = {}) {
      const sent = [];
      for (let i = 0; i < count; i += 10) {
        const Entries = [];
        for (let j = i; j < Math.min(count, i + 10); j++) {
          const b = body ? body(j) : JSON.stringify({ id: `${key}-${j}`, seq: j });
          Entries.push({ Id: `e${j}`, MessageBody: b, MessageAttributes: toMessageAttributes(attrs(j)) });
        }
        const out = await sqs.client.send(new SendMessageBatchCommand({ QueueUrl: url, Entries }));
        if (out.Failed?.length) throw new Error(`SendMessageBatch failed: ${JSON.stringify(out.Failed)}`);
        for (const s of out.Successful) {
          const e = Entries.find((x) => x.Id === s.Id);
          sent.push({ id: s.MessageId, body: e.MessageBody, key: `${key}-${e.Id.slice(1)}` });
        }
      }
      return sent;
    },
    // Queue empty: nothing visible, in flight or delayed.
    empty(url) {
      const c = sqs.counts(url);
      return c.visible === 0 && c.inFlight === 0 && c.delayed === 0;
    },
    requests(op, url) {
      return proxy.requests.filter((q) => q.op === op && (!url || q.body?.QueueUrl === url));
    },
    // Every message lambdo received from url: [{id, handle, at, receiveCount}] (from the
    // ReceiveMessage answers the proxy relayed).
    received(url) {
      const out = [];
      for (const q of rig.requests('ReceiveMessage', url)) {
        if (q.status !== 200) continue;
        for (const m of q.response?.Messages ?? []) {
          out.push({ id: m.MessageId, handle: m.ReceiptHandle, at: q.at,
            receiveCount: Number(m.Attributes?.ApproximateReceiveCount ?? 0) });
        }
      }
      return out;
    },
    // Entries of a batch op (DeleteMessageBatch, ChangeMessageVisibilityBatch) on url that the
    // answer reported Successful: [{id (MessageId, via the receipt handle), handle, at,
    // visibility}]. Entries a fault kept from fauxqs are not Successful.
    batchDone(op, url) {
      const ids = new Map(rig.received(url).map((m) => [m.handle, m.id]));
      const out = [];
      for (const q of rig.requests(op, url)) {
        if (q.status !== 200 || !Array.isArray(q.body?.Entries)) continue;
        const ok = new Set((q.response?.Successful ?? []).map((e) => e.Id));
        for (const e of q.body.Entries) {
          if (ok.has(e.Id)) out.push({ id: ids.get(e.ReceiptHandle), handle: e.ReceiptHandle, at: q.at, visibility: e.VisibilityTimeout });
        }
      }
      return out;
    },
    machinesFor(sent) {
      const bodies = new Set(sent.map((m) => canonBody(m.body)));
      return fly.machines.filter((m) => Array.isArray(m.events) && m.events.some((e) => bodies.has(canon(e))));
    },
    clearFaults() {
      for (const region of REGIONS) { fly.clearRegionFault(region); fly.clearRegionExit(region); }
      fly.fault = null;
      fly.exitPolicy = null;
      fly.rateLimits = null;
      fly.forgetDestroyedAfterMs = Infinity;
      proxy.fault = null;
    },
    async stopAll() {
      for (const r of [...running]) {
        try { await r.stop(); } catch { /* killed */ }
      }
    },
    async close() {
      for (const r of [...running]) await r.kill9();
      await fly.close();
      await proxy.close();
      await sqs.close();
    },
  };
  return rig;
}

// A small seeded PRNG (mulberry32): rng() in [0, 1); rng.int(n) in [0, n); rng.pick(array).
export function prng(seed) {
  let a = seed >>> 0;
  const rng = () => {
    a = (a + 0x6D2B79F5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  rng.int = (k) => Math.floor(rng() * k);
  rng.pick = (arr) => arr[rng.int(arr.length)];
  rng.chance = (p) => rng() < p;
  return rng;
}
