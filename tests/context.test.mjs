// The context file (/tmp/events.meta.json, EVENTS_META_PATH), end to end: lambdo against fauxqs
// behind the SigV4-verifying proxy (which, like real SQS, returns only the attributes a
// ReceiveMessage names) and the test Fly API, then with the local backend. Each Machine's
// context file must hold one entry per event, aligned with its events file, with the message's
// id, receive count, times, FIFO fields and its own attributes; the events file stays the bodies.
//   node --test tests/context.test.mjs
import { describe, it, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { SendMessageCommand } from '@aws-sdk/client-sqs';
import { startRig, until } from './lib/accounting.mjs';
import { toMessageAttributes } from './lib/fauxqs.mjs';
import { ROOT } from './lib/tools.mjs';

const IMAGE = 'registry.fly.io/context:1';
const SYSTEM = ['ApproximateReceiveCount', 'SentTimestamp', 'ApproximateFirstReceiveTimestamp',
  'MessageGroupId', 'MessageDeduplicationId', 'SequenceNumber'];

describe('the context file', () => {
  let rig, scratch;

  before(async () => {
    rig = await startRig();
    scratch = mkdtempSync(path.join(tmpdir(), 'lambdo-context-'));
  });
  after(async () => {
    await rig.close();
    rmSync(scratch, { recursive: true, force: true });
  });
  afterEach(async () => {
    await rig.stopAll();
    rig.clearFaults();
  });

  // The Machines created for the sent messages, with their events and context files.
  const machinesOf = (sent) => rig.machinesFor(sent);

  it('holds, per event and in its order, the message id, counts, times and its own attributes', async () => {
    const { url } = await rig.queue();
    const t0 = Date.now();
    const sent = await rig.send(url, 3, {
      key: 'ctx',
      body: (i) => `{"n":${i},"big":12345678901234567890.123456789e-5,"s":"\\u00e9"}`,
      attrs: (i) => ({ image: IMAGE, size: 'shared-cpu-1x', tenant: `acme "${i}"\n`, n: 42 + i,
        blob: Buffer.from([0, 1, 2 + i]), 'price.x': { DataType: 'Number.float', StringValue: '1.5' } }),
    });
    const r = rig.lambdo(url, { LAMBDO_EVENTS_PER_MACHINE: '10' });
    await until(() => rig.empty(url) && machinesOf(sent).length >= 1, 'the messages run and deleted', 20000);
    await r.stop();

    // lambdo asks for exactly the attributes it needs (SQS returns only what is named)
    for (const q of rig.requests('ReceiveMessage', url)) {
      assert.deepEqual(q.body.MessageSystemAttributeNames, SYSTEM);
      assert.deepEqual(q.body.AttributeNames, SYSTEM);
      assert.deepEqual(q.body.MessageAttributeNames, ['All']);
    }

    const ms = machinesOf(sent);
    let seen = 0;
    for (const m of ms) {
      assert.equal(m.env.EVENTS_META_PATH, '/tmp/events.meta.json');
      assert.ok(Array.isArray(m.meta), 'the Machine has a context file');
      assert.equal(m.meta.length, m.events.length);
      // the events file is still the bodies, byte for byte
      const bodies = m.events.map((e) => sent.find((s) => JSON.parse(s.body).n === e.n).body);
      assert.equal(m.eventsText, `[${bodies.join(',')}]`);
      m.events.forEach((e, i) => {
        const s = sent.find((x) => JSON.parse(x.body).n === e.n);
        const c = m.meta[i];
        assert.equal(c.messageId, s.id, `entry ${i} is its event's message`);
        assert.equal(c.receiveCount, 1);
        assert.equal(typeof c.sentTimestamp, 'number');
        assert.ok(c.sentTimestamp >= t0 - 5000 && c.sentTimestamp <= Date.now(), `sentTimestamp ${c.sentTimestamp}`);
        assert.equal(typeof c.firstReceiveTimestamp, 'number');
        assert.ok(c.firstReceiveTimestamp >= c.sentTimestamp, 'first receive after the send');
        for (const k of ['messageGroupId', 'deduplicationId', 'sequenceNumber']) assert.ok(!(k in c), `${k} only on FIFO queues`);
        assert.deepEqual(c.messageAttributes, {
          tenant: { type: 'String', value: `acme "${e.n}"\n` },
          n: { type: 'Number', value: String(42 + e.n) },
          blob: { type: 'Binary', value: Buffer.from([0, 1, 2 + e.n]).toString('base64') },
          'price.x': { type: 'Number.float', value: '1.5' },
        });
        seen++;
      });
    }
    assert.equal(seen, 3);
  });

  it('shows a redelivered message with its receive count grown, and {} without attributes', async () => {
    const { url } = await rig.queue();
    const sent = await rig.send(url, 1, { key: 'again', attrs: () => ({ image: IMAGE }) });
    let creates = 0;
    rig.fly.exitPolicy = () => ({ code: creates++ === 0 ? 1 : 0, afterMs: 50 });
    const r = rig.lambdo(url, { LAMBDO_ACK: 'exit', LAMBDO_RETRY_DELAY: '0' });
    await until(() => rig.empty(url) && machinesOf(sent).length === 2, 'a failed run, then a second one', 30000);
    await r.stop();
    const ms = machinesOf(sent).sort((a, b) => a.requestSeq - b.requestSeq);
    assert.deepEqual(ms.map((m) => m.meta.length), [1, 1]);
    assert.deepEqual(ms.map((m) => m.meta[0].messageId), [sent[0].id, sent[0].id]);
    assert.deepEqual(ms.map((m) => m.meta[0].receiveCount), [1, 2]);
    assert.equal(ms[0].meta[0].sentTimestamp, ms[1].meta[0].sentTimestamp);
    assert.equal(ms[0].meta[0].firstReceiveTimestamp, ms[1].meta[0].firstReceiveTimestamp);
    assert.deepEqual(ms[1].meta[0].messageAttributes, {});
  });

  it('gives the FIFO fields on a FIFO queue', async () => {
    const fifo = await rig.sqs.createQueue(`ctxf${Date.now()}.fifo`, { baseUrl: rig.proxy.endpoint, visibilityTimeout: 30 });
    const body = '{"fifo":1}';
    const out = await rig.sqs.client.send(new SendMessageCommand({ QueueUrl: fifo.url, MessageBody: body,
      MessageGroupId: 'g-"1"', MessageDeduplicationId: 'd1', MessageAttributes: toMessageAttributes({ image: IMAGE }) }));
    // create mode: on a FIFO queue exit mode is the default, and this test Machine never exits
    const r = rig.lambdo(fifo.url, { LAMBDO_ACK: 'create' });
    await until(() => rig.empty(fifo.url) && machinesOf([{ body }]).length === 1, 'the FIFO message run', 20000);
    await r.stop();
    const c = machinesOf([{ body }])[0].meta[0];
    assert.equal(c.messageId, out.MessageId);
    assert.equal(c.messageGroupId, 'g-"1"');
    assert.equal(c.deduplicationId, 'd1');
    assert.equal(typeof c.sequenceNumber, 'string');
    assert.match(c.sequenceNumber, /^[0-9]+$/);
    assert.equal(c.sequenceNumber, out.SequenceNumber);
  });

  // One cap on what lambdo puts into a Machine: the events file and the context file together.
  it('counts the context file toward LAMBDO_MAX_EVENTS_BYTES', async () => {
    const pad = 'x'.repeat(400);
    const bytesOf = (m) => Buffer.byteLength(m.eventsText) + Buffer.byteLength(m.metaText);
    const run = async (cap) => {
      const { url } = await rig.queue();
      const sent = await rig.send(url, 2, { key: `cap${cap}`, body: (i) => JSON.stringify({ i, run: String(cap).padStart(8, "0"), pad }) });
      const r = rig.lambdo(url, { LAMBDO_EVENTS_PER_MACHINE: '10', LAMBDO_MAX_EVENTS_BYTES: String(cap) });
      await until(() => rig.empty(url) && machinesOf(sent).reduce((n, m) => n + m.events.length, 0) === 2,
        () => `both messages run\n${r.out.slice(-2000)}`, 20000);
      await r.stop();
      return machinesOf(sent);
    };
    const [both] = await run(1 << 20);
    assert.equal(both.events.length, 2, 'one receive, one group');
    const total = bytesOf(both);  // ids, counts and times have fixed lengths here
    assert.ok(Buffer.byteLength(both.eventsText) < total - 1 && total - 1 >= 1024, `total ${total}`);
    assert.deepEqual((await run(total)).map((m) => m.events.length), [2], 'exactly at the cap: one Machine');
    const split = await run(total - 1);
    assert.deepEqual(split.map((m) => m.events.length), [1, 1], 'one byte over: two Machines');
    for (const m of split) assert.equal(m.meta.length, 1);
  });

  it('is written by the local backend beside the events file', async () => {
    const { url } = await rig.queue();
    const sent = await rig.send(url, 2, { key: 'local', attrs: (i) => ({ image: 'local', who: `w${i}` }) });
    const copy = path.join(scratch, 'meta-copy.json');
    const events = path.join(scratch, 'events-copy.json');
    const r = rig.lambdo(url, {
      LAMBDO_BACKEND: 'local', LAMBDO_EVENTS_PER_MACHINE: '10', EVENTS_META_PATH: '/inherited/not',
      LAMBDO_LOCAL_COMMAND: JSON.stringify(['/bin/sh', '-c',
        `cp "$EVENTS_META_PATH" '${copy}'; cp "$EVENTS_PATH" '${events}'; echo "meta at $EVENTS_META_PATH"`]),
    }, { args: ['--once'] });
    await r.done(30000);
    assert.match(r.out, /meta at \/.*\/lambdo-[^/]+\/events\.meta\.json/);
    const meta = JSON.parse(readFileSync(copy, 'utf8'));
    const evs = JSON.parse(readFileSync(events, 'utf8'));
    assert.equal(meta.length, evs.length);
    assert.equal(evs.length, 2);
    evs.forEach((e, i) => {
      const s = sent.find((x) => JSON.parse(x.body).id === e.id);
      assert.equal(meta[i].messageId, s.id);
      assert.equal(meta[i].receiveCount, 1);
      assert.deepEqual(meta[i].messageAttributes, { who: { type: 'String', value: `w${e.seq}` } });
    });
  });

  // The JS runtime (runtimes/js) reads the file lambdo writes: its handler gets each event's
  // entry in its context.
  it('reaches a handler through the JS runtime, entry by entry', async () => {
    const { url } = await rig.queue();
    const sent = await rig.send(url, 2, { key: 'rt', attrs: (i) => ({ image: 'local', k: `v${i}` }) });
    const out = path.join(scratch, 'contexts.jsonl');
    const handler = path.join(scratch, 'handler.js');
    writeFileSync(handler, `const fs = require('node:fs');
module.exports.handler = async (event, c) => fs.appendFileSync(${JSON.stringify(out)},
  JSON.stringify({ id: event.id, messageId: c.messageId, receiveCount: c.receiveCount, attrs: c.messageAttributes }) + '\\n');
`);
    const r = rig.lambdo(url, {
      LAMBDO_BACKEND: 'local', LAMBDO_EVENTS_PER_MACHINE: '10', LAMBDO_CHILD_LAMBDO_HANDLER: handler,
      LAMBDO_LOCAL_COMMAND: JSON.stringify([process.execPath, path.join(ROOT, 'runtimes/js/runtime.mjs')]),
    }, { args: ['--once'] });
    assert.equal((await r.done(30000)).code, 0, r.out);
    const got = readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    assert.equal(got.length, 2);
    for (const g of got) {
      const s = sent.find((x) => JSON.parse(x.body).id === g.id);
      assert.equal(g.messageId, s.id);
      assert.equal(g.receiveCount, 1);
      assert.deepEqual(g.attrs, { k: { type: 'String', value: `v${JSON.parse(s.body).seq}` } });
    }
  });
});
