// bench/lean --guard, the tests/run step that keeps the code base from growing back
// (issue #11): it must fail when either figure is over its ceiling, and say by how much.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const lean = (...args) => spawnSync('bench/lean', args, { encoding: 'utf8' });

function figures() {
  const r = lean();
  const lines = Number(/lines of C\s+(\d+) lines/.exec(r.stdout)?.[1]);
  const bytes = Number(/lambdo\s+(\d+) bytes/.exec(r.stdout)?.[1]);
  assert.ok(lines > 0 && bytes > 0, `bench/lean printed no figures: ${r.stdout}${r.stderr}`);
  return { lines, bytes };
}

function ceiling(lines, bytes) {
  const f = join(mkdtempSync(join(tmpdir(), 'lean-')), 'ceiling.txt');
  writeFileSync(f, `# test\nlines: ${lines}\nbytes: ${bytes}\n`);
  return f;
}

test('bench/lean --guard passes at its ceilings and fails one line or byte over', () => {
  const { lines, bytes } = figures();
  let r = lean('--guard', '--ceiling', ceiling(lines, bytes));
  assert.equal(r.status, 0, r.stdout + r.stderr);
  r = lean('--guard', '--ceiling', ceiling(lines - 1, bytes));
  assert.equal(r.status, 1, r.stdout + r.stderr);
  assert.match(r.stdout, /lines of C\s+\d+ lines \(ceiling \d+\): OVER by 1\n/);
  r = lean('--guard', '--ceiling', ceiling(lines, bytes - 1));
  assert.equal(r.status, 1, r.stdout + r.stderr);
  assert.match(r.stdout, /bytes \(ceiling \d+\): OVER by 1\n/);
});

test('bench/lean --guard without a ceiling file is a usage error, not a pass', () => {
  const r = lean('--guard', '--ceiling', '/nonexistent/ceiling.txt');
  assert.equal(r.status, 2);
  assert.match(r.stderr, /missing or incomplete/);
});

test('the lines are counted the way issue #11 says', () => {
  // the command, summed here rather than with bc (not on every machine)
  const sh = "for f in *.c *.h; do gcc -fpreprocessed -dD -E -P \"$f\" | grep -cv '^\\s*$'; done";
  const r = spawnSync('sh', ['-c', sh], { encoding: 'utf8' });
  const sum = r.stdout.trim().split('\n').reduce((s, n) => s + Number(n), 0);
  assert.ok(sum > 1000, r.stdout + r.stderr);
  assert.equal(sum, figures().lines);
});
