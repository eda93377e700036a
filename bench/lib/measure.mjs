// Small measuring helpers shared by bench/bench.mjs and bench/callgrind.mjs.
import { readFileSync, readdirSync, lstatSync, existsSync, realpathSync, statSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';

export const TICK_MS = 1000 / 100;   // USER_HZ: /proc/<pid>/stat counts CPU in 10 ms ticks

// CPU (utime + stime, all threads, exited ones included) and memory of a live process.
export function procStat(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k) => Number(new RegExp(`${k}:\\s+(\\d+) kB`).exec(status)?.[1] ?? NaN);
  return {
    cpuMs: (Number(f[11]) + Number(f[12])) * TICK_MS,
    userMs: Number(f[11]) * TICK_MS, sysMs: Number(f[12]) * TICK_MS,
    rssKb: kb('VmRSS'), hwmKb: kb('VmHWM'),
    threads: Number(/Threads:\s+(\d+)/.exec(status)?.[1] ?? NaN),
    comm: readFileSync(`/proc/${pid}/comm`, 'utf8').trim(),
  };
}

export function median(xs) {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (!s.length) return NaN;
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

// Nearest-rank percentile (p in 0..100).
export function percentile(xs, p) {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (!s.length) return NaN;
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}

export function spread(xs) {
  const s = xs.filter((x) => Number.isFinite(x));
  return { median: median(s), min: s.length ? Math.min(...s) : NaN, max: s.length ? Math.max(...s) : NaN, n: s.length };
}

// Apparent size in bytes of every regular file under dir (symlinks not followed), skipping
// directories named in `skip` at the top level.
export function treeBytes(dir, skip = new Set()) {
  let total = 0;
  let files = 0;
  const walk = (d, top) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      if (top && skip.has(e.name)) continue;
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p, false);
      else if (e.isFile()) { total += lstatSync(p).size; files++; }
    }
  };
  walk(dir, true);
  return { bytes: total, files };
}

// Node's lookup of a bare package name from a directory: <dir>/node_modules/<name>, then the
// parents' node_modules.
function findPackage(fromDir, name) {
  for (let d = fromDir; ; d = path.dirname(d)) {
    const p = path.join(d, 'node_modules', name);
    if (existsSync(path.join(p, 'package.json'))) return p;
    if (path.dirname(d) === d) return null;
  }
}

// The installed closure of a package.json's dependencies (dependencies and the optional ones
// that are installed; not devDependencies, not peer dependencies): each package's own files,
// its nested node_modules counted where they resolve. Returns { bytes, files, packages, missing }.
export function dependencyClosure(pkgDir) {
  const seen = new Map();
  const missing = [];
  const visit = (dir) => {
    const pj = JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8'));
    const deps = { ...(pj.optionalDependencies ?? {}), ...(pj.dependencies ?? {}) };
    for (const name of Object.keys(deps)) {
      const p = findPackage(dir, name);
      if (!p) {
        if (!(name in (pj.optionalDependencies ?? {}))) missing.push(`${name} (from ${pj.name})`);
        continue;
      }
      const real = realpathSync(p);
      if (seen.has(real)) continue;
      seen.set(real, treeBytes(real, new Set(['node_modules'])));
      visit(real);
    }
  };
  visit(pkgDir);
  let bytes = 0;
  let files = 0;
  for (const v of seen.values()) { bytes += v.bytes; files += v.files; }
  return { bytes, files, packages: seen.size, missing };
}

export function fileBytes(p) {
  return statSync(realpathSync(p)).size;
}

// nproc, CPU model, kernel, memory, Node: which machine the figures come from.
export function machineInfo() {
  const cpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? os.cpus()[0]?.model ?? 'unknown';
  let nproc = os.availableParallelism?.() ?? os.cpus().length;
  try { nproc = Number(execFileSync('nproc', { encoding: 'utf8' }).trim()); } catch { /* keep */ }
  const mhz = /^cpu MHz\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim();
  let osName = '';
  try { osName = /^PRETTY_NAME="?([^"\n]*)/m.exec(readFileSync('/etc/os-release', 'utf8'))?.[1] ?? ''; } catch { /* none */ }
  return {
    nproc, cpu: model, cpuMHz: mhz ? Number(mhz) : undefined,
    kernel: `${os.type()} ${os.release()} ${os.arch()}`, os: osName,
    memoryMiB: Math.round(os.totalmem() / 1048576), node: process.version,
    loadavg: os.loadavg().map((x) => Number(x.toFixed(2))),
  };
}

export function gitRevision(root) {
  try {
    const rev = execFileSync('git', ['-C', root, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    const dirty = execFileSync('git', ['--no-optional-locks', '-C', root, 'status', '--porcelain', '--untracked-files=no'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    return dirty ? `${rev}+dirty` : rev;
  } catch { return 'unknown'; }
}
