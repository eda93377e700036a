// The HTTP/1.1 client (url.c, tls.c, http.c) driven through tool_httpc against real
// servers started here: node:http, node:https, raw TCP servers for odd responses, and
// openssl s_server for TLS alerts. Every server counts its connections and requests, so
// keep-alive reuse and "sent exactly once" are checked from the server's side.
//
// Valgrind: LAMBDO_VARIANT=glibc LAMBDO_TOOL_WRAPPER="valgrind ..." runs the same tests;
// limits below are generous enough for it, and the few timeouts asked of the client are
// waits on silent servers, which valgrind does not slow down.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { testCerts } from './lib/certs.mjs';
import { httpServer, rawServer, opensslServer, freePort, runHttpc } from './lib/httpservers.mjs';

const T = { timeout: 90000 };
const sha256 = (b) => createHash('sha256').update(b).digest('hex');
const delay = (ms) => new Promise((r) => setTimeout(r, ms));

let certs;
let caEnv;
before(() => {
  certs = testCerts();
  caEnv = { SSL_CERT_FILE: certs.caFile };
});

// A server of each kind, or both, for tests that must hold over plain TCP and TLS.
async function both(handler, opts = {}) {
  return [await httpServer(handler, opts),
    await httpServer(handler, { ...opts, tls: { cert: certs.localhost.cert, key: certs.localhost.key } })];
}

function echo(req, res) {
  const chunks = [];
  req.on('data', (d) => chunks.push(d));
  req.on('end', () => {
    const body = Buffer.concat(chunks);
    res.setHeader('X-Method', req.method);
    res.setHeader('X-Host', req.headers.host);
    res.setHeader('X-Custom', req.headers['x-custom'] || '');
    res.setHeader('X-Body-Sha256', sha256(body));
    res.setHeader('X-Body-Len', String(body.length));
    res.end(`${req.method} ${req.url}`);
  });
}

function assertOk(r, n) {
  assert.equal(r.code, 0, `tool failed: ${r.stdout}\n${r.stderr}`);
  assert.equal(r.results.length, n, r.stdout);
  for (const x of r.results) assert.ok(x.status, `request failed: ${JSON.stringify(x)}`);
}

// Exit status 1 is the tool reporting the failure; anything else (99 from valgrind, a
// sanitizer's) is a bug even in a test that expects the request to fail.
function assertError(r, kind, ...words) {
  assert.equal(r.code, 1, `expected exit status 1: ${r.stdout}\n${r.stderr}`);
  const last = r.results.at(-1);
  assert.ok(last && last.error_kind, `no error line: ${r.stdout}\n${r.stderr}`);
  assert.equal(last.error_kind, kind, last.error);
  for (const w of words) assert.ok(last.error.includes(w), `"${last.error}" lacks "${w}"`);
  return last;
}

