// A lambdo job. The runtime calls `handler` once per event of the Machine's events file, in
// order, and awaits it before the next one. Throw (or reject) to fail an event: the others
// still run, and the Machine exits non-zero.
const { mkdirSync, existsSync, writeFileSync } = require('node:fs');
const { tmpdir } = require('node:os');
const path = require('node:path');
const { setTimeout: sleep } = require('node:timers/promises');

// Delivery is at least once: a message may come again after its work was done. The SQS
// message id is the idempotency key: a marker per id, written once the work succeeded (a
// failed event is retried in full). A directory only catches repeats it outlives (a Fly
// Machine starts with an empty disk): production code uses a durable store, such as a
// database table with the message id as a unique key, inserted in the work's transaction.
const DONE_DIR = process.env.JOB_DONE_DIR || path.join(tmpdir(), 'lambdo-jobs-done');
mkdirSync(DONE_DIR, { recursive: true });
const marker = (messageId) => path.join(DONE_DIR, encodeURIComponent(messageId));

async function work(event, context) {
  switch (event.action) {
    case 'resize':
      await sleep(20); // stands in for real work: fetch, resize, upload
      console.log(`resized ${event.image} to ${event.width}px for user ${event.user} ` +
        `(event ${context.index + 1} of ${context.count})`);
      break;
    case 'notify': {
      // JSON.parse rounds integers beyond 2^53 (event.order is 9007199254740992 here):
      // context.raw is the event's exact JSON text, to read such numbers from.
      const order = /"order"\s*:\s*(-?\d+)/.exec(context.raw)[1];
      console.log(`notified user ${event.user} about order ${order}`);
      break;
    }
    default:
      throw new Error(`unknown action ${JSON.stringify(event.action)}`);
  }
}

exports.handler = async (event, context) => {
  // Without lambdo's meta file (an older lambdo, a hand run) there is no message id.
  const { messageId } = context;
  if (messageId !== undefined && existsSync(marker(messageId))) {
    console.log(`message ${messageId} already done: skipped (receive count ${context.receiveCount})`);
    return;
  }
  await work(event, context);
  if (messageId !== undefined) writeFileSync(marker(messageId), '');
};
