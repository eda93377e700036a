// Servers for tests/http.test.mjs, all on loopback, each counting what it sees, and a
// runner for tool_httpc.
//   httpServer(handler, opts)    node:http, or node:https when opts.tls = {cert, key}
//   rawServer(onConnection, opts)  plain TCP (or TLS with opts.tls = {cert, key}), for
//                                responses no real server would send
//   opensslServer(args)          `openssl s_server`, for TLS behaviour Node will not show
//   runHttpc(args, {env})        tool_httpc through tools.mjs (LAMBDO_TOOL_WRAPPER honoured)
import { spawn } from 'node:child_process';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import tls from 'node:tls';
import { toolCommand } from './tools.mjs';

// Every server closes with all its sockets, so a test never waits for keep-alive timers.
function track(server, counts) {
  const sockets = new Set();
  server.on('connection', (s) => {
    counts.connections++;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  return () => new Promise((resolve) => {
    for (const s of sockets) s.destroy();
    server.close(() => resolve());
  });
}

function listen(server, host) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, () => resolve(server.address().port));
  });
}

// handler(req, res, info): info.requestOnConnection counts from 1 per connection,
// info.connection from 1 per server. counts.requests counts handler calls.
export async function httpServer(handler, opts = {}) {
  const counts = { connections: 0, secureConnections: 0, requests: 0, resumed: 0 };
  const perSocket = new WeakMap();
  const wrapped = (req, res) => {
    counts.requests++;
    const s = perSocket.get(req.socket) || { n: 0, connection: counts.connections };
    s.n++;
    perSocket.set(req.socket, s);
    handler(req, res, { requestOnConnection: s.n, connection: s.connection });
  };
  const server = opts.tls ? https.createServer({ ...opts.tls }, wrapped) : http.createServer(wrapped);
  if (opts.tls) {
    server.on('secureConnection', (s) => {
      counts.secureConnections++;
      if (s.isSessionReused()) counts.resumed++;
    });
    if (opts.sessionCache) {
      // Node keeps no server-side session cache of its own: these make session IDs work.
      const cache = new Map();
      server.on('newSession', (id, data, cb) => { cache.set(id.toString('hex'), data); cb(); });
      server.on('resumeSession', (id, cb) => cb(null, cache.get(id.toString('hex')) || null));
    }
  }
  const close = track(server, counts);
  const host = opts.host || '127.0.0.1';
  const port = await listen(server, host);
  const scheme = opts.tls ? 'https' : 'http';
  const name = opts.tls ? 'localhost' : host.includes(':') ? `[${host}]` : host;
  return { server, port, counts, close, url: (p = '/') => `${scheme}://${name}:${port}${p}` };
}

// Reads one request head (and a Content-Length body) from a socket at a time.
export function requestReader(socket) {
  let buf = Buffer.alloc(0);
  const waiting = [];
  let ended = false;
  const pump = () => {
    while (waiting.length) {
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) {
        if (ended) waiting.shift()(null);
        else return;
        continue;
      }
      const head = buf.subarray(0, end).toString('latin1');
      const m = /\r\ncontent-length:\s*(\d+)/i.exec(head);
      const len = m ? Number(m[1]) : 0;
      if (buf.length < end + 4 + len) {
        if (ended) waiting.shift()(null);
        return;
      }
      const body = buf.subarray(end + 4, end + 4 + len);
      buf = buf.subarray(end + 4 + len);
      waiting.shift()({ head, body });
    }
  };
  socket.on('data', (d) => { buf = Buffer.concat([buf, d]); pump(); });
  socket.on('end', () => { ended = true; pump(); });
  socket.on('close', () => { ended = true; pump(); });
  socket.on('error', () => {});
  return () => new Promise((resolve) => { waiting.push(resolve); pump(); });
}

// onConnection(socket, {connection, nextRequest}): connection counts from 1; nextRequest()
// resolves with {head, body} or null at EOF. counts.requests counts the request heads read.
// With opts.tls, socket is the TLS socket: end() sends close_notify, destroy() does not.
export async function rawServer(onConnection, opts = {}) {
  const counts = { connections: 0, requests: 0 };
  const server = net.createServer((tcp) => {
    const socket = opts.tls ? new tls.TLSSocket(tcp, { isServer: true, ...opts.tls }) : tcp;
    const read = requestReader(socket);
    const nextRequest = async () => {
      const r = await read();
      if (r) counts.requests++;
      return r;
    };
    socket.on('error', () => {});
    tcp.on('error', () => {});
    onConnection(socket, { connection: counts.connections, nextRequest });
  });
  const close = track(server, counts);
  const host = opts.host || '127.0.0.1';
  const port = await listen(server, host);
  const name = host.includes(':') ? `[${host}]` : host;
  return { port, counts, close, url: (p = '/') => `http://${name}:${port}${p}`,
    tlsUrl: (p = '/') => `https://localhost:${port}${p}` };
}

export async function freePort() {
  const s = net.createServer();
  const port = await listen(s, '127.0.0.1');
  await new Promise((r) => s.close(r));
  return port;
}

// Starts `openssl s_server` on a free port and resolves once it accepts.
export async function opensslServer(args) {
  const port = await freePort();
  const child = spawn('openssl', ['s_server', '-accept', `127.0.0.1:${port}`, '-naccept', '1', ...args],
    { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`openssl s_server did not start: ${out}`)), 10000);
    const onData = (d) => {
      out += d;
      if (out.includes('ACCEPT')) { clearTimeout(timer); resolve(); }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', (d) => { out += d; });
    child.on('exit', (code) => { clearTimeout(timer); reject(new Error(`openssl s_server exited ${code}: ${out}`)); });
  });
  child.removeAllListeners('exit');
  return {
    port,
    url: (p = '/') => `https://localhost:${port}${p}`,
    output: () => out,
    close: () => new Promise((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve();
      child.on('exit', () => resolve());
      child.kill();
    }),
  };
}

// Runs tool_httpc; resolves {code, results, stats, stdout, stderr}: results are the
// per-request JSON lines, stats the final {connections_opened, requests_sent}.
// The tool is killed if it outlives timeoutMs (generous: valgrind may wrap it).
export function runHttpc(args, { env = {}, timeoutMs = 60000, prefix = [] } = {}) {
  const [cmd, ...rest] = [...prefix, ...toolCommand('tool_httpc', args)];
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, rest, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '', stderr = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.stdout.on('data', (d) => { stdout += d; });
    child.stderr.on('data', (d) => { stderr += d; });
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (signal) return reject(new Error(`tool_httpc killed by ${signal}\n${stdout}\n${stderr}`));
      const lines = stdout.split('\n').filter(Boolean).map((l) => {
        try { return JSON.parse(l); } catch { throw new Error(`bad output line: ${l}\n${stderr}`); }
      });
      const stats = lines.length && 'connections_opened' in lines.at(-1) ? lines.pop() : null;
      resolve({ code, results: lines, stats, stdout, stderr });
    });
  });
}
