// Where the C binaries under test live, and how to run them.
//   LAMBDO_BUILD_DIR     build directory (default: build)
//   LAMBDO_VARIANT       asan | glibc | musl (default: asan)
//   LAMBDO_TOOL_WRAPPER  words put before every command, e.g. "valgrind --error-exitcode=99"
//   LAMBDO_BIN           the lambdo binary (default: the variant's build; musl is ./lambdo)
//   LAMBDO_PROMTOOL      promtool (default: the one ./build.sh test unpacks into .deps/)
// Tools are found where a fresh clone has them after ./build.sh test, never on PATH only:
// one on the developer's PATH once hid a missing one from CI.
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const buildDir = path.resolve(ROOT, process.env.LAMBDO_BUILD_DIR || 'build');
const variant = process.env.LAMBDO_VARIANT || 'asan';
const wrapper = (process.env.LAMBDO_TOOL_WRAPPER || '').split(/\s+/).filter(Boolean);

export function toolPath(name) {
  const p = path.join(buildDir, variant, name);
  if (!existsSync(p)) throw new Error(`test tool ${p} is missing: run ./build.sh test first`);
  return p;
}

export function lambdoPath() {
  const p = process.env.LAMBDO_BIN ? path.resolve(ROOT, process.env.LAMBDO_BIN)
    : path.join(buildDir, variant, 'lambdo');
  if (!existsSync(p)) throw new Error(`${p} is missing: run ./build.sh first`);
  return p;
}

// [command, ...args] for spawn/execFile, with the wrapper (valgrind...) in front.
export function toolCommand(name, args = []) {
  return [...wrapper, toolPath(name), ...args];
}

export function lambdoCommand(args = []) {
  return [...wrapper, lambdoPath(), ...args];
}

export function promtoolPath() {
  const p = process.env.LAMBDO_PROMTOOL || path.join(ROOT, '.deps/promtool/usr/bin/promtool');
  if (!existsSync(p)) throw new Error(`promtool ${p} is missing: ./build.sh test unpacks it into .deps/`);
  return p;
}
