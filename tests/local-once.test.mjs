// The local backend's promises and --once's accounting, end to end: lambdo with
// LAMBDO_BACKEND=local against fauxqs behind the SigV4-verifying proxy; the children are small
// sh scripts whose exit status and output the tests choose.
//   node --test tests/local-once.test.mjs
import { describe, it, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startSqs } from './lib/fauxqs.mjs';
import { startSqsProxy } from './lib/sqsproxy.mjs';
import { spawnLambdo } from './lib/accounting.mjs';

const REGION = 'us-east-1';
const CREDS = { accessKeyId: 'AKIDLOCALTEST', secretAccessKey: 'local/once+test+secret' };

// How many times the child ran for the message whose body holds "id":"<id>".
const runsOf = (out, id) => out.split('\n').filter((l) => l.includes('] ran ') && l.includes(`"id":"${id}"`)).length;

describe('local backend and --once', () => {
  let sqs, proxy, scratch, n = 0;
  const running = [];

  before(async () => {
    sqs = await startSqs({ region: REGION });
    proxy = await startSqsProxy({ target: sqs.endpoint, ...CREDS, region: REGION });
    scratch = mkdtempSync(path.join(tmpdir(), 'lambdo-local-once-'));
  });
  after(async () => {
    await proxy.close();
    await sqs.close();
    rmSync(scratch, { recursive: true, force: true });
  });
  afterEach(async () => {
    for (const r of running.splice(0)) if (!r.exited) { r.proc.kill('SIGKILL'); await r.exit; }
  });

  const queue = (opts = {}) => sqs.createQueue(`local${++n}`, { baseUrl: proxy.endpoint, visibilityTimeout: 30, ...opts });
  const queued = async (url) => { const c = await sqs.counts(url); return c.visible + c.inFlight + c.delayed; };

  // lambdo with the local backend; the child runs `script` under sh after logging "ran <events>".
  // LAMBDO_ACK=exit by default, so that the --once tests say the same of lambdo before the
  // local backend ignored LAMBDO_ACK=create; undefined leaves it unset (the default, create).
  function lambdo(url, script, extra = {}, args = ['--once']) {
    const r = spawnLambdo({
      LAMBDO_SQS_QUEUE_URL: url, AWS_REGION: REGION,
      AWS_ACCESS_KEY_ID: CREDS.accessKeyId, AWS_SECRET_ACCESS_KEY: CREDS.secretAccessKey,
      LAMBDO_BACKEND: 'local', LAMBDO_ACK: 'exit', LAMBDO_EVENTS_PER_MACHINE: '1',
      LAMBDO_LOCAL_COMMAND: JSON.stringify(['/bin/sh', '-c', `echo "ran $(cat "$EVENTS_PATH")"; ${script}`]),
      LAMBDO_SQS_LONG_POLL_SECONDS: '1', LAMBDO_VISIBILITY_TIMEOUT: '6', LAMBDO_LOG_LEVEL: 'debug',
      ...extra,
    }, { args });
    running.push(r);
    return r;
  }

  it('a child that exits non-zero never has its messages deleted, whatever LAMBDO_ACK says', async () => {
    for (const ack of [undefined, 'create', 'exit']) {
      const { url } = await queue();
      await sqs.send(url, '{"id":"x1"}', { image: 'local' });
      const r = lambdo(url, 'exit 3', { LAMBDO_ACK: ack });
      const exit = await r.done();
      assert.equal(await queued(url), 1, `LAMBDO_ACK=${ack}: the message is still queued\n${r.out}`);
      assert.equal(exit.code, 1, r.out);
      assert.match(r.out, /backend local .*ack on exit \(a group's messages are deleted only once its process exited 0, whatever LAMBDO_ACK says\)/);
      assert.match(r.out, /exited 3 .*1 messages go back to the queue/);
      assert.doesNotMatch(r.out, /deleting|messages deleted/);
    }
  });

  it('SIGTERM: a child finishes within LAMBDO_SHUTDOWN_TIMEOUT and is acknowledged; one cut short is not', async () => {
    // A short grace: the child gets SIGTERM at its end; even a child that then exits 0 was cut
    // short, so its message goes back, visible at once.
    let { url } = await queue();
    await sqs.send(url, '{"id":"s2"}', { image: 'local' });
    let r = lambdo(url, 'trap "echo got TERM; exit 0" TERM; sleep 30 & wait', { LAMBDO_ACK: undefined, LAMBDO_SHUTDOWN_TIMEOUT: '1' }, []);
    await r.waitLog(/process \d+ started/, 20000);
    r.proc.kill('SIGTERM');
    let exit = await r.done();
    const c = await sqs.counts(url);
    assert.equal(c.visible, 1, `the message is back on the queue: ${JSON.stringify(c)}\n${r.out}`);
    assert.equal(exit.code, 0, r.out);
    assert.match(r.out, /got TERM/);
    assert.match(r.out, /stopped: still running 1 s after lambdo began to stop.*1 messages go back to the queue/);
    assert.doesNotMatch(r.out, /deleting/);

    // A long enough grace: the child runs to its end, its message is deleted, then lambdo exits 0.
    ({ url } = await queue());
    await sqs.send(url, '{"id":"s1"}', { image: 'local' });
    r = lambdo(url, 'sleep 2; echo finished', { LAMBDO_ACK: undefined, LAMBDO_SHUTDOWN_TIMEOUT: '30' }, []);
    await r.waitLog(/process \d+ started/, 20000);
    r.proc.kill('SIGTERM');
    exit = await r.done();
    assert.equal(exit.code, 0, r.out);
    assert.match(r.out, /\] finished\n/);
    assert.match(r.out, /exited 0 after .* deleting 1 messages/);
    assert.equal(await queued(url), 0, r.out);
  });

  it('a child gets none of lambdo\'s AWS credentials, and LAMBDO_CHILD_<NAME> as <NAME>', async () => {
    const { url } = await queue();
    await sqs.send(url, '{"id":"e1"}', { image: 'local' });
    const r = lambdo(url, 'env | sort', {
      AWS_ROLE_ARN: 'arn:aws:iam::1:role/lambdo-secret-role', AWS_ROLE_SESSION_NAME: 'lambdo-secret-session',
      AWS_WEB_IDENTITY_TOKEN_FILE: '/lambdo-secret-token',
      AWS_CONTAINER_CREDENTIALS_FULL_URI: 'http://127.0.0.1/lambdo-secret',
      LAMBDO_CHILD_AWS_ROLE_ARN: 'arn:aws:iam::1:role/handler', LAMBDO_CHILD_MODE: 'child',
    });
    const exit = await r.done();
    assert.equal(exit.code, 0, r.out);
    const childEnv = r.out.split('\n').filter((l) => /\[group [0-9a-f]{16}\] [A-Z_]+=/.test(l)).map((l) => l.replace(/^.*\] /, ''));
    assert.ok(childEnv.includes('AWS_ROLE_ARN=arn:aws:iam::1:role/handler'), childEnv.join('\n'));
    assert.ok(childEnv.includes('MODE=child'), childEnv.join('\n'));
    assert.ok(childEnv.includes('AWS_REGION=us-east-1'), childEnv.join('\n'));
    assert.ok(childEnv.includes('AWS_SHARED_CREDENTIALS_FILE=/dev/null'), childEnv.join('\n'));
    assert.ok(childEnv.includes('AWS_CONFIG_FILE=/dev/null'), childEnv.join('\n'));
    for (const v of childEnv) {
      assert.doesNotMatch(v, /secret|AKIDLOCALTEST|LAMBDO_|AWS_ROLE_SESSION_NAME|AWS_WEB_IDENTITY|AWS_PROFILE|AWS_CONTAINER|AWS_ACCESS/, v);
    }
  });

  it('--once counts messages, not deliveries, and tries a failed message once more', async () => {
    const { url } = await queue();
    for (let i = 0; i < 3; i++) await sqs.send(url, `{"id":"bad${i}","fail":true}`, { image: 'local' });
    for (let i = 0; i < 2; i++) await sqs.send(url, `{"id":"good${i}"}`, { image: 'local' });
    const t0 = Date.now();
    const r = lambdo(url, 'if grep -q fail "$EVENTS_PATH"; then exit 3; fi');
    const exit = await r.done();
    assert.equal(exit.code, 1, r.out);
    assert.match(r.out, /--once: 3 messages were not handled/);
    for (let i = 0; i < 3; i++) assert.equal(runsOf(r.out, `bad${i}`), 2, `bad${i} ran twice, no more\n${r.out}`);
    for (let i = 0; i < 2; i++) assert.equal(runsOf(r.out, `good${i}`), 1, r.out);
    assert.match(r.out, /message \S+ failed 2 times; it is not run again/);
    assert.ok(Date.now() - t0 < 30000, `took ${Date.now() - t0} ms`);
    // The failed ones are back on the queue, visible now (LAMBDO_RETRY_DELAY 0).
    const c = await sqs.counts(url);
    assert.deepEqual([c.visible, c.inFlight], [3, 0], `${JSON.stringify(c)}\n${r.out}`);
  });

  it('--once does not wait out LAMBDO_RETRY_DELAY for its own failed messages', async () => {
    const { url } = await queue();
    await sqs.send(url, '{"id":"later","fail":true}', { image: 'local' });
    const t0 = Date.now();
    const r = lambdo(url, 'exit 3', { LAMBDO_RETRY_DELAY: '60' });
    const exit = await r.done();
    assert.ok(Date.now() - t0 < 30000, `took ${Date.now() - t0} ms\n${r.out}`);
    assert.equal(exit.code, 1, r.out);
    assert.equal(runsOf(r.out, 'later'), 1, r.out);
    assert.match(r.out, /--once: 1 messages were not handled/);
    const c = await sqs.counts(url);
    assert.deepEqual([c.visible, c.inFlight], [0, 1], `hidden for the retry delay: ${JSON.stringify(c)}`);
  });

  it('--once: a message that fails and then succeeds on its second try counts as handled', async () => {
    const { url } = await queue();
    const marker = path.join(scratch, `flaky${n}`);
    await sqs.send(url, '{"id":"flaky"}', { image: 'local' });
    const r = lambdo(url, `if [ ! -e ${marker} ]; then touch ${marker}; exit 3; fi`);
    const exit = await r.done();
    assert.equal(exit.code, 0, r.out);
    assert.equal(runsOf(r.out, 'flaky'), 2, r.out);
    assert.match(r.out, /--once: the queue is empty and every message was handled/);
    assert.equal(await queued(url), 0);
  });

  it('--once waits for messages in flight before it declares the queue empty', async () => {
    const { url } = await queue();
    await sqs.send(url, '{"id":"inflight"}', { image: 'local' });
    // Received elsewhere (a consumer that died, say): in flight for 4 more seconds.
    const taken = await sqs.drain(url, { keep: true, visibilityTimeout: 4 });
    assert.equal(taken.length, 1);
    const r = lambdo(url, 'exit 0');
    const exit = await r.done();
    assert.equal(runsOf(r.out, 'inflight'), 1, r.out);
    assert.equal(exit.code, 0, r.out);
    assert.match(r.out, /the queue answered empty, but 1 messages are in flight; waiting for them/);
    assert.match(r.out, /every message was handled/);
    assert.equal(await queued(url), 0);
  });

  it('--once holds an invalid message until the end of the run, then returns it; SIGTERM is not success', async () => {
    const { url } = await queue();
    await sqs.send(url, '{"id":"inv"}', { image: 'local', size: 'huge' });
    await sqs.send(url, '{"id":"ok"}', { image: 'local' });
    let r = lambdo(url, 'exit 0');
    let exit = await r.done();
    assert.equal(exit.code, 1, r.out);
    assert.match(r.out, /is invalid/);
    assert.match(r.out, /--once: 1 messages were not handled/);
    assert.equal(runsOf(r.out, 'ok'), 1);
    let c = await sqs.counts(url);
    assert.deepEqual([c.visible, c.inFlight], [1, 0], `returned at the end, visible: ${JSON.stringify(c)}`);

    // Stopped before the queue was found empty: not a success, though nothing failed.
    const q2 = (await queue()).url;
    await sqs.send(q2, '{"id":"slow"}', { image: 'local' });
    r = lambdo(q2, 'sleep 30', {}, ['--once']);
    await r.waitLog(/process \d+ started/, 20000);
    r.proc.kill('SIGTERM');
    exit = await r.done();
    assert.equal(exit.code, 1, r.out);
    assert.match(r.out, /--once: (stopped by signal before the queue was empty|1 messages were not handled)/);
    assert.doesNotMatch(r.out, /every message was handled/);
  });
});
