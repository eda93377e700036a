// Tests of the handler runtimes in runtimes/: each entry script is run directly, with the
// host's node and php (Debian's php-cli), on good and bad events files in temp dirs.
//   node --test tests/runtimes.test.mjs
// Without php the PHP tests are SKIPPED, each one saying to install the php-cli package.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const CHILD_TIMEOUT_MS = 15_000;   // a runtime still running then is killed and the test fails
const TEST_TIMEOUT_MS = 30_000;

const php = spawnSync('php', ['-r', 'echo PHP_VERSION;'], { encoding: 'utf8', timeout: 10_000 });
const PHP_VERSION = php.status === 0 ? php.stdout.trim() : null;
const PHP_SKIP = PHP_VERSION ? false
  : 'PHP NOT INSTALLED: install the Debian package php-cli (apt-get install php-cli) to test runtimes/php';
if (!PHP_VERSION) {
  const bar = '!'.repeat(96);
  process.stderr.write(`\n${bar}\n!!! runtimes.test.mjs: SKIPPING EVERY PHP RUNTIME TEST: \`php\` was not found.\n` +
    `!!! Install the Debian package php-cli (apt-get install php-cli).\n${bar}\n\n`);
}

// lambdo's default meta file: the runtimes read it when EVENTS_META_PATH is unset. Tests that
// need it absent skip when this host has one (someone's real file, left alone).
const DEFAULT_META = '/tmp/events.meta.json';
const DEFAULT_META_SKIP = existsSync(DEFAULT_META) &&
  `${DEFAULT_META} EXISTS ON THIS HOST: cannot test the runtimes without a meta file (remove it to run this test)`;
if (DEFAULT_META_SKIP) process.stderr.write(`\n!!! runtimes.test.mjs: ${DEFAULT_META_SKIP}\n\n`);

const RUNTIMES = {
  js: {
    title: `runtimes/js (node ${process.versions.node})`,
    cmd: process.execPath,
    entry: path.join(ROOT, 'runtimes/js/runtime.mjs'),
    index: 'index.js',
    skip: false,
  },
  php: {
    title: `runtimes/php (php ${PHP_VERSION ?? 'missing'})`,
    cmd: 'php',
    entry: path.join(ROOT, 'runtimes/php/runtime.php'),
    index: 'index.php',
    skip: PHP_SKIP,
  },
};

