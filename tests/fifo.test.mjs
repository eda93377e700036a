// FIFO queues end to end (issue #13): lambdo send with group and deduplication ids, lambdo
// check's FIFO rows, and the daemon keeping each message group's order across Machines (exit
// mode, the default on a FIFO queue). fauxqs models FIFO queues: a group is locked while one
// of its messages is in flight, and one receive hands out at most ONE message per group, so
// the case of several messages of one group in one answer (group_fifo_order) is unit-tested
// in tests/t_group.c, not here.
//   node --test tests/fifo.test.mjs
import { describe, it, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { startSqs } from './lib/fauxqs.mjs';
import { startSqsProxy, sqsError } from './lib/sqsproxy.mjs';
import { startFlyApi } from './lib/flyapi.mjs';
import { testCerts } from './lib/certs.mjs';
import { lambdoCommand } from './lib/tools.mjs';

const REGION = 'us-east-1';
const CREDS = { accessKeyId: 'AKIDLAMBDOFIFO', secretAccessKey: 'lambdo/fifo+test+secret' };
const TOKEN = 'fo1_fifo_test_token_do_not_log';
const APP = 'lambdo-fifo';
const IMAGE = 'registry.fly.io/fifo-test:1';

async function until(cond, what, timeoutMs = 30000) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(50);
  }
}

