// In-process SQS emulator for the integration tests: fauxqs 1.9.2 (SNS/SQS/S3 emulator on
// Fastify), started from its exported buildApp() on 127.0.0.1 with an ephemeral port. Its CLI
// (and startFauxqs()) bind 0.0.0.0, so neither is used.
//
// lambdo is only given LAMBDO_SQS_QUEUE_URL and talks to the queue URL's host, so the queue
// URL must point at whatever lambdo should reach (normally the signature-checking proxy of
// sqsproxy.mjs) while fauxqs still finds the queue: createQueue(name, { baseUrl }) makes that URL.
//
// What fauxqs 1.9.2 does (read from node_modules/fauxqs/dist, checked by tests/rig.test.mjs):
//  * Queue URLs: fauxqs builds "http://sqs.<region>.<store.host>:<port>/000000000000/<name>",
//    store.host defaulting to "localhost" and <port> taken from the CreateQueue request's Host
//    header; with store.host = "" it is "http://<Host header>/000000000000/<name>". Every
//    action finds its queue by an EXACT string match on QueueUrl (a Map lookup): no
//    normalisation, no lookup by name. This module builds its own SqsStore with host "" and
//    registers queues directly, so a queue URL is "<baseUrl>/000000000000/<name>".
//    ARNs are "arn:aws:sqs:<region>:000000000000:<name>" (used by RedrivePolicy).
//  * No authentication at all: any or no Authorization header is accepted (hence the proxy).
//  * ReceiveMessage: VisibilityTimeout in the request is honoured (0..43200, else 400
//    InvalidParameterValue); MaxNumberOfMessages defaults to 1 (1..10); WaitTimeSeconds
//    (0..20, default the queue's ReceiveMessageWaitTimeSeconds, "0") long-polls: the answer
//    comes as soon as a message is enqueued or becomes visible again (a 20 ms timer re-checks
//    visibility while someone waits), else empty after the wait. It dequeues once after
//    waking up, so if another poller took the message it answers empty early (real SQS keeps
//    waiting). A poll whose client went away still takes messages when they arrive (they stay
//    in flight until their visibility timeout, as with real SQS). close() ends waiting polls.
//    An empty answer is "{}" (no Messages key).
//  * Expired visibility is only noticed when something runs the queue's timers (a receive,
//    the long-poll timer); GetQueueAttributes counts do NOT, so they can be stale. counts()
//    below runs the timers first.
//  * Message attributes: with no (or an empty) MessageAttributeNames fauxqs returns ALL the
//    message's attributes, plus MD5OfMessageAttributes. Real SQS returns none unless asked.
//    With names it filters itself ("All", ".*", exact names, "prefix.*"), but keeps
//    MD5OfMessageAttributes of the FULL set (real SQS: MD5 of what it returns). The proxy
//    (sqsproxy.mjs) filters and recomputes the MD5 like real SQS.
//  * System attributes: only the ones named in AttributeNames / MessageSystemAttributeNames
//    ("All" works). ApproximateReceiveCount counts every receive.
//  * ChangeMessageVisibility: works; 0 makes the message visible at once; a receipt handle
//    that is not in flight (unknown, deleted, expired) -> 400 com.amazonaws.sqs#MessageNotInflight.
//    ChangeMessageVisibilityBatch reports such entries as Failed ReceiptHandleIsInvalid.
//  * DeleteMessage and DeleteMessageBatch accept ANY receipt handle: unknown, malformed or
//    expired ones are silently "deleted" and DeleteMessageBatch never returns a Failed entry
//    (real SQS answers ReceiptHandleIsInvalid for malformed handles). Use the proxy's fault
//    hook (transform) to make a batch report Failed entries.
//  * Redrive: implemented. With RedrivePolicy {deadLetterTargetArn, maxReceiveCount} a message
//    is moved to the DLQ lazily, by the receive that would be its (maxReceiveCount+1)-th: that
//    receive does not return it. It keeps its MessageId, body and attributes; its receive count
//    carries on (maxReceiveCount+1 when it reaches the DLQ).
//  * Errors: JSON {"__type":"com.amazonaws.sqs#<Code>","message":...} with x-amzn-query-error
//    "AWS.SimpleQueueService.<QueryCode>;Sender", e.g. QueueDoesNotExist (400,
//    AWS.SimpleQueueService.NonExistentQueue). Unknown X-Amz-Target -> 400 InvalidAction.
//  * Bodies: characters outside SQS's allowed set -> 400 InvalidMessageContents; the body is
//    returned exactly as sent. FIFO queues (name ending .fifo) work with MessageGroupId.
import { SQSClient, SendMessageCommand, ReceiveMessageCommand, DeleteMessageBatchCommand }
  from '@aws-sdk/client-sqs';

