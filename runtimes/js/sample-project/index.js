// A lambdo job. The runtime calls `handler` once per event of the Machine's events file, in
// order, and awaits it before the next one. Throw (or reject) to fail an event: the others
// still run, and the Machine exits non-zero.
const { setTimeout: sleep } = require('node:timers/promises');

exports.handler = async (event, context) => {
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
};
