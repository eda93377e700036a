// ThreadSanitizer is the judge of lambdo's threads: the daemon, built with
// -fsanitize=thread (build/tsan/lambdo, cJSON instrumented too), handles several groups at
// once in exit mode, so job threads parse Fly and SQS answers at the same time, and any
// "WARNING: ThreadSanitizer" report fails the test. Not part of `node --test tests/` (its
// name does not end in .test.mjs): tests/run runs it as its own step.
//   node --test tests/tsan.mjs
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startSqs } from './lib/fauxqs.mjs';
import { startSqsProxy } from './lib/sqsproxy.mjs';
import { startFlyApi } from './lib/flyapi.mjs';
import { testCerts } from './lib/certs.mjs';
import { ROOT } from './lib/tools.mjs';

const REGION = 'us-east-1';
const CREDS = { accessKeyId: 'AKIDLAMBDOTSAN', secretAccessKey: 'lambdo/tsan+test+secret' };
const TOKEN = 'fo1_tsan_test_token';
const APP = 'lambdo-tsan';
const BIN = path.join(process.env.LAMBDO_BUILD_DIR ? path.resolve(ROOT, process.env.LAMBDO_BUILD_DIR)
  : path.join(ROOT, 'build'), 'tsan', 'lambdo');

// clang 14's TSan runtime aborts ("unexpected memory mapping") under high-entropy ASLR:
// setarch -R turns randomisation off for the one process.
function run(args, env) {
  const proc = spawn('setarch', [execFileSync('uname', ['-m']).toString().trim(), '-R', BIN, ...args],
    { env: { PATH: process.env.PATH, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const r = { out: '' };
  proc.stdout.on('data', (d) => { r.out += d; });
  proc.stderr.on('data', (d) => { r.out += d; });
  r.exit = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  r.kill = () => proc.kill('SIGKILL');
  return r;
}

describe('lambdo under ThreadSanitizer', () => {
  let sqs, proxy, fly, certs;

  before(async () => {
    assert.ok(existsSync(BIN), `${BIN} is missing: run ./build.sh test first`);
    certs = testCerts();
    sqs = await startSqs({ region: REGION });
    proxy = await startSqsProxy({ target: sqs.endpoint, ...CREDS, region: REGION });
    fly = await startFlyApi({ token: TOKEN, app: APP });
  });
  after(async () => {
    await fly?.close();
    await proxy?.close();
    await sqs?.close();
  });

  it('exit mode with several groups at once: no data race', async () => {
    const { url } = await sqs.createQueue('tsan1', { baseUrl: proxy.endpoint, visibilityTimeout: 60 });
    const groups = 8;
    // Every Machine exits 0 after a moment, so the groups' waits and deletes overlap.
    fly.onCreate = (m) => setTimeout(() => fly.exitMachine(m.id, 0), 300);
    for (let i = 0; i < groups; i++)
      await sqs.send(url, `{"id":"t${i}","n":${i}}`, { image: `registry.fly.io/tsan:${i}`,
        command: i % 2 ? '["run","--fast"]' : undefined });
    const r = run(['--once'], {
      LAMBDO_SQS_QUEUE_URL: url, AWS_REGION: REGION,
      AWS_ACCESS_KEY_ID: CREDS.accessKeyId, AWS_SECRET_ACCESS_KEY: CREDS.secretAccessKey,
      LAMBDO_FLY_TOKEN: TOKEN, LAMBDO_FLY_APP: APP, LAMBDO_FLY_REGION: 'iad',
      LAMBDO_FLY_API_URL: fly.url, SSL_CERT_FILE: certs.caFile,
      LAMBDO_ACK: 'exit', LAMBDO_VISIBILITY_TIMEOUT: '60', LAMBDO_SQS_LONG_POLL_SECONDS: '1',
      LAMBDO_FLY_CREATE_RATE: '100', LAMBDO_FLY_CREATE_BURST: '100',
      LAMBDO_FLY_GET_RATE: '100', LAMBDO_FLY_GET_BURST: '100', LAMBDO_LOG_LEVEL: 'debug',
      TSAN_OPTIONS: 'halt_on_error=0 second_deadlock_stack=1',
    });
    const exit = await Promise.race([r.exit, sleep(120000, null, { ref: false })]);
    if (!exit) r.kill();
    assert.ok(exit, `lambdo --once did not exit in 120 s:\n${r.out}`);
    assert.doesNotMatch(r.out, /WARNING: ThreadSanitizer|ThreadSanitizer:/, 'ThreadSanitizer reported');
    assert.equal(exit.code, 0, r.out);
    const mine = fly.machines.filter((m) => m.events.some((e) => /^t\d+$/.test(e.id)));
    assert.equal(mine.length, groups, `one Machine per group:\n${r.out}`);
    assert.equal((r.out.match(/exited 0 after/g) || []).length, groups, r.out);
    const c = await sqs.counts(url);
    assert.equal(c.visible + c.inFlight, 0, 'every message deleted');
  });
});