const ACCOUNT = '000000000000';
// The SDK warns on stderr that its 2027 releases need Node 22; the tests pin the SDK.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

async function fauxqsModules() {
  const app = import.meta.resolve('fauxqs');       // .../fauxqs/dist/app.js
  const mod = (p) => import(new URL(p, app).href);  // internals are not in its "exports"
  const [{ buildApp }, { SqsStore }, { SnsStore }, { S3Store }] = await Promise.all([
    import('fauxqs'), mod('./sqs/sqsStore.js'), mod('./sns/snsStore.js'), mod('./s3/s3Store.js')]);
  return { buildApp, SqsStore, SnsStore, S3Store };
}

// Message attributes for SendMessage from a plain map: strings become String attributes,
// numbers Number attributes, Buffers Binary; {DataType, ...} objects pass through.
export function toMessageAttributes(attrs = {}) {
  const out = {};
  for (const [name, v] of Object.entries(attrs)) {
    if (v === undefined || v === null) continue;
    if (typeof v === 'string') out[name] = { DataType: 'String', StringValue: v };
    else if (typeof v === 'number') out[name] = { DataType: 'Number', StringValue: String(v) };
    else if (Buffer.isBuffer(v) || v instanceof Uint8Array) out[name] = { DataType: 'Binary', BinaryValue: v };
    else out[name] = v;
  }
  return out;
}