describe('requests and responses', () => {
  test('GET and POST with bodies, over http and https', T, async () => {
    const big = Buffer.alloc(1 << 20, 'abcdefghij');
    const servers = await both((req, res) => {
      if (req.url === '/big') return res.end(big);
      echo(req, res);
    });
    try {
      for (const s of servers) {
        const r = await runHttpc(['--method', 'POST', '--header', 'X-Custom: hello there',
          '--data-size', '200000', s.url('/post?q=1')], { env: caEnv });
        assertOk(r, 1);
        const [p] = r.results;
        assert.equal(p.status, 200);
        assert.equal(p.body, 'POST /post?q=1');
        assert.equal(p.headers['x-method'], 'POST');
        assert.equal(p.headers['x-custom'], 'hello there');
        assert.equal(p.headers['x-body-len'], '200000');
        assert.equal(p.headers['x-body-sha256'], sha256(Buffer.alloc(200000, 'x')));
        assert.equal(p.headers['x-host'], new URL(s.url()).host);

        const g = await runHttpc([s.url('/big'), s.url('/get')], { env: caEnv });
        assertOk(g, 2);
        assert.equal(g.results[0].body_len, big.length);
        assert.equal(g.results[0].body_sha256, sha256(big));
        assert.equal(g.results[1].body, 'GET /get');
        assert.equal(g.results[1].headers['x-body-len'], '0');
      }
    } finally {
      for (const s of servers) await s.close();
    }
  });

  test('POST with an empty body sends Content-Length: 0', T, async () => {
    const s = await rawServer(async (sock, { nextRequest }) => {
      const r = await nextRequest();
      const cl = /\r\ncontent-length: (\d+)/i.exec(r.head);
      sock.end(`HTTP/1.1 200 OK\r\nContent-Length: ${cl ? cl[1].length : 0}\r\nConnection: close\r\n\r\n${cl ? cl[1] : ''}`);
    });
    try {
      const r = await runHttpc(['--method', 'POST', s.url()]);
      assertOk(r, 1);
      assert.equal(r.results[0].body, '0');
    } finally {
      await s.close();
    }
  });

  test('header lookup is case-insensitive and the first of repeated fields wins', T, async () => {
    const s = await rawServer(async (sock, { nextRequest }) => {
      await nextRequest();
      sock.end('HTTP/1.1 200 OK\r\nX-MiXeD-Case:  first  \r\nx-mixed-case: second\r\nContent-Length: 0\r\n\r\n');
    });
    try {
      let r = await runHttpc(['--lookup', 'x-MIXED-case', s.url()]);
      assertOk(r, 1);
      assert.equal(r.results[0].lookup, 'first');
      r = await runHttpc(['--lookup', 'x-absent', s.url()]);
      assertOk(r, 1);
      assert.equal(r.results[0].lookup, null);
    } finally {
      await s.close();
    }
  });

  test('chunked bodies written in pieces with delays', T, async () => {
    const pieces = ['first piece,', 'x'.repeat(70000), '', 'last'];
    const servers = await both(async (req, res) => {
      res.setHeader('Content-Type', 'text/plain');
      for (const p of pieces) {
        res.write(p);
        await delay(30);
      }
      res.end();
    });
    try {
      for (const s of servers) {
        const r = await runHttpc([s.url('/a'), s.url('/b')], { env: caEnv });
        assertOk(r, 2);
        for (const x of r.results) {
          assert.equal(x.headers['transfer-encoding'], 'chunked');
          assert.equal(x.body_len, pieces.join('').length);
          assert.equal(x.body_sha256, sha256(pieces.join('')));
        }
        assert.equal(r.stats.connections_opened, 1);
        assert.equal(s.counts.connections, 1);
      }
    } finally {
      for (const s of servers) await s.close();
    }
  });

  test('raw chunked body with extensions and trailers', T, async () => {
    const s = await rawServer(async (sock, { nextRequest }) => {
      while (await nextRequest()) {
        sock.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n');
        await delay(20);
        sock.write('1\r\n \r\n6\r\nworld!\r\n0\r\nX-Trailer: t\r\n\r\n');
      }
    });
    try {
      const r = await runHttpc([s.url(), s.url()]);
      assertOk(r, 2);
      assert.equal(r.results[0].body, 'hello world!');
      assert.equal(r.results[1].body, 'hello world!');
      assert.equal(s.counts.connections, 1);
    } finally {
      await s.close();
    }
  });

  test('HEAD, 204 and 304 have no body, and the connection stays usable', T, async () => {
    const servers = await both((req, res) => {
      if (req.url === '/204') { res.statusCode = 204; return res.end(); }
      if (req.url === '/304') { res.statusCode = 304; return res.end(); }
      res.setHeader('Content-Length', '1000');
      res.end(req.method === 'HEAD' ? undefined : 'y'.repeat(1000));
    });
    try {
      for (const s of servers) {
        const r = await runHttpc(['--method', 'HEAD', s.url('/h')], { env: caEnv });
        assertOk(r, 1);
        assert.equal(r.results[0].body_len, 0);
        assert.equal(r.results[0].headers['content-length'], '1000');
        const r2 = await runHttpc([s.url('/204'), s.url('/304'), s.url('/full')], { env: caEnv });
        assertOk(r2, 3);
        assert.deepEqual(r2.results.map((x) => [x.status, x.body_len]), [[204, 0], [304, 0], [200, 1000]]);
        assert.equal(r2.stats.connections_opened, 1);
      }
    } finally {
      for (const s of servers) await s.close();
    }
  });

  test('HEAD then GET on one raw connection: the HEAD body is not waited for', T, async () => {
    const s = await rawServer(async (sock, { nextRequest }) => {
      let r;
      while ((r = await nextRequest())) {
        const head = r.head.startsWith('HEAD');
        sock.write(`HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n${head ? '' : 'abcde'}`);
      }
    });
    try {
      const r = await runHttpc(['--method', 'HEAD', s.url(), s.url()]);
      assertOk(r, 2);
      assert.equal(r.results[0].body_len, 0);
      assert.equal(r.results[1].body_len, 0);
      assert.equal(r.stats.connections_opened, 1);
      const g = await runHttpc([s.url()]);
      assert.equal(g.results[0].body, 'abcde');
    } finally {
      await s.close();
    }
  });

  test('100 Continue and other 1xx responses are skipped', T, async () => {
    const s = await rawServer(async (sock, { nextRequest }) => {
      while (await nextRequest()) {
        sock.write('HTTP/1.1 100 Continue\r\n\r\n');
        await delay(20);
        sock.write('HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\n');
        sock.write('Content-Length: 2\r\nX-Final: yes\r\n\r\nok');
      }
    });
    try {
      const r = await runHttpc(['--method', 'POST', '--header', 'Expect: 100-continue', '--data', 'abc', s.url(), s.url()]);
      assertOk(r, 2);
      for (const x of r.results) {
        assert.equal(x.status, 200);
        assert.equal(x.body, 'ok');
        assert.equal(x.headers['x-final'], 'yes');
        assert.equal(x.headers.link, undefined);
      }
      assert.equal(r.stats.connections_opened, 1);
    } finally {
      await s.close();
    }
  });

  test('a 1xx and the whole final response in one write: no wait for more bytes', T, async () => {
    // The server then keeps the connection open: a client that read again before parsing
    // what is left after the 1xx would wait for the io timeout.
    const s = await rawServer(async (sock, { nextRequest }) => {
      while (await nextRequest()) {
        sock.write('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
      }
    });
    try {
      const r = await runHttpc(['--io-timeout-ms', '3000', s.url(), s.url()]);
      assertOk(r, 2);
      for (const x of r.results) assert.equal(x.body, 'ok');
      assert.equal(r.stats.connections_opened, 1);
    } finally {
      await s.close();
    }
  });

  test('a status >= 400 is a response, not an error', T, async () => {
    const s = await httpServer((req, res) => { res.statusCode = 503; res.end('busy'); });
    try {
      const r = await runHttpc([s.url()]);
      assertOk(r, 1);
      assert.equal(r.results[0].status, 503);
      assert.equal(r.results[0].body, 'busy');
    } finally {
      await s.close();
    }
  });

  test('IPv6 literal http://[::1]:PORT/', T, async (t) => {
    let s;
    try {
      s = await httpServer(echo, { host: '::1' });
    } catch (err) {
      t.skip(`SKIPPED LOUDLY: cannot listen on ::1 here (${err.code})`);
      return;
    }
    try {
      const r = await runHttpc([s.url('/six'), s.url('/six')]);
      assertOk(r, 2);
      assert.equal(r.results[0].body, 'GET /six');
      assert.equal(r.results[0].headers['x-host'], `[::1]:${s.port}`);
      assert.equal(s.counts.connections, 1);
    } finally {
      await s.close();
    }
  });

  test('request headers with CR or LF, or framing headers, are refused before sending', T, async () => {
    const s = await httpServer(echo);
    try {
      let r = await runHttpc(['--header', 'X-Evil: a\r\nInjected: 1', s.url()]);
      assertError(r, 'invalid', 'control character');
      r = await runHttpc(['--header', 'Content-Length: 5', s.url()]);
      assertError(r, 'invalid', 'Content-Length');
      assert.equal(s.counts.connections, 0);
    } finally {
      await s.close();
    }
  });
});

describe('connections', () => {
  test('keep-alive: 5 requests over one connection (http and https)', T, async () => {
    const servers = await both(echo);
    try {
      for (const s of servers) {
        const r = await runHttpc(['--repeat', '5', s.url('/k')], { env: caEnv });
        assertOk(r, 5);
        assert.equal(s.counts.requests, 5);
        assert.equal(s.counts.connections, 1);
        assert.deepEqual(r.stats, { connections_opened: 1, requests_sent: 5 });
      }
      assert.equal(servers[1].counts.secureConnections, 1);
    } finally {
      for (const s of servers) await s.close();
    }
  });

  test('steady state allocates nothing: one request and one response buffer serve every request', T, async () => {
    const servers = await both(echo);
    try {
      for (const s of servers) {
        const r = await runHttpc(['--method', 'POST', '--data-size', '6000', '--repeat', '20', '--alloc-stats', s.url('/b')],
          { env: caEnv });
        assertOk(r, 20);
        assert.equal(r.results[19].body_len, r.results[0].body_len);
        assert.deepEqual(r.stats, { connections_opened: 1, requests_sent: 20, buffers_allocated: 2 });
      }
    } finally {
      for (const s of servers) await s.close();
    }
  });

  // Counted with strace -c: BearSSL alone asks for each record's header, then its payload
  // (two reads a record), and a read right after sending would mostly say EAGAIN.
  const canStrace = spawnSync('strace', ['-o', '/dev/null', 'true']).status === 0;
  test('over kept-alive HTTPS, a small answer costs one send and one recv', { ...T, skip: !canStrace &&
    'SKIPPED LOUDLY: needs strace(1), allowed to trace' }, async () => {
    const s = await httpServer(echo, { tls: { cert: certs.localhost.cert, key: certs.localhost.key } });
    const out = path.join(mkdtempSync(path.join(tmpdir(), 'lambdo-strace-')), 'counts');
    try {
      // LeakSanitizer cannot run under ptrace: leaks are checked by every other test.
      const r = await runHttpc(['--repeat', '20', s.url('/s')], { env: { ...caEnv, ASAN_OPTIONS: 'detect_leaks=0' },
        prefix: ['strace', '-f', '-c', '-e', 'trace=sendto,recvfrom', '-o', out] });
      assertOk(r, 20);
      const calls = {};
      for (const line of readFileSync(out, 'utf8').split('\n')) {
        const f = line.trim().split(/\s+/);
        if (f.length >= 5 && /^\d+$/.test(f[3])) calls[f.at(-1)] = { n: +f[3], errors: f.length === 6 ? +f[4] : 0 };
      }
      // 20 answers, plus the handshake's few flights
      assert.ok(calls.sendto.n <= 20 + 4, `sendto ${calls.sendto.n}`);
      assert.ok(calls.recvfrom.n <= 20 + 6, `recvfrom ${calls.recvfrom.n}`);
      assert.ok(calls.recvfrom.errors <= 2, `recvfrom EAGAIN ${calls.recvfrom.errors}`);
    } finally {
      await s.close();
    }
  });

  test('one connection per origin, least recently used evicted beyond 4 origins', T, async () => {
    const servers = [];
    for (let i = 0; i < 5; i++) servers.push(await httpServer(echo));
    try {
      const [a, b, c, d, e] = servers.map((s) => s.url());
      // a b a b: two origins, two connections
      let r = await runHttpc([a, b, a, b]);
      assertOk(r, 4);
      assert.equal(r.stats.connections_opened, 2);
      // a b c d e (e evicts a, the least recently used) then b (still open) then a (new)
      r = await runHttpc([a, b, c, d, e, b, a]);
      assertOk(r, 7);
      assert.equal(r.stats.connections_opened, 6);
      assert.equal(servers[1].counts.connections, 2);  // b: one per run
      assert.equal(servers[0].counts.connections, 3);  // a: 1 in the first run, 2 in this one
    } finally {
      for (const s of servers) await s.close();
    }
  });

  test('the server closes an idle connection: the next request goes on a new one, sent once', T, async () => {
    // What a keep-alive timeout does: FIN (and close_notify over TLS) some time after the
    // response, while the client holds the connection idle.
    const servers = await both((req, res) => {
      res.on('finish', () => setTimeout(() => req.socket.end(), 50));
      echo(req, res);
    });
    try {
      for (const s of servers) {
        const r = await runHttpc(['--repeat', '2', '--delay-ms', '500', s.url('/idle')], { env: caEnv });
        assertOk(r, 2);
        assert.equal(s.counts.connections, 2);
        assert.equal(s.counts.requests, 2);
        assert.deepEqual(r.stats, { connections_opened: 2, requests_sent: 2 });
      }
    } finally {
      for (const s of servers) await s.close();
    }
  });

  test('the server resets an idle connection: the next request goes on a new one', T, async () => {
    // resetAndDestroy works on plain TCP sockets only.
    const s = await httpServer((req, res) => {
      res.on('finish', () => setTimeout(() => req.socket.resetAndDestroy(), 50));
      echo(req, res);
    });
    try {
      const r = await runHttpc(['--repeat', '2', '--delay-ms', '400', s.url()]);
      assertOk(r, 2);
      assert.equal(s.counts.requests, 2);
      assert.equal(s.counts.connections, 2);
      assert.deepEqual(r.stats, { connections_opened: 2, requests_sent: 2 });
    } finally {
      await s.close();
    }
  });

  test('a reused connection dropped just as the request arrives: resent once on a new connection', T, async () => {
    // The first connection answers one request, then drops the second without a byte:
    // what a server does when its idle timer fires as the request is on the wire.
    const servers = await both((req, res, info) => {
      if (info.connection === 1 && info.requestOnConnection === 2) return req.socket.destroy();
      echo(req, res);
    });
    try {
      for (const s of servers) {
        const r = await runHttpc(['--method', 'POST', '--data', 'once', s.url('/a'), s.url('/b')], { env: caEnv });
        assertOk(r, 2);
        assert.equal(r.results[1].body, 'POST /b');
        assert.deepEqual(r.stats, { connections_opened: 2, requests_sent: 3 });
        assert.equal(s.counts.connections, 2);
      }
    } finally {
      for (const s of servers) await s.close();
    }
  });

  test('a fresh connection closed without an answer is an error, and not resent', T, async () => {
    const s = await rawServer(async (sock, { nextRequest }) => {
      await nextRequest();
      sock.destroy();
    });
    try {
      const r = await runHttpc(['--method', 'POST', '--data', 'x', s.url()]);
      assertError(r, 'closed', 'without answering');
      assert.equal(s.counts.connections, 1);
      assert.equal(s.counts.requests, 1);
      assert.deepEqual(r.stats, { connections_opened: 1, requests_sent: 1 });
    } finally {
      await s.close();
    }
  });

  test('a reused connection that dies after the response started is not resent', T, async () => {
    const s = await rawServer(async (sock, { nextRequest }) => {
      await nextRequest();
      sock.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
      await nextRequest();
      sock.end('HTTP/1.1 200 OK\r\nContent-Le');
    });
    try {
      const r = await runHttpc([s.url(), s.url()]);
      assertError(r, 'malformed', 'middle of the response head');
      assert.equal(r.results[0].body, 'ok');
      assert.equal(s.counts.connections, 1);
      assert.deepEqual(r.stats, { connections_opened: 1, requests_sent: 2 });
    } finally {
      await s.close();
    }
  });

  test('Connection: close and bodies delimited by close are not reused', T, async () => {
    const s = await rawServer(async (sock, { nextRequest }) => {
      const r = await nextRequest();
      if (r.head.includes(' /close ')) {
        sock.write('HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbye');
      } else {
        sock.write('HTTP/1.1 200 OK\r\n\r\nuntil');
        await delay(30);
        sock.write(' close');
      }
      sock.end();
    });
    try {
      const r = await runHttpc([s.url('/close'), s.url('/eof'), s.url('/close')]);
      assertOk(r, 3);
      assert.deepEqual(r.results.map((x) => x.body), ['bye', 'until close', 'bye']);
      assert.equal(s.counts.connections, 3);
      assert.equal(r.stats.connections_opened, 3);
    } finally {
      await s.close();
    }
  });

  test('TLS session resumption on reconnection to the same server', T, async () => {
    const s = await httpServer((req, res) => { res.setHeader('Connection', 'close'); res.end('s'); },
      { tls: { cert: certs.localhost.cert, key: certs.localhost.key, maxVersion: 'TLSv1.2' }, sessionCache: true });
    try {
      const r = await runHttpc(['--repeat', '3', s.url()], { env: caEnv });
      assertOk(r, 3);
      assert.equal(s.counts.secureConnections, 3);
      assert.equal(s.counts.resumed, 2);
    } finally {
      await s.close();
    }
  });
});

describe('failures', () => {
  test('connection refused', T, async () => {
    const port = await freePort();
    const r = await runHttpc([`http://127.0.0.1:${port}/`]);
    assertError(r, 'refused', `127.0.0.1:${port}`, 'refused');
  });

  // The lookup must not leave this machine: the tool runs in a private mount namespace whose
  // /etc/resolv.conf names a resolver on 127.0.0.1 where nothing listens, so the query is
  // refused locally and getaddrinfo fails the way it does for an unknown name.
  const privateResolver = () => {
    const conf = path.join(mkdtempSync(path.join(tmpdir(), 'lambdo-dns-')), 'resolv.conf');
    writeFileSync(conf, 'nameserver 127.0.0.1\noptions attempts:1 timeout:1\n');
    return ['unshare', '--mount', 'sh', '-c', 'mount --bind "$0" /etc/resolv.conf && exec "$@"', conf];
  };
  const canUnshare = process.getuid?.() === 0 &&
    spawnSync('unshare', ['--mount', 'true']).status === 0;
  test('DNS failure names the host', { ...T, skip: !canUnshare &&
    'SKIPPED LOUDLY: needs root and unshare(1) to keep the DNS query on this machine' }, async () => {
    const r = await runHttpc(['http://no-such-host.invalid/'], { prefix: privateResolver() });
    assertError(r, 'dns', 'cannot resolve host no-such-host.invalid');
  });

  test('a server that never answers: timeout waiting for the response', T, async () => {
    const s = await rawServer(() => {});
    try {
      const r = await runHttpc(['--io-timeout-ms', '300', s.url()]);
      assertError(r, 'timeout', 'timeout after 300 ms', 'waiting for response from');
      const w = await runHttpc(['--timeout-ms', '400', s.url()]);
      assertError(w, 'timeout', 'request timeout after 400 ms', 'waiting for response from');
      const t = await runHttpc(['--io-timeout-ms', '300', s.tlsUrl()], { env: caEnv });
      assertError(t, 'timeout', 'timeout after 300 ms', 'TLS handshake');
    } finally {
      await s.close();
    }
  });

  test('a connect that never completes: timeout connecting', T, async (t) => {
    // A listening socket that never accepts, its backlog filled: further SYNs are dropped
    // and connect() waits. Node always accepts, so python3 holds the socket.
    const filler = `
import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(0)
held = []
for i in range(8):
    c = socket.socket(); c.setblocking(False)
    try: c.connect(s.getsockname())
    except BlockingIOError: pass
    held.append(c)
time.sleep(0.3)
print(s.getsockname()[1], flush=True)
sys.stdin.read()
`;
    let child;
    try {
      child = spawn('python3', ['-c', filler], { stdio: ['pipe', 'pipe', 'inherit'] });
    } catch {
      return t.skip('SKIPPED LOUDLY: python3 is needed to hold a never-accepting socket');
    }
    const port = await new Promise((resolve) => {
      child.on('error', () => resolve(null));
      child.stdout.once('data', (d) => resolve(Number(String(d).trim())));
    });
    if (!port) return t.skip('SKIPPED LOUDLY: python3 is needed to hold a never-accepting socket');
    try {
      const r = await runHttpc(['--connect-timeout-ms', '300', `http://127.0.0.1:${port}/`]);
      assertError(r, 'timeout', 'timeout after 300 ms connecting to 127.0.0.1');
      assert.equal(r.stats.connections_opened, 0);
    } finally {
      child.stdin.end();
      child.kill();
    }
  });

  test('a body that stops half-way: timeout reading the body', T, async () => {
    const s = await rawServer(async (sock, { nextRequest }) => {
      await nextRequest();
      sock.write('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc');
    });
    try {
      const r = await runHttpc(['--io-timeout-ms', '300', s.url()]);
      assertError(r, 'timeout', 'reading response body from');
    } finally {
      await s.close();
    }
  });

  test('a server trickling a byte within every io timeout: the client\'s request deadline ends it', T, async () => {
    const s = await rawServer(async (sock, { nextRequest }) => {
      await nextRequest();
      sock.write('HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n');
      const timer = setInterval(() => sock.write('x'), 100);
      sock.on('close', () => clearInterval(timer));
    });
    try {
      const t0 = Date.now();
      const r = await runHttpc(['--io-timeout-ms', '5000', '--request-timeout-ms', '1500', s.url()]);
      assertError(r, 'timeout', 'request timeout after 1500 ms', 'reading response body from');
      assert.ok(Date.now() - t0 < 30000, 'ended by the deadline, not by the trickle');
      // a request's own timeout_ms takes the place of the client's
      const w = await runHttpc(['--request-timeout-ms', '60000', '--timeout-ms', '700', s.url()]);
      assertError(w, 'timeout', 'request timeout after 700 ms');
    } finally {
      await s.close();
    }
  });

  test('TLS: a body delimited by the close is complete only with close_notify', T, async () => {
    const s = await rawServer(async (sock, { nextRequest }) => {
      const r = await nextRequest();
      // destroy(): TCP FIN without close_notify, as when the connection is cut mid-body
      sock.write('HTTP/1.1 200 OK\r\n\r\npartial', () => (r.head.includes(' /cut ') ? sock.destroy() : sock.end()));
    }, { tls: { cert: certs.localhost.cert, key: certs.localhost.key } });
    try {
      const whole = await runHttpc([s.tlsUrl('/whole')], { env: caEnv });
      assertOk(whole, 1);
      assert.equal(whole.results[0].body, 'partial');
      const cut = await runHttpc([s.tlsUrl('/cut')], { env: caEnv });
      assertError(cut, 'malformed', 'without TLS close_notify after 7 body bytes', 'truncated');
      assert.equal(s.counts.requests, 2);
    } finally {
      await s.close();
    }
  });

  test('cancel_fd aborts a wait', T, async () => {
    const s = await rawServer(() => {});
    try {
      const r = await runHttpc(['--cancel-after-ms', '300', s.url()]);
      assertError(r, 'cancelled', 'waiting for response');
    } finally {
      await s.close();
    }
  });

  test('untrusted certificate and wrong host name are rejected', T, async () => {
    const untrusted = await httpServer(echo, { tls: { cert: certs.untrusted.cert, key: certs.untrusted.key } });
    const wrong = await httpServer(echo, { tls: { cert: certs.wronghost.cert, key: certs.wronghost.key } });
    try {
      let r = await runHttpc([untrusted.url()], { env: caEnv });
      assertError(r, 'tls-untrusted', 'certificate for localhost is not trusted', 'BearSSL error 62');
      r = await runHttpc([wrong.url()], { env: caEnv });
      assertError(r, 'tls-name', 'localhost', 'BearSSL error 56');
      assert.equal(untrusted.counts.requests + wrong.counts.requests, 0);
    } finally {
      await untrusted.close();
      await wrong.close();
    }
  });

  // RSA chains (AWS's endpoints have them): the RSA CA's signature on the leaf and the
  // server's RSA signature on its key exchange are both checked (tls.c: BearSSL's i31 RSA).
  test('RSA: a chain from a trusted RSA CA is accepted, one from another RSA CA is not', T, async () => {
    const file = (f) => path.join(certs.dir, f);
    const ssl = (args) => execFileSync('openssl', args, { stdio: 'ignore' });
    const ca = (name) => ssl(['req', '-x509', '-nodes', '-days', '2', '-newkey', 'rsa:2048',
      '-subj', `/CN=${name}`, '-addext', 'basicConstraints=critical,CA:TRUE',
      '-addext', 'keyUsage=critical,keyCertSign', '-keyout', file(`${name}.key`), '-out', file(`${name}.pem`)]);
    const leaf = (name, by) => {
      ssl(['req', '-new', '-nodes', '-newkey', 'rsa:2048', '-subj', '/CN=localhost',
        '-keyout', file(`${name}.key`), '-out', file(`${name}.csr`)]);
      writeFileSync(file(`${name}.ext`), 'subjectAltName=DNS:localhost\n');
      ssl(['x509', '-req', '-in', file(`${name}.csr`), '-CA', file(`${by}.pem`), '-CAkey', file(`${by}.key`),
        '-CAcreateserial', '-days', '2', '-sha256', '-extfile', file(`${name}.ext`), '-out', file(`${name}.pem`)]);
    };
    ca('rsa-root');
    ca('rsa-other');
    leaf('rsa-leaf', 'rsa-root');
    leaf('rsa-stranger', 'rsa-other');
    const env = { SSL_CERT_FILE: file('rsa-root.pem') };
    const pair = (n) => ({ tls: { cert: readFileSync(file(`${n}.pem`)), key: readFileSync(file(`${n}.key`)) } });
    const good = await httpServer(echo, pair('rsa-leaf'));
    const bad = await httpServer(echo, pair('rsa-stranger'));
    try {
      let r = await runHttpc([good.url()], { env });
      assertOk(r, 1);
      r = await runHttpc([bad.url()], { env });
      assertError(r, 'tls-untrusted', 'certificate for localhost is not trusted');
      assert.equal(bad.counts.requests, 0);
    } finally {
      await good.close();
      await bad.close();
    }
  });

  // RFC 6125 6.2.1: an IP address matches an iPAddress SAN, never a DNS name or the CN;
  // RFC 6066 3: no SNI for an IP address. The handler answers with the SNI Node saw.
  const sniEcho = (req, res) => res.end(String(req.socket.servername));
  const tlsOpts = (pair) => ({ tls: { cert: pair.cert, key: pair.key } });

  test('IP-address hosts: an iPAddress SAN matches, no SNI is sent; a DNS name still sends it', T, async (t) => {
    const ip = await httpServer(sniEcho, tlsOpts(certs.ip4));
    const named = await httpServer(sniEcho, tlsOpts(certs.localhost));
    try {
      const r = await runHttpc([`https://127.0.0.1:${ip.port}/`, `https://127.1:${ip.port}/`, named.url()],
        { env: caEnv });
      assertOk(r, 3);
      assert.deepEqual(r.results.map((x) => x.body), ['false', 'false', 'localhost']);
    } finally {
      await ip.close();
      await named.close();
    }
    let six;
    try {
      six = await httpServer(sniEcho, { host: '::1', ...tlsOpts(certs.ip6) });
    } catch (err) {
      return t.skip(`SKIPPED LOUDLY: cannot listen on ::1 here (${err.code}): the IPv6 case is untested`);
    }
    try {
      const r = await runHttpc([`https://[::1]:${six.port}/`], { env: caEnv });
      assertOk(r, 1);
      assert.equal(r.results[0].body, 'false');
    } finally {
      await six.close();
    }
  });

  test('IP-address hosts: DNS:127.0.0.1, CN=127.0.0.1 alone, or another address are refused', T, async () => {
    const cases = [['dns127', '127.0.0.1'], ['cn127', '127.0.0.1'], ['ip6', '127.0.0.1'], ['ip4', 'localhost']];
    for (const [cert, host] of cases) {
      const s = await httpServer(echo, tlsOpts(certs[cert]));
      try {
        const r = await runHttpc([`https://${host}:${s.port}/`], { env: caEnv });
        const last = assertError(r, 'tls-name', `certificate presented by ${host} is not valid`, 'BearSSL error 56');
        assert.equal(s.counts.requests, 0, `${cert} for ${host}: ${last.error}`);
      } finally {
        await s.close();
      }
    }
    // Only the first 8 KiB of an IP host's certificate are kept for the check: a bigger one
    // is refused, not half-read.
    const big = await httpServer(echo, tlsOpts(certs.ip4big));
    try {
      assert.ok(certs.ip4big.cert.length > 12000, 'the PEM of a DER over 8 KiB');
      const r = await runHttpc([`https://127.0.0.1:${big.port}/`], { env: caEnv });
      assertError(r, 'tls', '127.0.0.1', 'BR_ERR_X509_LIMIT_EXCEEDED');
    } finally {
      await big.close();
    }
  });

  test('TLS alert from the server: TLS 1.3 only gives protocol_version', T, async () => {
    const s = await opensslServer(['-tls1_3', '-cert', certs.localhost.certFile, '-key', certs.localhost.keyFile]);
    try {
      const r = await runHttpc([s.url()], { env: caEnv });
      assertError(r, 'tls-alert', 'alert 70', 'protocol_version');
    } finally {
      await s.close();
    }
  });

  test('TLS alert from the server: a client certificate is demanded', T, async () => {
    const s = await opensslServer(['-tls1_2', '-Verify', '1', '-CAfile', certs.caFile,
      '-cert', certs.localhost.certFile, '-key', certs.localhost.keyFile]);
    try {
      const r = await runHttpc([s.url()], { env: caEnv });
      const last = assertError(r, 'tls-alert', 'localhost sent TLS alert');
      assert.match(last.error, /alert (40|42|116)/);
    } finally {
      await s.close();
    }
  });

  test('openssl s_server answers a GET over TLS 1.2', T, async () => {
    const s = await opensslServer(['-tls1_2', '-cert', certs.localhost.certFile, '-key', certs.localhost.keyFile, '-www']);
    try {
      const r = await runHttpc([s.url()], { env: caEnv });
      assertOk(r, 1);
      assert.equal(r.results[0].status, 200);
      assert.ok(r.results[0].body.includes('TLSv1.2'), r.results[0].body);
    } finally {
      await s.close();
    }
  });

  // Each AEAD and key-exchange curve the client offers, one at a time: tls.c picks the
  // implementations by hand, so a missing or broken one fails here, not in production.
  for (const [cipher, curve] of [
    ['ECDHE-ECDSA-CHACHA20-POLY1305', 'X25519'], ['ECDHE-ECDSA-AES128-GCM-SHA256', 'P-256'],
    ['ECDHE-ECDSA-AES256-GCM-SHA384', 'P-384'], ['ECDHE-ECDSA-CHACHA20-POLY1305', 'P-521'],
  ]) {
    test(`openssl s_server with only ${cipher} and ${curve}`, T, async () => {
      const s = await opensslServer(['-tls1_2', '-cert', certs.localhost.certFile, '-key',
        certs.localhost.keyFile, '-cipher', cipher, '-groups', curve, '-www']);
      try {
        const r = await runHttpc([s.url()], { env: caEnv });
        assertOk(r, 1);
        assert.ok(r.results[0].body.includes(`Cipher is ${cipher}`), r.results[0].body);
      } finally {
        await s.close();
      }
    });
  }

  for (const [name, response, words] of [
    ['garbage status line', 'HELLO THERE\r\n\r\n', ['bad response from']],
    ['bad chunk size', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n', ['bad response from']],
    ['truncated Content-Length body, then close', 'HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc', ['after 3 of 10 body bytes']],
    ['truncated chunked body, then close', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab', ['chunked body']],
    ['truncated head, then close', 'HTTP/1.1 200 OK\r\nContent-Len', ['middle of the response head']],
    ['101 not asked for', 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n', ['switched protocols']],
  ]) {
    test(`malformed response: ${name}`, T, async () => {
      const s = await rawServer(async (sock, { nextRequest }) => {
        await nextRequest();
        sock.end(response);
      });
      try {
        const r = await runHttpc([s.url()]);
        assertError(r, 'malformed', ...words);
      } finally {
        await s.close();
      }
    });
  }

  test('body over --max-body is too-large (length, chunked, until close)', T, async () => {
    const s = await rawServer(async (sock, { nextRequest }) => {
      const r = await nextRequest();
      if (r.head.includes(' /length ')) sock.end(`HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n${'a'.repeat(2000)}`);
      else if (r.head.includes(' /chunked ')) sock.end('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\n' + 'b'.repeat(1000) + '\r\n3e8\r\n' + 'b'.repeat(1000) + '\r\n0\r\n\r\n');
      else sock.end(`HTTP/1.1 200 OK\r\n\r\n${'c'.repeat(5000)}`);
    });
    try {
      let r = await runHttpc(['--max-body', '1500', s.url('/length')]);
      assertError(r, 'too-large', '2000 bytes', 'limit of 1500');
      r = await runHttpc(['--max-body', '1500', s.url('/chunked')]);
      assertError(r, 'too-large', 'limit of 1500');
      r = await runHttpc(['--max-body', '1500', s.url('/close')]);
      assertError(r, 'too-large', 'limit of 1500');
      r = await runHttpc(['--max-body', '2000', s.url('/length')]);
      assertOk(r, 1);
    } finally {
      await s.close();
    }
  });

  test('a TRUSTED CERTIFICATE whose trust settings reject TLS servers is not an anchor', T, async () => {
    // OpenSSL's trusted-certificate form appends trust settings after the certificate; one
    // that rejects serverAuth must not become a trust anchor (it would fail open).
    const rejected = path.join(certs.dir, 'ca-rejected.pem');
    execFileSync('openssl', ['x509', '-in', certs.caFile, '-trustout', '-addreject', 'serverAuth',
      '-out', rejected], { stdio: 'ignore' });
    assert.match(readFileSync(rejected, 'utf8'), /BEGIN TRUSTED CERTIFICATE/);
    const r = await runHttpc(['https://localhost:1/'], { env: { SSL_CERT_FILE: rejected } });
    assertError(r, 'invalid', rejected, 'no usable certificate');
  });

  test('SSL_CERT_FILE pointing at a missing file, or at a file without certificates', T, async () => {
    let r = await runHttpc(['https://localhost:1/'], { env: { SSL_CERT_FILE: '/nonexistent/ca.pem' } });
    assertError(r, 'io', '/nonexistent/ca.pem', 'No such file');
    const empty = path.join(certs.dir, 'empty.pem');
    writeFileSync(empty, 'not a certificate\n');
    r = await runHttpc(['https://localhost:1/'], { env: { SSL_CERT_FILE: empty } });
    assertError(r, 'invalid', empty, 'no usable certificate');
    const bad = path.join(certs.dir, 'bad.pem');
    writeFileSync(bad, '-----BEGIN CERTIFICATE-----\nnot*base64\n-----END CERTIFICATE-----\n');
    r = await runHttpc(['https://localhost:1/'], { env: { SSL_CERT_FILE: bad } });
    assertError(r, 'invalid', bad, 'bad base64');
  });

  test('a bundle with several certificates and other PEM blocks loads every certificate', T, async () => {
    // The test CA last, after a key and an untrusted CA: all must be read for it to work.
    const bundle = path.join(certs.dir, 'bundle.pem');
    writeFileSync(bundle, [readFileSync(path.join(certs.dir, 'rogue-ca.pem')), 'comment line\n',
      certs.localhost.key, certs.ca].join(''));
    const s = await httpServer(echo, { tls: { cert: certs.localhost.cert, key: certs.localhost.key } });
    try {
      const r = await runHttpc([s.url()], { env: { SSL_CERT_FILE: bundle } });
      assertOk(r, 1);
    } finally {
      await s.close();
    }
  });

  test('CA bundle decoding gives the same anchors as BearSSL\'s own decoders', T, async (t) => {
    // RSA and P-256 CAs, a v1 P-384 certificate without extensions (not a CA), and
    // Ed25519, which BearSSL cannot use: both decoders must skip it.
    const gen = (name, args) => execFileSync('openssl', ['req', '-x509', '-nodes', '-days', '2',
      '-subj', `/CN=${name}/O=Test Org/C=FR`, '-keyout', path.join(certs.dir, `${name}.key`),
      '-out', path.join(certs.dir, `${name}.pem`), ...args], { stdio: 'ignore' });
    gen('rsa-ca', ['-newkey', 'rsa:2048', '-addext', 'basicConstraints=critical,CA:TRUE']);
    gen('ed-ca', ['-newkey', 'ed25519']);
    // `openssl x509 -req` without extensions makes a v1 certificate: P-384, no CA flag.
    const v1 = (f) => path.join(certs.dir, f);
    execFileSync('openssl', ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-384', '-nodes',
      '-keyout', v1('p384-v1.key'), '-subj', '/CN=v1', '-out', v1('p384-v1.csr')], { stdio: 'ignore' });
    execFileSync('openssl', ['x509', '-req', '-in', v1('p384-v1.csr'), '-key', v1('p384-v1.key'),
      '-days', '2', '-out', v1('p384-ca.pem')], { stdio: 'ignore' });
    const bundle = path.join(certs.dir, 'mixed.pem');
    writeFileSync(bundle, ['rsa-ca', 'ed-ca', 'p384-ca', 'ca', 'localhost']
      .map((n) => readFileSync(path.join(certs.dir, `${n}.pem`))).join(''));
    let r = await runHttpc(['--ca-check'], { env: { SSL_CERT_FILE: bundle } });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.deepEqual(r.results[0], { certificates: 5, reference_anchors: 4, anchors: 4, matching: 4 });
    const system = '/etc/ssl/certs/ca-certificates.crt';
    if (!existsSync(system)) return t.skip(`SKIPPED LOUDLY: no system bundle at ${system}`);
    r = await runHttpc(['--ca-check'], { env: { SSL_CERT_FILE: system } });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.ok(r.results[0].anchors > 50, r.stdout);
    assert.equal(r.results[0].matching, r.results[0].anchors);
  });

  test('bad URLs are refused with the reason', T, async () => {
    const r = await runHttpc(['http://user:pw@localhost/']);
    assertError(r, 'invalid', 'credentials');
  });
});
