// Self-tests of the integration-test rig: fauxqs (tests/lib/fauxqs.mjs), the SigV4-checking
// SQS proxy (tests/lib/sqsproxy.mjs) and the test Fly Machines API (tests/lib/flyapi.mjs).
// They pin down what the lambdo tests rely on, including fauxqs's own quirks.
//   node --test tests/rig.test.mjs
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import https from 'node:https';
import { SignatureV4 } from '@smithy/signature-v4';
import { Sha256 } from '@aws-crypto/sha256-js';
import {
  SQSClient, SendMessageCommand, ReceiveMessageCommand, DeleteMessageCommand,
  DeleteMessageBatchCommand, ChangeMessageVisibilityCommand, GetQueueUrlCommand, ListQueuesCommand,
} from '@aws-sdk/client-sqs';
import { startSqs } from './lib/fauxqs.mjs';
import { startSqsProxy, sqsError, md5OfMessageAttributes, verifySigV4 } from './lib/sqsproxy.mjs';
import { startFlyApi, guestForPreset, presetForGuest, PRESETS, EVENTS_PATH } from './lib/flyapi.mjs';
import { testCerts } from './lib/certs.mjs';

const REGION = 'us-east-1';
const CREDS = { accessKeyId: 'AKIDLAMBDOTEST', secretAccessKey: 'lambdo/test+secret' };
const ATTRS = { image: 'registry.fly.io/worker:1', size: 'shared-cpu-2x', command: '["run","--fast"]' };

function sqsClient(endpoint, credentials = CREDS, extra = {}) {
  return new SQSClient({ endpoint, region: REGION, credentials, maxAttempts: 1, ...extra });
}

// A POST to `endpoint` signed by @smithy/signature-v4, then optionally altered; returns the
// answer with its JSON body parsed.
async function rawSqs(endpoint, { op, body, credentials = CREDS, applyChecksum = false,
  date = new Date(), alter = (r) => r } = {}) {
  const u = new URL(endpoint);
  const payload = Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
  const signer = new SignatureV4({ credentials, region: REGION, service: 'sqs', sha256: Sha256, applyChecksum });
  const signed = await signer.sign({ method: 'POST', protocol: 'http:', hostname: u.hostname,
    port: Number(u.port), path: '/', query: {}, body: payload,
    headers: { host: u.host, 'content-type': 'application/x-amz-json-1.0', 'x-amz-target': `AmazonSQS.${op}` } },
  { signingDate: date });
  const out = alter({ headers: { ...signed.headers }, payload });
  return request(http, { hostname: u.hostname, port: u.port, method: 'POST', path: '/',
    headers: { ...out.headers, 'content-length': out.payload.length }, agent: false }, out.payload);
}

function request(lib, options, payload) {
  return new Promise((resolve, reject) => {
    const req = lib.request(options, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json;
        try { json = JSON.parse(text); } catch { json = undefined; }
        resolve({ status: res.statusCode, headers: res.headers, text, json });
      });
    });
    req.on('error', reject);
    req.end(payload);
  });
}