// Starts fauxqs on 127.0.0.1:<ephemeral>.
//   region        queue ARNs' region (default us-east-1)
//   credentials   for the SDK client (fauxqs ignores them; default test/test)
export async function startSqs({ region = 'us-east-1', credentials } = {}) {
  const { buildApp, SqsStore, SnsStore, S3Store } = await fauxqsModules();
  const store = new SqsStore();
  store.host = '';          // queue URL = http://<Host header>/..., see above
  store.region = region;
  const app = buildApp({ logger: false, defaultRegion: region,
    stores: { sqsStore: store, snsStore: new SnsStore(), s3Store: new S3Store() } });
  const seen = [];          // every SQS request fauxqs itself received
  app.addHook('preHandler', async (req) => {
    const target = req.headers['x-amz-target'];
    if (target) seen.push({ op: String(target).replace(/^AmazonSQS\./, ''), body: req.body, at: Date.now() });
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const { port } = app.server.address();
  const endpoint = `http://127.0.0.1:${port}`;
  const client = new SQSClient({
    endpoint, region, maxAttempts: 1,
    credentials: credentials ?? { accessKeyId: 'test', secretAccessKey: 'test' },
  });

  const queueOf = (url) => {
    const q = store.getQueue(url);
    if (!q) throw new Error(`fauxqs has no queue ${url}`);
    return q;
  };

  const sqs = {
    endpoint, region, client, store, app,
    baseUrl: endpoint,              // createQueue's default baseUrl: set it to proxy.endpoint
    requests: seen,                 // [{op, body, at}] as fauxqs received them

    // Creates `name` (and `${name}-dlq` first when redriveToDlq = maxReceiveCount is given).
    // The URL is `${baseUrl}/000000000000/${name}`; baseUrl defaults to sqs.baseUrl (fauxqs
    // itself unless changed): pass the proxy's endpoint for the URL lambdo is given.
    // visibilityTimeout / waitTimeSeconds / delaySeconds set the queue attributes; attributes
    // adds raw ones. Returns { url, arn, dlqUrl, dlqArn }.
    async createQueue(name, { visibilityTimeout, redriveToDlq, baseUrl = sqs.baseUrl, attributes = {},
      waitTimeSeconds, delaySeconds } = {}) {
      const base = String(baseUrl).replace(/\/+$/, '');
      const make = (qname, attrs) => {
        const url = `${base}/${ACCOUNT}/${qname}`;
        const arn = `arn:aws:sqs:${region}:${ACCOUNT}:${qname}`;
        if (store.getQueue(url) || store.getQueueByName(qname)) throw new Error(`queue ${qname} exists`);
        const a = { ...attrs };
        if (qname.endsWith('.fifo')) {
          a.FifoQueue = 'true';
          a.ContentBasedDeduplication ??= 'false';
        }
        store.createQueue(qname, url, arn, a, {});
        return { url, arn };
      };
      const attrs = { ...attributes };
      if (visibilityTimeout !== undefined) attrs.VisibilityTimeout = String(visibilityTimeout);
      if (waitTimeSeconds !== undefined) attrs.ReceiveMessageWaitTimeSeconds = String(waitTimeSeconds);
      if (delaySeconds !== undefined) attrs.DelaySeconds = String(delaySeconds);
      let dlq;
      if (redriveToDlq !== undefined && redriveToDlq !== null && redriveToDlq !== false) {
        const fifo = name.endsWith('.fifo');
        dlq = make(fifo ? `${name.slice(0, -5)}-dlq.fifo` : `${name}-dlq`, {});
        attrs.RedrivePolicy = JSON.stringify({ deadLetterTargetArn: dlq.arn,
          maxReceiveCount: Number(redriveToDlq) });
      }
      const q = make(name, attrs);
      return { url: q.url, arn: q.arn, dlqUrl: dlq?.url, dlqArn: dlq?.arn };
    },

    // SendMessage with MessageAttributes (see toMessageAttributes). opts: {groupId,
    // dedupId, delaySeconds}. Returns the MessageId.
    async send(queueUrl, body, attrs = {}, { groupId, dedupId, delaySeconds } = {}) {
      const out = await client.send(new SendMessageCommand({
        QueueUrl: queueUrl, MessageBody: body, MessageAttributes: toMessageAttributes(attrs),
        MessageGroupId: groupId, MessageDeduplicationId: dedupId, DelaySeconds: delaySeconds,
      }));
      return out.MessageId;
    },

    // { visible, inFlight, delayed } read from the store after running the queue's timers
    // (so expired visibility timeouts count as visible, unlike GetQueueAttributes).
    counts(queueUrl) {
      const q = queueOf(queueUrl);
      q.processTimers();
      return {
        visible: Number(q.getAttribute('ApproximateNumberOfMessages')),
        inFlight: Number(q.getAttribute('ApproximateNumberOfMessagesNotVisible')),
        delayed: Number(q.getAttribute('ApproximateNumberOfMessagesDelayed')),
      };
    },

    // Non-destructive look at a queue: { ready, delayed, inflight } (fauxqs's internal records:
    // messageId, body, messageAttributes, approximateReceiveCount, ...). Receive counts unchanged.
    peek(queueUrl) {
      const q = queueOf(queueUrl);
      q.processTimers();
      return q.inspectMessages();
    },

    // Receives everything visible (all attributes), then deletes it unless keep is set (kept
    // messages stay in flight for visibilityTimeout seconds). Each receive counts towards
    // maxReceiveCount, so on a redrive queue a drain can move messages to the DLQ.
    async drain(queueUrl, { keep = false, visibilityTimeout = 30 } = {}) {
      const all = [];
      for (;;) {
        const out = await client.send(new ReceiveMessageCommand({
          QueueUrl: queueUrl, MaxNumberOfMessages: 10, WaitTimeSeconds: 0,
          VisibilityTimeout: visibilityTimeout, MessageAttributeNames: ['All'],
          MessageSystemAttributeNames: ['All'],
        }));
        const msgs = out.Messages ?? [];
        if (msgs.length === 0) break;
        all.push(...msgs);
        if (!keep) {
          await client.send(new DeleteMessageBatchCommand({ QueueUrl: queueUrl,
            Entries: msgs.map((m, i) => ({ Id: `m${i}`, ReceiptHandle: m.ReceiptHandle })) }));
        }
      }
      return all;
    },

    async close() {
      client.destroy();
      await app.close();   // preClose ends long polls; forceCloseConnections drops sockets
    },
  };
  return sqs;
}
