// The metrics server (metrics.c) through tool_metrics: scrapes checked by promtool, the real
// Prometheus text-format parser and linter (Debian's prometheus package), and read back
// here for the values; /healthz on the tool's movable clock; 404, 405, HEAD, 400, 431, 505;
// silent and slow clients that must not hold the others up; a port already taken; SIGTERM.
//
// LAMBDO_TOOL_WRAPPER (valgrind) works: the timings asserted are the server's own timeouts,
// with generous upper bounds.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { promtoolPath, toolCommand } from './lib/tools.mjs';

const T = { timeout: 60000 };
const HEAD_MAX = 8192;
const READ_TIMEOUT_MS = 2000;
const SLOTS = 8;

// ---- the tool ---------------------------------------------------------------------------

// Starts tool_metrics; resolves once it listens. cmd(line) sends one update and waits for
// its "ok"; stop() sends SIGTERM and resolves with the exit code.
async function startTool(args) {
  const [cmd, ...rest] = toolCommand('tool_metrics', args);
  const proc = spawn(cmd, rest, { stdio: ['pipe', 'pipe', 'pipe'] });
  const lines = [];
  const waiters = [];
  let out = '';
  let err = '';
  proc.stdout.setEncoding('utf8');
  proc.stdout.on('data', (d) => {
    out += d;
    let nl;
    while ((nl = out.indexOf('\n')) >= 0) {
      const line = out.slice(0, nl);
      out = out.slice(nl + 1);
      if (waiters.length) waiters.shift()(line);
      else lines.push(line);
    }
  });
  proc.stderr.setEncoding('utf8');
  proc.stderr.on('data', (d) => { err += d; });
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  const nextLine = () => new Promise((resolve, reject) => {
    if (lines.length) return resolve(lines.shift());
    const timer = setTimeout(() => reject(new Error(`tool_metrics said nothing; stderr: ${err}`)), 30000);
    waiters.push((l) => { clearTimeout(timer); resolve(l); });
    exited.then(({ code }) => reject(new Error(`tool_metrics exited ${code}: ${err}`)));
  });
  const first = await nextLine();
  const m = /^listening (\d+)$/.exec(first);
  assert.ok(m, `unexpected first line "${first}"; stderr: ${err}`);
  return {
    proc,
    port: Number(m[1]),
    stderr: () => err,
    // sends one line, resolves with the tool's answer
    async ask(c) {
      proc.stdin.write(`${c}\n`);
      return nextLine();
    },
    async cmd(...cmds) {
      for (const c of cmds) {
        proc.stdin.write(`${c}\n`);
        const answer = await nextLine();
        assert.equal(answer, 'ok', `command "${c}"`);
      }
    },
    async stop() {
      proc.kill('SIGTERM');
      const r = await exited;
      assert.equal(r.code, 0, `tool_metrics exit ${r.code} ${r.signal}; stderr: ${err}`);
      return r;
    },
  };
}

// Runs the tool, then stops it whatever the test did.
async function withTool(args, fn) {
  const t = await startTool(args);
  try {
    await fn(t);
  } finally {
    await t.stop();
  }
}

// Runs the tool expecting it to fail at start.
function runFailing(args) {
  const [cmd, ...rest] = toolCommand('tool_metrics', args);
  return spawnSync(cmd, rest, { encoding: 'utf8', timeout: 30000, input: '' });
}

// ---- clients ----------------------------------------------------------------------------

function request(port, path, { method = 'GET', host = '127.0.0.1', headers = {} } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host, port, path, method, headers, agent: false }, (res) => {
      const chunks = [];
      res.on('data', (d) => chunks.push(d));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers,
        body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', reject);
    req.end();
  });
}

// Sends bytes on a fresh connection (nothing when bytes is null), reads until the server
// closes. Resolves { data, ms } with ms from connect to close.
function raw(port, bytes, { host = '127.0.0.1' } = {}) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    const s = net.connect({ host, port });
    let t0;
    s.on('connect', () => {
      t0 = Date.now();
      if (bytes !== null) s.write(bytes);
    });
    s.on('data', (d) => chunks.push(d));
    s.on('error', (e) => (e.code === 'ECONNRESET' || e.code === 'EPIPE' ? null : reject(e)));
    s.on('close', () => resolve({ data: Buffer.concat(chunks).toString('latin1'), ms: Date.now() - t0 }));
  });
}

function statusOf(answer) {
  const m = /^HTTP\/1\.1 (\d{3}) /.exec(answer);
  return m ? Number(m[1]) : null;
}

// ---- the exposition ---------------------------------------------------------------------

