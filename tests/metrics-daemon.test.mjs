// lambdo itself with LAMBDO_METRICS_ADDR, on the rig (fauxqs behind the SigV4 proxy, the
// test Fly API): what the daemon counts shows on /metrics (checked by promtool), /healthz
// follows SQS, and a bad or taken address stops lambdo with exit status 2.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import { startRig, until, REGIONS } from './lib/accounting.mjs';
import { freePort } from './lib/httpservers.mjs';
import { promtoolPath } from './lib/tools.mjs';

const T = { timeout: 120000 };

function get(port, path) {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode, body }));
    }).on('error', reject);
  });
}

function value(text, series) {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

describe('lambdo with LAMBDO_METRICS_ADDR', () => {
  let rig;
  before(async () => { rig = await startRig(); });
  after(async () => { await rig.close(); });

  test('what lambdo does shows on /metrics; /healthz is 200 while SQS answers', T, async () => {
    const q = await rig.queue('metrics');
    const port = await freePort();
    // the primary region is full: every create fails there once, then works in the next
    rig.fly.setRegionFault(REGIONS[0], { status: 503 });
    const run = rig.lambdo(q.url, { LAMBDO_METRICS_ADDR: `127.0.0.1:${port}` });
    try {
      await run.waitLog(/metrics: serving/, 20000);
      const sent = await rig.send(q.url, 10);
      await rig.send(q.url, 2, { key: 'bad', attrs: () => ({}) });  // no image: invalid
      await until(() => rig.batchDone('DeleteMessageBatch', q.url).length >= sent.length,
        'the valid messages deleted', 30000);
      await until(async () => value((await get(port, '/metrics')).body, 'lambdo_messages_deleted_total') >= 10,
        'deleted counted', 10000);
      const { status, body } = await get(port, '/metrics');
      assert.equal(status, 200);
      const pt = spawnSync(promtoolPath(), ['check', 'metrics'], { input: body, encoding: 'utf8' });
      if (pt.error) throw pt.error;
      assert.equal(pt.status, 0, `${pt.stdout}${pt.stderr}`);
      assert.ok(value(body, 'lambdo_messages_received_total') >= 12, body);
      assert.equal(value(body, 'lambdo_messages_deleted_total'), 10);
      assert.ok(value(body, 'lambdo_messages_invalid_total') >= 2, body);
      const created = REGIONS.slice(1).reduce((s, r) => s + value(body, `lambdo_machines_created_total{region="${r}"}`), 0);
      assert.ok(created >= 1, body);
      assert.equal(value(body, `lambdo_machines_created_total{region="${REGIONS[0]}"}`), 0);
      assert.ok(value(body, `lambdo_machines_failed_total{region="${REGIONS[0]}"}`) >= 1, body);
      assert.ok(value(body, 'lambdo_sqs_request_seconds_count{operation="ReceiveMessage"}') >= 1, body);
      assert.ok(value(body, 'lambdo_sqs_request_seconds_count{operation="DeleteMessageBatch"}') >= 1, body);
      assert.ok(value(body, 'lambdo_fly_request_seconds_count{operation="create"}') >= 2, body);
      assert.equal(value(body, 'lambdo_machines_in_flight'), 0);
      const h = await get(port, '/healthz');
      assert.equal(h.status, 200, h.body);
    } finally {
      rig.clearFaults();
      const r = await run.stop();
      assert.equal(r.code, 0, run.out.slice(-3000));
    }
  });

  test('/healthz turns 503 when SQS keeps failing', T, async () => {
    const q = await rig.queue('metrics-fail');
    const port = await freePort();
    const run = rig.lambdo(q.url, { LAMBDO_METRICS_ADDR: `127.0.0.1:${port}` });
    try {
      await run.waitLog(/metrics: serving/, 20000);
      await until(async () => (await get(port, '/healthz')).status === 200, 'healthy', 10000);
      rig.proxy.fault = () => ({ status: 500 });
      await until(async () => (await get(port, '/healthz')).status === 503, 'unhealthy', 60000, 200);
      assert.match((await get(port, '/healthz')).body, /receives from SQS failed/);
      rig.proxy.fault = null;
      await until(async () => (await get(port, '/healthz')).status === 200, 'healthy again', 60000, 200);
    } finally {
      rig.clearFaults();
      await run.stop();
    }
  });

  test('a taken port or a bad address: exit 2 naming LAMBDO_METRICS_ADDR', T, async () => {
    const q = await rig.queue('metrics-bad');
    const taken = net.createServer();
    await new Promise((r) => taken.listen(0, '127.0.0.1', r));
    try {
      for (const addr of [`127.0.0.1:${taken.address().port}`, 'example.com:9090']) {
        const run = rig.lambdo(q.url, { LAMBDO_METRICS_ADDR: addr });
        const r = await run.exit;
        assert.equal(r.code, 2, run.out);
        assert.match(run.out, /LAMBDO_METRICS_ADDR/);
        assert.ok(run.out.includes(addr), run.out);
      }
    } finally {
      taken.close();
    }
  });
});
