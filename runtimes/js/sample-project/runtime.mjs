// lambdo Node.js runtime: calls the user's handler once per event of the events file, in
// order, awaiting each call. See runtimes/js/README.md for the contract; in short:
//
//   EVENTS_PATH       the JSON array of events            (default /tmp/events.json)
//   EVENTS_META_PATH  lambdo's facts about each event's message, aligned with the events
//                     (default /tmp/events.meta.json; that default may be absent)
//   LAMBDO_HANDLER    the handler module, or a directory holding index.js, index.mjs or
//                     index.cjs                           (default the directory /app)
//   handler(event, { index, count, raw, messageId, receiveCount, ... })   may be async; `raw`
//   is the event's exact JSON text; the other fields are the meta entry's, as they stand
//
// Exit status: 0 every event succeeded (or there were none), 1 at least one event failed
// (threw, rejected, crashed the process or called process.exit), 2 nothing could run (events
// or meta file missing, unreadable, not JSON, not an array or not aligned; handler missing or
// not loadable).
// The runtime logs to stderr, one "lambdo: ..." line per event start and end; the handler's
// own stdout and stderr are left alone.
import { existsSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { inspect } from 'node:util';
import { performance } from 'node:perf_hooks';

const DEFAULT_EVENTS_PATH = '/tmp/events.json';
const DEFAULT_META_PATH = '/tmp/events.meta.json';
const DEFAULT_APP_DIR = '/app';
const INDEX_FILES = ['index.js', 'index.mjs', 'index.cjs'];

const EXIT_OK = 0;
const EXIT_FAILED = 1;
const EXIT_SETUP = 2;

const realExit = process.exit;   // the runtime's own exits; process.exit is wrapped below

const run = {
  phase: 'setup',        // setup -> loading -> running -> done
  handlerPath: '',
  count: 0,
  current: -1,           // index of the event being run (or last run)
  finished: 0,           // events whose handler has settled
  failed: new Set(),     // indices of failed events
  exitRequested: null,   // { code } once anything called process.exit
};

function log(msg) {
  process.stderr.write(`lambdo: ${msg}\n`);
}

// Error text for the log: the stack (and any extra properties or cause) for errors, a
// readable rendering for anything else thrown; continuation lines indented.
function describe(err) {
  let text;
  try {
    text = inspect(err, { depth: 4, breakLength: Infinity });
  } catch {
    try {
      text = String(err);
    } catch {
      text = '(a value that cannot be printed)';
    }
  }
  return text.replace(/\n/g, '\n    ');
}

function setupFailure(msg) {
  log(`error: ${msg}`);
  run.phase = 'done';
  realExit.call(process, EXIT_SETUP);
}

function ms(t0) {
  return `${Math.round(performance.now() - t0)} ms`;
}

// ---- the events file ----------------------------------------------------------------------

function jsonType(v) {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'object') return 'an object';
  return `a ${typeof v}`;
}

// The exact source text of each element of a JSON array, given text that JSON.parse has
// already accepted as an array: split at the top-level commas, outside strings.
function splitArray(text) {
  const out = [];
  let depth = 0;
  let inString = false;
  let start = text.indexOf('[') + 1;
  for (let i = start; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      if (c === '\\') i++;
      else if (c === '"') inString = false;
      continue;
    }
    if (c === '"') {
      inString = true;
    } else if (c === '[' || c === '{') {
      depth++;
    } else if (c === ']' || c === '}') {
      if (depth === 0) {
        const last = text.slice(start, i).trim();
        if (last !== '' || out.length > 0) out.push(last);
        return out;
      }
      depth--;
    } else if (c === ',' && depth === 0) {
      out.push(text.slice(start, i).trim());
      start = i + 1;
    }
  }
  return out;
}

// A file that must hold a JSON array ("events file", "meta file": `what`): { values, text }.
function readArray(file, what, items) {
  let bytes;
  try {
    if (statSync(file).isDirectory()) throw new Error('it is a directory');
    bytes = readFileSync(file);
  } catch (err) {
    setupFailure(`cannot read ${what} ${file}: ${err.message}`);
  }
  let text;
  try {
    // RFC 8259 JSON is UTF-8; a leading byte order mark is ignored.
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    setupFailure(`${what} ${file} is not valid UTF-8`);
  }
  let values;
  try {
    values = JSON.parse(text);
  } catch (err) {
    setupFailure(`${what} ${file} is not valid JSON: ${err.message}`);
  }
  if (!Array.isArray(values)) setupFailure(`${what} ${file} holds ${jsonType(values)}, not an array of ${items}`);
  return { values, text };
}