describe('fauxqs behind the SigV4 proxy', () => {
  let sqs;
  let proxy;
  let client;   // signed correctly, through the proxy
  let n = 0;
  const queue = (opts) => sqs.createQueue(`q${++n}`, { baseUrl: proxy.endpoint, ...opts });

  before(async () => {
    sqs = await startSqs({ region: REGION });
    proxy = await startSqsProxy({ target: sqs.endpoint, ...CREDS, region: REGION });
    client = sqsClient(proxy.endpoint);
  });
  after(async () => {
    client.destroy();
    await proxy.close();
    await sqs.close();
  });

  it('builds queue URLs on the given base and finds queues by exact URL only', async () => {
    const { url, dlqUrl } = await queue({ redriveToDlq: 3 });
    assert.equal(url, `${proxy.endpoint}/000000000000/q${n}`);
    assert.equal(dlqUrl, `${proxy.endpoint}/000000000000/q${n}-dlq`);
    const got = await client.send(new GetQueueUrlCommand({ QueueName: `q${n}` }));
    assert.equal(got.QueueUrl, url);
    const other = url.replace('127.0.0.1', 'localhost');
    await assert.rejects(client.send(new SendMessageCommand({ QueueUrl: other, MessageBody: 'x' })),
      (e) => e.name === 'QueueDoesNotExist' && e.$metadata.httpStatusCode === 400);
  });

  it('relays correctly signed SDK requests (send, receive, delete) and records them', async () => {
    const { url } = await queue();
    const before = sqs.requests.length;
    proxy.reset();
    const sent = await client.send(new SendMessageCommand({ QueueUrl: url, MessageBody: '{"n":1}',
      MessageAttributes: { image: { DataType: 'String', StringValue: 'img' } } }));
    const got = await client.send(new ReceiveMessageCommand({ QueueUrl: url, MessageAttributeNames: ['All'] }));
    assert.equal(got.Messages.length, 1);
    assert.equal(got.Messages[0].MessageId, sent.MessageId);
    assert.equal(got.Messages[0].Body, '{"n":1}');
    await client.send(new DeleteMessageCommand({ QueueUrl: url, ReceiptHandle: got.Messages[0].ReceiptHandle }));
    assert.deepEqual(sqs.counts(url), { visible: 0, inFlight: 0, delayed: 0 });
    assert.deepEqual(proxy.requests.map((r) => [r.op, r.status, r.authorized]),
      [['SendMessage', 200, true], ['ReceiveMessage', 200, true], ['DeleteMessage', 200, true]]);
    assert.equal(proxy.requests[1].body.QueueUrl, url);
    assert.deepEqual(sqs.requests.slice(before).map((r) => r.op), ['SendMessage', 'ReceiveMessage', 'DeleteMessage']);
    assert.ok(proxy.connections >= 1);
    assert.ok(proxy.requests.every((r) => Number.isInteger(r.conn) && r.conn >= 1));
  });

  it('answers a wrong secret with 403 SignatureDoesNotMatch, and fauxqs never sees it', async () => {
    const { url } = await queue();
    const before = sqs.requests.length;
    const bad = sqsClient(proxy.endpoint, { ...CREDS, secretAccessKey: 'not-the-secret' });
    try {
      await assert.rejects(bad.send(new SendMessageCommand({ QueueUrl: url, MessageBody: 'x' })), (e) => {
        assert.equal(e.name, 'SignatureDoesNotMatch');
        assert.equal(e.$metadata.httpStatusCode, 403);
        assert.match(e.message, /^The request signature we calculated does not match/);
        return true;
      });
    } finally { bad.destroy(); }
    const rec = proxy.requests.at(-1);
    assert.equal(rec.authorized, false);
    assert.equal(rec.status, 403);
    assert.equal(rec.response.__type, 'com.amazon.coral.service#SignatureDoesNotMatch');
    assert.match(rec.reason, /signature .* != expected/);
    assert.equal(sqs.requests.length, before, 'fauxqs must not see rejected requests');
    assert.equal(sqs.counts(url).visible, 0);
  });

  it('answers an unknown access key with 403 InvalidClientTokenId', async () => {
    const bad = sqsClient(proxy.endpoint, { ...CREDS, accessKeyId: 'AKIDSOMEONEELSE' });
    try {
      await assert.rejects(bad.send(new ListQueuesCommand({})),
        (e) => e.name === 'InvalidClientTokenId' && e.$metadata.httpStatusCode === 403);
    } finally { bad.destroy(); }
  });

  it('rejects raw requests whose body, headers, date or Authorization were tampered with', async () => {
    const { url } = await queue();
    const before = sqs.requests.length;
    const body = { QueueUrl: url, MessageBody: 'original' };
    const ok = await rawSqs(proxy.endpoint, { op: 'SendMessage', body });
    assert.equal(ok.status, 200, ok.text);

    const tampered = await rawSqs(proxy.endpoint, { op: 'SendMessage', body,
      alter: (r) => ({ ...r, payload: Buffer.from(JSON.stringify({ ...body, MessageBody: 'evil' })) }) });
    assert.equal(tampered.status, 403);
    assert.equal(tampered.headers['x-amzn-query-error'], 'SignatureDoesNotMatch;Sender');
    assert.equal(tampered.headers['content-type'], 'application/x-amz-json-1.0');
    assert.equal(tampered.json.__type, 'com.amazon.coral.service#SignatureDoesNotMatch');
    assert.match(tampered.json.message, /^The request signature we calculated does not match the signature you provided/);
    assert.match(proxy.requests.at(-1).rejection.canonicalRequest, /^POST\n\/\n\n/);

    const withHash = await rawSqs(proxy.endpoint, { op: 'SendMessage', body, applyChecksum: true,
      alter: (r) => ({ ...r, payload: Buffer.from(JSON.stringify({ ...body, MessageBody: 'evil' })) }) });
    assert.equal(withHash.status, 403);
    assert.match(proxy.requests.at(-1).reason, /x-amz-content-sha256 .* is not the SHA-256 of the body/);

    const header = await rawSqs(proxy.endpoint, { op: 'SendMessage', body,
      alter: (r) => ({ ...r, headers: { ...r.headers, 'x-amz-target': 'AmazonSQS.PurgeQueue' } }) });
    assert.equal(header.status, 403);

    const stale = await rawSqs(proxy.endpoint, { op: 'SendMessage', body, date: new Date(Date.now() - 20 * 60e3) });
    assert.equal(stale.status, 403);
    assert.match(stale.json.message, /^Signature expired: /);

    const region = await rawSqs(proxy.endpoint, { op: 'SendMessage', body,
      alter: (r) => ({ ...r, headers: { ...r.headers, authorization: r.headers.authorization.replace('/us-east-1/', '/eu-west-1/') } }) });
    assert.equal(region.status, 403);
    assert.match(region.json.message, /Credential should be scoped to a valid region/);

    const unsigned = await rawSqs(proxy.endpoint, { op: 'SendMessage', body,
      alter: (r) => { const h = { ...r.headers }; delete h.authorization; return { ...r, headers: h }; } });
    assert.equal(unsigned.status, 403);
    assert.equal(unsigned.json.__type, 'com.amazon.coral.service#MissingAuthenticationToken');

    const garbled = await rawSqs(proxy.endpoint, { op: 'SendMessage', body,
      alter: (r) => ({ ...r, headers: { ...r.headers, authorization: 'AWS4-HMAC-SHA256 Credential=x' } }) });
    assert.equal(garbled.status, 400);
    assert.equal(garbled.headers['x-amzn-query-error'], 'IncompleteSignature;Sender');

    assert.deepEqual(sqs.requests.slice(before).map((r) => r.op), ['SendMessage'], 'only the untampered request reaches fauxqs');
    assert.deepEqual((await sqs.drain(url)).map((m) => m.Body), ['original']);
  });

  it('checks the session token when one is configured', async () => {
    const tokenProxy = await startSqsProxy({ target: sqs.endpoint, ...CREDS, sessionToken: 'tok/en+1==', region: REGION });
    const { url } = await sqs.createQueue(`q${++n}`, { baseUrl: tokenProxy.endpoint });
    const good = sqsClient(tokenProxy.endpoint, { ...CREDS, sessionToken: 'tok/en+1==' });
    const none = sqsClient(tokenProxy.endpoint);
    const wrong = sqsClient(tokenProxy.endpoint, { ...CREDS, sessionToken: 'other' });
    try {
      await good.send(new SendMessageCommand({ QueueUrl: url, MessageBody: 'x' }));
      assert.ok(tokenProxy.requests[0].headers.authorization.includes('x-amz-security-token'));
      for (const c of [none, wrong]) {
        await assert.rejects(c.send(new SendMessageCommand({ QueueUrl: url, MessageBody: 'y' })),
          (e) => e.name === 'InvalidClientTokenId' && e.$metadata.httpStatusCode === 403);
      }
      // ...and a token is refused when none is in use.
      await assert.rejects(sqsClient(proxy.endpoint, { ...CREDS, sessionToken: 'tok' })
        .send(new ListQueuesCommand({})), (e) => e.name === 'InvalidClientTokenId');
      assert.equal(sqs.counts(url).visible, 1);
    } finally {
      for (const c of [good, none, wrong]) c.destroy();
      await tokenProxy.close();
    }
  });

  it('verifySigV4 accepts an independently signed request with a query and an odd path', async () => {
    const signer = new SignatureV4({ credentials: CREDS, region: REGION, service: 'sqs', sha256: Sha256 });
    const date = new Date();
    // HttpRequest.path is the path as sent (encoded); the signer encodes it once more.
    const s = await signer.sign({ method: 'POST', protocol: 'http:', hostname: 'h', path: '/a%20b/%C3%A9',
      query: { z: 'a b', a: ['2', '1'] }, headers: { host: 'h:1' }, body: 'x' }, { signingDate: date });
    const url = '/a%20b/%C3%A9?z=a%20b&a=2&a=1';
    const headers = Object.fromEntries(Object.entries(s.headers).map(([k, v]) => [k.toLowerCase(), v]));
    assert.deepEqual(await verifySigV4({ method: 'POST', url, headers, body: Buffer.from('x') },
      { ...CREDS, region: REGION }), { ok: true });
    const v = await verifySigV4({ method: 'POST', url: '/a%20b/%C3%A9?z=a%20b&a=2', headers, body: Buffer.from('x') },
      { ...CREDS, region: REGION });
    assert.equal(v.ok, false);
  });

  it('fauxqs returns message attributes nobody asked for; the proxy filters them like SQS', async () => {
    const { url } = await queue();
    const attrs = { ...ATTRS, 'x.trace': 't1', 'x.span': 's1', other: 'o' };
    const ids = [];
    for (let i = 0; i < 5; i++) ids.push(await sqs.send(url, `body${i}`, attrs));
    const peek = sqs.peek(url).ready;
    const fullMd5 = peek[0].md5OfMessageAttributes;
    assert.equal(md5OfMessageAttributes(peek[0].messageAttributes), fullMd5, 'our MD5 matches fauxqs/SQS');

    const recv = (c, extra) => c.send(new ReceiveMessageCommand({ QueueUrl: url, VisibilityTimeout: 0, ...extra }));
    const direct = await recv(sqs.client, {});
    assert.deepEqual(Object.keys(direct.Messages[0].MessageAttributes).sort(), Object.keys(attrs).sort(),
      'fauxqs (directly) returns every attribute when none are named');

    const none = (await recv(client, {})).Messages[0];
    assert.equal(none.MessageAttributes, undefined);
    assert.equal(none.MD5OfMessageAttributes, undefined);
    assert.equal(none.Attributes, undefined);

    const some = (await recv(client, { MessageAttributeNames: ['image', 'size', 'command'] })).Messages[0];
    assert.deepEqual(Object.keys(some.MessageAttributes).sort(), ['command', 'image', 'size']);
    assert.equal(some.MessageAttributes.command.StringValue, ATTRS.command);
    assert.equal(some.MD5OfMessageAttributes, md5OfMessageAttributes({
      image: { DataType: 'String', StringValue: ATTRS.image }, size: { DataType: 'String', StringValue: ATTRS.size },
      command: { DataType: 'String', StringValue: ATTRS.command } }));

    const prefix = (await recv(client, { MessageAttributeNames: ['x.*'] })).Messages[0];
    assert.deepEqual(Object.keys(prefix.MessageAttributes).sort(), ['x.span', 'x.trace']);

    for (const all of ['All', '.*']) {
      const m = (await recv(client, { MessageAttributeNames: [all] })).Messages[0];
      assert.equal(Object.keys(m.MessageAttributes).length, 6);
      assert.equal(m.MD5OfMessageAttributes, fullMd5);
    }

    const sys = (await recv(client, { MessageSystemAttributeNames: ['ApproximateReceiveCount'] })).Messages[0];
    assert.deepEqual(Object.keys(sys.Attributes), ['ApproximateReceiveCount']);
    const sysAll = (await recv(client, { AttributeNames: ['All'] })).Messages[0];
    assert.ok('SentTimestamp' in sysAll.Attributes && 'ApproximateReceiveCount' in sysAll.Attributes);
  });

  it('fauxqs honours VisibilityTimeout on ReceiveMessage and ChangeMessageVisibility', async () => {
    const { url } = await queue({ visibilityTimeout: 30 });
    await sqs.send(url, 'v', ATTRS);
    const first = await client.send(new ReceiveMessageCommand({ QueueUrl: url, VisibilityTimeout: 1 }));
    assert.equal(first.Messages.length, 1);
    assert.deepEqual(sqs.counts(url), { visible: 0, inFlight: 1, delayed: 0 });
    assert.equal((await client.send(new ReceiveMessageCommand({ QueueUrl: url }))).Messages, undefined);
    await new Promise((r) => setTimeout(r, 1100));
    assert.deepEqual(sqs.counts(url), { visible: 1, inFlight: 0, delayed: 0 });

    const second = await client.send(new ReceiveMessageCommand({ QueueUrl: url }));   // queue default 30 s
    const handle = second.Messages[0].ReceiptHandle;
    await client.send(new ChangeMessageVisibilityCommand({ QueueUrl: url, ReceiptHandle: handle, VisibilityTimeout: 0 }));
    assert.equal(sqs.counts(url).visible, 1, 'visibility 0 makes it visible at once');
    await assert.rejects(client.send(new ChangeMessageVisibilityCommand({ QueueUrl: url,
      ReceiptHandle: 'not-a-handle', VisibilityTimeout: 5 })), (e) => e.name === 'MessageNotInflight');
  });

  it('fauxqs accepts invalid receipt handles on delete; the proxy can fake Failed entries', async () => {
    const { url } = await queue();
    await sqs.send(url, 'd', ATTRS);
    const batch = await client.send(new DeleteMessageBatchCommand({ QueueUrl: url,
      Entries: [{ Id: 'a', ReceiptHandle: 'garbage' }] }));
    assert.deepEqual(batch.Successful, [{ Id: 'a' }], 'fauxqs reports a bogus receipt handle as deleted');
    assert.ok(!batch.Failed || batch.Failed.length === 0);
    await client.send(new DeleteMessageCommand({ QueueUrl: url, ReceiptHandle: 'garbage' }));
    assert.equal(sqs.counts(url).visible, 1);

    const got = await client.send(new ReceiveMessageCommand({ QueueUrl: url }));
    proxy.fault = (op) => (op === 'DeleteMessageBatch' ? {
      transform: (json) => ({ Successful: [], Failed: json.Successful.map((s) => ({ Id: s.Id,
        SenderFault: true, Code: 'ReceiptHandleIsInvalid', Message: 'The input receipt handle is invalid.' })) }),
    } : null);
    try {
      const faked = await client.send(new DeleteMessageBatchCommand({ QueueUrl: url,
        Entries: [{ Id: 'b', ReceiptHandle: got.Messages[0].ReceiptHandle }] }));
      assert.equal(faked.Failed[0].Code, 'ReceiptHandleIsInvalid');
    } finally { proxy.fault = null; }
    assert.deepEqual(sqs.counts(url), { visible: 0, inFlight: 0, delayed: 0 }, 'fauxqs did delete it');
  });

  it('fauxqs long-polls: empty after WaitTimeSeconds, early when a message arrives', async () => {
    const { url } = await queue();
    let t = Date.now();
    const empty = await client.send(new ReceiveMessageCommand({ QueueUrl: url, WaitTimeSeconds: 1 }));
    assert.equal(empty.Messages, undefined);
    assert.ok(Date.now() - t >= 950, `waited ${Date.now() - t} ms`);
    assert.deepEqual(proxy.requests.at(-1).response, {}, 'an empty receive answers {}');
    t = Date.now();
    setTimeout(() => { sqs.send(url, 'late', ATTRS); }, 200);
    const full = await client.send(new ReceiveMessageCommand({ QueueUrl: url, WaitTimeSeconds: 5 }));
    assert.equal(full.Messages[0].Body, 'late');
    assert.ok(Date.now() - t < 2000, `answered after ${Date.now() - t} ms`);
  });

  it('fauxqs redrives to the DLQ after maxReceiveCount receives', async () => {
    const { url, dlqUrl } = await queue({ redriveToDlq: 2 });
    const id = await sqs.send(url, 'poison', ATTRS);
    const receive = () => client.send(new ReceiveMessageCommand({ QueueUrl: url, VisibilityTimeout: 0,
      MessageSystemAttributeNames: ['ApproximateReceiveCount'] }));
    const counts = [];
    for (let i = 0; i < 3; i++) counts.push((await receive()).Messages?.[0]?.Attributes.ApproximateReceiveCount ?? null);
    const inDlq = sqs.peek(dlqUrl).ready;
    if (inDlq.length !== 1) {
      console.log('!!!!!!!! fauxqs did NOT redrive the message to the DLQ after maxReceiveCount receives !!!!!!!!');
    }
    assert.deepEqual(counts, ['1', '2', null], 'receives 1 and 2 return it, the 3rd moves it');
    assert.equal(inDlq.length, 1);
    assert.equal(inDlq[0].messageId, id);
    assert.equal(inDlq[0].body, 'poison');
    assert.equal(inDlq[0].approximateReceiveCount, 3, 'the receive count carries on in the DLQ');
    assert.equal(inDlq[0].messageAttributes.image.StringValue, ATTRS.image);
    assert.deepEqual(sqs.counts(url), { visible: 0, inFlight: 0, delayed: 0 });
  });

  it('proxy faults: error answers, delays, resets (before and after forwarding)', async () => {
    const { url } = await queue();
    await sqs.send(url, 'f', ATTRS);
    const start = proxy.requests.length ? proxy.requests.at(-1).seq : 0;
    let fired = 0;
    proxy.fault = (op) => (op === 'ReceiveMessage' && fired++ === 0
      ? sqsError('ServiceUnavailable', 'Service is unavailable.', { status: 503, fault: 'Receiver' }) : null);
    try {
      await assert.rejects(client.send(new ReceiveMessageCommand({ QueueUrl: url })),
        (e) => e.$metadata.httpStatusCode === 503);
      assert.equal(proxy.requests.at(-1).status, 503);
      const got = await client.send(new ReceiveMessageCommand({ QueueUrl: url, VisibilityTimeout: 30 }));
      assert.equal(got.Messages.length, 1);

      proxy.fault = (op) => (op === 'DeleteMessage' ? { resetAfterForward: true } : null);
      await assert.rejects(client.send(new DeleteMessageCommand({ QueueUrl: url, ReceiptHandle: got.Messages[0].ReceiptHandle })));
      assert.equal(proxy.requests.at(-1).status, 'reset');
      assert.equal(proxy.requests.at(-1).forwardedStatus, 200);
      assert.deepEqual(sqs.counts(url), { visible: 0, inFlight: 0, delayed: 0 }, 'the delete happened, its answer was lost');

      proxy.fault = () => ({ reset: true });
      const before = sqs.requests.length;
      await assert.rejects(client.send(new ListQueuesCommand({})));
      assert.equal(sqs.requests.length, before, 'reset before forwarding');

      proxy.fault = () => ({ delayMs: 300 });
      const t = Date.now();
      await client.send(new ListQueuesCommand({}));
      assert.ok(Date.now() - t >= 290);
    } finally { proxy.fault = null; }
    const seen = await proxy.waitFor((r) => r.op === 'ListQueues' && r.seq > start, { count: 2 });
    assert.equal(seen.status, 200);
    assert.equal(seen.fault.delayMs, 300);
  });

  it('counts connections and tells which connection each request used', async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const before = proxy.connections;
    const seqs = [];
    try {
      for (let i = 0; i < 3; i++) {
        const r = await new Promise((resolve, reject) => {
          const req = http.request(`${proxy.endpoint}/`, { method: 'POST', agent }, (res) => { res.resume(); res.on('end', resolve); });
          req.on('error', reject);
          req.end('{}');
        });
        seqs.push(proxy.requests.at(-1).conn);
      }
    } finally { agent.destroy(); }
    assert.equal(proxy.connections - before, 1);
    assert.equal(new Set(seqs).size, 1);
    assert.ok(proxy.requests.slice(-3).every((r) => r.status === 403 && r.op === null));
  });
});