// Runs a runtime's entry script in a fresh temp dir:
//   events   the events file: a string or Buffer as is, anything else as JSON; undefined: no file
//   meta     the meta file <tmp>/events.meta.json, written the same way, and EVENTS_META_PATH
//            naming it; undefined: neither (the runtime looks for /tmp/events.meta.json)
//   files    { 'relative/path': text } written under <tmp>/app (the handler directory)
//   env      overrides; a value of undefined removes the variable
// Defaults: EVENTS_PATH=<tmp>/events.json, LAMBDO_HANDLER=<tmp>/app, cwd <tmp>, and for the
// sample projects JOB_DONE_DIR=<tmp>/done.
// Resolves { code, signal, stdout, stderr, dir }; the temp dir is gone by then.
async function runRuntime(rt, { events, meta, files = {}, env = {}, cwd } = {}) {
  const dir = mkdtempSync(path.join(tmpdir(), 'lambdo-runtime-'));
  try {
    const app = path.join(dir, 'app');
    mkdirSync(app);
    for (const [name, text] of Object.entries(files)) {
      mkdirSync(path.dirname(path.join(app, name)), { recursive: true });
      writeFileSync(path.join(app, name), text);
    }
    const write = (file, content) => writeFileSync(file,
      typeof content === 'string' || Buffer.isBuffer(content) ? content : JSON.stringify(content));
    const eventsPath = path.join(dir, 'events.json');
    if (events !== undefined) write(eventsPath, events);
    const metaPath = path.join(dir, 'events.meta.json');
    if (meta !== undefined) write(metaPath, meta);
    const childEnv = { PATH: process.env.PATH, EVENTS_PATH: eventsPath, LAMBDO_HANDLER: app,
      ...(meta !== undefined && { EVENTS_META_PATH: metaPath }), JOB_DONE_DIR: path.join(dir, 'done'), ...env };
    for (const k of Object.keys(childEnv)) if (childEnv[k] === undefined) delete childEnv[k];
    return await new Promise((resolve, reject) => {
      const child = spawn(rt.cmd, [rt.entry], { cwd: cwd ?? dir, env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
      const out = [];
      const err = [];
      child.stdout.on('data', (c) => out.push(c));
      child.stderr.on('data', (c) => err.push(c));
      const timer = setTimeout(() => child.kill('SIGKILL'), CHILD_TIMEOUT_MS);
      child.on('error', (e) => { clearTimeout(timer); reject(e); });
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        const r = { code, signal, stdout: Buffer.concat(out).toString('utf8'),
          stderr: Buffer.concat(err).toString('utf8'), dir };
        if (signal === 'SIGKILL') {
          reject(new Error(`runtime killed after ${CHILD_TIMEOUT_MS} ms\nstderr:\n${r.stderr}`));
        } else {
          resolve(r);
        }
      });
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const lines = (text) => text.split('\n').filter((l) => l !== '');
const lambdoLines = (r) => lines(r.stderr).filter((l) => l.startsWith('lambdo: '));
const jsonLines = (r) => lines(r.stdout).map((l) => JSON.parse(l));

// Asserts the exit code, showing both streams when it is not the expected one.
function assertExit(r, code) {
  assert.equal(r.code, code, `exit ${r.code}, expected ${code}\n--- stdout\n${r.stdout}--- stderr\n${r.stderr}`);
}

function assertStderr(r, re) {
  assert.match(r.stderr, re, `stderr does not match ${re}:\n${r.stderr}`);
}

// Which events the handler logged having seen (each handler here prints `ran <index>`).
const ran = (r) => lines(r.stdout).filter((l) => l.startsWith('ran ')).map((l) => Number(l.slice(4)));

// ---- handler sources, per runtime ------------------------------------------------------------

// Prints a JSON line when it starts and ends each event, waits (longer for earlier events,
// so that calls that were not awaited would finish out of order) and writes to stderr.
const ORDERED = {
  js: `
    exports.handler = async (event, context) => {
      console.log(JSON.stringify({ at: 'start', event, index: context.index, count: context.count }));
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, 90 - 30 * context.index)));
      console.error('handler stderr ' + context.index);
      console.log(JSON.stringify({ at: 'end', index: context.index }));
    };`,
  php: `<?php
    return function ($event, array $context) {
        echo json_encode(['at' => 'start', 'event' => $event, 'index' => $context['index'], 'count' => $context['count']]), "\\n";
        usleep(max(0, 90 - 30 * $context['index']) * 1000);
        fwrite(STDERR, 'handler stderr ' . $context['index'] . "\\n");
        echo json_encode(['at' => 'end', 'index' => $context['index']]), "\\n";
    };`,
};

// Prints `ran <index>`; throws on the events that say {"fail": "..."}.
const FAILS_WHEN_TOLD = {
  js: `
    exports.handler = (event, context) => {
      console.log('ran ' + context.index);
      if (event && event.fail) throw new Error(event.fail + ' at ' + context.index);
    };`,
  php: `<?php
    return function ($event, array $context) {
        echo 'ran ', $context['index'], "\\n";
        if (is_array($event) && isset($event['fail'])) throw new RuntimeException($event['fail'] . ' at ' . $context['index']);
    };`,
};

// Prints LOADED when the file is loaded and `ran <index>` per event.
const NOISY = {
  js: `console.log('LOADED'); exports.handler = (event, context) => { console.log('ran ' + context.index); };`,
  php: `<?php echo "LOADED\\n"; return function ($event, array $context) { echo 'ran ', $context['index'], "\\n"; };`,
};

// Prints each event, its context.raw, and (PHP) its type, as one JSON line.
const ECHO_RAW = {
  js: `exports.handler = (event, context) => { console.log(JSON.stringify({ event, raw: context.raw })); };`,
  php: `<?php return function ($event, array $context) {
      echo json_encode(['event' => $event, 'raw' => $context['raw'], 'type' => get_debug_type($event)]), "\\n";
  };`,
};

// Prints its context as one JSON line.
const PRINT_CONTEXT = {
  js: `exports.handler = (event, context) => { console.log(JSON.stringify(context)); };`,
  php: `<?php return function ($event, array $context) { echo json_encode($context), "\\n"; };`,
};

// Meta entries as lambdo writes them (issue #13): a FIFO queue's, with an attribute of each
// type; a standard queue's without attributes; one with fields the runtime does not know (they
// pass as they are) and with index and raw (the runtime's own win).
const META_ENTRIES = [
  { messageId: '059f36b4-87a3-44ab-83d2-661975830a7d', receiveCount: 3, sentTimestamp: 1733360000000,
    firstReceiveTimestamp: 1733360000123, messageGroupId: 'g1', deduplicationId: 'd1',
    sequenceNumber: '18849496460467696128',
    messageAttributes: { tenant: { type: 'String', value: 'acme' }, n: { type: 'Number', value: '42' },
      blob: { type: 'Binary', value: 'AAEC' } } },
  { messageId: '2e1424d4-f796-459a-8184-9c92662be6da', receiveCount: 1, sentTimestamp: 1733360000456,
    firstReceiveTimestamp: 1733360000512 },
  { messageId: 'da68f62c-0c07-4bee-bf5f-7e856efab563', receiveCount: 2, sentTimestamp: 1733359990000,
    firstReceiveTimestamp: 1733359990104, messageAttributes: {}, awsTraceHeader: 'Root=1-5759e988-bd862e3fe1be46a994272793',
    index: 99, raw: 'not the event' },
];

// Handlers that are not usable: [title, files, stderr pattern]
const BAD_HANDLERS = {
  js: [
    ['no handler export', { 'index.js': `exports.other = () => {};` }, /has no handler export/],
    ['handler is not a function', { 'index.js': `exports.handler = 42;` }, /exports handler, but it is a number, not a function/],
    ['handler module throws while loading', { 'index.js': `throw new Error('no config at load');` },
      /cannot load handler .*index\.js: Error: no config at load/],
    ['handler module has a syntax error', { 'index.js': `exports.handler = (event => {;` }, /cannot load handler .*index\.js: [^]*SyntaxError: Unexpected end of input/],
    ['handler module requires a missing package', { 'index.js': `require('lambdo-no-such-package');` },
      /cannot load handler .*Cannot find module 'lambdo-no-such-package'/],
    ['handler module calls process.exit(0) while loading', { 'index.js': `process.exit(0);` },
      /loading handler .*index\.js ended the process: process\.exit\(0\) was called/],
  ],
  php: [
    ['index.php returns nothing', { 'index.php': `<?php function handler($event) {}` },
      /index\.php returned int\(1\), as a file without a return statement does, not a callable/],
    ['index.php returns a non-callable', { 'index.php': `<?php return 42;` }, /index\.php returned int\(42\), not a callable/],
    ['index.php returns the name of no function', { 'index.php': `<?php return 'no_such_function';` },
      /returned string\('no_such_function'\), not a callable/],
    ['index.php throws while loading', { 'index.php': `<?php throw new LogicException('no config at load');` },
      /cannot load handler .*index\.php: LogicException: no config at load/],
    ['index.php has a syntax error', { 'index.php': `<?php return function ( {;` }, /cannot load handler .*index\.php: ParseError/],
    ['index.php calls exit while loading', { 'index.php': `<?php exit(0);` },
      /loading handler .*index\.php ended the process: exit\(\) or die\(\) was called/],
  ],
};

// ---- the tests both runtimes must pass ------------------------------------------------------

for (const [key, rt] of Object.entries(RUNTIMES)) {
  const opts = { timeout: TEST_TIMEOUT_MS, skip: rt.skip };
  const handler = (src) => ({ [rt.index]: src[key] });

  describe(rt.title, () => {
    it('calls the handler once per event, in order, awaited, with index and count; logs each start and end', opts, async () => {
      const events = [{ id: 1, tags: ['a'] }, 'two', [3], null];
      const r = await runRuntime(rt, { events, files: handler(ORDERED) });
      assertExit(r, 0);
      // stdout is the handler's alone: start/end pairs, strictly in order
      assert.deepEqual(jsonLines(r), events.flatMap((event, index) => [
        { at: 'start', event, index, count: 4 }, { at: 'end', index },
      ]));
      // stderr: the runtime's lines around the handler's own, in order
      const err = lines(r.stderr);
      const at = (re) => {
        const i = err.findIndex((l) => re.test(l));
        assert.ok(i >= 0, `no stderr line matches ${re}:\n${r.stderr}`);
        return i;
      };
      assert.match(err[0], /^lambdo: 4 events from .*events\.json, handler .*index\.(js|php)$/);
      let last = 0;
      for (let i = 0; i < 4; i++) {
        const start = at(new RegExp(`^lambdo: event ${i} start \\(${i + 1} of 4\\)$`));
        const own = at(new RegExp(`^handler stderr ${i}$`));
        const end = at(new RegExp(`^lambdo: event ${i} ok in \\d+ ms$`));
        assert.ok(last < start && start < own && own < end, `event ${i} is logged out of order:\n${r.stderr}`);
        last = end;
      }
      // the first event waited 90 ms, and its duration says so
      assert.ok(Number(/event 0 ok in (\d+) ms/.exec(r.stderr)[1]) >= 80, r.stderr);
      assert.equal(err.at(-1), 'lambdo: 4 events: 4 ok, 0 failed');
    });

    it('a throwing handler fails its event only: exit 1, the others still run, the error logged with the index', opts, async () => {
      const r = await runRuntime(rt, { events: [{}, { fail: 'boom' }, {}, { fail: 'bang' }, {}], files: handler(FAILS_WHEN_TOLD) });
      assertExit(r, 1);
      assert.deepEqual(ran(r), [0, 1, 2, 3, 4]);
      assertStderr(r, /^lambdo: event 1 failed in \d+ ms: \w*(Error|Exception): boom at 1/m);
      assertStderr(r, /^lambdo: event 3 failed in \d+ ms: \w*(Error|Exception): bang at 3/m);
      for (const i of [0, 2, 4]) assertStderr(r, new RegExp(`^lambdo: event ${i} ok in \\d+ ms$`, 'm'));
      assert.equal(lambdoLines(r).at(-1), 'lambdo: 5 events: 3 ok, 2 failed (index 1, 3)');
    });

    it('an empty array runs nothing and exits 0, saying "0 events"', opts, async () => {
      for (const events of ['[]', ' [ \n\t] \n']) {
        const r = await runRuntime(rt, { events, files: handler(NOISY) });
        assertExit(r, 0);
        assert.deepEqual(ran(r), []);
        assertStderr(r, /^lambdo: 0 events from /m);
        assertStderr(r, /^lambdo: 0 events: nothing to run$/m);
      }
    });

    it('gives the handler each event\'s meta entry in its context: FIFO and standard entries, attributes of the three types', opts, async () => {
      const raws = ['{"a": 1}', '"two"', '[3]'];
      const r = await runRuntime(rt, { events: `[${raws.join(', ')}]`, meta: META_ENTRIES, files: handler(PRINT_CONTEXT) });
      assertExit(r, 0);
      // PHP's json_encode writes an empty array as []
      const none = key === 'js' ? {} : [];
      assert.deepEqual(jsonLines(r), META_ENTRIES.map((entry, index) => ({
        ...entry, messageAttributes: entry.messageAttributes?.tenant ? entry.messageAttributes : none,
        index, count: 3, raw: raws[index],
      })));
      assertStderr(r, /^lambdo: 3 events from \/.*\/events\.json \(meta \/.*\/events\.meta\.json\), handler /m);
      assertStderr(r, /^lambdo: event 0 start \(1 of 3, message 059f36b4-87a3-44ab-83d2-661975830a7d\)$/m);
      assertStderr(r, /^lambdo: event 2 start \(3 of 3, message da68f62c-0c07-4bee-bf5f-7e856efab563\)$/m);
    });

    it('without a meta file (EVENTS_META_PATH unset or empty, no /tmp/events.meta.json) the context is index, count, raw', {
      ...opts, skip: rt.skip || DEFAULT_META_SKIP,
    }, async () => {
      for (const EVENTS_META_PATH of [undefined, '']) {
        const r = await runRuntime(rt, { events: '[{"a": 1}, 2]', files: handler(PRINT_CONTEXT), env: { EVENTS_META_PATH } });
        assertExit(r, 0);
        assert.deepEqual(jsonLines(r), [{ index: 0, count: 2, raw: '{"a": 1}' }, { index: 1, count: 2, raw: '2' }]);
        assertStderr(r, /^lambdo: 2 events from \/.*\/events\.json, handler /m);
        assertStderr(r, /^lambdo: event 0 start \(1 of 2\)$/m);
      }
    });

    it('EVENTS_META_PATH unset: reads /tmp/events.meta.json when it exists, by the same rules', {
      ...opts, skip: rt.skip || DEFAULT_META_SKIP,
    }, async () => {
      writeFileSync(DEFAULT_META, '[{"messageId": "from-the-default"}, {}]', { flag: 'wx' });
      try {
        const r = await runRuntime(rt, { events: [1, 2], files: handler(PRINT_CONTEXT) });
        assertExit(r, 0);
        assert.deepEqual(jsonLines(r).map((c) => c.messageId), ['from-the-default', undefined]);
        writeFileSync(DEFAULT_META, '[{"messageId": "from-the-default"}]');
        const bad = await runRuntime(rt, { events: [1, 2], files: handler(NOISY) });
        assertExit(bad, 2);
        assertStderr(bad, /^lambdo: error: meta file \/tmp\/events\.meta\.json holds 1 entry for the 2 events of events file /m);
        assert.equal(bad.stdout, '', 'the handler module was loaded');
      } finally {
        rmSync(DEFAULT_META, { force: true });
      }
    });

    // A meta file that is named, or that exists, must be right: exit 2, the handler not loaded.
    const metaFileCases = [
      ['EVENTS_META_PATH names a file that does not exist', { env: { EVENTS_META_PATH: 'nope.meta.json' } },
        /^lambdo: error: cannot read meta file \/.*\/nope\.meta\.json: .*no such file/im],
      ['the meta path is a directory', { env: { EVENTS_META_PATH: '.' } }, /^lambdo: error: cannot read meta file \/.*: it is a directory$/m],
      ['an empty meta file', { meta: '' }, /^lambdo: error: meta file \/.*\/events\.meta\.json is not valid JSON/m],
      ['a truncated meta file', { meta: '[{"messageId": "m0"}, {' }, /^lambdo: error: meta file \/.*\/events\.meta\.json is not valid JSON/m],
      ['invalid UTF-8', { meta: Buffer.from('[{"messageId": "\xff"}, {}]', 'latin1') }, /^lambdo: error: meta file .*events\.meta\.json is not valid UTF-8$/m],
      ['a JSON object', { meta: '{"messageId": "m0"}' }, /^lambdo: error: meta file \/.*\/events\.meta\.json holds an object, not an array of entries$/m],
      ['fewer entries than events', { meta: [{ messageId: 'm0' }] },
        /^lambdo: error: meta file \/.*\/events\.meta\.json holds 1 entry for the 2 events of events file \/.*\/events\.json \(one per event expected\)$/m],
      ['more entries than events', { meta: [{}, {}, {}] }, /^lambdo: error: meta file .* holds 3 entries for the 2 events of /m],
      ['an entry that is an array', { meta: '[{"messageId": "m0"}, []]' }, /^lambdo: error: meta file \/.*\/events\.meta\.json: entry 1 is an array, not an object$/m],
      ['an entry that is null', { meta: '[null, {}]' }, /: entry 0 is null, not an object$/m],
      ['an entry that is a string', { meta: '["m0", {}]' }, /: entry 0 is a string, not an object$/m],
    ];
    for (const [title, run, re] of metaFileCases) {
      it(`exit 2 with a message, handler not loaded: meta file: ${title}`, opts, async () => {
        const r = await runRuntime(rt, { events: '[1, 2]', files: handler(NOISY), ...run });
        assertExit(r, 2);
        assertStderr(r, re);
        assert.equal(r.stdout, '', 'the handler module was loaded');
      });
    }

    it('gives the handler each event\'s exact JSON text as context.raw', opts, async () => {
      const raws = [
        '{"id": 9007199254740993, "s": "a,]\\"}{[\\\\"}',
        '12345678901234567890123',
        '"h\\u00e9llo \u00e9 \u{1F600} \\\\"',
        '[1, [2, {"x": [], "y": {}}]]',
        '-0.5e-3',
        '{}',
        'true',
      ];
      const r = await runRuntime(rt, { events: ` [ ${raws.join(' ,\n  ')}\t]\n`, files: handler(ECHO_RAW) });
      assertExit(r, 0);
      const seen = jsonLines(r);
      assert.deepEqual(seen.map((s) => s.raw), raws);
      if (key === 'js') {
        // JSON.parse rounds integers beyond 2^53; raw keeps them (documented)
        assert.equal(seen[0].event.id, 9007199254740992);
        assert.equal(seen[0].event.s, 'a,]"}{[\\');
        assert.equal(seen[1].event, 12345678901234567000000);
      } else {
        // 64-bit PHP keeps 2^53+1 exactly; beyond PHP_INT_MAX, JSON_BIGINT_AS_STRING gives a string
        assert.equal(seen[0].event.id, 9007199254740993);
        assert.equal(seen[1].event, '12345678901234567890123');
        assert.equal(seen[1].type, 'string');
        assert.equal(seen[5].type, 'array');   // {} decodes to an empty PHP array
      }
      assert.equal(seen[2].event, 'h\u00e9llo \u00e9 \u{1F600} \\');
    });

    it('accepts events nested as deep as lambdo allows (512 levels in a body)', opts, async () => {
      const deep = '['.repeat(512) + '"deep"' + ']'.repeat(512);
      const r = await runRuntime(rt, { events: `[${deep}, 1]`, files: handler(NOISY) });
      assertExit(r, 0);
      assert.deepEqual(ran(r), [0, 1]);
    });

    it('ignores a UTF-8 byte order mark', opts, async () => {
      const r = await runRuntime(rt, { events: Buffer.from('\uFEFF[1, 2]'), files: handler(NOISY) });
      assertExit(r, 0);
      assert.deepEqual(ran(r), [0, 1]);
    });

    // Everything that stops the run before any event: exit 2, a message, the handler never
    // called (for events-file problems, not even loaded: the file is read first).
    const eventsFileCases = [
      ['no events file', { events: undefined }, /^lambdo: error: cannot read events file \/.*\/events\.json: .*(no such file|No such file)/im],
      ['the events path is a directory', { env: { EVENTS_PATH: '.' } }, /^lambdo: error: cannot read events file \/.*: it is a directory$/m],
      ['an empty events file', { events: '' }, /^lambdo: error: events file \/.*events\.json is not valid JSON/m],
      ['truncated JSON', { events: '[{"a": 1}, {"b": ' }, /^lambdo: error: events file \/.*events\.json is not valid JSON/m],
      ['trailing garbage', { events: '[1, 2] x' }, /is not valid JSON/],
      ['invalid UTF-8', { events: Buffer.from([0x5b, 0x22, 0xff, 0xfe, 0x22, 0x5d]) }, /^lambdo: error: events file .* is not valid UTF-8$/m],
      ['a JSON object', { events: '{"user": 42}' }, /^lambdo: error: events file \/.*events\.json holds an object, not an array of events$/m],
      ['a JSON object with list-like keys', { events: '{"0": 1}' }, /holds an object, not an array of events/],
      ['a JSON string', { events: '"[1, 2]"' }, /holds a string, not an array of events/],
      ['a JSON number', { events: ' 42 ' }, /holds a number, not an array of events/],
      ['JSON null', { events: 'null' }, /holds null, not an array of events/],
      ['JSON true', { events: 'true' }, /holds a boolean, not an array of events/],
    ];
    for (const [title, run, re] of eventsFileCases) {
      it(`exit 2 with a message, handler not loaded: ${title}`, opts, async () => {
        const r = await runRuntime(rt, { events: '[1]', files: handler(NOISY), ...run });
        assertExit(r, 2);
        assertStderr(r, re);
        assert.equal(r.stdout, '', 'the handler module was loaded');
      });
    }

    it('exit 2 with a message: LAMBDO_HANDLER names a directory without an index file', opts, async () => {
      const r = await runRuntime(rt, { events: [1], files: { 'other.txt': 'x' } });
      assertExit(r, 2);
      assertStderr(r, new RegExp(`^lambdo: error: handler not found: .*/app/${rt.index.replace('.', '\\.')}`, 'm'));
    });

    it('exit 2 with a message: LAMBDO_HANDLER names a file that does not exist', opts, async () => {
      const r = await runRuntime(rt, { events: [1], env: { LAMBDO_HANDLER: 'app/nope.file' } });
      assertExit(r, 2);
      assertStderr(r, /^lambdo: error: handler not found: \/.*\/app\/nope\.file \(from LAMBDO_HANDLER\) does not exist$/m);
    });

    for (const [title, files, re] of BAD_HANDLERS[key]) {
      it(`exit 2 with a message: ${title}`, opts, async () => {
        const r = await runRuntime(rt, { events: [1, 2], files });
        assertExit(r, 2);
        assertStderr(r, re);
        assert.doesNotMatch(r.stderr, /event 0 start/);
      });
    }

    it('EVENTS_PATH unset or empty: reads /tmp/events.json', opts, async () => {
      const exists = existsSync('/tmp/events.json');
      for (const EVENTS_PATH of [undefined, '']) {
        const r = await runRuntime(rt, { files: handler(NOISY), env: { EVENTS_PATH } });
        if (exists) {
          // someone's real file: whatever it holds, the runtime must have used it
          assertStderr(r, /\/tmp\/events\.json/);
        } else {
          assertExit(r, 2);
          assertStderr(r, /^lambdo: error: cannot read events file \/tmp\/events\.json: /m);
        }
      }
    });

    it('LAMBDO_HANDLER unset: the handler is /app/' + rt.index, {
      ...opts, skip: rt.skip || (existsSync('/app') && '/app exists on this machine; cannot test the default'),
    }, async () => {
      const r = await runRuntime(rt, { events: [1], env: { LAMBDO_HANDLER: undefined } });
      assertExit(r, 2);
      assertStderr(r, new RegExp(`^lambdo: error: handler not found: .*/app/${rt.index.replace('.', '\\.')}\\b`, 'm'));
      assertStderr(r, /COPY your project to \/app, or set LAMBDO_HANDLER/);
    });

    it('relative EVENTS_PATH and LAMBDO_HANDLER are resolved from the working directory', opts, async () => {
      const r = await runRuntime(rt, { events: [1, 2, 3], files: handler(NOISY),
        env: { EVENTS_PATH: 'events.json', LAMBDO_HANDLER: `app/${rt.index}` } });
      assertExit(r, 0);
      assert.deepEqual(ran(r), [0, 1, 2]);
      assertStderr(r, new RegExp(`^lambdo: 3 events from /.*/events\\.json, handler /.*/app/${rt.index.replace('.', '\\.')}$`, 'm'));
    });

    it('the sample project runs against its own events.json and events.meta.json; run again, it skips every message', opts, async () => {
      const sample = path.join(ROOT, 'runtimes', key, 'sample-project');
      const done = mkdtempSync(path.join(tmpdir(), 'lambdo-sample-done-'));
      try {
        const env = { EVENTS_PATH: path.join(sample, 'events.json'), EVENTS_META_PATH: path.join(sample, 'events.meta.json'),
          LAMBDO_HANDLER: sample, JOB_DONE_DIR: done };
        const r = await runRuntime(rt, { env });
        assertExit(r, 0);
        const order = key === 'js' ? '9007199254740993' : '123456789012345678901234567890';
        assert.deepEqual(lines(r.stdout), [
          'resized cat.png to 640px for user 42 (event 1 of 3)',
          'resized dog.png to 320px for user 7 (event 2 of 3)',
          `notified user 42 about order ${order}`,
        ]);
        assert.equal(lambdoLines(r).at(-1), 'lambdo: 3 events: 3 ok, 0 failed');
        const again = await runRuntime(rt, { env });
        assertExit(again, 0);
        assert.deepEqual(lines(again.stdout), [
          'message 059f36b4-87a3-44ab-83d2-661975830a7d already done: skipped (receive count 1)',
          'message 2e1424d4-f796-459a-8184-9c92662be6da already done: skipped (receive count 1)',
          'message da68f62c-0c07-4bee-bf5f-7e856efab563 already done: skipped (receive count 2)',
        ]);
      } finally {
        rmSync(done, { recursive: true, force: true });
      }
    });

    it('the idempotent sample skips a message id it has done; an event that failed is not marked, and is redone', opts, async () => {
      const sample = path.join(ROOT, 'runtimes', key, 'sample-project');
      const done = mkdtempSync(path.join(tmpdir(), 'lambdo-sample-done-'));
      try {
        const events = '[{"user": 1, "action": "notify", "order": 5}, {"action": "explode"}, {"user": 1, "action": "notify", "order": 5}]';
        const meta = [{ messageId: 'm/1', receiveCount: 1 }, { messageId: 'm2', receiveCount: 1 }, { messageId: 'm/1', receiveCount: 2 }];
        const env = { LAMBDO_HANDLER: sample, JOB_DONE_DIR: done };
        const r = await runRuntime(rt, { events, meta, env });
        assertExit(r, 1);
        assert.deepEqual(lines(r.stdout), ['notified user 1 about order 5', 'message m/1 already done: skipped (receive count 2)']);
        assertStderr(r, /^lambdo: event 1 failed in \d+ ms: \w+: unknown action "explode"/m);
        const again = await runRuntime(rt, { events, meta, env });
        assertExit(again, 1);
        assert.deepEqual(lines(again.stdout), ['message m/1 already done: skipped (receive count 1)',
          'message m/1 already done: skipped (receive count 2)']);
        assertStderr(again, /^lambdo: event 1 failed in \d+ ms: \w+: unknown action "explode"/m);
      } finally {
        rmSync(done, { recursive: true, force: true });
      }
    });

    it('the sample project fails an event it does not know, and goes on', opts, async () => {
      const sample = path.join(ROOT, 'runtimes', key, 'sample-project');
      const r = await runRuntime(rt, {
        events: '[{"action": "explode"}, {"user": 1, "action": "notify", "order": 5}]',
        env: { LAMBDO_HANDLER: sample },
      });
      assertExit(r, 1);
      assertStderr(r, /^lambdo: event 0 failed in \d+ ms: \w+: unknown action "explode"/m);
      assert.deepEqual(lines(r.stdout), ['notified user 1 about order 5']);
    });

    // Static: runs without php too. (The images cannot be built here: no registry, no engine.)
    // `fly deploy` builds on Fly's remote builder with the project directory as the context:
    // the sample must need nothing but a public image and its own files.
    it('the sample Dockerfile builds from a public image and its own files; CMD runs the tested runtime', { timeout: TEST_TIMEOUT_MS }, () => {
      const project = path.join(ROOT, 'runtimes', key, 'sample-project');
      const instr = lines(readFileSync(path.join(project, 'Dockerfile'), 'utf8'))
        .filter((l) => !l.trimStart().startsWith('#')).map((l) => l.trim());
      const entry = path.basename(rt.entry);
      const [from, bin] = key === 'js' ? ['node:20-slim', 'node'] : ['php:8.2-cli', 'php'];
      assert.deepEqual(instr.filter((l) => /^(FROM|ARG)\b/i.test(l)), [`FROM ${from}`], 'one public base image, no build argument');
      const ignored = lines(readFileSync(path.join(project, '.dockerignore'), 'utf8'));
      const copies = instr.filter((l) => /^(COPY|ADD)\b/i.test(l));
      assert.ok(copies.length >= 2, instr.join('\n'));
      for (const c of copies) {
        const words = c.split(/\s+/).slice(1);
        assert.ok(!words.some((w) => w.startsWith('--from') || /^https?:/.test(w)), `${c}: the build context only`);
        for (const src of words.slice(0, -1)) {
          const st = lstatSync(path.join(project, src), { throwIfNoEntry: false });
          assert.ok(st && !st.isSymbolicLink(), `${c}: ${src} must be in the sample project, not a symlink`);
          assert.ok(!ignored.includes(src), `${c}: .dockerignore excludes ${src}`);
        }
      }
      assert.ok(copies.includes(`COPY ${entry} /lambdo/${entry}`), copies.join('\n'));
      assert.equal(instr.at(-1), `CMD ["${bin}", "/lambdo/${entry}"]`);
      assert.equal(realpathSync(rt.entry), path.join(project, entry), 'the tests run the file the image ships');
    });
  });
}

// No deploy instruction builds on a local-only base image (the old `lambdo-node:20`).
it('no Dockerfile or README in the repository names a locally built base image', () => {
  const docs = ['README.md', 'runtimes/README.md', 'runtimes/js/README.md', 'runtimes/php/README.md',
    'runtimes/js/sample-project/Dockerfile', 'runtimes/php/sample-project/Dockerfile'];
  for (const f of docs) {
    const text = readFileSync(path.join(ROOT, f), 'utf8');
    assert.doesNotMatch(text, /lambdo-(node|php):|LAMBDO_BASE/, f);
    for (const m of text.matchAll(/^FROM\s+(\S+)/gm)) {
      assert.match(m[1], /^(node:20-slim|php:8\.2-cli|debian:bookworm-slim|scratch|composer:2)$/, `${f}: FROM ${m[1]}`);
    }
  }
});

// ---- Node only --------------------------------------------------------------------------------

describe('runtimes/js: module kinds and Node-specific failures', () => {
  const rt = RUNTIMES.js;
  const opts = { timeout: TEST_TIMEOUT_MS };
  const PRINT = "console.log('ran ' + context.index + ' ' + JSON.stringify(event))";

  const kinds = [
    ['ESM index.mjs, export async function', { 'index.mjs': `export async function handler(event, context) { ${PRINT}; }` }],
    ['ESM index.mjs, export const arrow', { 'index.mjs': `export const handler = async (event, context) => { ${PRINT}; };` }],
    ['ESM syntax in index.js without package.json (Node detects it)', { 'index.js': `export const handler = async (event, context) => { ${PRINT}; };` }],
    ['ESM index.js under "type": "module"', {
      'package.json': '{"type": "module"}', 'index.js': `export function handler(event, context) { ${PRINT}; }` }],
    ['ESM default export object', { 'index.mjs': `export default { async handler(event, context) { ${PRINT}; } };` }],
    ['CommonJS exports.handler', { 'index.js': `exports.handler = async function (event, context) { ${PRINT}; };` }],
    ['CommonJS module.exports = { handler }', { 'index.js': `async function handler(event, context) { ${PRINT}; }\nmodule.exports = { handler };` }],
    ['CommonJS exports built at run time (not visible to import()\'s static analysis)', {
      'index.js': `const o = {}; o['hand' + 'ler'] = (event, context) => { ${PRINT}; }; module.exports = o;` }],
    ['CommonJS index.cjs', { 'index.cjs': `module.exports.handler = (event, context) => { ${PRINT}; };` }],
    ['index.js wins over index.mjs', {
      'index.js': `exports.handler = (event, context) => { ${PRINT}; };`,
      'index.mjs': 'export function handler() { throw new Error("index.mjs was used"); }' }],
    ['a handler that requires a local module', {
      'index.js': `const { twice } = require('./lib/math'); exports.handler = (event, context) => { event = twice(event); ${PRINT}; };`,
      'lib/math.js': 'exports.twice = (n) => n * 2;' }],
  ];
  // Module-syntax detection (ESM syntax in a .js file outside "type": "module") is on by
  // default from Node 20.19 and 22.7; node:20-slim is newer than that, the host may not be.
  const [major, minor] = process.versions.node.split('.').map(Number);
  const detects = (major === 20 && minor >= 19) || (major === 22 && minor >= 7) || major >= 23;
  for (const [title, files] of kinds) {
    const skip = title.includes('Node detects it') && !detects &&
      `node ${process.versions.node} has no module-syntax detection (20.19+ has; the base image's node:20-slim does)`;
    it(`loads ${title}`, { ...opts, skip }, async () => {
      const r = await runRuntime(rt, { events: [1, 2], files });
      assertExit(r, 0);
      const expect = title.startsWith('a handler that requires') ? ['ran 0 2', 'ran 1 4'] : ['ran 0 1', 'ran 1 2'];
      assert.deepEqual(lines(r.stdout), expect);
    });
  }

  it('LAMBDO_HANDLER may name a file of any name', opts, async () => {
    const r = await runRuntime(rt, { events: [1], files: { 'jobs/worker.mjs': `export const handler = (event, context) => { ${PRINT}; };` },
      env: { LAMBDO_HANDLER: 'app/jobs/worker.mjs' } });
    assertExit(r, 0);
    assert.deepEqual(lines(r.stdout), ['ran 0 1']);
  });

  it('an async handler that rejects fails its event: exit 1, the others run', opts, async () => {
    const r = await runRuntime(rt, { events: [0, 1, 2], files: { 'index.js': `
      exports.handler = async (event, context) => {
        await new Promise((resolve) => setTimeout(resolve, 20));
        console.log('ran ' + context.index);
        if (event !== 1) throw new TypeError('rejected ' + event);
      };` } });
    assertExit(r, 1);
    assert.deepEqual(ran(r), [0, 1, 2]);
    assertStderr(r, /^lambdo: event 0 failed in \d+ ms: TypeError: rejected 0/m);
    assertStderr(r, /^lambdo: event 1 ok in \d+ ms$/m);
    assertStderr(r, /^lambdo: event 2 failed in \d+ ms: TypeError: rejected 2/m);
    assert.equal(lambdoLines(r).at(-1), 'lambdo: 3 events: 1 ok, 2 failed (index 0, 2)');
  });

  it('throwing a non-Error (a string, undefined) still fails the event', opts, async () => {
    const r = await runRuntime(rt, { events: [0, 1, 2], files: { 'index.js': `
      exports.handler = async (event) => { if (event === 0) throw 'plain string'; if (event === 1) throw undefined; };` } });
    assertExit(r, 1);
    assertStderr(r, /^lambdo: event 0 failed in \d+ ms: 'plain string'$/m);
    assertStderr(r, /^lambdo: event 1 failed in \d+ ms: undefined$/m);
    assert.equal(lambdoLines(r).at(-1), 'lambdo: 3 events: 1 ok, 2 failed (index 0, 1)');
  });

  it('process.exit in the handler stops the run: exit 1 even for exit(0), later events not run', opts, async () => {
    for (const code of [0, 3]) {
      const r = await runRuntime(rt, { events: [0, 1, 2, 3], files: { 'index.js': `
        exports.handler = (event, context) => { console.log('ran ' + context.index); if (event === 1) process.exit(${code}); };` } });
      assertExit(r, 1);
      assert.deepEqual(ran(r), [0, 1]);
      assertStderr(r, new RegExp(`^lambdo: event 1 failed: process\\.exit\\(${code}\\) was called; the run stops here, events 2 to 3 did not run$`, 'm'));
      assert.equal(lambdoLines(r).at(-1), 'lambdo: 4 events: 1 ok, 1 failed (index 1), 2 not run');
    }
  });

  it('a handler whose promise can never settle fails its event (exit 1) instead of passing', opts, async () => {
    const r = await runRuntime(rt, { events: [0, 1], files: { 'index.js': `
      exports.handler = (event, context) => { console.log('ran ' + context.index); return new Promise(() => {}); };` } });
    assertExit(r, 1);
    assert.deepEqual(ran(r), [0]);
    assertStderr(r, /^lambdo: event 0 failed: Node ran out of work while the handler's promise was still pending/m);
  });

  it('an uncaught exception from a stray callback fails the running event; the run goes on', opts, async () => {
    const r = await runRuntime(rt, { events: [0, 1, 2], files: { 'index.js': `
      exports.handler = async (event, context) => {
        console.log('ran ' + context.index);
        if (event === 1) setTimeout(() => { throw new RangeError('stray'); }, 1);
        await new Promise((resolve) => setTimeout(resolve, 30));
      };` } });
    assertExit(r, 1);
    assert.deepEqual(ran(r), [0, 1, 2]);
    assertStderr(r, /^lambdo: event 1: uncaught exception: RangeError: stray/m);
    assertStderr(r, /^lambdo: event 1 failed in \d+ ms \(see above\)$/m);
    assert.equal(lambdoLines(r).at(-1), 'lambdo: 3 events: 2 ok, 1 failed (index 1)');
  });

  it('a rejection the handler leaves unhandled fails that event, not the next', opts, async () => {
    const r = await runRuntime(rt, { events: [0, 1, 2], files: { 'index.js': `
      exports.handler = (event, context) => {
        console.log('ran ' + context.index);
        if (event === 1) Promise.reject(new Error('forgotten'));
      };` } });
    assertExit(r, 1);
    assert.deepEqual(ran(r), [0, 1, 2]);
    assertStderr(r, /^lambdo: event 1: unhandled promise rejection: Error: forgotten/m);
    assert.equal(lambdoLines(r).at(-1), 'lambdo: 3 events: 2 ok, 1 failed (index 1)');
  });

  it('work the handler did not await does not keep the process alive after the last event', opts, async () => {
    const t0 = Date.now();
    const r = await runRuntime(rt, { events: [0], files: { 'index.js': `
      exports.handler = () => { setInterval(() => {}, 1000); setTimeout(() => console.log('late'), 60_000); };` } });
    assertExit(r, 0);
    assert.equal(r.stdout, '');
    assert.ok(Date.now() - t0 < 10_000);
  });

  it('process.exitCode set by the handler does not change the runtime\'s verdict', opts, async () => {
    const r = await runRuntime(rt, { events: [0], files: { 'index.js': 'exports.handler = () => { process.exitCode = 7; };' } });
    assertExit(r, 0);
  });
});

// ---- PHP only ---------------------------------------------------------------------------------

describe('runtimes/php: callables and PHP-specific failures', () => {
  const rt = RUNTIMES.php;
  const opts = { timeout: TEST_TIMEOUT_MS, skip: rt.skip };

  it('Error and TypeError thrown by the handler are handler errors: exit 1, the run goes on', opts, async () => {
    const r = await runRuntime(rt, { events: [{ a: 1 }, 'not an array', { b: 2 }, { call: true }, { c: 3 }], files: { 'index.php': `<?php
      return function (array $event, array $context) {
          echo 'ran ', $context['index'], "\\n";
          if (isset($event['call'])) lambdo_no_such_function();
      };` } });
    assertExit(r, 1);
    assert.deepEqual(ran(r), [0, 2, 3, 4]);   // event 1 never entered: its argument was refused
    assertStderr(r, /^lambdo: event 1 failed in \d+ ms: TypeError: .*must be of type array, string given/m);
    assertStderr(r, /^lambdo: event 3 failed in \d+ ms: Error: Call to undefined function lambdo_no_such_function\(\)/m);
    assert.equal(lambdoLines(r).at(-1), 'lambdo: 5 events: 3 ok, 2 failed (index 1, 3)');
  });

  it('a fatal error (memory limit) ends the process: exit 1, logged with the index, later events not run', opts, async () => {
    const r = await runRuntime(rt, { events: [0, 1, 2], files: { 'index.php': `<?php
      return function ($event, array $context) {
          echo 'ran ', $context['index'], "\\n";
          if ($event === 1) { ini_set('memory_limit', '32M'); $s = str_repeat('x', 256 * 1024 * 1024); }
      };` } });
    assertExit(r, 1);
    assert.deepEqual(ran(r), [0, 1]);
    assertStderr(r, /^lambdo: event 1 failed: PHP fatal error: Allowed memory size of \d+ bytes exhausted.* in \/.*index\.php:\d+; the run stops here, event 2 did not run$/m);
    assert.equal(lambdoLines(r).at(-1), 'lambdo: 3 events: 1 ok, 1 failed (index 1), 1 not run');
  });

  it('exit() in the handler stops the run: exit 1 even for exit(0), later events not run', opts, async () => {
    for (const call of ['exit(0)', 'exit(3)', 'die("bye\\n")']) {
      const r = await runRuntime(rt, { events: [0, 1, 2, 3], files: { 'index.php': `<?php
        return function ($event, array $context) { echo 'ran ', $context['index'], "\\n"; if ($event === 1) ${call}; };` } });
      assertExit(r, 1);
      assert.deepEqual(ran(r), [0, 1]);
      assertStderr(r, /^lambdo: event 1 failed: exit\(\) or die\(\) was called; the run stops here, events 2 to 3 did not run$/m);
      assert.equal(lambdoLines(r).at(-1), 'lambdo: 4 events: 1 ok, 1 failed (index 1), 2 not run');
    }
  });

  it('a warning from the handler is not a failure', opts, async () => {
    const r = await runRuntime(rt, { events: [{}], files: { 'index.php': `<?php
      return function ($event, array $context) { $x = $event['missing']; echo "ran 0\\n"; };` } });
    assertExit(r, 0);
    assert.deepEqual(ran(r), [0]);
  });

  it('index.php may return any callable: closure, invokable object, [object, method], static method', opts, async () => {
    const cases = [
      'return fn ($event, $context) => print("ran {$context[\'index\']} $event\\n");',
      'class Job { function __invoke($event, $context) { echo "ran {$context[\'index\']} $event\\n"; } } return new Job;',
      'class Job { function run($event, $context) { echo "ran {$context[\'index\']} $event\\n"; } } return [new Job, "run"];',
      'class Job { static function run($event, $context) { echo "ran {$context[\'index\']} $event\\n"; } } return "Job::run";',
    ];
    for (const src of cases) {
      const r = await runRuntime(rt, { events: ['a', 'b'], files: { 'index.php': `<?php ${src}` } });
      assertExit(r, 0);
      assert.deepEqual(lines(r.stdout), ['ran 0 a', 'ran 1 b'], src);
    }
  });

  it('LAMBDO_HANDLER may name a file of any name; the file sees none of the runtime\'s variables', opts, async () => {
    const r = await runRuntime(rt, { events: [1], files: { 'jobs/worker.php': `<?php
      echo json_encode(array_keys(get_defined_vars())), "\\n";
      return function ($event, $context) { echo "ran 0\\n"; };` },
    env: { LAMBDO_HANDLER: 'app/jobs/worker.php' } });
    assertExit(r, 0);
    assert.deepEqual(lines(r.stdout), ['[]', 'ran 0']);
  });

  it('events are associative arrays; the handler\'s own declare(strict_types=1) applies to its code only', opts, async () => {
    const r = await runRuntime(rt, { events: '[{"user": {"id": 7, "tags": ["x"]}}, 5]', files: { 'index.php': `<?php
      declare(strict_types=1);
      return function ($event, array $context): void {
          echo 'ran ', $context['index'], ' ', is_array($event) ? $event['user']['tags'][0] : $event, "\\n";
      };` } });
    assertExit(r, 0);
    assert.deepEqual(lines(r.stdout), ['ran 0 x', 'ran 1 5']);
  });
});