function readEvents(eventsPath) {
  const { values: events, text } = readArray(eventsPath, 'events file', 'events');
  const raws = splitArray(text);
  if (raws.length !== events.length) {
    setupFailure(`events file ${eventsPath}: internal error splitting the array (${raws.length} != ${events.length})`);
  }
  return { events, raws };
}

// The meta entries (one object per event), or null when there is no meta file to read: an
// older lambdo, or a hand run. A meta file that was named, or that exists, must be right:
// a message id the handler keys its idempotency on must never be silently missing or shifted.
function readMeta(eventsPath, count) {
  const setting = process.env.EVENTS_META_PATH;
  const file = path.resolve(setting || DEFAULT_META_PATH);
  if (!setting && !existsSync(file)) return null;
  const { values } = readArray(file, 'meta file', 'entries');
  if (values.length !== count) {
    setupFailure(`meta file ${file} holds ${values.length} ${values.length === 1 ? 'entry' : 'entries'} for the ` +
      `${count} ${count === 1 ? 'event' : 'events'} of events file ${eventsPath} (one per event expected)`);
  }
  const bad = values.findIndex((e) => jsonType(e) !== 'an object');
  if (bad >= 0) setupFailure(`meta file ${file}: entry ${bad} is ${jsonType(values[bad])}, not an object`);
  return { file, entries: values };
}

// ---- the handler --------------------------------------------------------------------------

function isFile(p) {
  try {
    return statSync(p).isFile();
  } catch {
    return false;
  }
}

