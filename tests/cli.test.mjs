// `lambdo send` and `lambdo check` end to end: fauxqs behind the SigV4-verifying proxy (plain
// HTTP, and HTTPS with the test CA), the HTTPS test Fly API. Messages sent by lambdo are read
// back with @aws-sdk/client-sqs, bodies compared byte for byte.
//   node --test tests/cli.test.mjs
import { describe, it, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ReceiveMessageCommand } from '@aws-sdk/client-sqs';
import { startSqs } from './lib/fauxqs.mjs';
import { startSqsProxy } from './lib/sqsproxy.mjs';
import { startFlyApi } from './lib/flyapi.mjs';
import { testCerts } from './lib/certs.mjs';
import { lambdoCommand, ROOT } from './lib/tools.mjs';

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
const scratch = mkdtempSync(path.join(tmpdir(), 'lambdo-cli-'));

// The variables README.md names, but that are not lambdo's configuration (so --help need
// not list them), each with the reason.
const NOT_CONFIGURATION = new Map([
  ['EVENTS_PATH', 'lambdo sets it for the handler'],
  ['EVENTS_META_PATH', 'lambdo sets it for the handler'],
  ['LAMBDO_HANDLER', 'read by the runtimes in runtimes/, not by lambdo'],
  ['LAMBDO_SIGV4_SUITE', 'read by tests/run'],
  ['LAMBDO_FUZZ_SECONDS', 'read by tests/run'],
  ['BR_HOT', 'a Makefile variable: the BearSSL files built with -O3'],
  ['SIGV4_MAX_CANONICAL', 'a limit in sigv4.h, not a setting'],
  ['HTTP_KEEP_BUF', 'a limit in http.c, not a setting'],
]);

