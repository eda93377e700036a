// Chaos: rounds of random faults on both sides (Fly and SQS), in both ack modes, with SIGTERM
// and kill -9 at random moments and lambdo restarted in between. After each round the message
// accounting of tests/lib/accounting.mjs: zero lost, always; duplicates are counted. A table of
// the rounds is printed at the end.
//   node --test tests/chaos.test.mjs
//   CHAOS_SEED=1234 node --test tests/chaos.test.mjs      replay a seed (the fault plan and kill
//                                                         times; thread timing still varies)
//   CHAOS_ROUNDS=50 CHAOS_BUDGET_S=600                    more rounds, a larger time budget
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { startRig, account, prng, REGIONS } from './lib/accounting.mjs';
import { sqsInternalError, sqsThrottled, failBatchEntries } from './lib/sqsproxy.mjs';

const SEED = process.env.CHAOS_SEED !== undefined ? Number(process.env.CHAOS_SEED)
  : Math.floor(Math.random() * 2 ** 31);
const ROUNDS = Number(process.env.CHAOS_ROUNDS ?? 20);
const BUDGET_MS = Number(process.env.CHAOS_BUDGET_S ?? 170) * 1000;   // all rounds together
const VISIBILITY = 2;
const img = (name) => `registry.fly.io/${name}`;

// The faults a round can draw. Each is { name, apply(plan, rng) }: it adds hooks to the plan;
// hooks act only while plan.active.
const FLY_FAULTS = [
  { name: 'fly500', apply: (p, r) => { p.flyRegion.push([r.pick(REGIONS), { status: 500, times: 1 + r.int(4) }]); } },
  { name: 'fly503', apply: (p, r) => { p.flyRegion.push([r.pick(REGIONS.slice(0, 2)), { status: 503 }]); } },
  { name: 'fly500all', apply: (p, r) => { for (const g of REGIONS) p.flyRegion.push([g, { status: 500, times: 1 + r.int(3) }]); } },
  { name: 'fly429', apply: (p, r) => { p.flyGlobal.push((req, rr) => (req.op === 'Machines_create' && rr.chance(0.3) ? { status: 429, retryAfter: 1 } : null)); } },
  { name: 'flySlow', apply: (p, r) => { const ms = 300 + r.int(1200); p.flyGlobal.push((req, rr) => (rr.chance(0.5) ? { delayMs: ms } : null)); } },
  { name: 'flyReset', apply: (p, r) => { p.flyRegion.push([r.pick(REGIONS), { reset: true, times: 1 + r.int(3) }]); } },
  { name: 'flyResetAfterCreate', apply: (p) => { p.flyRegion.push(['iad', { resetAfterCreate: true, times: 1 }]); } },
  { name: 'flyGetErrors', apply: (p) => { p.flyGlobal.push((req, rr) => (req.op !== 'Machines_create' && rr.chance(0.2) ? { status: rr.pick([500, 503, 429]), retryAfter: 1 } : null)); } },
];
const SQS_OPS = new Set(['ReceiveMessage', 'DeleteMessageBatch', 'ChangeMessageVisibilityBatch']);
const SQS_FAULTS = [
  { name: 'sqs500', apply: (p) => { p.sqs.push((op, body, rr) => (SQS_OPS.has(op) && rr.chance(0.2) ? sqsInternalError() : null)); } },
  { name: 'sqsThrottle', apply: (p) => { p.sqs.push((op, body, rr) => (SQS_OPS.has(op) && rr.chance(0.2) ? sqsThrottled(rr.pick(['ThrottlingException', 'RequestThrottled'])) : null)); } },
  { name: 'sqsSlow', apply: (p, r) => { const ms = 200 + r.int(1000); p.sqs.push((op, body, rr) => (SQS_OPS.has(op) && rr.chance(0.3) ? { delayMs: ms } : null)); } },
  { name: 'sqsReset', apply: (p) => { p.sqs.push((op, body, rr) => (SQS_OPS.has(op) && rr.chance(0.1) ? rr.pick([{ reset: true }, { resetAfterForward: true }]) : null)); } },
  { name: 'deleteFailed', apply: (p) => { p.sqs.push((op, body, rr) => (op === 'DeleteMessageBatch' && rr.chance(0.5) ? failBatchEntries(body, () => rr.chance(0.5)) : null)); } },
  { name: 'visibilityFailed', apply: (p) => { p.sqs.push((op, body, rr) => (op === 'ChangeMessageVisibilityBatch' && rr.chance(0.5) ? failBatchEntries(body, () => rr.chance(0.5)) : null)); } },
];

function pad(s, n) { s = String(s); return s.length >= n ? s : s + ' '.repeat(n - s.length); }