// promtool check metrics (Debian's prometheus package, see tools.mjs): parses with
// Prometheus' own text parser and lints the names. Its silence is a pass.
function promtoolCheck(text) {
  const r = spawnSync(promtoolPath(), ['check', 'metrics'], { input: text, encoding: 'utf8' });
  if (r.error) throw r.error;
  assert.equal(r.status, 0, `promtool check metrics failed:\n${r.stdout}${r.stderr}\n---\n${text}`);
  assert.equal(`${r.stdout}${r.stderr}`.trim(), '', `promtool complained:\n${r.stdout}${r.stderr}`);
}

// The samples, as { 'name{a="x",b="y"}': value } with labels in their order of appearance
// and values unescaped; also checks every family has HELP and TYPE before its samples.
function samples(text) {
  const out = new Map();
  const typed = new Set();
  assert.ok(text.endsWith('\n'), 'the exposition ends with a newline');
  for (const line of text.split('\n').slice(0, -1)) {
    let m;
    if ((m = /^# TYPE (\w+) (counter|gauge|histogram)$/.exec(line))) { typed.add(m[1]); continue; }
    if (/^# HELP \w+ .+$/.test(line)) continue;
    m = /^(\w+)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `not a sample line: ${JSON.stringify(line)}`);
    const [, name, labelText = '', value] = m;
    const family = name.replace(/_(bucket|sum|count)$/, '');
    assert.ok(typed.has(name) || typed.has(family), `${name} has no TYPE before it`);
    const labels = [];
    const re = /(\w+)="((?:[^"\\]|\\[\\"n])*)"(?:,|$)/y;
    for (let pos = 0; pos < labelText.length; pos = re.lastIndex) {
      re.lastIndex = pos;
      const lm = re.exec(labelText);
      assert.ok(lm, `bad labels in ${JSON.stringify(line)}`);
      labels.push(`${lm[1]}="${lm[2].replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c))}"`);
    }
    const key = labels.length ? `${name}{${labels.join(',')}}` : name;
    assert.ok(!out.has(key), `duplicate series ${key}`);
    out.set(key, Number(value));
  }
  return out;
}

const LES = ['0.005', '0.01', '0.025', '0.05', '0.1', '0.25', '0.5', '1', '2.5', '5', '10', '30', '60', '+Inf'];

// Checks a histogram series and returns { buckets: {le: n}, sum, count }.
function histogram(s, name, op) {
  const buckets = {};
  let prev = 0;
  for (const le of LES) {
    const v = s.get(`${name}_bucket{operation="${op}",le="${le}"}`);
    assert.ok(v !== undefined, `${name} ${op} has no le="${le}" bucket`);
    assert.ok(v >= prev, `${name} ${op}: buckets must be cumulative`);
    buckets[le] = v;
    prev = v;
  }
  const count = s.get(`${name}_count{operation="${op}"}`);
  assert.equal(count, buckets['+Inf'], `${name} ${op}: _count equals the +Inf bucket`);
  return { buckets, sum: s.get(`${name}_sum{operation="${op}"}`), count };
}

async function scrape(port) {
  const r = await request(port, '/metrics');
  assert.equal(r.status, 200);
  assert.equal(r.headers['content-type'], 'text/plain; version=0.0.4; charset=utf-8');
  assert.equal(r.headers.connection, 'close');
  promtoolCheck(r.body);
  return { text: r.body, s: samples(r.body) };
}

// ---- tests ------------------------------------------------------------------------------

describe('metrics', () => {
  test('a fresh server: promtool passes, every counter and region at 0', T, async () => {
    await withTool(['--regions', 'iad,ord', '--version', '9.8.7', '127.0.0.1:0'], async (t) => {
      const { s } = await scrape(t.port);
      assert.equal(s.get('lambdo_build_info{version="9.8.7"}'), 1);
      for (const n of ['received', 'deleted', 'invalid', 'returned']) {
        assert.equal(s.get(`lambdo_messages_${n}_total`), 0);
      }
      for (const r of ['iad', 'ord', 'other']) {
        assert.equal(s.get(`lambdo_machines_created_total{region="${r}"}`), 0);
        assert.equal(s.get(`lambdo_machines_failed_total{region="${r}"}`), 0);
      }
      assert.equal(s.get('lambdo_fly_rate_limited_total'), 0);
      assert.equal(s.get('lambdo_machines_in_flight'), 0);
      // the tool itself: a counter it has no name for is refused, not a crash
      assert.equal(await t.ask('count pool_idle 1'), 'error: unknown command');
      assert.equal((await request(t.port, '/healthz')).status, 200);
    });
  });

  test('counted values come back, histograms are well formed, promtool passes', T, async () => {
    await withTool(['--regions', 'iad,ord,ams', '127.0.0.1:0'], async (t) => {
      await t.cmd('count received 25', 'count received 5', 'count deleted 20', 'count invalid 2',
        'count returned 3', 'count rate_limited 4', 'created iad', 'created iad', 'created ams',
        'created syd', 'failed ord', 'failed ord', 'failed nowhere', 'in_flight 6',
        'observe sqs ReceiveMessage 0.2', 'observe sqs ReceiveMessage 20.5',
        'observe sqs ReceiveMessage 0.005', 'observe sqs DeleteMessageBatch 0.04',
        'observe fly create 1.1', 'observe fly wait 59', 'observe fly wait 61',
        'observe fly we"ird\\op 0.3');
      const { s } = await scrape(t.port);
      assert.equal(s.get('lambdo_messages_received_total'), 30);
      assert.equal(s.get('lambdo_messages_deleted_total'), 20);
      assert.equal(s.get('lambdo_messages_invalid_total'), 2);
      assert.equal(s.get('lambdo_messages_returned_total'), 3);
      assert.equal(s.get('lambdo_fly_rate_limited_total'), 4);
      assert.equal(s.get('lambdo_machines_created_total{region="iad"}'), 2);
      assert.equal(s.get('lambdo_machines_created_total{region="ord"}'), 0);
      assert.equal(s.get('lambdo_machines_created_total{region="ams"}'), 1);
      assert.equal(s.get('lambdo_machines_created_total{region="other"}'), 1);
      assert.equal(s.get('lambdo_machines_failed_total{region="ord"}'), 2);
      assert.equal(s.get('lambdo_machines_failed_total{region="other"}'), 1);
      assert.equal(s.get('lambdo_machines_in_flight'), 6);

      const recv = histogram(s, 'lambdo_sqs_request_seconds', 'ReceiveMessage');
      assert.equal(recv.count, 3);
      assert.equal(recv.buckets['0.005'], 1);   // bounds are inclusive
      assert.equal(recv.buckets['0.1'], 1);
      assert.equal(recv.buckets['0.25'], 2);
      assert.equal(recv.buckets['10'], 2);
      assert.equal(recv.buckets['30'], 3);
      assert.ok(Math.abs(recv.sum - 20.705) < 1e-6, `sum ${recv.sum}`);
      assert.equal(histogram(s, 'lambdo_sqs_request_seconds', 'DeleteMessageBatch').buckets['0.05'], 1);
      const wait = histogram(s, 'lambdo_fly_request_seconds', 'wait');
      assert.equal(wait.buckets['60'], 1);
      assert.equal(wait.buckets['+Inf'], 2);
      assert.equal(histogram(s, 'lambdo_fly_request_seconds', 'create').buckets['2.5'], 1);
      // the label value went through escaping and back
      assert.equal(histogram(s, 'lambdo_fly_request_seconds', 'we"ird\\op').count, 1);
    });
  });

  test('HEAD answers the headers GET would, without a body', T, async () => {
    await withTool(['127.0.0.1:0'], async (t) => {
      for (const path of ['/metrics', '/healthz', '/nope']) {
        const get = await raw(t.port, `GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`);
        const head = await raw(t.port, `HEAD ${path} HTTP/1.1\r\nHost: x\r\n\r\n`);
        const [gh, gb] = get.data.split('\r\n\r\n');
        assert.equal(statusOf(head.data), statusOf(get.data));
        assert.ok(head.data.endsWith('\r\n\r\n'), `HEAD ${path} sent a body: ${head.data}`);
        const len = /\r\nContent-Length: (\d+)\r\n/.exec(head.data);
        assert.ok(len, head.data);
        assert.equal(Number(len[1]), Buffer.byteLength(gb));
        assert.match(gh, /\r\nConnection: close$|\r\nConnection: close\r\n/);
      }
    });
  });

  test('/healthz: 200, 503 after 3 failed receives, 200 after one that works, 503 after a silence', T, async () => {
    await withTool(['--long-poll', '10', '127.0.0.1:0'], async (t) => {
      const health = () => request(t.port, '/healthz');
      let r = await health();
      assert.equal(r.status, 200);
      assert.equal(r.body, 'ok\n');
      await t.cmd('receive ok', 'receive fail', 'receive fail');
      assert.equal((await health()).status, 200);
      await t.cmd('receive fail');
      r = await health();
      assert.equal(r.status, 503);
      assert.equal(r.body, 'unhealthy: the last 3 receives from SQS failed\n');
      assert.equal(r.headers.connection, 'close');
      await t.cmd('receive ok');
      assert.equal((await health()).status, 200);
      // long poll 10 s: no successful receive for 3 x 10 + 30 = 60 s is too long
      await t.cmd('advance 59000');
      assert.equal((await health()).status, 200);
      await t.cmd('advance 2000');
      r = await health();
      assert.equal(r.status, 503);
      assert.match(r.body, /^unhealthy: no successful receive from SQS for 61 s \(limit 60 s\)\n$/);
      // every Machine slot taken: not receiving is fine, however long
      await t.cmd('idle 1', 'advance 3600000');
      assert.equal((await health()).status, 200);
      await t.cmd('idle 0');
      assert.equal((await health()).status, 200);
      await t.cmd('advance 60500');
      assert.equal((await health()).status, 503);
    });
  });

  test('404 for unknown paths, 405 with Allow for other methods, Connection: close on all', T, async () => {
    await withTool(['127.0.0.1:0'], async (t) => {
      for (const path of ['/', '/metrics/', '/favicon.ico', '/healthz/x', '/METRICS']) {
        const r = await request(t.port, path);
        assert.equal(r.status, 404, path);
        assert.equal(r.headers.connection, 'close');
        assert.equal(r.headers.allow, undefined);
      }
      assert.equal((await request(t.port, '/metrics?name[]=x')).status, 200);  // query ignored
      for (const method of ['POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS']) {
        for (const path of ['/metrics', '/healthz']) {
          const r = await request(t.port, path, { method });
          assert.equal(r.status, 405, `${method} ${path}`);
          assert.equal(r.headers.allow, 'GET, HEAD');
          assert.equal(r.headers.connection, 'close');
        }
      }
      // a body the server does not read does not cost the client its answer
      const post = await raw(t.port, `POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n${'b'.repeat(100000)}`);
      assert.equal(statusOf(post.data), 405);
    });
  });

  test('garbage gets 400 at once, HTTP/2 505, an HTTP/1.1 request without Host 400', T, async () => {
    await withTool(['127.0.0.1:0'], async (t) => {
      // the start of a TLS ClientHello: refused as soon as it arrives, not after a timeout
      const tls = await raw(t.port, Buffer.from('160301020001000101fc0303', 'hex'));
      assert.equal(statusOf(tls.data), 400);
      assert.ok(tls.ms < READ_TIMEOUT_MS, `took ${tls.ms} ms`);
      assert.equal(statusOf((await raw(t.port, 'GET / HTTP/2.0\r\n\r\n')).data), 505);
      assert.equal(statusOf((await raw(t.port, 'GET /metrics HTTP/1.1\r\n\r\n')).data), 400);
      assert.equal(statusOf((await raw(t.port, 'GET /metrics HTTP/1.0\r\n\r\n')).data), 200);
      assert.equal(statusOf((await raw(t.port, 'GET /metrics HTTP/1.1\nHost: x\n\n')).data), 200);
    });
  });

  test(`a request head over ${HEAD_MAX} bytes gets 431 and the connection closes`, T, async () => {
    await withTool(['127.0.0.1:0'], async (t) => {
      const big = `GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(HEAD_MAX)}\r\n\r\n`;
      const r = await raw(t.port, big);
      assert.equal(statusOf(r.data), 431);
      assert.match(r.data, /\r\nConnection: close\r\n/);
      // a long request line alone, and a head that never ends
      assert.equal(statusOf((await raw(t.port, `GET /${'x'.repeat(HEAD_MAX)} HTTP/1.1\r\n\r\n`)).data), 431);
      assert.equal(statusOf((await raw(t.port, `GET / HTTP/1.1\r\n${'X: y\r\n'.repeat(5000)}`)).data), 431);
      // just under the cap is fine
      const fits = `GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: `;
      const pad = HEAD_MAX - fits.length - 4;
      assert.equal(statusOf((await raw(t.port, `${fits}${'a'.repeat(pad)}\r\n\r\n`)).data), 200);
      // and the server still answers
      assert.equal((await request(t.port, '/healthz')).status, 200);
    });
  });

  test('a silent client is dropped after the read timeout while another is served', T, async () => {
    await withTool(['127.0.0.1:0'], async (t) => {
      const silent = raw(t.port, null);
      const partial = raw(t.port, 'GET /metr');
      await sleep(200);
      const t0 = Date.now();
      const r = await request(t.port, '/metrics');
      assert.equal(r.status, 200);
      assert.ok(Date.now() - t0 < 1000, `the scrape waited ${Date.now() - t0} ms behind a silent client`);
      const s = await silent;
      assert.equal(s.data, '', 'nothing is sent to a client that sent nothing');
      assert.ok(s.ms >= READ_TIMEOUT_MS - 200 && s.ms < READ_TIMEOUT_MS + 3000, `dropped after ${s.ms} ms`);
      const p = await partial;
      assert.equal(statusOf(p.data), 408);
      assert.ok(p.ms >= READ_TIMEOUT_MS - 200 && p.ms < READ_TIMEOUT_MS + 3000, `408 after ${p.ms} ms`);
    });
  });

  test('a client trickling its request a byte at a time is cut off at the read timeout', T, async () => {
    await withTool(['127.0.0.1:0'], async (t) => {
      const s = net.connect({ host: '127.0.0.1', port: t.port });
      await once(s, 'connect');
      const t0 = Date.now();
      let closedAt = 0;
      s.on('error', () => {});
      s.on('close', () => { closedAt = Date.now(); });
      const text = 'GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ' + 'z'.repeat(100);
      for (let i = 0; i < text.length && !closedAt; i++) {
        s.write(text[i]);
        await sleep(50);
      }
      assert.ok(closedAt, 'still open after the whole trickle');
      const ms = closedAt - t0;
      assert.ok(ms >= READ_TIMEOUT_MS - 200 && ms < READ_TIMEOUT_MS + 3000, `closed after ${ms} ms`);
    });
  });

  test(`${SLOTS} silent clients hold a scrape up until the first times out, not longer`, T, async () => {
    await withTool(['127.0.0.1:0'], async (t) => {
      const silent = Array.from({ length: SLOTS }, () => raw(t.port, null));
      await sleep(200);
      const t0 = Date.now();
      const r = await request(t.port, '/healthz');
      const waited = Date.now() - t0;
      assert.equal(r.status, 200);
      assert.ok(waited < READ_TIMEOUT_MS + 2000, `the scrape waited ${waited} ms`);
      // the slots are full: the scrape waits in the backlog for the first to time out
      assert.ok(waited >= READ_TIMEOUT_MS / 2, `${SLOTS} slots held, yet the scrape waited only ${waited} ms`);
      await Promise.all(silent);
    });
  });

  test('a port already taken, and a bad address, are refused with the address named', T, async () => {
    const taken = net.createServer();
    await new Promise((resolve) => taken.listen(0, '127.0.0.1', resolve));
    const addr = `127.0.0.1:${taken.address().port}`;
    try {
      const r = runFailing([addr]);
      assert.equal(r.status, 1, r.stderr);
      assert.match(r.stderr, /^error io: /m);
      assert.ok(r.stderr.includes(addr), r.stderr);
      assert.match(r.stderr, /already in use/);
    } finally {
      taken.close();
    }
    for (const bad of ['example.com:9090', '127.0.0.1', '::1:9090', '127.0.0.1:70000']) {
      const r = runFailing([bad]);
      assert.equal(r.status, 2, `${bad}: ${r.stderr}`);
      assert.match(r.stderr, /^error invalid: metrics address/m);
      assert.ok(r.stderr.includes(bad), r.stderr);
    }
  });

  test('SIGTERM stops the server: the port closes and the tool exits 0', T, async () => {
    const t = await startTool(['127.0.0.1:0']);
    assert.equal((await request(t.port, '/healthz')).status, 200);
    const silent = raw(t.port, null);  // a connection in progress does not hold the stop up
    await sleep(100);
    const t0 = Date.now();
    await t.stop();
    assert.ok(Date.now() - t0 < 1500, `stopping took ${Date.now() - t0} ms`);
    await silent;
    await assert.rejects(request(t.port, '/healthz'), { code: 'ECONNREFUSED' });
  });

  test(':PORT listens on every interface, IPv4 and IPv6', T, async () => {
    const has6 = await new Promise((resolve) => {
      const s = net.createServer();
      s.once('error', () => resolve(false));
      s.listen(0, '::1', () => s.close(() => resolve(true)));
    });
    await withTool([':0'], async (t) => {
      assert.equal((await request(t.port, '/healthz', { host: '127.0.0.1' })).status, 200);
      if (has6) assert.equal((await request(t.port, '/healthz', { host: '::1' })).status, 200);
    });
    if (has6) {
      await withTool(['[::1]:0'], async (t) => {
        assert.equal((await request(t.port, '/healthz', { host: '::1' })).status, 200);
      });
    }
  });
});
