// A test Fly Machines API (the parts lambdo uses), written from ../shared/fly/openapi.yaml
// (server https://api.machines.dev/v1), that also enforces lambdo's contract for the machines
// it creates. HTTPS on https://localhost:PORT with the test CA's certificate (lambdo gets
// SSL_CERT_FILE = testCerts().caFile), or plain HTTP on http://127.0.0.1:PORT with tls: false.
// lambdo's LAMBDO_FLY_API_URL is `fly.url` (no /v1: lambdo adds the /v1/apps/... paths).
//
// Routes (operationIds from the spec):
//   GET    /v1/apps/{app}                              Apps_show -> App
//   POST   /v1/apps/{app}/machines                     Machines_create (CreateMachineRequest) -> Machine
//   GET    /v1/apps/{app}/machines?include_deleted=&region=   Machines_list -> [Machine] (with
//          config.metadata; the spec has no metadata filter, so a client filters itself)
//   GET    /v1/apps/{app}/machines/{id}                Machines_show -> Machine
//   POST   /v1/apps/{app}/machines/{id}                Machines_update (UpdateMachineRequest) -> Machine
//   GET    /v1/apps/{app}/machines/{id}/wait?state=&timeout=&instance_id=   Machines_wait -> {"ok":true}
//          (state started|stopped|destroyed, default started; timeout seconds, default 60;
//          "stopped" is also satisfied by "destroyed", and by an instance_id of an earlier
//          version; 408 {"error":"deadline_exceeded: ..."})
//   GET    /v1/apps/{app}/machines/{id}/events         Machines_list_events -> [MachineEvent], newest first
//   POST   /v1/apps/{app}/machines/{id}/start          Machines_start -> {"previous_state", ...}
//   POST   /v1/apps/{app}/machines/{id}/stop           Machines_stop -> {"ok":true}
//   DELETE /v1/apps/{app}/machines/{id}                Machines_delete -> {"ok":true}
//   POST   /v1/apps/{app}/machines/{id}/lease[?ttl=S]  Machines_create_lease (ttl also in the body)
//   GET    /v1/apps/{app}/machines/{id}/lease          Machines_show_lease
//   DELETE /v1/apps/{app}/machines/{id}/lease          Machines_release_lease -> {"ok":true}
// Errors are the spec's ErrorResponse: {"error": "...", "status"?: "unknown"|"insufficient_capacity"}.
// Every request needs "Authorization: Bearer <token>" (401 otherwise) and the configured app
// (404 {"error":"app not found"} otherwise).
//
// lambdo's contract for POST .../machines (a violation answers 400 {"error": <precise text>}
// and is recorded in fly.violations, so a test can assert there were none):
//   - JSON object (Content-Type application/json); top-level keys from CreateMachineRequest
//     only, `region` a non-empty string, `config` an object, no skip_launch: true
//   - config keys from api.MachineConfig only; never config.size (deprecated)
//   - config.image non-empty string
//   - config.guest exactly one of the presets (guestForPreset), checked by shape: the server
//     does not know the message's size attribute, tests compare fly.machines[i].guest with
//     guestForPreset(size)
//   - config.env: object of strings with EVENTS_PATH === "/tmp/events.json", and
//     EVENTS_META_PATH === "/tmp/events.meta.json" exactly when the context file is sent
//   - config.files: [{guest_path: "/tmp/events.json", raw_value: <strict base64>}] whose decoded
//     bytes are UTF-8 JSON for an array, then optionally the context file
//     {guest_path: "/tmp/events.meta.json", raw_value}: a UTF-8 JSON array, one entry per event
//     (machine.meta, machine.metaText)
//   - config.auto_destroy === true; config.restart exactly {policy: "no"}
//   - config.init, if present: cmd / entrypoint / exec arrays of strings
//   - config.metadata: non-empty object of non-empty string keys and string values
//
// Faults:
//   fly.setRegionFault(region, { status, body, headers, retryAfter, delayMs, reset, times })
//     applies to valid creates for that region: 503 (default body
//     {"error":"insufficient capacity","status":"insufficient_capacity"}), 500, 429 (+ Retry-After:
//     retryAfter seconds, default 1), delayMs alone = slow success, reset = connection reset.
//     `times` (default unlimited) = how many creates it hits; the handle's `fired` counts them.
//   fly.fault = (req) => null | same spec   global hook, before auth, for any request;
//     req = { method, path, op, appName, machineId, body, region, rec }.
//
// Machine lifecycle: creates answer state "started" (option createdState). fly.exitMachine(id,
// code) makes it exit (events "exit" then, with auto_destroy, "destroy"); options autoExit:
// {code, afterMs} does that for every machine; fly.onCreate(machine) is called after each create.
//
// Scripted exits (checked after each create, first match wins; none = the machine keeps running
// unless autoExit is set):
//   fly.exitPolicy = (machine) => null | { code, afterMs, oomKilled, never }   hook
//   fly.setRegionExit(region, { code, afterMs, oomKilled })   every machine created in region
//   image conventions (option imageBehaviour: true, or fly.imageBehaviour = true), on the last
//   path segment of config.image (repository:tag):
//     .../exit:CODE       exits CODE after behaviourDelayMs (default 200)
//     .../exit:CODE-MS    exits CODE after MS
//     .../oom[:MS]        OOM-killed (oom_killed: true, exit code 137) after MS (default 200)
//     .../sleep:MS        exits 0 after MS
//     .../hang[:x]        never exits on its own
//   exitSpecForImage(image) is that rule, exported.
// fly.forgetDestroyedAfterMs (option forgetDestroyedAfterMs, default Infinity): that long after a
// machine is destroyed, Machines_show / _wait / _list_events / _stop / _delete answer 404
// {"error":"machine not found"} for it, as Fly does once an auto-destroyed machine is reaped. It
// stays in fly.machines (m.gone = true) for the tests' accounting.
// Region fault `resetAfterCreate: true`: the machine IS created, then the connection is reset
// before the answer (the client cannot know it exists). Region fault `createdId: null | <string>`:
// the machine IS created, and the 200 answer has no "id" (null) or that one ("" and the like).
//
// Warm pool (issue #12). Option pool: true (fly.pool) accepts creates with skip_launch: true as
// pool Machines (checkCreateBody kind 'pool'): created "stopped", nothing runs; config.metadata
// kept and listed; config.auto_destroy must not be true; the files may wait for the update.
// Without it, skip_launch stays a contract violation. Machines_update (always on) is checked as
// kind 'update' (the same file/env/guest/restart/metadata rules, auto_destroy not true), replaces
// the config (m.events, m.meta, m.image... as for creates), gives a new instance_id (m.versions)
// and starts the Machine unless skip_launch; a started one restarts with the new config. Every
// start (create, update, start) is a run with the same scripted exits as creates; with
// auto_destroy off an exit leaves the Machine "stopped" for the next group.
//   fly.runs / m.runs: { machineId, via: create|update|start, requestSeq, version, startSeq,
//     startedAt, image, imageDigest, events, eventsText, meta, metaText, endSeq, endedAt,
//     end: exit|stop|destroy|replaced, exitCode }   (startSeq/endSeq: one counter, for order)
//   fly.overlaps(): consecutive runs of one Machine where the second began before the first had
//     ended (e.g. an update of a started Machine): two groups at once. A pool test wants [].
// Registry (a tag is resolved at each create and update, as Fly does; a start reuses the
//   Machine's config): fly.imageDigest(ref) is what ref resolves to now ("sha256:" + 64 hex,
//   fixed per tag until pushed; a ref "repo@sha256:..." is its own digest; no tag means :latest);
//   fly.pushImage(ref) gives the tag a new digest (returned). m.imageDigest and run.imageDigest:
//   what the image resolved to at the create or update, also the view's image_ref.digest.
// fly.destroyMachine(id, { forget }) destroys a Machine underneath lambdo (state destroyed, its
//   run ended, its lease dropped; forget: true also makes every call about it a 404, m.gone).
// fly.holdLease(id, ttlS) takes the Machine's lease for someone else (the test), scaled like
//   any lease; returns it ({nonce, expiresAtMs, ...}).
// Leases (the spec's paths; the answers are the live API's, as fly-go decodes them and Fly's docs
// show, since the spec's bare Lease is not what Fly sends):
//   acquire -> 200 {"status":"success","data":{nonce, expires_at (unix s), owner, description,
//     version}}; ttl seconds (default 30), times option leaseTtlScale (fly.leaseTtlScale) so a
//     test can let leases expire fast. create with lease_ttl > 0 leases it too (answer: "nonce").
//     Acquiring again with the holder's nonce refreshes it (same nonce); otherwise
//     409 {"status":"error","message":"machine ID ... lease currently held by ...","code":"invalid"}.
//   show -> 200 {"status":"success","data":{...without the nonce}}, 404 {"error":"lease not found"}.
//   release needs the nonce; 404 {"error":"lease not found"} when none is held.
//   While a lease is live, update / start / stop / delete / release without its nonce in the
//   fly-machine-lease-nonce header answer 409 {"error":"aborted: machine ID ... lease currently
//   held by ..."} (what Fly answers such a write), counted in fly.leaseRefusals
//   (rec.leaseRefused). With no live lease the header is ignored. m.lease: {nonce, expiresAtMs, ...}.
// Per-Machine limits (option perMachineLimits: true for Fly's, or {action: {rate, burst},
//   get: {rate, burst}}): token buckets per Machine and per kind, update / start / stop / lease
//   (acquire and release) at action (Fly: 1/s, burst 3) each, show / wait / events / show lease
//   at get (5/s, burst 10). Over it: the same 429 as below, counted in
//   fly.machineRateLimited[kind]; checked after the machine lookup, before the lease.
//
// Rate limits like Fly's (option rateLimits, or fly.rateLimits = {...}; default none):
//   { create: { rate, burst }, get: { rate, burst } }   token buckets per app, rate per second;
//   create = Machines_create, get = Machines_show/_wait/_list_events/_list. A request over the
//   limit answers 429 {"error":"rate limit exceeded"} with Retry-After (whole seconds until a
//   token, at least 1) and is counted in fly.rateLimited.create / .get (rec.rateLimited = true).
//   Checked after the token and app, before the body checks and region faults.
import http from 'node:http';
import https from 'node:https';
import { randomBytes, createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { isDeepStrictEqual } from 'node:util';
import { testCerts } from './certs.mjs';

export const EVENTS_PATH = '/tmp/events.json';
export const EVENTS_META_PATH = '/tmp/events.meta.json';

const presets = {};
for (const n of [1, 2, 4, 6, 8]) presets[`shared-cpu-${n}x`] = { cpu_kind: 'shared', cpus: n, memory_mb: 256 * n };
for (const n of [1, 2, 4, 6, 8, 10, 12, 14, 16]) {
  presets[`performance-${n}x`] = { cpu_kind: 'performance', cpus: n, memory_mb: 2048 * n };
}
for (const [name, gpu] of [['a100-40gb', 'a100-pcie-40gb'], ['a100-80gb', 'a100-sxm4-80gb'],
  ['l40s', 'l40s'], ['a10', 'a10']]) {
  presets[name] = { cpu_kind: 'performance', cpus: 8, memory_mb: 32768, gpus: 1, gpu_kind: gpu };
}
export const PRESETS = Object.freeze(Object.fromEntries(
  Object.entries(presets).map(([k, v]) => [k, Object.freeze(v)])));

// The config.guest lambdo must send for a size preset (a fresh object), or undefined.
export function guestForPreset(name) {
  const g = PRESETS[name];
  return g ? { ...g } : undefined;
}

// The preset name a guest object is exactly equal to, or undefined.
export function presetForGuest(guest) {
  return Object.keys(PRESETS).find((k) => isDeepStrictEqual({ ...PRESETS[k] }, guest));
}

const CREATE_KEYS = new Set(['config', 'lease_ttl', 'lsvd', 'name', 'region', 'skip_launch',
  'skip_service_registration']);
const UPDATE_KEYS = new Set([...CREATE_KEYS, 'current_version']);
const CONFIG_KEYS = new Set(['auto_destroy', 'checks', 'disable_machine_autostart', 'dns', 'env',
  'files', 'guest', 'image', 'init', 'metadata', 'metrics', 'mounts', 'processes', 'restart',
  'schedule', 'services', 'size', 'standbys', 'statics', 'stop_config']);
const INIT_KEYS = new Set(['cmd', 'entrypoint', 'exec', 'kernel_args', 'swap_size_mb', 'tty']);
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const isObj = (v) => typeof v === 'object' && v !== null && !Array.isArray(v);
const isStrArray = (v) => Array.isArray(v) && v.every((s) => typeof s === 'string');
const show = (v) => (v === undefined ? 'undefined' : JSON.stringify(v));

// Checks a create body against lambdo's contract. Returns { errors: [...], decoded } where
// decoded = { eventsRaw (Buffer), eventsText, events } when the events file could be decoded,
// and { metaText, meta } for the context file (the second file, EVENTS_META_PATH), when sent.
// kind 'pool' (a skip_launch create under option pool) or 'update' (Machines_update) checks a
// pool Machine's body instead: skip_launch allowed, config.auto_destroy must not be true (the
// Machine is kept for the next group), and for a pool create the files (with EVENTS_PATH) may
// be left out, since the group's events only come with the update.
export function checkCreateBody(body, kind = 'create') {
  const errors = [];
  const err = (m) => errors.push(m);
  const decoded = {};
  if (!isObj(body)) return { errors: [`body must be a JSON object, got ${show(body)}`], decoded };
  const keys = kind === 'update' ? UPDATE_KEYS : CREATE_KEYS;
  for (const k of Object.keys(body)) if (!keys.has(k)) err(`unknown top-level key ${show(k)}`);
  if (kind === 'update' ? 'region' in body && typeof body.region !== 'string'
    : typeof body.region !== 'string' || body.region === '') err(`region must be a non-empty string, got ${show(body.region)}`);
  if (kind === 'create' && body.skip_launch === true) err('skip_launch: true would never start the machine');
  const c = body.config;
  if (!isObj(c)) {
    err(`config must be an object, got ${show(c)}`);
    return { errors, decoded };
  }
  for (const k of Object.keys(c)) if (!CONFIG_KEYS.has(k)) err(`unknown key config.${k}`);
  if ('size' in c) err(`config.size must not be sent (deprecated, use config.guest), got ${show(c.size)}`);
  if (typeof c.image !== 'string' || c.image.trim() === '' || /\s/.test(c.image)) {
    err(`config.image must be a non-empty image reference, got ${show(c.image)}`);
  }
  if (!isObj(c.guest)) err(`config.guest must be an object, got ${show(c.guest)}`);
  else if (!presetForGuest(c.guest)) {
    err(`config.guest ${show(c.guest)} is not a preset: want {cpu_kind, cpus, memory_mb} (+ gpus: 1, gpu_kind for GPUs), e.g. ${show(PRESETS['shared-cpu-1x'])}`);
  }
  const blank = kind === 'pool' && c.files === undefined;   // a pool Machine waiting for its first group
  if (!isObj(c.env)) err(`config.env must be an object, got ${show(c.env)}`);
  else if (!blank) {
    for (const [k, v] of Object.entries(c.env)) if (typeof v !== 'string') err(`config.env.${k} must be a string, got ${show(v)}`);
    if (c.env.EVENTS_PATH !== EVENTS_PATH) err(`config.env.EVENTS_PATH must be "${EVENTS_PATH}", got ${show(c.env.EVENTS_PATH)}`);
    const hasMeta = Array.isArray(c.files) && c.files.length === 2;
    if (c.env.EVENTS_META_PATH !== (hasMeta ? EVENTS_META_PATH : undefined)) {
      err(`config.env.EVENTS_META_PATH must be ${hasMeta ? `"${EVENTS_META_PATH}"` : 'absent without a context file'}, got ${show(c.env.EVENTS_META_PATH)}`);
    }
  }
  if (Array.isArray(c.files) && c.files.length === 2) {
    const f = c.files[1];
    if (!isObj(f) || Object.keys(f).length !== 2 || f.guest_path !== EVENTS_META_PATH
        || typeof f.raw_value !== 'string' || !BASE64.test(f.raw_value)) {
      err(`config.files[1] must be {"guest_path":"${EVENTS_META_PATH}","raw_value":<base64>}, got ${show(f).slice(0, 120)}`);
    } else {
      try {
        decoded.metaText = new TextDecoder('utf-8', { fatal: true }).decode(Buffer.from(f.raw_value, 'base64'));
        decoded.meta = JSON.parse(decoded.metaText);
        if (!Array.isArray(decoded.meta)) err(`the context file must hold a JSON array, got ${show(decoded.meta).slice(0, 80)}`);
      } catch (e) {
        err(`the context file is not UTF-8 JSON: ${e.message}`);
      }
    }
  }
  if (blank) { /* no files yet */ } else if (!Array.isArray(c.files) || c.files.length < 1 || c.files.length > 2) {
    err(`config.files must be an array of the events file and (optionally) the context file, got ${show(c.files)}`);
  } else {
    const f = c.files[0];
    if (!isObj(f)) err(`config.files[0] must be an object, got ${show(f)}`);
    else {
      for (const k of Object.keys(f)) if (k !== 'guest_path' && k !== 'raw_value') err(`config.files[0].${k} must not be sent`);
      if (f.guest_path !== EVENTS_PATH) err(`config.files[0].guest_path must be "${EVENTS_PATH}", got ${show(f.guest_path)}`);
      if (typeof f.raw_value !== 'string' || !BASE64.test(f.raw_value)) {
        err(`config.files[0].raw_value must be standard padded base64, got ${show(typeof f.raw_value === 'string' ? f.raw_value.slice(0, 60) : f.raw_value)}`);
      } else {
        decoded.eventsRaw = Buffer.from(f.raw_value, 'base64');
        try {
          decoded.eventsText = new TextDecoder('utf-8', { fatal: true }).decode(decoded.eventsRaw);
          decoded.events = JSON.parse(decoded.eventsText);
          if (!Array.isArray(decoded.events)) err(`the events file must hold a JSON array, got ${show(decoded.events).slice(0, 80)}`);
        } catch (e) {
          err(`the events file is not UTF-8 JSON: ${e.message}`);
        }
      }
    }
  }
  if (Array.isArray(decoded.meta) && Array.isArray(decoded.events) && decoded.meta.length !== decoded.events.length) {
    err(`the context file has ${decoded.meta.length} entries for ${decoded.events.length} events`);
  }
  if (kind === 'create' && c.auto_destroy !== true) err(`config.auto_destroy must be true, got ${show(c.auto_destroy)}`);
  if (kind !== 'create' && c.auto_destroy === true) err('config.auto_destroy must not be true on a pool Machine (it is kept for the next group)');
  if (!isDeepStrictEqual(c.restart, { policy: 'no' })) err(`config.restart must be {"policy":"no"}, got ${show(c.restart)}`);
  if ('init' in c) {
    if (!isObj(c.init)) err(`config.init must be an object, got ${show(c.init)}`);
    else {
      for (const k of Object.keys(c.init)) if (!INIT_KEYS.has(k)) err(`unknown key config.init.${k}`);
      for (const k of ['cmd', 'entrypoint', 'exec']) {
        if (k in c.init && !isStrArray(c.init[k])) err(`config.init.${k} must be an array of strings, got ${show(c.init[k])}`);
      }
    }
  }
  if (!isObj(c.metadata) || Object.keys(c.metadata).length === 0) {
    err(`config.metadata must be a non-empty object naming lambdo, got ${show(c.metadata)}`);
  } else {
    for (const [k, v] of Object.entries(c.metadata)) {
      if (k === '' || typeof v !== 'string') err(`config.metadata.${k} must be a string, got ${show(v)}`);
    }
  }
  return { errors, decoded };
}

// The scripted exit the image conventions give an image (see the header), or null.
export function exitSpecForImage(image, { delayMs = 200 } = {}) {
  if (typeof image !== 'string') return null;
  const last = image.split('/').pop();
  const i = last.indexOf(':');
  const repo = i < 0 ? last : last.slice(0, i);
  const tag = i < 0 ? undefined : last.slice(i + 1);
  let m;
  if (repo === 'exit') {
    if (tag !== undefined && (m = /^(\d+)(?:-(\d+))?$/.exec(tag))) {
      return { code: Number(m[1]), afterMs: m[2] !== undefined ? Number(m[2]) : delayMs, oomKilled: false };
    }
    return { code: 1, afterMs: delayMs, oomKilled: false };
  }
  if (repo === 'oom') {
    return { code: 137, afterMs: tag !== undefined && /^\d+$/.test(tag) ? Number(tag) : delayMs, oomKilled: true };
  }
  if (repo === 'sleep') {
    return { code: 0, afterMs: tag !== undefined && /^\d+$/.test(tag) ? Number(tag) : delayMs, oomKilled: false };
  }
  if (repo === 'hang') return { never: true };
  return null;
}

const hex = (n) => randomBytes(n).toString('hex');
// An image reference as the registry model keys it: a tag-less "repo" is "repo:latest".
const imageKey = (ref) => (/[:@][^/]*$/.test(String(ref)) ? String(ref) : `${ref}:latest`);
const CROCKFORD = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
const ulid = () => Array.from(randomBytes(26), (b) => CROCKFORD[b & 31]).join('');
const isoSec = (ms = Date.now()) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');

// Fly's per-Machine limits: each action (update, start, stop, lease) per Machine, and its gets.
const MACHINE_LIMITS = Object.freeze({ action: { rate: 1, burst: 3 }, get: { rate: 5, burst: 10 } });
const MACHINE_KIND = { Machines_update: 'update', Machines_start: 'start', Machines_stop: 'stop',
  Machines_create_lease: 'lease', Machines_release_lease: 'lease', Machines_show: 'get',
  Machines_wait: 'get', Machines_list_events: 'get', Machines_show_lease: 'get' };
// Calls refused without the lease's nonce while another holds it.
const LEASE_GATED = new Set(['Machines_update', 'Machines_start', 'Machines_stop', 'Machines_delete',
  'Machines_release_lease']);
const LEASE_OWNER = 'lambdo-test@tokens.fly.io';
const NONCE_HEADER = 'fly-machine-lease-nonce';

function defaultFaultBody(status) {
  if (status === 503) return { error: 'insufficient capacity', status: 'insufficient_capacity' };
  if (status === 429) return { error: 'rate limit exceeded' };
  if (status === 500) return { error: 'internal server error', status: 'unknown' };
  return { error: `test fault ${status}` };
}

// Options: token, app, tls (true), cert ('localhost' | 'wronghost' | 'untrusted': which test
// certificate to serve), createdState ('started'), autoExit ({code, afterMs}), pool,
// perMachineLimits, leaseTtlScale (see the header).
export async function startFlyApi({ token, app, tls = true, cert = 'localhost',
  createdState = 'started', autoExit = null, imageBehaviour = false, behaviourDelayMs = 200,
  forgetDestroyedAfterMs = Infinity, rateLimits = null, pool = false, perMachineLimits = null,
  leaseTtlScale = 1 } = {}) {
  if (!token || !app) throw new Error('startFlyApi: token and app are required');
  const sockets = new Set();
  const timers = new Set();
  const aborter = new AbortController();
  const stateWaiters = new Set();
  const regionFaults = new Map();
  const regionExits = new Map();
  const buckets = {};        // kind -> { tokens, at, rate, burst }
  let seq = 0;
  let connSeq = 0;
  let runSeq = 0;            // orders run starts and ends (ms clocks tie)
  const pushed = new Map();  // image ref -> digest given by pushImage

  const fly = {
    url: undefined,
    token, app,
    requests: [],        // {seq, conn, at, method, path, op, machineId, headers, body, raw, status, response, fault, ms}
    machines: [],        // successful creates, see create()
    violations: [],      // {seq, errors, body} for rejected create bodies
    connections: 0,      // TCP connections accepted
    resumed: 0,          // TLS connections that resumed a session (by ID: the server keeps them)
    tlsErrors: [],       // TLS handshakes that failed (e.g. the client refused our certificate)
    get openConnections() { return sockets.size; },
    fault: null,
    onCreate: null,
    exitPolicy: null,          // (machine) => null | {code, afterMs, oomKilled, never}
    imageBehaviour,            // image conventions on (see the header)
    behaviourDelayMs,
    forgetDestroyedAfterMs,
    rateLimits,                // { create: {rate, burst}, get: {rate, burst} } or null
    rateLimited: { create: 0, get: 0 },
    pool,                      // accept skip_launch pool creates (see the header)
    perMachineLimits: perMachineLimits === true ? MACHINE_LIMITS : perMachineLimits,
    machineRateLimited: { update: 0, start: 0, stop: 0, lease: 0, get: 0 },
    leaseTtlScale,
    leaseRefusals: 0,          // requests refused (409) for a lease held under another nonce
    runs: [],                  // every run of every Machine, see launch()
    // Pairs of runs of one Machine where the second began before the first had ended (two groups
    // at once): [{ machineId, first, second }]; a pool test asserts it is empty.
    overlaps() {
      const out = [];
      for (const m of fly.machines) {
        for (let i = 1; i < m.runs.length; i++) {
          const [a, b] = [m.runs[i - 1], m.runs[i]];
          if (a.endSeq === undefined || b.startSeq < a.endSeq) out.push({ machineId: m.id, first: a, second: b });
        }
      }
      return out;
    },
    imageDigest(ref) {
      const r = imageKey(ref);
      if (r.includes('@')) return r.slice(r.indexOf('@') + 1);
      return pushed.get(r) ?? `sha256:${createHash('sha256').update(r).digest('hex')}`;
    },
    pushImage(ref) {
      const d = `sha256:${hex(32)}`;
      pushed.set(imageKey(ref), d);
      return d;
    },
    destroyMachine(id, { forget = false } = {}) {
      const m = fly.machine(id);
      if (!m) throw new Error(`no machine ${id}`);
      m.lease = null;
      if (m.state !== 'destroyed') setState(m, 'destroyed', { type: 'destroy', source: 'user' });
      if (forget) m.gone = true;
      return m;
    },
    holdLease(id, ttlS = 60) {
      const m = fly.machine(id);
      if (!m) throw new Error(`no machine ${id}`);
      return grantLease(m, ttlS, 'held by the test');
    },
    setRegionExit(region, spec) { regionExits.set(region, { ...spec }); },
    clearRegionExit(region) { regionExits.delete(region); },
    creates() { return fly.requests.filter((r) => r.op === 'Machines_create'); },
    machine(id) { return fly.machines.find((m) => m.id === id); },
    setRegionFault(region, spec = {}) {
      const f = { ...spec, region, fired: 0, remaining: spec.times ?? Infinity };
      regionFaults.set(region, f);
      return f;
    },
    clearRegionFault(region) { regionFaults.delete(region); },
    // Makes a machine's process exit with `code`: state stopped, an "exit" event, then (with
    // auto_destroy, unless destroy: false) destroyed with a "destroy" event.
    exitMachine(id, code = 0, { oomKilled = false, destroy } = {}) {
      const m = fly.machine(id);
      if (!m) throw new Error(`no machine ${id}`);
      if (m.state === 'stopped' || m.state === 'destroyed') return m;
      m.exitCode = code;
      m.oomKilled = oomKilled;
      m.exitedAt = Date.now();
      if (m.exitTimer) { clearTimeout(m.exitTimer); timers.delete(m.exitTimer); m.exitTimer = null; }
      setState(m, 'stopped', { type: 'exit', source: 'flyd', request: { exit_event: {
        requested_stop: false, restarting: false, guest_exit_code: code, guest_signal: oomKilled ? 9 : -1,
        guest_error: '', exit_code: code, signal: oomKilled ? 9 : -1, error: '', oom_killed: oomKilled,
        exited_at: new Date().toISOString() }, restart_count: 0 } });
      if (destroy ?? m.config.auto_destroy === true) setState(m, 'destroyed', { type: 'destroy', source: 'flyd' });
      return m;
    },
    // Resolves with the `count`-th answered request matching `match` (an op or a predicate).
    waitFor(match, { count = 1, timeoutMs = 10000 } = {}) {
      const test = typeof match === 'function' ? match : (r) => r.op === match;
      return new Promise((resolve, reject) => {
        const w = {
          check() {
            const r = fly.requests.filter((q) => q.status !== undefined && test(q))[count - 1];
            if (r) { clearTimeout(w.timer); stateWaiters.delete(w); resolve(r); }
          },
          timer: setTimeout(() => {
            stateWaiters.delete(w);
            reject(new Error(`fly api: no ${count} x ${typeof match === 'function' ? 'matching request' : match} within ${timeoutMs} ms; seen: ${fly.requests.map((r) => `${r.op}:${r.status}`).join(' ')}`));
          }, timeoutMs),
        };
        stateWaiters.add(w);
        w.check();
      });
    },
    close,
  };

  const notify = () => { for (const w of [...stateWaiters]) w.check(); };

  function setState(m, state, event) {
    m.state = state;
    m.updatedAt = isoSec();
    m.machineEvents.unshift({ id: ulid(), type: event.type, status: state, source: event.source,
      timestamp: Date.now(), ...(event.request ? { request: event.request } : {}) });
    if (state === 'stopped' || state === 'destroyed') {
      if (m.exitTimer) { clearTimeout(m.exitTimer); timers.delete(m.exitTimer); m.exitTimer = null; }
      m.stoppedAt ??= Date.now();
      if (m.run && m.run.endSeq === undefined) endRun(m.run, event.type === 'exit' && event.source === 'user' ? 'stop' : event.type);
    }
    if (state === 'destroyed') {
      m.destroyedAt = Date.now();
      const after = fly.forgetDestroyedAfterMs;
      if (after === 0) m.gone = true;
      else if (Number.isFinite(after)) {
        const t = setTimeout(() => { timers.delete(t); m.gone = true; }, after);
        timers.add(t);
      }
    }
    notify();
  }

  // The scripted exit of a new machine (see the header), or null.
  function exitSpecFor(m) {
    if (fly.exitPolicy) {
      const spec = fly.exitPolicy(m);
      if (spec) return spec;
    }
    if (regionExits.has(m.region)) return regionExits.get(m.region);
    if (fly.imageBehaviour) {
      const spec = exitSpecForImage(m.image, { delayMs: fly.behaviourDelayMs });
      if (spec) return spec;
    }
    return autoExit;
  }

  // Token bucket check of bucket `key` under limit `lim` ({rate, burst} or none); returns seconds
  // to wait, or 0 when allowed.
  function rateLimit(key, lim = fly.rateLimits?.[key]) {
    if (!lim) return 0;
    const now = Date.now();
    let b = buckets[key];
    if (!b || b.rate !== lim.rate || b.burst !== lim.burst) {
      b = buckets[key] = { tokens: lim.burst, at: now, rate: lim.rate, burst: lim.burst };
    }
    b.tokens = Math.min(b.burst, b.tokens + ((now - b.at) / 1000) * b.rate);
    b.at = now;
    if (b.tokens >= 1) { b.tokens -= 1; return 0; }
    return Math.max(1, Math.ceil((1 - b.tokens) / b.rate));
  }

  const view = (m) => ({
    id: m.id, name: m.name, state: m.state, region: m.region, instance_id: m.instanceId,
    private_ip: m.privateIp, config: m.config,
    image_ref: { registry: 'registry-1.docker.io', repository: String(m.config.image).split(':')[0],
      tag: String(m.config.image).split(':')[1] ?? 'latest', digest: m.imageDigest, labels: {} },
    created_at: m.createdAt, updated_at: m.updatedAt, events: m.machineEvents,
  });

  function send(res, rec, status, body, headers = {}) {
    const payload = Buffer.from(body === undefined ? '' : JSON.stringify(body));
    rec.status = status;
    rec.response = body;
    rec.ms = Date.now() - rec.at;
    if (!res.destroyed) {
      res.writeHead(status, { 'content-type': 'application/json; charset=utf-8',
        'fly-request-id': `${ulid()}-test`, ...headers, 'content-length': payload.length }).end(payload);
    }
    notify();
  }

  async function applyFault(f, req, res, rec) {
    rec.fault = f;
    if (f.delayMs) await sleep(f.delayMs, undefined, { signal: aborter.signal });
    if (f.reset) {
      rec.status = 'reset';
      req.socket.destroy();
      notify();
      return true;
    }
    if (f.status) {
      const headers = { ...(f.headers ?? {}) };
      if (f.status === 429) headers['retry-after'] ??= String(f.retryAfter ?? 1);
      send(res, rec, f.status, f.body ?? defaultFaultBody(f.status), headers);
      return true;
    }
    return false;   // only a delay: carry on
  }

  // The group fields of a Machine, from its (create or update) body and decoded files.
  function takeConfig(m, body, decoded) {
    Object.assign(m, { config: body.config, guest: body.config.guest, preset: presetForGuest(body.config.guest),
      image: body.config.image, imageDigest: fly.imageDigest(body.config.image), env: body.config.env, metadata: body.config.metadata,
      cmd: body.config.init?.cmd, events: decoded.events, eventsRaw: decoded.eventsRaw,
      eventsText: decoded.eventsText, meta: decoded.meta, metaText: decoded.metaText });
  }

  // Starts a run of m's current config (via 'create' | 'update' | 'start'): a run record, state
  // started, the scripted exit. A run still going is ended as 'replaced', after the new one began,
  // so overlaps() reports it: that Machine ran two groups at once.
  function launch(m, via, rec) {
    const prev = m.run?.endSeq === undefined ? m.run : null;
    const run = { machineId: m.id, via, requestSeq: rec.seq, version: m.instanceId, startSeq: ++runSeq,
      startedAt: Date.now(), image: m.image, imageDigest: m.imageDigest, events: m.events, eventsText: m.eventsText, meta: m.meta,
      metaText: m.metaText, endSeq: undefined, endedAt: undefined, end: undefined, exitCode: undefined };
    fly.runs.push(run);
    m.runs.push(run);
    m.run = run;
    if (prev) endRun(prev, 'replaced');
    if (m.exitTimer) { clearTimeout(m.exitTimer); timers.delete(m.exitTimer); m.exitTimer = null; }
    m.exitCode = undefined;
    m.stoppedAt = undefined;
    if (via !== 'create') setState(m, 'started', { type: 'start', source: 'user' });
    const ex = exitSpecFor(m);
    if (ex && !ex.never) {
      m.plannedExit = { code: ex.code ?? 0, afterMs: ex.afterMs ?? 0, oomKilled: !!ex.oomKilled };
      const t = setTimeout(() => {
        timers.delete(t);
        m.exitTimer = null;
        if (!closed) fly.exitMachine(m.id, ex.code ?? 0, { oomKilled: !!ex.oomKilled });
      }, ex.afterMs ?? 0);
      m.exitTimer = t;
      timers.add(t);
    }
  }

  function endRun(run, end) {
    const m = fly.machine(run.machineId);
    Object.assign(run, { endSeq: ++runSeq, endedAt: Date.now(), end, exitCode: end === 'replaced' ? undefined : m.exitCode });
  }

  // A new lease on m for ttl seconds (scaled by leaseTtlScale).
  function grantLease(m, ttl, description = '') {
    m.lease = { nonce: hex(12), expiresAtMs: Date.now() + ttl * 1000 * fly.leaseTtlScale,
      owner: LEASE_OWNER, description, version: m.instanceId };
    return m.lease;
  }

  // m's lease, or null once it has expired.
  function liveLease(m) {
    if (m.lease && Date.now() >= m.lease.expiresAtMs) m.lease = null;
    return m.lease;
  }

  const leaseData = (l, withNonce) => ({ ...(withNonce ? { nonce: l.nonce } : {}),
    expires_at: Math.ceil(l.expiresAtMs / 1000), owner: l.owner, description: l.description, version: l.version });
  const heldBy = (m, l) => `machine ID ${m.id} lease currently held by ${l.owner}, expires at ${new Date(l.expiresAtMs).toISOString()}`;

  function create(rec, body, decoded) {
    const m = {
      id: hex(7), name: body.name ?? `lambdo-${hex(4)}`, region: body.region, state: createdState,
      instanceId: ulid(), privateIp: `fdaa:0:${hex(2)}:a7b:${hex(2)}:${hex(2)}:${hex(2)}:2`,
      createdAt: isoSec(), updatedAt: isoSec(), machineEvents: [], body, exitCode: undefined,
      requestSeq: rec.seq, runs: [], run: null, versions: [], lease: null,
    };
    takeConfig(m, body, decoded);
    m.versions.push(m.instanceId);
    m.machineEvents.unshift({ id: ulid(), type: 'launch', status: 'created', source: 'user', timestamp: Date.now() });
    fly.machines.push(m);
    if (body.lease_ttl > 0) grantLease(m, body.lease_ttl);
    if (body.skip_launch === true) m.state = 'stopped';
    else {
      if (createdState === 'started') {
        m.machineEvents.unshift({ id: ulid(), type: 'start', status: 'started', source: 'flyd', timestamp: Date.now() });
      }
      launch(m, 'create', rec);
    }
    try { fly.onCreate?.(m); } catch (e) { rec.observerError = e; }
    return m;
  }

  async function waitState(m, want, timeoutS) {
    const ok = () => m.state === want || (want === 'stopped' && m.state === 'destroyed');
    if (ok()) return true;
    return new Promise((resolve) => {
      const onAbort = () => { clearTimeout(w.timer); resolve(false); };
      const done = (v) => {
        clearTimeout(w.timer);
        stateWaiters.delete(w);
        aborter.signal.removeEventListener('abort', onAbort);
        resolve(v);
      };
      const w = { check() { if (ok()) done(true); } };
      w.timer = setTimeout(() => done(false), timeoutS * 1000);
      stateWaiters.add(w);
      aborter.signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  async function handle(req, res, ctx) {
    const chunks = [];
    for await (const c of req) chunks.push(c);
    const raw = Buffer.concat(chunks);
    const u = new URL(req.url, 'http://fly.invalid');
    const seg = u.pathname.split('/').filter(Boolean);   // v1 apps {app} machines {id} {action}
    let op = 'unknown';
    const [v1, apps, appName, machinesSeg, machineId, action] = seg;
    if (v1 === 'v1' && apps === 'apps' && appName) {
      if (seg.length === 3 && req.method === 'GET') op = 'Apps_show';
      else if (machinesSeg === 'machines' && seg.length === 4) {
        op = req.method === 'POST' ? 'Machines_create' : req.method === 'GET' ? 'Machines_list' : op;
      } else if (machinesSeg === 'machines' && seg.length === 5) {
        op = { GET: 'Machines_show', DELETE: 'Machines_delete', POST: 'Machines_update' }[req.method] ?? op;
      } else if (machinesSeg === 'machines' && seg.length === 6) {
        if (action === 'wait' && req.method === 'GET') op = 'Machines_wait';
        else if (action === 'events' && req.method === 'GET') op = 'Machines_list_events';
        else if (action === 'stop' && req.method === 'POST') op = 'Machines_stop';
        else if (action === 'start' && req.method === 'POST') op = 'Machines_start';
        else if (action === 'lease') {
          op = { GET: 'Machines_show_lease', POST: 'Machines_create_lease', DELETE: 'Machines_release_lease' }[req.method] ?? op;
        }
      }
    }
    let body;
    if (raw.length) { try { body = JSON.parse(raw.toString('utf8')); } catch { body = undefined; } }
    const rec = { seq: ++seq, conn: req.socket.lambdoConn, at: Date.now(), method: req.method,
      path: req.url, op, appName, machineId, headers: { ...req.headers }, body, raw,
      status: undefined, response: undefined };
    fly.requests.push(rec);
    ctx.rec = rec;

    if (fly.fault) {
      const f = await fly.fault({ method: req.method, path: req.url, op, appName, machineId, body,
        region: body?.region, rec });
      if (f && await applyFault(f, req, res, rec)) return;
    }
    const auth = req.headers.authorization;
    if (auth === undefined) return send(res, rec, 401, { error: 'You must be authenticated to view this.' });
    if (auth !== `Bearer ${token}`) return send(res, rec, 401, { error: 'Authenticate: token validation error' });
    if (op === 'unknown') return send(res, rec, 404, { error: 'not found' });
    if (appName !== app) return send(res, rec, 404, { error: 'app not found' });
    const kind = op === 'Machines_create' ? 'create'
      : ['Machines_show', 'Machines_wait', 'Machines_list_events', 'Machines_list'].includes(op) ? 'get' : null;
    if (kind) {
      const wait = rateLimit(kind);
      if (wait > 0) {
        fly.rateLimited[kind]++;
        rec.rateLimited = true;
        return send(res, rec, 429, { error: 'rate limit exceeded' }, { 'retry-after': String(wait) });
      }
    }

    if (op === 'Apps_show') {
      return send(res, rec, 200, { id: app, name: app, status: 'deployed',
        organization: { name: 'Lambdo Test', slug: 'lambdo-test' } });
    }
    if (op === 'Machines_create') {
      const errors = [];
      if (!String(req.headers['content-type'] ?? '').startsWith('application/json')) {
        errors.push(`Content-Type must be application/json, got ${show(req.headers['content-type'])}`);
      }
      let decoded = {};
      if (body === undefined) errors.push(`body is not JSON: ${show(raw.toString('utf8').slice(0, 80))}`);
      else {
        const r = checkCreateBody(body, fly.pool && body.skip_launch === true ? 'pool' : 'create');
        errors.push(...r.errors);
        decoded = r.decoded;
      }
      if (errors.length) {
        fly.violations.push({ seq: rec.seq, errors, body: body ?? raw.toString('utf8') });
        return send(res, rec, 400, { error: errors.join('; ') });
      }
      const f = regionFaults.get(body.region);
      if (f && f.remaining > 0) {
        f.remaining--;
        f.fired++;
        if (f.resetAfterCreate) {
          rec.fault = f;
          if (f.delayMs) await sleep(f.delayMs, undefined, { signal: aborter.signal });
          const m = create(rec, body, decoded);
          rec.machineId = m.id;
          rec.status = 'reset';
          req.socket.destroy();
          notify();
          return undefined;
        }
        if ('createdId' in f) {
          rec.fault = f;
          const m = create(rec, body, decoded);
          rec.machineId = m.id;
          const { id, ...rest } = view(m);
          return send(res, rec, 200, f.createdId === null ? rest : { ...rest, id: f.createdId });
        }
        if (await applyFault(f, req, res, rec)) return;
      }
      const m = create(rec, body, decoded);
      rec.machineId = m.id;
      return send(res, rec, 200, m.lease ? { ...view(m), nonce: m.lease.nonce } : view(m));
    }
    if (op === 'Machines_list') {
      const region = u.searchParams.get('region');
      return send(res, rec, 200, fly.machines.filter((m) => !m.gone && (m.state !== 'destroyed'
        || u.searchParams.get('include_deleted') === 'true') && (!region || m.region === region)).map(view));
    }
    const m = fly.machine(machineId);
    if (!m || m.gone) return send(res, rec, 404, { error: 'machine not found' });
    const mkind = fly.perMachineLimits && MACHINE_KIND[op];
    if (mkind) {
      const wait = rateLimit(`${m.id}/${mkind}`, fly.perMachineLimits[mkind === 'get' ? 'get' : 'action']);
      if (wait > 0) {
        fly.machineRateLimited[mkind]++;
        rec.rateLimited = true;
        return send(res, rec, 429, { error: 'rate limit exceeded' }, { 'retry-after': String(wait) });
      }
    }
    // A held lease refuses other callers with 409, as Fly does ("aborted: machine ID ... lease
    // currently held by ..."); a nonce sent with no live lease (e.g. expired) is not checked.
    const lease = liveLease(m);
    const nonceOk = !lease || req.headers[NONCE_HEADER] === lease.nonce;
    if (!nonceOk && (LEASE_GATED.has(op) || op === 'Machines_create_lease')) {
      fly.leaseRefusals++;
      rec.leaseRefused = true;
      // Acquiring answers Fly's documented lease error; the gated calls the error field.
      return send(res, rec, 409, op === 'Machines_create_lease'
        ? { status: 'error', message: heldBy(m, lease), code: 'invalid' } : { error: `aborted: ${heldBy(m, lease)}` });
    }
    if (op === 'Machines_create_lease') {
      const ttl = Number(u.searchParams.get('ttl') ?? body?.ttl ?? 30);
      if (!(ttl > 0)) return send(res, rec, 400, { error: `invalid ttl ${show(u.searchParams.get('ttl') ?? body?.ttl)}` });
      const l = lease ?? grantLease(m, ttl, body?.description ?? '');
      if (lease) l.expiresAtMs = Date.now() + ttl * 1000 * fly.leaseTtlScale;   // a refresh, same nonce
      return send(res, rec, 200, { status: 'success', data: leaseData(l, true) });
    }
    if (op === 'Machines_show_lease' || op === 'Machines_release_lease') {
      if (!lease) return send(res, rec, 404, { error: 'lease not found' });
      if (op === 'Machines_show_lease') return send(res, rec, 200, { status: 'success', data: leaseData(lease, false) });
      m.lease = null;
      return send(res, rec, 200, { ok: true });
    }
    if (op === 'Machines_update') {
      const errors = body === undefined ? [`body is not JSON: ${show(raw.toString('utf8').slice(0, 80))}`] : [];
      const r = body === undefined ? { errors: [], decoded: {} } : checkCreateBody(body, 'update');
      errors.push(...r.errors);
      if (m.state === 'destroyed') errors.push('machine is destroyed');
      if (errors.length) {
        fly.violations.push({ seq: rec.seq, errors, body: body ?? raw.toString('utf8') });
        return send(res, rec, 400, { error: errors.join('; ') });
      }
      takeConfig(m, body, r.decoded);
      m.instanceId = ulid();
      m.versions.push(m.instanceId);
      m.updatedAt = isoSec();
      m.machineEvents.unshift({ id: ulid(), type: 'update', status: m.state, source: 'user', timestamp: Date.now() });
      // A started Machine restarts with the new config (its run is replaced); a stopped one
      // starts unless skip_launch.
      if (m.state === 'started' || body.skip_launch !== true) launch(m, 'update', rec);
      return send(res, rec, 200, view(m));
    }
    if (op === 'Machines_start') {
      const previous = m.state;
      if (previous === 'destroyed') return send(res, rec, 400, { error: 'machine is destroyed' });
      if (previous !== 'started') launch(m, 'start', rec);
      return send(res, rec, 200, { previous_state: previous, migrated: false, new_host: '' });
    }
    if (op === 'Machines_show') return send(res, rec, 200, view(m));
    if (op === 'Machines_list_events') return send(res, rec, 200, m.machineEvents);
    if (op === 'Machines_wait') {
      const state = u.searchParams.get('state') ?? 'started';
      if (!['started', 'stopped', 'destroyed'].includes(state)) {
        return send(res, rec, 400, { error: `invalid state ${show(state)}` });
      }
      const t = Number(u.searchParams.get('timeout') ?? 60);
      if (!(t > 0 && t <= 60)) return send(res, rec, 400, { error: 'timeout must be between 1 and 60 seconds' });
      // instance_id naming an earlier version of the Machine: that instance has stopped.
      const iid = u.searchParams.get('instance_id');
      if (iid && !m.versions.includes(iid)) return send(res, rec, 400, { error: `invalid instance_id ${show(iid)}` });
      const reached = (iid && iid !== m.instanceId && state === 'stopped') || await waitState(m, state, t);
      if (closed) return undefined;
      return reached ? send(res, rec, 200, { ok: true })
        : send(res, rec, 408, { error: `deadline_exceeded: machine did not reach state ${state} in ${t}s` });
    }
    if (op === 'Machines_stop') {
      if (m.state === 'started') {
        setState(m, 'stopped', { type: 'exit', source: 'user', request: { exit_event: {
          requested_stop: true, exit_code: 0, oom_killed: false, exited_at: new Date().toISOString() } } });
        if (m.config.auto_destroy) setState(m, 'destroyed', { type: 'destroy', source: 'flyd' });
      }
      return send(res, rec, 200, { ok: true });
    }
    if (op === 'Machines_delete') {
      if (m.state !== 'destroyed') setState(m, 'destroyed', { type: 'destroy', source: 'user' });
      return send(res, rec, 200, { ok: true });
    }
    return send(res, rec, 404, { error: 'not found' });
  }

  const onRequest = (req, res) => {
    const ctx = {};
    handle(req, res, ctx).catch((err) => {
      if (closed || req.socket.destroyed) {
        if (ctx.rec && ctx.rec.status === undefined) ctx.rec.status = 'aborted';
        return;
      }
      if (ctx.rec) ctx.rec.error = err;
      if (!res.headersSent && ctx.rec) send(res, ctx.rec, 500, { error: `test fly api: ${err.message}` });
      else req.socket.destroy();
    });
  };

  let server;
  if (tls) {
    const pair = testCerts()[cert];
    if (!pair) throw new Error(`startFlyApi: unknown cert ${cert}`);
    server = https.createServer({ key: pair.key, cert: pair.cert }, onRequest);
    server.on('secureConnection', (s) => {
      s.lambdoConn = ++connSeq;
      if (s.isSessionReused()) fly.resumed++;
    });
    server.on('tlsClientError', (e) => fly.tlsErrors.push(e));
    // Node's TLS server resumes session IDs only with a cache of its own: a real server has one.
    const cache = new Map();
    server.on('newSession', (id, data, cb) => { cache.set(id.toString('hex'), data); cb(); });
    server.on('resumeSession', (id, cb) => cb(null, cache.get(id.toString('hex')) || null));
  } else {
    server = http.createServer(onRequest);
  }
  server.on('connection', (s) => {
    fly.connections++;
    if (!tls) s.lambdoConn = ++connSeq;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => { server.off('error', reject); resolve(); });
  });
  const { port } = server.address();
  fly.port = port;
  fly.url = tls ? `https://localhost:${port}` : `http://127.0.0.1:${port}`;

  let closed = false;
  let closing;
  function close() {
    closing ??= new Promise((resolve) => {
      closed = true;
      aborter.abort();
      for (const t of timers) clearTimeout(t);
      timers.clear();
      for (const w of stateWaiters) clearTimeout(w.timer);
      stateWaiters.clear();
      server.close(() => resolve());
      for (const s of sockets) s.destroy();
    });
    return closing;
  }
  return fly;
}
