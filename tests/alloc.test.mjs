// The musl product runs on alloc.c, lambdo's own malloc (tests/t_alloc.c tests the allocator
// itself): under strace, the memory-mapping system calls of `lambdo --once` do not grow with
// the number of jobs. With musl's mallocng they did, since a size class's memory went back to
// the kernel when its last block was freed: 86 calls for 5 jobs, 528 for 50 (at 7582c1f).
// Always build/musl/lambdo, whatever LAMBDO_VARIANT says: the other builds use the sanitizers'
// or glibc's malloc. Needs strace (./build.sh test installs it); skipped, saying so, without.
//   node --test tests/alloc.test.mjs
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startRig } from './lib/accounting.mjs';
import { ROOT } from './lib/tools.mjs';

const BINARY = path.join(path.resolve(ROOT, process.env.LAMBDO_BUILD_DIR || 'build'), 'musl', 'lambdo');
const noStrace = spawnSync('strace', ['-V']).status !== 0 &&
  'SKIPPED: strace is not installed (./build.sh test installs it), so the musl allocator is not checked in the product';
if (noStrace) console.log(`alloc.test.mjs: ${noStrace}`);

// `strace -f -c` over `lambdo --once` on a queue holding `events` messages (10 a job):
// { exit, calls: { syscall: count } }.
function straced(rig, url, dir, name) {
  const out = path.join(dir, name);
  const env = rig.env(url, { LAMBDO_EVENTS_PER_MACHINE: '10', LAMBDO_MAX_MACHINES: '2',
    LAMBDO_VISIBILITY_TIMEOUT: '600', LAMBDO_FLY_CREATE_RATE: '1000000', LAMBDO_FLY_CREATE_BURST: '10000' });
  const p = spawn('strace', ['-f', '-c', '-e', 'trace=mmap,munmap,madvise,mremap', '-o', out, BINARY, '--once'],
    { env: { PATH: process.env.PATH, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  p.stderr.on('data', (d) => { log = (log + d).slice(-4000); });
  return new Promise((resolve) => p.on('exit', (code) => {
    const calls = {};
    for (const line of readFileSync(out, 'utf8').split('\n')) {
      const f = line.trim().split(/\s+/);
      if (f.length >= 5 && /^\d+$/.test(f[3]) && f[f.length - 1] !== 'total') calls[f[f.length - 1]] = Number(f[3]);
    }
    resolve({ exit: code, calls, log });
  }));
}

describe('the musl product allocates without mapping churn', () => {
  let rig, dir;
  before(async () => {
    if (noStrace) return;
    assert.ok(existsSync(BINARY), `${BINARY} is missing: run ./build.sh test`);
    rig = await startRig();
    dir = mkdtempSync(path.join(tmpdir(), 'lambdo-alloc-'));
  });
  after(async () => {
    await rig?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('mmap, munmap and madvise calls do not grow from 5 jobs to 50', { skip: noStrace }, async () => {
    const runs = [];
    for (const events of [50, 500]) {
      const { url } = await rig.queue('alloc');
      await rig.send(url, events);
      const machines = rig.fly.machines.length;
      const r = await straced(rig, url, dir, `strace-${events}`);
      assert.equal(r.exit, 0, `lambdo --once failed:\n${r.log}`);
      assert.equal(rig.fly.machines.length - machines, events / 10, 'one Machine per 10 events');
      const total = ['mmap', 'munmap', 'madvise', 'mremap'].reduce((s, k) => s + (r.calls[k] ?? 0), 0);
      console.log(`alloc.test.mjs: ${events / 10} jobs: ${JSON.stringify(r.calls)}`);
      runs.push(total);
    }
    // The first chunks are mapped once whatever the run (3 mmap, 1 or 2 munmap here); 45 more
    // jobs cost 440 calls more with mallocng. The margin absorbs a thread more or less.
    assert.ok(runs[1] <= runs[0] + 8, `memory mapping calls grew with the jobs: ${runs[0]} for 5 jobs, ${runs[1]} for 50`);
  });
});