// ---------------------------------------------------------------------------------------------

const TOKEN = 'fly-test-token-0123';
const APP = 'lambdo-test-app';

function createBody({ region = 'iad', size = 'shared-cpu-1x', eventsText = '[{"id":1},"two"]' } = {}) {
  return {
    region,
    config: {
      image: 'registry.fly.io/worker:1',
      guest: guestForPreset(size),
      env: { EVENTS_PATH },
      files: [{ guest_path: EVENTS_PATH, raw_value: Buffer.from(eventsText).toString('base64') }],
      auto_destroy: true,
      restart: { policy: 'no' },
      init: { cmd: ['run', '--fast'] },
      metadata: { managed_by: 'lambdo', lambdo_group: 'g1' },
    },
  };
}

describe('test Fly Machines API', () => {
  let fly;
  const call = (method, path, body, { token = TOKEN, headers = {} } = {}) => {
    const u = new URL(fly.url);
    const payload = body === undefined ? undefined : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
    return request(https, { hostname: u.hostname, port: u.port, method, path, agent: false, ca: testCerts().ca,
      headers: { ...(token ? { authorization: `Bearer ${token}` } : {}),
        ...(payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {}), ...headers } },
    payload);
  };
  const create = (body, opts) => call('POST', `/v1/apps/${APP}/machines`, body, opts);

  before(async () => { fly = await startFlyApi({ token: TOKEN, app: APP }); });
  after(async () => { await fly.close(); });

  it('serves HTTPS for localhost with the test CA', async () => {
    assert.match(fly.url, /^https:\/\/localhost:\d+$/);
    const app = await call('GET', `/v1/apps/${APP}`);
    assert.equal(app.status, 200);
    assert.equal(app.json.name, APP);
    const u = new URL(fly.url);
    await assert.rejects(request(https, { hostname: 'localhost', port: u.port, path: `/v1/apps/${APP}`, agent: false }),
      /self-signed|unable to verify|UNABLE_TO_VERIFY|SELF_SIGNED/i);
  });

  it('accepts a correct create body and records the machine, its events file byte for byte', async () => {
    const eventsText = '[ {"a":1,"b":"\u00e9\u{1F600}"} ,\n"x\\u0000y", 3.50 ]';
    const before = fly.machines.length;
    const res = await create(createBody({ eventsText, size: 'performance-2x', region: 'ord' }));
    assert.equal(res.status, 200, res.text);
    const m = res.json;
    assert.match(m.id, /^[0-9a-f]{14}$/);
    assert.equal(m.region, 'ord');
    assert.equal(m.state, 'started');
    assert.ok(m.instance_id && m.private_ip && m.created_at && m.name);
    assert.equal(m.config.image, 'registry.fly.io/worker:1');
    assert.equal(fly.machines.length, before + 1);
    const rec = fly.machine(m.id);
    assert.equal(rec.region, 'ord');
    assert.equal(rec.preset, 'performance-2x');
    assert.deepEqual(rec.guest, guestForPreset('performance-2x'));
    assert.ok(rec.eventsRaw.equals(Buffer.from(eventsText)));
    assert.equal(rec.eventsText, eventsText);
    assert.deepEqual(rec.events, [{ a: 1, b: '\u00e9\u{1F600}' }, 'x\u0000y', 3.5]);
    assert.deepEqual(rec.metadata, { managed_by: 'lambdo', lambdo_group: 'g1' });
    assert.deepEqual(rec.cmd, ['run', '--fast']);
    assert.deepEqual(fly.violations, []);

    const shown = await call('GET', `/v1/apps/${APP}/machines/${m.id}`);
    assert.equal(shown.json.id, m.id);
    const started = await call('GET', `/v1/apps/${APP}/machines/${m.id}/wait?state=started&timeout=5`);
    assert.deepEqual([started.status, started.json], [200, { ok: true }]);
    setTimeout(() => fly.exitMachine(m.id, 3), 100);
    const stopped = await call('GET', `/v1/apps/${APP}/machines/${m.id}/wait?state=stopped&timeout=5`);
    assert.equal(stopped.status, 200);
    const events = (await call('GET', `/v1/apps/${APP}/machines/${m.id}/events`)).json;
    assert.deepEqual(events.map((e) => e.type), ['destroy', 'exit', 'start', 'launch']);
    assert.equal(events[1].request.exit_event.exit_code, 3);
    assert.equal(fly.machine(m.id).state, 'destroyed');
    const timeout = await call('GET', `/v1/apps/${APP}/machines/${m.id}/wait?state=started&timeout=1`);
    assert.equal(timeout.status, 408);
    assert.equal((await call('GET', `/v1/apps/${APP}/machines/nosuch`)).status, 404);
  });

  it('accepts every size preset and knows their guests', async () => {
    assert.deepEqual(guestForPreset('shared-cpu-4x'), { cpu_kind: 'shared', cpus: 4, memory_mb: 1024 });
    assert.deepEqual(guestForPreset('performance-16x'), { cpu_kind: 'performance', cpus: 16, memory_mb: 32768 });
    assert.deepEqual(guestForPreset('a100-80gb'),
      { cpu_kind: 'performance', cpus: 8, memory_mb: 32768, gpus: 1, gpu_kind: 'a100-sxm4-80gb' });
    assert.equal(guestForPreset('shared-cpu-3x'), undefined);
    assert.equal(Object.keys(PRESETS).length, 18);
    for (const size of Object.keys(PRESETS)) {
      const res = await create(createBody({ size }));
      assert.equal(res.status, 200, `${size}: ${res.text}`);
      assert.equal(presetForGuest(res.json.config.guest), size);
    }
    assert.deepEqual(fly.violations, []);
  });

  it('rejects each kind of wrong create body with a precise 400', async () => {
    const b64 = (s) => Buffer.from(s).toString('base64');
    const cases = [
      ['missing EVENTS_PATH', (b) => { b.config.env = {}; }, /config\.env\.EVENTS_PATH must be "\/tmp\/events\.json"/],
      ['wrong EVENTS_PATH', (b) => { b.config.env.EVENTS_PATH = '/tmp/e.json'; }, /EVENTS_PATH/],
      ['config.size present', (b) => { b.config.size = 'shared-cpu-1x'; }, /config\.size must not be sent/],
      ['wrong guest', (b) => { b.config.guest = { cpu_kind: 'shared', cpus: 2, memory_mb: 256 }; }, /config\.guest .* is not a preset/],
      ['guest with extra key', (b) => { b.config.guest.kernel_args = []; }, /is not a preset/],
      ['missing restart policy', (b) => { delete b.config.restart; }, /config\.restart must be \{"policy":"no"\}/],
      ['restart always', (b) => { b.config.restart = { policy: 'always' }; }, /config\.restart/],
      ['auto_destroy missing', (b) => { delete b.config.auto_destroy; }, /config\.auto_destroy must be true/],
      ['bad base64', (b) => { b.config.files[0].raw_value = 'not base64!'; }, /raw_value must be standard padded base64/],
      ['unpadded base64', (b) => { b.config.files[0].raw_value = b64('[1]').replace(/=+$/, '') + 'x'; }, /base64/],
      ['events not an array', (b) => { b.config.files[0].raw_value = b64('{"a":1}'); }, /must hold a JSON array/],
      ['events not JSON', (b) => { b.config.files[0].raw_value = b64('[1,'); }, /not UTF-8 JSON/],
      ['events not UTF-8', (b) => { b.config.files[0].raw_value = Buffer.from([0x5b, 0x22, 0xff, 0x22, 0x5d]).toString('base64'); }, /not UTF-8 JSON/],
      ['second file not the context file', (b) => { b.config.files.push({ ...b.config.files[0] }); }, /config\.files\[1\] must be \{"guest_path":"\/tmp\/events\.meta\.json"/],
      ['context file without EVENTS_META_PATH', (b) => { b.config.files.push({ guest_path: '/tmp/events.meta.json', raw_value: b64('[{}]') }); }, /config\.env\.EVENTS_META_PATH must be "\/tmp\/events\.meta\.json"/],
      ['EVENTS_META_PATH without a context file', (b) => { b.config.env.EVENTS_META_PATH = '/tmp/events.meta.json'; }, /EVENTS_META_PATH must be absent/],
      ['context file not an array', (b) => { b.config.env.EVENTS_META_PATH = '/tmp/events.meta.json'; b.config.files.push({ guest_path: '/tmp/events.meta.json', raw_value: b64('{}') }); }, /context file must hold a JSON array/],
      ['context file not aligned', (b) => { b.config.env.EVENTS_META_PATH = '/tmp/events.meta.json'; b.config.files.push({ guest_path: '/tmp/events.meta.json', raw_value: b64(JSON.stringify([...Buffer.from(b.config.files[0].raw_value, 'base64').toString()].map(() => ({})))) }); }, /context file has \d+ entries for \d+ events/],
      ['three files', (b) => { b.config.files.push(b.config.files[0], b.config.files[0]); }, /config\.files must be an array of the events file and \(optionally\) the context file/],
      ['wrong guest_path', (b) => { b.config.files[0].guest_path = '/events.json'; }, /guest_path/],
      ['secret_name', (b) => { b.config.files[0].secret_name = 'S'; }, /files\[0\]\.secret_name must not be sent/],
      ['missing region', (b) => { delete b.region; }, /region must be a non-empty string/],
      ['empty image', (b) => { b.config.image = ''; }, /config\.image/],
      ['init.cmd not strings', (b) => { b.config.init.cmd = ['run', 1]; }, /config\.init\.cmd must be an array of strings/],
      ['no metadata', (b) => { delete b.config.metadata; }, /config\.metadata must be a non-empty object/],
      ['env not strings', (b) => { b.config.env.N = 1; }, /config\.env\.N must be a string/],
      ['unknown config key', (b) => { b.config.autodestroy = true; }, /unknown key config\.autodestroy/],
      ['skip_launch', (b) => { b.skip_launch = true; }, /skip_launch/],
      ['no config', (b) => { delete b.config; }, /config must be an object/],
    ];
    const machines = fly.machines.length;
    for (const [name, mutate, re] of cases) {
      const before = fly.violations.length;
      const body = createBody();
      mutate(body);
      const res = await create(body);
      assert.equal(res.status, 400, `${name}: ${res.text}`);
      assert.match(res.json.error, re, name);
      assert.equal(fly.violations.length, before + 1, name);
      assert.match(fly.violations.at(-1).errors.join('; '), re, name);
    }
    const notJson = await create('{"region":', { headers: {} });
    assert.equal(notJson.status, 400);
    const wrongType = await create(createBody(), { headers: { 'content-type': 'text/plain' } });
    assert.match(wrongType.json.error, /Content-Type must be application\/json/);
    assert.equal(fly.machines.length, machines, 'no machine created for a bad body');
    fly.violations.length = 0;
  });

  it('checks the token and the app', async () => {
    const wrong = await create(createBody(), { token: 'nope' });
    assert.equal(wrong.status, 401);
    assert.equal(typeof wrong.json.error, 'string');
    const missing = await create(createBody(), { token: null });
    assert.equal(missing.status, 401);
    const app = await call('POST', '/v1/apps/another-app/machines', createBody());
    assert.deepEqual([app.status, app.json], [404, { error: 'app not found' }]);
    assert.equal((await call('GET', '/v1/apps/another-app')).status, 404);
    assert.deepEqual(fly.violations, []);
  });

  it('region faults fire the configured number of times', async () => {
    const cap = fly.setRegionFault('syd', { status: 503, times: 2 });
    const results = [];
    for (let i = 0; i < 3; i++) results.push(await create(createBody({ region: 'syd' })));
    assert.deepEqual(results.map((r) => r.status), [503, 503, 200]);
    assert.deepEqual(results[0].json, { error: 'insufficient capacity', status: 'insufficient_capacity' });
    assert.equal(cap.fired, 2);
    assert.equal((await create(createBody({ region: 'iad' }))).status, 200, 'other regions are fine');

    fly.setRegionFault('fra', { status: 429, retryAfter: 3, times: 1 });
    const limited = await create(createBody({ region: 'fra' }));
    assert.equal(limited.status, 429);
    assert.equal(limited.headers['retry-after'], '3');
    assert.equal((await create(createBody({ region: 'fra' }))).status, 200);

    fly.setRegionFault('lhr', { status: 500, times: 1 });
    assert.equal((await create(createBody({ region: 'lhr' }))).status, 500);

    fly.setRegionFault('ams', { delayMs: 300, times: 1 });
    const t = Date.now();
    assert.equal((await create(createBody({ region: 'ams' }))).status, 200);
    assert.ok(Date.now() - t >= 290);

    fly.setRegionFault('cdg', { reset: true, times: 1 });
    const before = fly.machines.length;
    await assert.rejects(create(createBody({ region: 'cdg' })), /ECONNRESET|socket hang up/);
    assert.equal(fly.machines.length, before);
    assert.equal((await create(createBody({ region: 'cdg' }))).status, 200);

    fly.setRegionFault('nrt', { status: 503 });   // unlimited
    for (let i = 0; i < 4; i++) assert.equal((await create(createBody({ region: 'nrt' }))).status, 503);
    fly.clearRegionFault('nrt');
    assert.equal((await create(createBody({ region: 'nrt' }))).status, 200);

    let once = true;
    fly.fault = (req) => (req.op === 'Apps_show' && once ? (once = false, { status: 502, body: { error: 'bad gateway' } }) : null);
    try {
      assert.equal((await call('GET', `/v1/apps/${APP}`)).status, 502);
      assert.equal((await call('GET', `/v1/apps/${APP}`)).status, 200);
    } finally { fly.fault = null; }
    assert.ok(fly.connections >= fly.requests.length - 1);
  });

  it('can serve plain HTTP and auto-exit machines', async () => {
    const plain = await startFlyApi({ token: TOKEN, app: APP, tls: false, autoExit: { code: 0, afterMs: 50 } });
    try {
      assert.match(plain.url, /^http:\/\/127\.0\.0\.1:\d+$/);
      const u = new URL(plain.url);
      const payload = Buffer.from(JSON.stringify(createBody()));
      const res = await request(http, { hostname: u.hostname, port: u.port, method: 'POST', agent: false,
        path: `/v1/apps/${APP}/machines`, headers: { authorization: `Bearer ${TOKEN}`,
          'content-type': 'application/json', 'content-length': payload.length } }, payload);
      assert.equal(res.status, 200, res.text);
      const wait = await request(http, { hostname: u.hostname, port: u.port, agent: false,
        path: `/v1/apps/${APP}/machines/${res.json.id}/wait?state=destroyed&timeout=5`,
        headers: { authorization: `Bearer ${TOKEN}` } });
      assert.equal(wait.status, 200);
      assert.equal(plain.machines[0].exitCode, 0);
    } finally { await plain.close(); }
  });
});