function isDirectory(p) {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

function findHandler() {
  const setting = process.env.LAMBDO_HANDLER;
  const target = setting ? path.resolve(setting) : DEFAULT_APP_DIR;
  if (setting && !isDirectory(target)) {
    if (!isFile(target)) setupFailure(`handler not found: ${target} (from LAMBDO_HANDLER) does not exist`);
    return target;
  }
  for (const name of INDEX_FILES) {
    const candidate = path.join(target, name);
    if (isFile(candidate)) return candidate;
  }
  const tried = INDEX_FILES.map((n) => path.join(target, n)).join(', ');
  setupFailure(`handler not found: none of ${tried} exists` +
    (setting ? '' : ' (COPY your project to /app, or set LAMBDO_HANDLER)'));
}

const CONTRACT = 'CommonJS: module.exports.handler = async (event, context) => {...}; ' +
  'ESM: export async function handler(event, context) {...}';

async function loadHandler(file) {
  let mod;
  try {
    mod = await import(pathToFileURL(file).href);
  } catch (err) {
    setupFailure(`cannot load handler ${file}: ${describe(err)}`);
  }
  // ESM named export, or CommonJS module.exports.handler (which import() also offers as
  // default.handler when Node cannot see the name statically).
  let fn = mod.handler;
  const dflt = mod.default;
  if (fn === undefined && dflt !== null && (typeof dflt === 'object' || typeof dflt === 'function')) {
    fn = dflt.handler;
  }
  if (fn === undefined) setupFailure(`${file} has no handler export (${CONTRACT})`);
  if (typeof fn !== 'function') {
    setupFailure(`${file} exports handler, but it is ${jsonType(fn)}, not a function (${CONTRACT})`);
  }
  return fn;
}

// ---- what can end the process behind the runtime's back ------------------------------------

// Only records that process.exit was called (and with what), so that the exit listener can
// say so; the call itself goes through unchanged.
process.exit = function exit(code) {
  if (run.exitRequested === null) {
    run.exitRequested = { code: arguments.length > 0 ? code : process.exitCode };
  }
  return realExit.apply(process, arguments);
};

process.on('exit', () => {
  if (run.phase === 'done') return;
  const how = run.exitRequested !== null ? `process.exit(${run.exitRequested.code ?? ''}) was called`
    : run.phase === 'loading' ? 'Node ran out of work while the module was still loading (a top-level await that can never settle)'
      : 'Node ran out of work while the handler\'s promise was still pending (it can never settle)';
  if (run.phase === 'loading') {
    log(`error: loading handler ${run.handlerPath} ended the process: ${how}`);
    process.exitCode = EXIT_SETUP;
    return;
  }
  if (run.phase === 'running') {
    const i = run.current;
    run.failed.add(i);
    run.finished = i + 1;
    const rest = run.count - i - 1;
    const notRun = rest === 0 ? '' : rest === 1 ? `, event ${i + 1} did not run`
      : `, events ${i + 1} to ${run.count - 1} did not run`;
    log(`event ${i} failed: ${how}; the run stops here${notRun}`);
    log(summary());
    process.exitCode = EXIT_FAILED;
    return;
  }
  process.exitCode = EXIT_SETUP;
});

// An exception nobody catches (a throw in a stray callback) or a rejection nobody handles
// fails the event that is running; the run goes on, still waiting for that event's handler.
function stray(kind) {
  return (err) => {
    if (run.phase === 'running') {
      run.failed.add(run.current);
      log(`event ${run.current}: ${kind}: ${describe(err)}`);
    } else if (run.phase === 'loading') {
      setupFailure(`${kind} while loading handler ${run.handlerPath}: ${describe(err)}`);
    } else {
      log(`${kind}: ${describe(err)}`);
      process.exitCode = EXIT_FAILED;
    }
  };
}
process.on('uncaughtException', stray('uncaught exception'));
process.on('unhandledRejection', stray('unhandled promise rejection'));

function summary() {
  if (run.count === 0) return '0 events: nothing to run';
  const failed = [...run.failed].sort((a, b) => a - b);
  const ok = run.finished - failed.length;
  const notRun = run.count - run.finished;
  const word = run.count === 1 ? 'event' : 'events';
  return `${run.count} ${word}: ${ok} ok, ${failed.length} failed` +
    (failed.length ? ` (index ${failed.join(', ')})` : '') +
    (notRun ? `, ${notRun} not run` : '');
}

// ---- the run --------------------------------------------------------------------------------

async function main() {
  const eventsPath = path.resolve(process.env.EVENTS_PATH || DEFAULT_EVENTS_PATH);
  const { events, raws } = readEvents(eventsPath);
  run.count = events.length;
  const meta = readMeta(eventsPath, run.count);

  run.handlerPath = findHandler();
  run.phase = 'loading';
  const handler = await loadHandler(run.handlerPath);

  run.phase = 'running';
  const word = run.count === 1 ? 'event' : 'events';
  log(`${run.count} ${word} from ${eventsPath}${meta ? ` (meta ${meta.file})` : ''}, handler ${run.handlerPath}`);
  for (let i = 0; i < run.count; i++) {
    run.current = i;
    // The entry's fields as they stand; index, count and raw are the runtime's own.
    const entry = meta ? { messageAttributes: {}, ...meta.entries[i] } : {};
    const context = Object.assign(entry, { index: i, count: run.count, raw: raws[i] });
    const message = typeof context.messageId === 'string' ? `, message ${context.messageId}` : '';
    log(`event ${i} start (${i + 1} of ${run.count}${message})`);
    const t0 = performance.now();
    let threw = false;
    let error;
    try {
      await handler(events[i], context);
    } catch (err) {
      threw = true;   // whatever was thrown, even undefined or null
      error = err;
    }
    const took = ms(t0);
    // One turn of the event loop before the next event, so that a rejection the handler left
    // unhandled is reported now, and counted against this event rather than the next.
    await new Promise((resolve) => setImmediate(resolve));
    if (threw) {
      run.failed.add(i);
      log(`event ${i} failed in ${took}: ${describe(error)}`);
    } else if (run.failed.has(i)) {
      log(`event ${i} failed in ${took} (see above)`);
    } else {
      log(`event ${i} ok in ${took}`);
    }
    run.finished = i + 1;
  }
  run.phase = 'done';
  log(summary());
  // Exit now: work the handler started but did not await (timers, open connections) must
  // not keep the Machine alive.
  realExit.call(process, run.failed.size > 0 ? EXIT_FAILED : EXIT_OK);
}

main();