describe('chaos', () => {
  let rig;
  before(async () => { rig = await startRig(); });
  after(async () => { await rig.close(); });

  it(`${ROUNDS} rounds of random faults, SIGTERM and kill -9, both ack modes (seed ${SEED})`,
    { timeout: BUDGET_MS + 60000 }, async () => {
      console.log(`[chaos] seed ${SEED} (replay with CHAOS_SEED=${SEED}), ${ROUNDS} rounds, budget ${BUDGET_MS / 1000} s`);
      const master = prng(SEED);
      const rows = [];
      const problems = [];
      let earlyTerms = 0;
      const t0 = Date.now();
      const perRound = Math.floor(BUDGET_MS / ROUNDS);

      for (let round = 1; round <= ROUNDS; round++) {
        const roundSeed = master.int(2 ** 31);
        const r = prng(roundSeed);
        const hooksRng = prng(roundSeed ^ 0x5eed);
        const mode = round % 2 ? 'create' : 'exit';
        const roundStart = Date.now();
        const deadline = roundStart + perRound - 500;

        // The plan: 1-3 faults, one of them on SQS at least half the time.
        const plan = { active: true, flyRegion: [], flyGlobal: [], sqs: [], names: [] };
        const nf = 1 + r.int(3);
        for (let i = 0; i < nf; i++) {
          const f = r.chance(0.5) ? r.pick(FLY_FAULTS) : r.pick(SQS_FAULTS);
          if (plan.names.includes(f.name)) continue;
          if (f.name === 'visibilityFailed' && mode === 'create') continue;
          plan.names.push(f.name);
          f.apply(plan, r);
        }
        for (const [region, spec] of plan.flyRegion) rig.fly.setRegionFault(region, spec);
        rig.fly.fault = (req) => {
          if (!plan.active) return null;
          for (const h of plan.flyGlobal) { const f = h(req, hooksRng); if (f) return f; }
          return null;
        };
        rig.proxy.fault = (op, body) => {
          if (!plan.active) return null;
          for (const h of plan.sqs) { const f = h(op, body, hooksRng); if (f) return f; }
          return null;
        };

        const q = await rig.queue(`chaos${round}-`, { redriveToDlq: 4 });
        const count = 5 + r.int(11);
        const images = [];
        for (let i = 0; i < count; i++) {
          if (mode === 'create') images.push(img(`chaos:${r.int(3)}`));
          else {
            const x = r();
            images.push(x < 0.1 ? img('exit:1') : x < 0.15 ? img('oom:200')
              : x < 0.25 ? img(`sleep:${VISIBILITY * 1000 + 500 + r.int(1000)}`) : img(`sleep:${100 + r.int(900)}`));
          }
        }
        const sent = await rig.send(q.url, count, { key: `c${SEED}-${round}`, attrs: (i) => ({ image: images[i] }) });
        const env = {
          LAMBDO_ACK: mode, LAMBDO_VISIBILITY_TIMEOUT: String(VISIBILITY), LAMBDO_SHUTDOWN_TIMEOUT: '1',
          LAMBDO_RETRY_DELAY: '0', LAMBDO_EVENTS_PER_MACHINE: String(1 + r.int(5)),
          LAMBDO_FLY_CREATE_RATE: '50', LAMBDO_FLY_CREATE_BURST: '50', LAMBDO_FLY_GET_RATE: '100', LAMBDO_FLY_GET_BURST: '100',
        };

        // Faults phase: lambdo runs, is stopped (SIGTERM) or killed (kill -9) at random moments
        // and restarted; then the faults end and a last lambdo runs until the queue settles.
        const kills = [];
        const exits = [];
        const runs = [];
        const faultMs = Math.min(3500, Math.max(1500, perRound * 0.4));
        const faultEnd = Date.now() + faultMs;
        let proc = rig.lambdo(q.url, env);
        runs.push(proc);
        const nKills = 1 + r.int(2);
        for (let k = 0; k < nKills && Date.now() < faultEnd; k++) {
          const wait = Math.min(faultEnd - Date.now(), 200 + r.int(Math.floor(faultMs / nKills)));
          await sleep(Math.max(0, wait));
          const how = r.chance(0.5) ? 'TERM' : 'KILL';
          kills.push(`${how}@${((Date.now() - roundStart) / 1000).toFixed(1)}`);
          if (how === 'KILL') {
            exits.push({ how, ...(await proc.kill9()) });
          } else {
            try {
              const s = await proc.stop(15000);
              exits.push({ how, code: s.code, signal: s.signal, ms: s.ms, started: /starting:/.test(proc.out) });
            } catch (e) {
              exits.push({ how, hung: true });
              problems.push(`round ${round}: lambdo did not exit within 15 s of SIGTERM`);
            }
          }
          if (r.chance(0.3)) await sleep(r.int(500));
          proc = rig.lambdo(q.url, env);
          runs.push(proc);
        }
        await sleep(Math.max(0, faultEnd - Date.now()));
        plan.active = false;
        rig.clearFaults();

        // Recovery: wait for the queue to settle (empty, or what is left only the messages that
        // never succeed: exit:1 / oom bodies on their way to the DLQ), within the round's budget.
        const settledNow = () => {
          const c = rig.sqs.counts(q.url);
          return c.visible === 0 && c.inFlight === 0 && c.delayed === 0;
        };
        while (Date.now() < deadline && !settledNow()) await sleep(100);
        const settled = settledNow();
        try {
          const s = await proc.stop(15000);
          exits.push({ how: 'TERM', code: s.code, signal: s.signal, ms: s.ms, started: /starting:/.test(proc.out) });
        } catch {
          exits.push({ how: 'TERM', hung: true });
          problems.push(`round ${round}: the last lambdo did not exit within 15 s of SIGTERM`);
        }
        for (const e of exits) {
          if (e.how !== 'TERM' || e.hung || e.code === 0) continue;
          // A SIGTERM that lands before lambdo has set up its signal handling (it had not
          // logged "starting:" yet) kills it the default way; nothing was received by then.
          if (e.signal === 'SIGTERM' && !e.started) { earlyTerms++; continue; }
          problems.push(`round ${round}: exit status ${e.code}/${e.signal} after SIGTERM`);
        }
        for (const p of runs) {
          if (/AddressSanitizer|LeakSanitizer|runtime error:/.test(p.out)) {
            problems.push(`round ${round}: sanitizer report:\n${p.out.slice(p.out.search(/AddressSanitizer|LeakSanitizer|runtime error:/) - 200).slice(0, 3000)}`);
          }
        }

        const acc = account({ sent, fly: rig.fly, sqs: rig.sqs, queueUrl: q.url, dlqUrl: q.dlqUrl, mode,
          label: `round ${round}`, quiet: true });
        if (acc.lost.length) problems.push(acc.summary);
        rows.push({ round, mode, msgs: count, faults: plan.names.join(',') || '-', kills: kills.join(' ') || '-',
          lost: acc.lost.length, dups: Object.keys(acc.duplicates).length, extra: acc.duplicateDeliveries,
          done: acc.succeeded, queue: acc.inQueue, dlq: acc.inDlq, settled, secs: ((Date.now() - roundStart) / 1000).toFixed(1) });
        console.log(acc.summary);
        if (Date.now() - t0 > BUDGET_MS + 30000) {
          problems.push(`stopped after round ${round}: over the time budget`);
          break;
        }
      }

      const head = `${pad('round', 6)}${pad('mode', 7)}${pad('msgs', 5)}${pad('faults', 42)}${pad('kills', 22)}`
        + `${pad('lost', 5)}${pad('dups', 5)}${pad('extra', 6)}${pad('done', 5)}${pad('queue', 6)}${pad('dlq', 4)}${pad('settled', 8)}secs`;
      const lines = rows.map((x) => `${pad(x.round, 6)}${pad(x.mode, 7)}${pad(x.msgs, 5)}${pad(x.faults, 42)}${pad(x.kills, 22)}`
        + `${pad(x.lost, 5)}${pad(x.dups, 5)}${pad(x.extra, 6)}${pad(x.done, 5)}${pad(x.queue, 6)}${pad(x.dlq, 4)}${pad(x.settled ? 'yes' : 'no', 8)}${x.secs}`);
      const tot = rows.reduce((a, x) => ({ msgs: a.msgs + x.msgs, lost: a.lost + x.lost, dups: a.dups + x.dups, extra: a.extra + x.extra }),
        { msgs: 0, lost: 0, dups: 0, extra: 0 });
      console.log(`[chaos] seed ${SEED}\n${head}\n${lines.join('\n')}\n`
        + `[chaos] ${rows.length} rounds in ${((Date.now() - t0) / 1000).toFixed(1)} s: ${tot.msgs} messages, `
        + `LOST ${tot.lost}, duplicated ${tot.dups} (${tot.extra} extra deliveries)`
        + (earlyTerms ? `; ${earlyTerms} SIGTERM(s) landed before lambdo's start-up line (killed by the signal)` : ''));
      assert.deepEqual(problems, [], `seed ${SEED}`);
      assert.equal(tot.lost, 0);
      assert.deepEqual(rig.fly.violations, []);
    });
});
