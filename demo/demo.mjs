#!/usr/bin/env node
// The whole lambdo flow on this machine, with no cloud account:
//   1. an SQS emulator (fauxqs) on 127.0.0.1 with a queue
//   2. `lambdo send` puts the sample project's events on it (one message per event)
//   3. `lambdo --once` with LAMBDO_BACKEND=local runs runtimes/js with the sample project's
//      handler as a child process, and exits when every message was handled
// Run it with `./build.sh demo` (which builds lambdo and installs the npm tools first).
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startSqs } from '../tests/lib/fauxqs.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const LAMBDO = process.env.LAMBDO_BIN || path.join(ROOT, 'lambdo');
const PROJECT = path.join(ROOT, 'runtimes/js/sample-project');

function run(args, env, input) {
  return new Promise((resolve) => {
    const p = spawn(LAMBDO, args, { env: { PATH: process.env.PATH, ...env }, stdio: ['pipe', 'inherit', 'inherit'] });
    p.stdin.end(input ?? '');
    p.on('exit', (code) => resolve(code));
  });
}

// The elements of a JSON array as their exact source text (the array is valid JSON).
function splitTopLevel(text) {
  const out = [];
  let i = text.indexOf('[') + 1;
  const end = text.lastIndexOf(']');
  while (i < end) {
    while (i < end && /[\s,]/.test(text[i])) i++;
    if (i >= end) break;
    let j = i, depth = 0, inString = false;
    for (; j < end; j++) {
      const c = text[j];
      if (inString) {
        if (c === '\\') j++;
        else if (c === '"') inString = false;
      } else if (c === '"') {
        inString = true;
      } else if (c === '{' || c === '[') {
        depth++;
      } else if (c === '}' || c === ']') {
        depth--;
      } else if (depth === 0 && (c === ',' || /\s/.test(c))) {
        break;
      }
    }
    out.push(text.slice(i, j));
    i = j;
  }
  return out;
}

const say = (s) => console.log(`\n\x1b[1m== ${s}\x1b[0m`);
const sqs = await startSqs();
let status = 1;
try {
  const { url } = await sqs.createQueue('lambdo-demo', { baseUrl: sqs.endpoint, visibilityTimeout: 30 });
  const env = {
    LAMBDO_SQS_QUEUE_URL: url, AWS_REGION: 'us-east-1',
    // fauxqs checks no signature; lambdo still signs every request with these
    AWS_ACCESS_KEY_ID: 'AKIDDEMO', AWS_SECRET_ACCESS_KEY: 'demo-secret',
  };
  say(`SQS emulator on ${sqs.endpoint}, queue ${url}`);

  const events = JSON.parse(readFileSync(path.join(PROJECT, 'events.json'), 'utf8'));
  const lines = readFileSync(path.join(PROJECT, 'events.json'), 'utf8');
  say(`lambdo send --image registry.fly.io/demo:latest  (${events.length} events from ${path.relative(ROOT, PROJECT)}/events.json, one per line)`);
  // one JSON line per event, cut from the file so that every byte is sent as written
  // (JSON.parse would round the 2^53+1 order number of the sample's third event)
  const bodies = splitTopLevel(lines);
  if (bodies.length !== events.length) throw new Error('could not split events.json into one line per event');
  let code = await run(['send', '--image', 'registry.fly.io/demo:latest'], env, bodies.join('\n') + '\n');
  if (code !== 0) throw new Error(`lambdo send exited ${code}`);

  say('lambdo --once with LAMBDO_BACKEND=local: runtimes/js runs the sample handler');
  code = await run(['--once'], {
    ...env, LAMBDO_BACKEND: 'local', LAMBDO_ACK: 'exit', LAMBDO_EVENTS_PER_MACHINE: '10',
    LAMBDO_SQS_LONG_POLL_SECONDS: '1',
    LAMBDO_LOCAL_COMMAND: JSON.stringify([process.execPath, path.join(ROOT, 'runtimes/js/runtime.mjs')]),
    LAMBDO_HANDLER: PROJECT,
  });
  const left = sqs.counts(url);
  say(`lambdo --once exited ${code}; queue now: ${left.visible} visible, ${left.inFlight} in flight`);
  status = code === 0 && left.visible === 0 && left.inFlight === 0 ? 0 : 1;
} catch (err) {
  console.error(`demo failed: ${err.message}`);
} finally {
  await sqs.close();
}
process.exit(status);
