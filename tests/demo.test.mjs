// `./build.sh demo` end to end: the SQS emulator, `lambdo send`, `lambdo --once` with the
// local backend running runtimes/js and its sample project.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { ROOT, lambdoPath } from './lib/tools.mjs';

test('the demo sends the sample events and runs the handler locally, exit 0', { timeout: 60000 }, async () => {
  const p = spawn(process.execPath, [path.join(ROOT, 'demo/demo.mjs')], {
    env: { ...process.env, LAMBDO_BIN: lambdoPath() }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  p.stdout.on('data', (d) => { out += d; });
  p.stderr.on('data', (d) => { out += d; });
  const code = await new Promise((resolve) => p.on('exit', resolve));
  assert.equal(code, 0, out);
  assert.match(out, /resized cat.png to 640px for user 42/);
  assert.match(out, /notified user 42 about order 9007199254740993/, 'the big number arrived byte for byte');
  assert.match(out, /every message was handled/);
  assert.match(out, /queue now: 0 visible, 0 in flight/);
});