describe('command line, without any server', () => {
  it('--help lists every variable README.md lists', async () => {
    const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
    const names = new Set([...readme.matchAll(/`([A-Z][A-Z0-9]*_[A-Z0-9_]+)`/g)].map((m) => m[1]));
    assert.ok(names.size > 40, `only ${names.size} variables found in README.md`);
    for (const n of ['LAMBDO_BACKEND', 'LAMBDO_LOCAL_COMMAND', 'LAMBDO_METRICS_ADDR', 'AWS_ROLE_ARN', 'AWS_PROFILE'])
      assert.ok(names.has(n), `${n} no longer found in README.md: the extraction is broken`);
    const h = await run(['--help'], {});
    assert.equal(h.code, 0, h.all);
    const missing = [...names].filter((n) => !NOT_CONFIGURATION.has(n)
      && !new RegExp(`(^|[^A-Z0-9_])${n}([^A-Z0-9_]|$)`, 'm').test(h.stdout));
    assert.deepEqual(missing, [], `lambdo --help does not mention these variables of README.md`);
    for (const n of NOT_CONFIGURATION.keys()) assert.ok(names.has(n), `${n} is gone from README.md: drop it here`);
  });

  it('an unknown argument is one line pointing at --help (exit 2)', async () => {
    for (const [args, want] of [
      [['--frobnicate'], 'lambdo: unknown argument "--frobnicate" (see lambdo --help)\n'],
      [['--once', '--now'], 'lambdo: unknown argument "--now" (see lambdo --help)\n'],
      [['send', '--image', IMAGE, '--sise', 'x'], 'lambdo send: unknown option "--sise" (see lambdo send --help)\n'],
      [['send', '{}'], 'lambdo send: --image is required (the image the Machine runs) (see lambdo send --help)\n'],
      [['check', '--bogus'], 'lambdo check: unknown argument "--bogus" (see lambdo check --help)\n'],
    ]) {
      const r = await run(args, {});
      assert.equal(r.code, 2, r.all);
      assert.equal(r.stderr, want);
      assert.equal(r.stdout, '');
    }
  });

  it('./build.sh --help and an unknown argument print the usage and exit 2', () => {
    const help = spawnSync(path.join(ROOT, 'build.sh'), ['--help'], { encoding: 'utf8', timeout: 10000 });
    assert.equal(help.status, 2, help.stderr);
    assert.match(help.stdout, /^usage: \.\/build\.sh \[test \| demo\]/);
    assert.equal(help.stderr, '', 'nothing was built or installed');
    const bad = spawnSync(path.join(ROOT, 'build.sh'), ['tset'], { encoding: 'utf8', timeout: 10000 });
    assert.equal(bad.status, 2, bad.stderr);
    assert.match(bad.stderr, /^build\.sh: unknown argument "tset"\nusage: \.\/build\.sh/);
    assert.equal(bad.stdout, '');
  });

  it('names every configuration problem in one run, one line each (exit 2)', async () => {
    const env = {
      LAMBDO_SQS_QUEUE_URL: 'http://sqs.eu-west-1.amazonaws.com/123456789012/jobs',
      AWS_ACCESS_KEY_ID: CREDS.accessKeyId, AWS_SECRET_ACCESS_KEY: CREDS.secretAccessKey,
      LAMBDO_FLY_TOKEN: TOKEN, LAMBDO_FLY_REGION: 'iad', LAMBDO_FLY_REGIONS: 'ord,,ewr',
      LAMBDO_ENV: 'prod', LAMBDO_MAX_MACHINES: '',
    };
    const want = [
      'LAMBDO_ENV: must be local or production, got "prod"',
      'LAMBDO_MAX_MACHINES: must be a whole number from 1 to 1000, got ""',
      'LAMBDO_SQS_QUEUE_URL: http:// to AWS: use https://',
      'LAMBDO_FLY_APP (or FLY_APP_NAME): required, not set',
      'LAMBDO_FLY_REGIONS: has an empty item (a comma too many)',
    ];
    const d = await run(['--once'], env);
    assert.equal(d.code, 2, d.all);
    assert.equal(d.stderr, want.map((l) => `lambdo: configuration: ${l}\n`).join(''));
    const c = await run(['check'], env);
    assert.equal(c.code, 2, c.all);
    assert.equal(c.stdout, want.map((l) => `fail  config      ${l}\n`).join(''));
    const m = await run(['--once'], { ...env, LAMBDO_SQS_QUEUE_URL: 'https://sqs.eu-west-1.amazonaws.com/1/q',
      AWS_REGION: 'us-east-1', LAMBDO_ENV: 'production', LAMBDO_MAX_MACHINES: '5', LAMBDO_FLY_APP: 'a',
      LAMBDO_FLY_REGIONS: 'ord' });
    assert.equal(m.code, 2, m.all);
    assert.equal(m.stderr, 'lambdo: configuration: AWS_REGION: "us-east-1", but the queue URL is in '
      + 'eu-west-1: set it to eu-west-1 or unset it\n');
  });
});

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

    it('sends each element of a JSON array file, byte for byte (--array)', async () => {
      const { url } = await queue();
      const elements = [
        '{"id":1,"big":12345678901234567890123,"f":1.10,"e":-0.0e-0}',
        '12345678901234567890123',
        '1.10000000000000000000001',
        '{\n    "pretty": [1.50, 2E+3],\n    "s": "\\u00e9\\ud83d\\ude00 é"\n  }',
        '"x"', '[]', 'null',
        ...Array.from({ length: 6 }, (_, i) => `{"i":${i},"n":${'9'.repeat(30)}.000}`),
      ];
      const file = path.join(scratch, 'jobs.json');
      writeFileSync(file, `[\n  ${elements.join(' ,\n  ')}\n]\n`);
      const r = await run(['send', '--image', IMAGE, '--array', file], sqsEnv(url));
      assert.equal(r.code, 0, r.all);
      assert.equal(r.stderr, '');
      const ids = lines(r.stdout);
      assert.equal(ids.length, elements.length, r.all);
      const batches = proxy.ops('SendMessageBatch');
      assert.deepEqual(batches.map((b) => b.body.Entries.length), [10, 3]);
      assert.deepEqual(batches.flatMap((b) => b.body.Entries.map((en) => en.MessageBody)), elements,
        'in order, each element exactly');
      const byId = new Map((await receiveAll(url)).map((m) => [m.MessageId, m.Body]));
      assert.deepEqual(ids.map((id) => byId.get(id)), elements);

      // "-" reads the array from stdin
      const { url: url2 } = await queue();
      const s = await run(['send', '--image', IMAGE, '--array', '-'], sqsEnv(url2), `[${elements[0]}, ${elements[2]}]`);
      assert.equal(s.code, 0, s.all);
      assert.deepEqual((await receiveAll(url2)).map((m) => m.Body).sort(), [elements[0], elements[2]].sort());
    });

    it('refuses an --array file that is not a valid JSON array, or has an invalid element (exit 2)', async () => {
      const { url } = await queue();
      const write = (name, text) => { const f = path.join(scratch, name); writeFileSync(f, text); return f; };
      for (const [file, re] of [
        [write('bad.json', '[1, 2,]'), /^lambdo send: \S+bad\.json: not valid JSON \(at byte 6: /],
        [write('object.json', '{"a": 1}'), /^lambdo send: \S+object\.json: not a JSON array \(to send one body, give it as BODY\)$/m],
        [write('lines.json', '{"a":1}\n{"a":2}\n'), /lines\.json: not valid JSON \(at byte 8: unexpected data after the JSON value\)/],
        [write('ffff.json', '[1, "\uFFFF", 3]'), /^lambdo send: element 2: body has U\+FFFE or U\+FFFF.*\nlambdo send: 1 of 3 elements invalid; nothing was sent$/m],
        [path.join(scratch, 'missing.json'), /cannot open \S+missing\.json: No such file or directory/],
      ]) {
        const r = await run(['send', '--image', IMAGE, '--array', file], sqsEnv(url));
        assert.equal(r.code, 2, `${file}\n${r.all}`);
        assert.match(r.stderr, re);
        assert.equal(r.stdout, '');
      }
      const empty = await run(['send', '--image', IMAGE, '--array', write('empty.json', ' [ ]\n')], sqsEnv(url));
      assert.equal(empty.code, 0, empty.all);
      assert.match(empty.stderr, /nothing to send \(the array is empty\)/);
      assert.equal(proxy.requests.length, 0, 'no request at all');
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
      assert.match(r.stderr, /see lambdo send --help/);
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
        `${url} (2 visible, 0 in flight, 0 delayed; FIFO: no; redrive to ${dlqArn} after 5 receives)`);
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
      assert.match(q.reason, /^\S+ \(0 visible, 0 in flight, 0 delayed; FIFO: no; no redrive policy: .*dead-letter queue\)$/);
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
      const r = await run(['check'], sqsEnv(url, { LAMBDO_BACKEND: 'local', LAMBDO_LOCAL_COMMAND: '["true"]' }));
      assert.equal(r.code, 0, r.all);
      assert.deepEqual(rows(r.stdout).map((x) => `${x.status} ${x.name}`),
        ['ok config', 'ok ca bundle', 'ok sqs queue', 'ok backend'], r.all);
      assert.match(row(r, 'config').reason, /local backend/);
    });

    it('warns, at start-up and in check, that LAMBDO_BACKEND=local without LAMBDO_LOCAL_COMMAND fails messages without a command', async () => {
      const { url } = await queue({ redriveToDlq: 3 });
      const env = sqsEnv(url, { LAMBDO_BACKEND: 'local', LAMBDO_SQS_LONG_POLL_SECONDS: '0' });
      const warning = 'LAMBDO_LOCAL_COMMAND: not set, so every message without a command attribute fails '
        + '(set it to the command for those, a JSON array)';
      const r = await run(['check'], env);
      assert.equal(r.code, 0, r.all);
      assert.deepEqual(row(r, 'backend'), { status: 'warn', name: 'backend', reason: warning });
      const d = await run(['--once'], env);
      assert.equal(d.code, 0, d.all);
      assert.ok(d.stderr.split('\n').some((l) => / warn /.test(l) && l.endsWith(warning)), d.all);
      const quiet = await run(['--once'], { ...env, LAMBDO_LOCAL_COMMAND: '["true"]' });
      assert.equal(quiet.code, 0, quiet.all);
      assert.doesNotMatch(quiet.stderr, /LAMBDO_LOCAL_COMMAND/);
    });

    it('stops at a configuration error, printed as a failed check', async () => {
      const { url } = await queue();
      const env = fullEnv(url);
      delete env.LAMBDO_FLY_APP;
      const r = await run(['check'], env);
      assert.equal(r.code, 2, r.all);
      assert.equal(r.stdout, 'fail  config      LAMBDO_FLY_APP (or FLY_APP_NAME): required, not set\n');
      assert.equal(proxy.requests.length, 0);
      const u = await run(['check', '--bogus'], env);
      assert.equal(u.code, 2);
      assert.match(u.stderr, /see lambdo check --help/);
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