// Runs lambdo with exactly env (and PATH); resolves when it exits. stop() sends SIGTERM.
function start(args, env, input = '') {
  const [cmd, ...rest] = lambdoCommand(args);
  const proc = spawn(cmd, rest, { env: { PATH: process.env.PATH, ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
  const r = { proc, stdout: '', stderr: '' };
  proc.stdout.on('data', (d) => { r.stdout += d; });
  proc.stderr.on('data', (d) => { r.stderr += d; });
  r.exit = new Promise((resolve) => proc.on('exit', (code) => {
    r.code = code;
    r.all = `--- stdout:\n${r.stdout}--- stderr:\n${r.stderr}`;
    for (const s of [CREDS.secretAccessKey, TOKEN]) assert.ok(!r.all.includes(s), 'a secret in the output');
    resolve(r);
  }));
  proc.stdin.on('error', () => {});
  proc.stdin.end(input);
  r.stop = () => { if (r.code === undefined) proc.kill('SIGTERM'); return r.exit; };
  return r;
}

describe('FIFO queues', () => {
  let sqs, proxy, fly, certs, n = 0;
  const running = [];

  before(async () => {
    certs = testCerts();
    sqs = await startSqs({ region: REGION });
    proxy = await startSqsProxy({ target: sqs.endpoint, ...CREDS, region: REGION });
    fly = await startFlyApi({ token: TOKEN, app: APP, imageBehaviour: true });
  });
  after(async () => {
    await fly.close();
    await proxy.close();
    await sqs.close();
  });
  afterEach(async () => {
    for (const r of running.splice(0)) await r.stop();
  });

  const queue = (name, opts = {}) => sqs.createQueue(`${name}${++n}`, { baseUrl: proxy.endpoint, ...opts });
  const sqsEnv = (url) => ({ LAMBDO_SQS_QUEUE_URL: url, AWS_REGION: REGION,
    AWS_ACCESS_KEY_ID: CREDS.accessKeyId, AWS_SECRET_ACCESS_KEY: CREDS.secretAccessKey });
  const fullEnv = (url, extra = {}) => ({ ...sqsEnv(url), LAMBDO_FLY_TOKEN: TOKEN, LAMBDO_FLY_APP: APP,
    LAMBDO_FLY_REGION: 'iad', LAMBDO_FLY_API_URL: fly.url, SSL_CERT_FILE: certs.caFile,
    LAMBDO_SQS_LONG_POLL_SECONDS: '1', LAMBDO_VISIBILITY_TIMEOUT: '20', ...extra });
  const send = (url, args, input = '') => start(['send', '--image', IMAGE, ...args], sqsEnv(url), input).exit;

  describe('send', () => {
    it('refuses group and dedup ids on a standard queue, and requires a group on a FIFO one, sending nothing', async () => {
      const { url } = await queue('std');
      for (const flag of [['--group-id', 'g'], ['--group-id-from', '/t'], ['--dedup-id', 'd'], ['--dedup-id-from', '/d']]) {
        const r = await send(url, [...flag, '{"t":"x","d":"y"}']);
        assert.equal(r.code, 2, r.all);
        assert.equal(r.stderr, `lambdo send: ${flag[0]}: only for FIFO queues (their name ends in .fifo); `
          + 'this one is a standard queue; nothing was sent\n');
      }
      const { url: fifo } = await sqs.createQueue(`nogroup${++n}.fifo`, { baseUrl: proxy.endpoint,
        attributes: { ContentBasedDeduplication: 'true' } });
      const r = await send(fifo, ['{}']);
      assert.equal(r.code, 2, r.all);
      assert.match(r.stderr, /a FIFO queue needs a message group: give --group-id ID, or --group-id-from \/POINTER/);
      assert.deepEqual(sqs.counts(url), { visible: 0, inFlight: 0, delayed: 0 });
      assert.deepEqual(sqs.counts(fifo), { visible: 0, inFlight: 0, delayed: 0 });
    });

    it('needs a dedup id unless the queue has content-based deduplication, which it reads from the queue', async () => {
      const { url } = await sqs.createQueue(`dedupoff${++n}.fifo`, { baseUrl: proxy.endpoint });
      const r = await send(url, ['--group-id', 'g', '{"a":1}']);
      assert.equal(r.code, 2, r.all);
      assert.match(r.stderr, /the FIFO queue has no content-based deduplication: give --dedup-id ID or --dedup-id-from \/POINTER/);
      assert.equal(sqs.requests.filter((q) => q.op.startsWith('SendMessage') && q.body.QueueUrl === url).length, 0,
        'nothing was sent');
      const { url: on } = await sqs.createQueue(`dedupon${++n}.fifo`, { baseUrl: proxy.endpoint,
        attributes: { ContentBasedDeduplication: 'true' } });
      const ok = await send(on, ['--group-id', 'g', '{"a":1}']);
      assert.equal(ok.code, 0, ok.all);
      assert.equal(sqs.counts(on).visible, 1);
    });

    it('takes each group and dedup id from the body; a duplicate within the window is dropped by SQS', async () => {
      const { url } = await sqs.createQueue(`ids${++n}.fifo`, { baseUrl: proxy.endpoint });
      const bodies = ['{"tenant":"acme","id":"1"}', '{"tenant":"zeta","id":"2"}', '{"tenant":"acme","id":"3"}'];
      const args = ['--group-id-from', '/tenant', '--dedup-id-from', '/id'];
      const r = await send(url, args, bodies.join('\n') + '\n');
      assert.equal(r.code, 0, r.all);
      const ids = r.stdout.trim().split('\n');
      assert.equal(ids.length, 3);
      const batch = sqs.requests.filter((q) => q.op === 'SendMessageBatch' && q.body.QueueUrl === url);
      assert.equal(batch.length, 1);
      assert.deepEqual(batch[0].body.Entries.map((e) => [e.MessageGroupId, e.MessageDeduplicationId]),
        [['acme', '1'], ['zeta', '2'], ['acme', '3']]);
      // the same dedup ids again: SQS answers with the first MessageIds and keeps one copy
      const again = await send(url, args, bodies.join('\n') + '\n');
      assert.equal(again.code, 0, again.all);
      assert.deepEqual(again.stdout.trim().split('\n'), ids);
      assert.equal(sqs.counts(url).visible, 3);
      const got = await sqs.drain(url);
      assert.deepEqual(got.map((m) => [m.Body, m.Attributes.MessageGroupId]).sort(),
        bodies.map((b) => [b, JSON.parse(b).tenant]).sort());
      // one dedup id for several messages would keep only the first: refused
      const one = await send(url, ['--group-id', 'g', '--dedup-id', 'd'], '{"a":1}\n{"a":2}\n');
      assert.equal(one.code, 2, one.all);
      assert.match(one.stderr, /--dedup-id gives all 2 messages one deduplication id, so SQS would keep only the first/);
      assert.equal(sqs.counts(url).visible, 0);
      // a body whose pointer names no string: refused, naming the line, nothing sent
      const bad = await send(url, args, '{"tenant":"a","id":"9"}\n{"tenant":7,"id":"8"}\n');
      assert.equal(bad.code, 2, bad.all);
      assert.match(bad.stderr, /line 2: --group-id-from \/tenant: \/tenant names a number, not a string/);
      assert.equal(sqs.counts(url).visible, 0);
    });
  });

  describe('check', () => {
    const row = (out, name) => out.split('\n').find((l) => l.slice(6, 18).trim() === name) ?? '';

    it('says FIFO and deduplication, and warns about a FIFO queue without a dead-letter queue', async () => {
      const { url } = await sqs.createQueue(`chk${++n}.fifo`, { baseUrl: proxy.endpoint });
      const r = await start(['check'], fullEnv(url)).exit;
      assert.equal(r.code, 0, r.all);
      assert.match(row(r.stdout, 'sqs queue'), /^warn {2}sqs queue {3}\S+ \(0 visible, 0 in flight, 0 delayed; FIFO: yes, content-based deduplication off; no redrive policy: .*holding their message group back/);
      assert.match(row(r.stdout, 'config'), /ack on exit$/, 'exit is the default on a FIFO queue');
      const { url: dlq, dlqArn } = await sqs.createQueue(`chkdlq${++n}.fifo`, { baseUrl: proxy.endpoint,
        redriveToDlq: 3, attributes: { ContentBasedDeduplication: 'true' } });
      const ok = await start(['check'], fullEnv(dlq, { LAMBDO_ACK: 'create' })).exit;
      assert.equal(ok.code, 0, ok.all);
      assert.match(row(ok.stdout, 'sqs queue'), new RegExp(`^ok {4}sqs queue .*FIFO: yes, content-based deduplication on; redrive to ${dlqArn} after 3 receives\\)$`));
      assert.match(ok.stdout, /^warn {2}config {6}LAMBDO_ACK=create on a FIFO queue: a message group's order is kept within a Machine, not across Machines/m);
    });

    // Real SQS answers InvalidAttributeName "Unknown Attribute FifoQueue." when a standard
    // queue is asked for its FIFO attributes; fauxqs does not, so the proxy does here.
    it('asks a standard queue for no FIFO attribute (SQS refuses them there)', async () => {
      const { url, dlqArn } = await queue('stdchk', { redriveToDlq: 4 });
      proxy.fault = (op, body) => (op === 'GetQueueAttributes' && !body.QueueUrl.endsWith('.fifo')
        && body.AttributeNames.some((a) => a === 'FifoQueue' || a === 'ContentBasedDeduplication')
        ? sqsError('InvalidAttributeName', 'Unknown Attribute FifoQueue.') : null);
      try {
        const r = await start(['check'], fullEnv(url)).exit;
        assert.equal(r.code, 0, r.all);
        assert.match(row(r.stdout, 'sqs queue'), new RegExp(`^ok {4}sqs queue .*; FIFO: no; redrive to ${dlqArn} after 4 receives\\)$`));
      } finally {
        proxy.fault = null;
      }
    });
  });

  describe('daemon', () => {
    it('keeps each message group in order across Machines: the next starts after the previous Machine exited', async () => {
      const { url } = await sqs.createQueue(`order${++n}.fifo`, { baseUrl: proxy.endpoint, redriveToDlq: 5 });
      const image = 'registry.fly.io/sleep:400';
      const groups = ['g1', 'g2', 'g3'];
      const per = 4;
      for (let i = 0; i < per; i++) {
        for (const g of groups) {
          await sqs.send(url, JSON.stringify({ g, i }), { image }, { groupId: g, dedupId: `${g}-${i}` });
        }
      }
      const before = fly.machines.length;
      const r = start([], fullEnv(url, { LAMBDO_EVENTS_PER_MACHINE: '10', LAMBDO_LOG_LEVEL: 'debug' }));
      running.push(r);
      await until(() => {
        const c = sqs.counts(url);
        return c.visible === 0 && c.inFlight === 0 && fly.machines.slice(before).every((m) => m.exitedAt);
      }, 'the queue drained and every Machine exited');
      await r.stop();
      assert.equal(r.code, 0, r.all);
      const mine = fly.machines.slice(before).sort((a, b) => a.requestSeq - b.requestSeq);
      assert.ok(mine.length >= per, `at least one Machine per round:\n${r.all}`);
      for (const g of groups) {
        // the group's events in Machine creation order, then file order
        const seen = mine.flatMap((m) => m.events.filter((e) => e.g === g).map((e) => ({ i: e.i, m })));
        assert.deepEqual(seen.map((s) => s.i), [0, 1, 2, 3], `group ${g} in order:\n${r.all}`);
        for (let k = 1; k < seen.length; k++) {
          const prev = seen[k - 1].m, next = seen[k].m;
          if (prev === next) continue;
          const created = next.machineEvents.find((e) => e.type === 'launch').timestamp;
          assert.ok(created >= prev.exitedAt,
            `group ${g}: event ${k} started (${created}) before the Machine of event ${k - 1} exited (${prev.exitedAt})`);
        }
      }
      assert.match(r.stderr, /ack on exit \(the default on a FIFO queue: it keeps each message group's order across Machines\)/);
    });

    // fauxqs hands out one message per group per receive; real SQS may hand out several. The
    // proxy makes two messages of two groups look like one group in one answer: bound for two
    // Machines (two images), the second must go back at once, not run beside the first.
    it('returns at once a message whose group\'s earlier message is bound for another Machine', async () => {
      const { url } = await sqs.createQueue(`split${++n}.fifo`, { baseUrl: proxy.endpoint, redriveToDlq: 5 });
      const first = await sqs.send(url, '{"k":1}', { image: 'registry.fly.io/sleep:1000' }, { groupId: 'a', dedupId: 'a1' });
      const second = await sqs.send(url, '{"k":2}', { image: 'registry.fly.io/sleep:100' }, { groupId: 'b', dedupId: 'b1' });
      proxy.fault = (op) => (op !== 'ReceiveMessage' ? null : {
        transform(json) {
          for (const m of json.Messages ?? []) if (m.Attributes?.MessageGroupId) m.Attributes.MessageGroupId = 'same';
          return json;
        },
      });
      const before = fly.machines.length;
      const r = start([], fullEnv(url));
      running.push(r);
      try {
        await until(() => fly.machines.slice(before).filter((m) => m.exitedAt).length === 2
          && sqs.counts(url).visible === 0 && sqs.counts(url).inFlight === 0, `both messages run\n${r.stderr}`);
      } finally {
        proxy.fault = null;
      }
      await r.stop();
      const mine = fly.machines.slice(before);
      const m1 = mine.find((m) => m.events.some((e) => e.k === 1));
      const m2 = mine.find((m) => m.events.some((e) => e.k === 2));
      assert.notEqual(m1, m2);
      assert.match(r.stderr, new RegExp(`message ${second} of FIFO group same returned`), r.stderr);
      assert.doesNotMatch(r.stderr, new RegExp(`message ${first} of FIFO group same returned`));
      const back = proxy.ops('ChangeMessageVisibilityBatch').find((q) => q.body.QueueUrl === url
        && q.body.Entries.some((e) => e.VisibilityTimeout === 0));
      assert.ok(back, 'the second message was made visible again at once');
      assert.equal(back.body.Entries.length, 1);
      const launched = (m) => m.machineEvents.find((e) => e.type === 'launch').timestamp;
      assert.ok(launched(m2) >= back.at, 'its Machine started only after it came back');
      assert.equal(mine.length, 2, 'each ran once');
    });

    it('says at start-up that LAMBDO_ACK=create on a FIFO queue does not keep the order across Machines', async () => {
      const { url } = await sqs.createQueue(`create${++n}.fifo`, { baseUrl: proxy.endpoint, redriveToDlq: 5 });
      const r = start([], fullEnv(url, { LAMBDO_ACK: 'create' }));
      running.push(r);
      await until(() => /starting: /.test(r.stderr), `the start-up line\n${r.stderr}`);
      await r.stop();
      assert.match(r.stderr, /ack on create, /);
      assert.match(r.stderr, /LAMBDO_ACK=create on a FIFO queue: a message group's order is kept within a Machine, not across Machines/);
    });
  });
});
