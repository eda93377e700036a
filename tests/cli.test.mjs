// `lambdo send` and `lambdo check` end to end: fauxqs behind the SigV4-verifying proxy (plain
// HTTP, and HTTPS with the test CA), the HTTPS test Fly API. Messages sent by lambdo are read
// back with @aws-sdk/client-sqs, bodies compared byte for byte.
//   node --test tests/cli.test.mjs
import { describe, it, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { ReceiveMessageCommand } from '@aws-sdk/client-sqs';
import { startSqs } from './lib/fauxqs.mjs';
import { startSqsProxy } from './lib/sqsproxy.mjs';
import { startFlyApi } from './lib/flyapi.mjs';
import { testCerts } from './lib/certs.mjs';
import { lambdoCommand } from './lib/tools.mjs';

const REGION = 'us-east-1';
const CREDS = { accessKeyId: 'AKIDLAMBDOCLI', secretAccessKey: 'lambdo/cli+test+secret/42' };
const TOKEN = 'fo1_cli_test_token_do_not_log';
const APP = 'lambdo-jobs';
const SECRETS = [CREDS.secretAccessKey, TOKEN, 'wrong/secret/value', 'fo1_wrong_token_value'];
const IMAGE = 'registry.fly.io/cli-test:1';

// Runs lambdo with exactly env (nothing inherited but PATH), input on stdin.
function run(args, env, input = '') {
  const [cmd, ...rest] = lambdoCommand(args);
  return new Promise((resolve, reject) => {
    const proc = spawn(cmd, rest, { env: { PATH: process.env.PATH, ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => proc.kill('SIGKILL'), 30000);
    proc.stdout.on('data', (d) => { stdout += d; });
    proc.stderr.on('data', (d) => { stderr += d; });
    proc.on('error', reject);
    proc.on('exit', (code, signal) => {
      clearTimeout(timer);
      const all = stdout + stderr;
      for (const s of SECRETS) assert.ok(!all.includes(s), `a secret appeared in lambdo's output:\n${all}`);
      resolve({ code, signal, stdout, stderr, all: `--- stdout:\n${stdout}--- stderr:\n${stderr}` });
    });
    proc.stdin.on('error', () => {});  // lambdo may exit before reading it all
    proc.stdin.end(input);
  });
}

const lines = (s) => s.split('\n').filter((l) => l !== '');

describe('lambdo send and check', () => {
  let sqs, proxy, tlsProxy, fly, certs, n = 0;

  before(async () => {
    certs = testCerts();
    sqs = await startSqs({ region: REGION });
    proxy = await startSqsProxy({ target: sqs.endpoint, ...CREDS, region: REGION });
    tlsProxy = await startSqsProxy({ target: sqs.endpoint, ...CREDS, region: REGION, tls: true });
    fly = await startFlyApi({ token: TOKEN, app: APP });
  });
  after(async () => {
    await fly.close();
    await tlsProxy.close();
    await proxy.close();
    await sqs.close();
  });
  afterEach(() => {
    proxy.fault = null;
    proxy.reset();
    tlsProxy.reset();
  });

  const queue = (opts = {}) => sqs.createQueue(`cli${++n}`, { baseUrl: proxy.endpoint, ...opts });

  // The SQS half of the configuration only: send needs nothing of Fly.
  const sqsEnv = (url, extra = {}) => ({
    LAMBDO_SQS_QUEUE_URL: url,
    AWS_REGION: REGION,
    AWS_ACCESS_KEY_ID: CREDS.accessKeyId,
    AWS_SECRET_ACCESS_KEY: CREDS.secretAccessKey,
    SSL_CERT_FILE: certs.caFile,
    ...extra,
  });
  const fullEnv = (url, extra = {}) => sqsEnv(url, {
    LAMBDO_FLY_TOKEN: TOKEN,
    LAMBDO_FLY_APP: APP,
    LAMBDO_FLY_REGION: 'iad',
    LAMBDO_FLY_REGIONS: 'ord',
    LAMBDO_FLY_API_URL: fly.url,
    ...extra,
  });

  async function receiveAll(url) {
    const all = [];
    for (;;) {
      const out = await sqs.client.send(new ReceiveMessageCommand({
        QueueUrl: url, MaxNumberOfMessages: 10, WaitTimeSeconds: 0, VisibilityTimeout: 60,
        MessageAttributeNames: ['All'], MessageSystemAttributeNames: ['All'],
      }));
      if (!out.Messages?.length) return all;
      all.push(...out.Messages);
    }
  }

  const attrsOf = (m) => Object.fromEntries(Object.entries(m.MessageAttributes ?? {})
    .map(([k, v]) => [k, `${v.DataType}:${v.StringValue}`]));

  describe('send', () => {
    it('sends one body with its attributes, byte for byte', async () => {
      const { url } = await queue();
      const body = '{"big":12345678901234567890.123456789e-5, "esc":"\\"q\\" \\\\ \\u2028 \\ud83d\\ude00",'
        + ' "utf8":"é日\u2028\u2029", "k":[1 ,2]}';
      const command = '["node", "-e", "console.log(\\"é\\")"]';
      const r = await run(['send', '--image', IMAGE, '--size', 'shared-cpu-1x', '--command', command, body],
        sqsEnv(url));
      assert.equal(r.code, 0, r.all);
      const ids = lines(r.stdout);
      assert.equal(ids.length, 1, r.all);
      assert.equal(r.stderr, '');

      const sent = proxy.ops('SendMessage');
      assert.equal(sent.length, 1);
      assert.equal(sent[0].authorized, true, sent[0].reason);
      assert.equal(sent[0].body.MessageBody, body, 'the request encodes exactly the body');

      const got = await receiveAll(url);
      assert.equal(got.length, 1);
      assert.equal(got[0].MessageId, ids[0]);
      assert.equal(got[0].Body, body);
      assert.deepEqual(Buffer.from(got[0].Body, 'utf8'), Buffer.from(body, 'utf8'));
      assert.deepEqual(attrsOf(got[0]), {
        image: `String:${IMAGE}`, size: 'String:shared-cpu-1x', command: `String:${command}`,
      });
    });

    it('sends over HTTPS (the CA bundle of SSL_CERT_FILE), only the attributes given', async () => {
      const { url } = await sqs.createQueue(`cli${++n}`, { baseUrl: tlsProxy.endpoint });
      const r = await run(['send', `--image=${IMAGE}`, '--', '-12.5e3'], sqsEnv(url));
      assert.equal(r.code, 0, r.all);
      assert.equal(tlsProxy.ops('SendMessage').length, 1);
      const got = await receiveAll(url);
      assert.equal(got.length, 1);
      assert.equal(got[0].Body, '-12.5e3');
      assert.deepEqual(attrsOf(got[0]), { image: `String:${IMAGE}` });
    });

    it('sends 25 stdin lines as 25 messages, 10 at a time', async () => {
      const { url } = await queue();
      const bodies = Array.from({ length: 25 }, (_, i) => (i % 5 === 0
        ? `{"i":${i},"n":123456789012345678901234567890,"s":"\\u00e9\\n\\t",\t"t":1}`
        : `{"i":${i}}`));
      bodies[7] = ` [ "seven" , ${'9'.repeat(40)} ]\r`;   // whitespace and a CR are body bytes
      const input = bodies.map((b, i) => (i === 3 ? `${b}\n\n   \n` : `${b}\n`)).join('');
      const r = await run(['send', '--image', IMAGE, '--size', 'performance-1x'], sqsEnv(url), input);
      assert.equal(r.code, 0, r.all);
      const ids = lines(r.stdout);
      assert.equal(ids.length, 25, r.all);
      assert.equal(new Set(ids).size, 25);

      const batches = proxy.ops('SendMessageBatch');
      assert.deepEqual(batches.map((b) => b.body.Entries.length), [10, 10, 5]);
      assert.ok(batches.every((b) => b.authorized));
      assert.deepEqual(batches.flatMap((b) => b.body.Entries.map((en) => en.MessageBody)), bodies,
        'in order, each body exactly');

      const got = await receiveAll(url);
      assert.equal(got.length, 25);
      assert.deepEqual(new Set(got.map((m) => m.MessageId)), new Set(ids));
      const byId = new Map(got.map((m) => [m.MessageId, m]));
      ids.forEach((id, i) => {
        assert.equal(byId.get(id).Body, bodies[i], `line ${i + 1}'s message id is the ${i + 1}th line printed`);
        assert.deepEqual(attrsOf(byId.get(id)), { image: `String:${IMAGE}`, size: 'String:performance-1x' });
      });
    });

    it('refuses an invalid line before sending anything, naming it (exit 2)', async () => {
      const { url } = await queue();
      const input = '{"ok":1}\n{"ok":2}\n{"a":01}\n{"ok":4}\n';
      const r = await run(['send', '--image', IMAGE], sqsEnv(url), input);
      assert.equal(r.code, 2, r.all);
      assert.match(r.stderr, /line 3: body is not valid JSON \(at byte 5: leading zero/);
      assert.doesNotMatch(r.stderr, /line [124]:/);
      assert.match(r.stderr, /1 of 4 lines invalid; nothing was sent/);
      assert.equal(r.stdout, '');
      assert.equal(proxy.requests.length, 0, 'no request at all');
      assert.deepEqual(sqs.counts(url), { visible: 0, inFlight: 0, delayed: 0 });
    });

    it('refuses every invalid line, by the daemon\'s rules and SQS\'s', async () => {
      const { url } = await queue();
      const input = ['1', '"\\ud800"', '[1,]', '"\uFFFF"', 'null', ''].join('\n');
      const r = await run(['send', '--image', IMAGE], sqsEnv(url), input);
      assert.equal(r.code, 2, r.all);
      assert.match(r.stderr, /line 2: body is not valid JSON/);
      assert.match(r.stderr, /line 3: body is not valid JSON/);
      assert.match(r.stderr, /line 4: body has U\+FFFE or U\+FFFF, which SQS does not accept/);
      assert.doesNotMatch(r.stderr, /line [15]:/);
      assert.equal(proxy.requests.length, 0);
    });

    it('refuses an invalid --command, --size or missing --image (exit 2)', async () => {
      const { url } = await queue();
      for (const [args, re] of [
        [['--image', IMAGE, '--command', '["node", 1]', '{"a":1}'], /attribute command: element 2 is not a string/],
        [['--image', IMAGE, '--command', 'node index.js'], /attribute command: not valid JSON/],
        [['--image', IMAGE, '--command', '[]', '{"a":1}'], /attribute command: empty array/],
        [['--image', IMAGE, '--size', 'performance-3x'], /attribute size: .*is not a Fly preset/],
        [['--image', 'two words', '{"a":1}'], /attribute image: /],
      ]) {
        const r = await run(['send', ...args], sqsEnv(url), '{"a":1}\n');
        assert.equal(r.code, 2, `${args.join(' ')}\n${r.all}`);
        assert.match(r.stderr, re);
        assert.match(r.stderr, /nothing was sent/);
      }
      const r = await run(['send', '{"a":1}'], sqsEnv(url));
      assert.equal(r.code, 2, r.all);
      assert.match(r.stderr, /--image is required/);
      assert.match(r.stderr, /usage: lambdo send/);
      const u = await run(['send', '--image', IMAGE, '--sise', 'x'], sqsEnv(url));
      assert.equal(u.code, 2);
      assert.match(u.stderr, /unknown option "--sise"/);
      assert.equal(proxy.requests.length, 0);
      assert.deepEqual(sqs.counts(url), { visible: 0, inFlight: 0, delayed: 0 });
    });

    it('needs no Fly variable, and --queue stands in for LAMBDO_SQS_QUEUE_URL', async () => {
      const { url } = await queue();
      const env = sqsEnv(url);
      delete env.LAMBDO_SQS_QUEUE_URL;
      const r = await run(['send', '--image', IMAGE, '--queue', url, '"x"'], env);
      assert.equal(r.code, 0, r.all);
      assert.equal((await receiveAll(url))[0].Body, '"x"');
      const bad = await run(['send', '--image', IMAGE, '--queue', 'ftp://x/1/q', '"x"'], env);
      assert.equal(bad.code, 2, bad.all);
      assert.match(bad.stderr, /^lambdo send: --queue: /);
      const none = await run(['send', '--image', IMAGE, '"x"'], env);
      assert.equal(none.code, 2);
      assert.match(none.stderr, /configuration: LAMBDO_SQS_QUEUE_URL: required, not set/);
    });

    it('names the lines SQS refused and still sends the others (exit 1)', async () => {
      const { url } = await queue({ attributes: { MaximumMessageSize: '1024' } });
      const big = `"${'x'.repeat(2000)}"`;
      const input = ['1', '2', big, '4'].join('\n');
      const r = await run(['send', '--image', IMAGE], sqsEnv(url), input);
      assert.equal(r.code, 1, r.all);
      assert.equal(lines(r.stdout).length, 3, r.all);
      assert.match(r.stderr, /line 3: not sent: InvalidParameterValue: .*shorter than 1024 bytes/);
      assert.match(r.stderr, /1 of 4 messages not sent/);
      const got = await receiveAll(url);
      assert.deepEqual(got.map((m) => m.Body).sort(), ['1', '2', '4']);
    });

    it('retries a batch SQS failed as a whole, sending each message once', async () => {
      const { url } = await queue();
      let failures = 0;
      proxy.fault = (op) => (op === 'SendMessageBatch' && failures++ === 0
        ? { status: 500, body: { __type: 'com.amazon.coral.service#InternalFailure', message: 'test failure' } }
        : null);
      const r = await run(['send', '--image', IMAGE], sqsEnv(url), '1\n2\n3\n');
      assert.equal(r.code, 0, r.all);
      assert.equal(lines(r.stdout).length, 3);
      assert.match(r.stderr, /InternalFailure.*retrying/);
      assert.equal(proxy.ops('SendMessageBatch').length, 2);
      assert.equal((await receiveAll(url)).length, 3);
    });

    it('stops on refused credentials: SQS\'s words, exit 1, nothing sent', async () => {
      const { url } = await queue();
      const input = Array.from({ length: 15 }, (_, i) => `${i}`).join('\n');
      const r = await run(['send', '--image', IMAGE], sqsEnv(url, { AWS_SECRET_ACCESS_KEY: 'wrong/secret/value' }), input);
      assert.equal(r.code, 1, r.all);
      assert.equal(r.stdout, '');
      assert.match(r.stderr, /lines 1 to 10 not sent: SignatureDoesNotMatch/);
      assert.match(r.stderr, /stopping: lines 11 to 15 not tried/);
      assert.equal(proxy.ops('SendMessageBatch').length, 1, 'not retried');
      const one = await run(['send', '--image', IMAGE, '1'], sqsEnv(url, { AWS_SECRET_ACCESS_KEY: 'wrong/secret/value' }));
      assert.equal(one.code, 1);
      assert.match(one.stderr, /SQS SendMessage failed: SignatureDoesNotMatch/);
      assert.deepEqual(sqs.counts(url), { visible: 0, inFlight: 0, delayed: 0 });
    });
  });

  describe('check', () => {
    const rows = (out) => lines(out).map((l) => ({ status: l.slice(0, 6).trim(), name: l.slice(6, 18).trim(), reason: l.slice(18) }));
    const row = (r, name) => rows(r.stdout).find((x) => x.name === name);

    it('all ok: configuration, CA bundle, queue with its counts and redrive, Fly app', async () => {
      const { url, dlqArn } = await sqs.createQueue(`cli${++n}`, { baseUrl: tlsProxy.endpoint, redriveToDlq: 5 });
      await sqs.send(url, '{"a":1}', { image: IMAGE });
      await sqs.send(url, '{"a":2}', { image: IMAGE });
      const r = await run(['check'], fullEnv(url));
      assert.equal(r.code, 0, r.all);
      assert.deepEqual(rows(r.stdout).map((x) => `${x.status} ${x.name}`),
        ['ok config', 'ok ca bundle', 'ok sqs queue', 'ok fly app'], r.all);
      assert.match(r.stdout, /^ok {4}config {6}SQS region us-east-1, Fly app lambdo-jobs in iad,ord, ack on create$/m);
      assert.equal(row(r, 'ca bundle').reason, `${certs.caFile} (1 certificates)`);
      assert.equal(row(r, 'sqs queue').reason,
        `${url} (2 visible, 0 in flight, 0 delayed; redrive to ${dlqArn} after 5 receives)`);
      assert.equal(row(r, 'fly app').reason, `${APP} at ${fly.url} (token accepted)`);
      assert.equal(tlsProxy.ops('GetQueueAttributes').length, 1);
      assert.ok(tlsProxy.ops('GetQueueAttributes')[0].authorized);
      assert.ok(fly.requests.some((q) => q.op === 'Apps_show' && q.status === 200));
    });

    it('warns about a queue without a redrive policy (exit 0)', async () => {
      const { url } = await queue();
      const r = await run(['check'], fullEnv(url));
      assert.equal(r.code, 0, r.all);
      const q = row(r, 'sqs queue');
      assert.equal(q.status, 'warn');
      assert.match(q.reason, /^\S+ \(0 visible, 0 in flight, 0 delayed; no redrive policy: .*dead-letter queue\)$/);
    });

    it('fails on a refused Fly token, and on a missing app', async () => {
      const { url } = await queue({ redriveToDlq: 3 });
      const bad = await run(['check'], fullEnv(url, { LAMBDO_FLY_TOKEN: 'fo1_wrong_token_value' }));
      assert.equal(bad.code, 1, bad.all);
      assert.equal(row(bad, 'sqs queue').status, 'ok');
      assert.equal(row(bad, 'fly app').status, 'fail');
      assert.match(row(bad, 'fly app').reason, /^token refused \(HTTP 401: /);
      const missing = await run(['check'], fullEnv(url, { LAMBDO_FLY_APP: 'no-such-app' }));
      assert.equal(missing.code, 1, missing.all);
      assert.match(row(missing, 'fly app').reason, /^app no-such-app not found \(HTTP 404: app not found\)$/);
    });

    it('fails on a wrong AWS secret with SQS\'s words, and on a missing queue', async () => {
      const { url } = await queue({ redriveToDlq: 3 });
      const r = await run(['check'], fullEnv(url, { AWS_SECRET_ACCESS_KEY: 'wrong/secret/value' }));
      assert.equal(r.code, 1, r.all);
      const q = row(r, 'sqs queue');
      assert.equal(q.status, 'fail');
      assert.match(q.reason, /^credentials refused: SignatureDoesNotMatch: .* \(HTTP 403\)$/);
      assert.equal(row(r, 'fly app').status, 'ok', 'the other checks still run');
      const gone = await run(['check'], fullEnv(`${proxy.endpoint}/000000000000/no-such-queue`));
      assert.equal(gone.code, 1, gone.all);
      assert.match(row(gone, 'sqs queue').reason, /^queue not found: QueueDoesNotExist/);
    });

    it('reports a Fly API whose certificate no CA of the bundle issued as a TLS failure', async () => {
      const rogue = await startFlyApi({ token: TOKEN, app: APP, cert: 'untrusted' });
      try {
        const { url } = await queue({ redriveToDlq: 3 });
        const r = await run(['check'], fullEnv(url, { LAMBDO_FLY_API_URL: rogue.url }));
        assert.equal(r.code, 1, r.all);
        const f = row(r, 'fly app');
        assert.equal(f.status, 'fail');
        assert.match(f.reason, /^TLS: .*certificate for localhost is not trusted/);
        assert.equal(rogue.requests.length, 0, 'no request went out over the untrusted connection');
      } finally {
        await rogue.close();
      }
    });

    it('checks no Fly API with LAMBDO_BACKEND=local', async () => {
      const { url } = await queue({ redriveToDlq: 3 });
      const r = await run(['check'], sqsEnv(url, { LAMBDO_BACKEND: 'local' }));
      assert.equal(r.code, 0, r.all);
      assert.deepEqual(rows(r.stdout).map((x) => `${x.status} ${x.name}`),
        ['ok config', 'ok ca bundle', 'ok sqs queue', 'ok backend'], r.all);
      assert.match(row(r, 'config').reason, /local backend/);
    });

    it('stops at a configuration error, printed as a failed check', async () => {
      const { url } = await queue();
      const env = fullEnv(url);
      delete env.LAMBDO_FLY_APP;
      const r = await run(['check'], env);
      assert.equal(r.code, 1, r.all);
      assert.equal(r.stdout, 'fail  config      LAMBDO_FLY_APP (or FLY_APP_NAME): required, not set\n');
      assert.equal(proxy.requests.length, 0);
      const u = await run(['check', '--bogus'], env);
      assert.equal(u.code, 2);
      assert.match(u.stderr, /usage: lambdo check/);
    });

    it('fails on a CA bundle that cannot be read, and the HTTPS checks with it', async () => {
      const { url } = await queue({ redriveToDlq: 3 });
      const r = await run(['check'], fullEnv(url, { SSL_CERT_FILE: '/nonexistent/ca.pem' }));
      assert.equal(r.code, 1, r.all);
      assert.match(row(r, 'ca bundle').reason, /cannot open CA bundle \/nonexistent\/ca\.pem/);
      assert.equal(row(r, 'sqs queue').status, 'ok', 'plain HTTP needs no CA');
      assert.equal(row(r, 'fly app').status, 'fail');
      assert.match(row(r, 'fly app').reason, /needs trust anchors/);
    });
  });
});
