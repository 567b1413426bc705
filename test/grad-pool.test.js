'use strict';
// The recycled memory behind the gradient arrays of calls without gradOut
// (native/addon/grad_pool.h, README "Calls without gradOut"). Each scenario
// runs in its own child process with --expose-gc (test/safety/grad-pool.js),
// so a crash fails its test instead of killing jest.
const fs = require('fs');
const path = require('path');
const { runScenario } = require('./helpers');
const { gradientPool } = require('..');

const script = path.join(__dirname, 'safety', 'grad-pool.js');
const scenario = (name, env) => runScenario(script, name, 300000, env);
// The build takes V8's API for the buffers where it finds Node's headers
// (CMakeLists.txt: those of the running node, else the system's; node-gyp
// always has them); YOLO_DISTILL_V8_BUFFERS=0 makes them Node-API's.
const nodeHeaders = [path.resolve(process.execPath, '../../include/node'), '/usr/include/node', '/usr/local/include/node']
  .some((d) => fs.existsSync(path.join(d, 'v8.h')) && fs.existsSync(path.join(d, 'node_version.h')));
const nodeApi = { YOLO_DISTILL_V8_BUFFERS: '0' };

test('recycling is on where a marked buffer cannot be moved away (this runtime)', () => {
  const p = gradientPool();
  expect(p.enabled).toBe(true);
  expect(p.maxBytes).toBe(512 * 2 ** 20);
  for (const k of ['pooledBytes', 'pooledBlocks', 'outstandingBlocks', 'reused', 'allocated']) expect(Number.isInteger(p[k])).toBe(true);
  expect(p.buffers).toBe(nodeHeaders ? 'v8' : 'node-api');
});

describe.each([
  ['V8 buffers the pool reports itself', undefined],
  ["Node-API's external buffers (YOLO_DISTILL_V8_BUFFERS=0)", nodeApi],
])('%s', (_label, env) => {
  test('every formula, head and dtype overwrites every element of a recycled block (poisoned with NaN)', () => {
    const out = scenario('full_write', env);
    expect(out.length).toBe(12);
    for (const c of out) {
      expect({ name: c.name, reused: c.reused }).toEqual({ name: c.name, reused: 1 });
      expect({ name: c.name, same: c.same, loss: c.loss }).toEqual({ name: c.name, same: true, loss: true });
    }
  });

  test('results a caller keeps (the arrays, or only their buffer) are never written by later calls', () => {
    const out = scenario('kept_results_untouched', env);
    expect(out.reused).toBeGreaterThan(0); // later calls did recycle memory
    expect(out.kept).toBe(true);
    expect(out.buffer).toBe(true);
  });

  test('a recycled gradient buffer cannot be transferred away: structured clone copies it (or refuses)', () => {
    const out = scenario('untransferable', env);
    expect(out.recycled).toBe(1);
    expect(['copied', 'DataCloneError']).toContain(out.outcome);
    expect(['absent', 'TypeError']).toContain(out.transferred);
    expect(out.attached).toBe(true);
    expect(out.intact).toBe(true);
  });
});

test('a synchronous loop that never yields nor calls gc() recycles: memory stays bounded, and V8 buffers need fewer full collections', () => {
  const v8 = scenario('loop_without_gc');
  const napi = scenario('loop_without_gc', nodeApi);
  expect(napi.buffers).toBe('node-api');
  expect(v8.buffers).toBe(nodeHeaders ? 'v8' : 'node-api');
  // Node-API's buffers: 60 calls with one 26 MB gradient each; V8 counts each
  // buffer, and its young-generation collections bring the blocks back, so
  // almost every call reuses one.
  expect(napi.maxOutstanding).toBeLessThanOrEqual(8);
  expect(napi.allocated).toBeLessThanOrEqual(8);
  expect(napi.reused).toBeGreaterThanOrEqual(napi.calls - 8);
  if (v8.buffers !== 'v8') return;
  // V8 buffers: half the pool's cap handed out costs V8 nothing, then each
  // block is reported while out; V8 starts a collection 64 MB later
  // (native/addon/grad_pool.cpp, "Buffers V8 does not count").
  // The collection the reports start marks on V8's helper threads: where
  // other processes take the cores it comes back a call or two later or
  // sooner (with this file's 26 MB blocks, 10 + 3 + 4 = 17 allowed: 17 read
  // alone, 16 to 18 beside four to eight busy processes on 2 cores, session
  // of 2026-12-08; one CI run then failed at 18), hence 8 of slack: 21
  // against the 60 an unbounded loop would allocate.
  const quiet = Math.floor(v8.maxBytes / 2 / v8.bytes);
  const bound = quiet + Math.ceil(64 * 2 ** 20 / v8.bytes) + 8;
  expect(v8.maxOutstanding).toBeGreaterThan(quiet - 1); // the quiet blocks are used
  expect(v8.maxOutstanding).toBeLessThanOrEqual(bound);
  expect(v8.allocated).toBeLessThanOrEqual(bound);
  expect(v8.reused).toBeGreaterThanOrEqual(v8.calls - bound);
  // The pool's reports bring the collections: about one per `quiet` calls
  // (without them nothing would come back in this loop and every call would
  // allocate).
  expect(v8.majors).toBeGreaterThan(0);
  expect(v8.majors).toBeLessThanOrEqual(Math.ceil(v8.calls / (quiet - 1)) + 1);
});

test('async calls without gradOut recycle too and equal the sync call', () => {
  const out = scenario('async_calls');
  expect(out.same).toBe(true);
  expect(out.reused).toBeGreaterThan(0);
});

test('gradientPool({ maxBytes }): 0 frees what is kept and turns recycling off; bad values get coded errors', () => {
  const out = scenario('limits');
  expect(out.keptBytes).toBeGreaterThan(0);
  expect(out.off.enabled).toBe(false);
  expect(out.off.pooledBytes).toBe(0);
  expect(out.zeroAllocated).toBe(0); // plain arrays while off
  expect(out.plainOk).toBe(true);
  expect(out.back).toBe(512 * 2 ** 20);
  expect(out.enabled).toBe(true);
  const [s, n, num, neg, frac, nan, inf, str] = out.errors;
  for (const e of [s, n, num]) expect(e.slice(0, 2)).toEqual(['TypeError', 'ERR_INVALID_ARG_TYPE']);
  expect(s[2]).toMatch(/expected an options object or nothing, got string/);
  for (const [e, got] of [[neg, '-1'], [frac, '1.5'], [nan, 'NaN'], [inf, 'Infinity']]) {
    expect(e.slice(0, 2)).toEqual(['RangeError', 'ERR_INVALID_OPTION']);
    expect(e[2]).toMatch(new RegExp(`maxBytes must be an integer from 0 to 2\\^53 - 1, got number ${got}`));
  }
  expect(str).toEqual(['TypeError', 'ERR_INVALID_ARG_TYPE', 'gradientPool: maxBytes must be a number, got string "big"']);
});

test('the default cap follows the largest call; a cap set holds until maxBytes: null; blocks idle for 100 calls are freed', () => {
  const out = scenario('cap_follows_calls');
  expect(out.start).toBe(512 * 2 ** 20);
  expect(out.bigBytes).toBe(3 * 85 * 400 * 400 * 4);
  expect(out.followed).toBe(4 * out.bigBytes);
  expect(out.pooledBig).toBeGreaterThanOrEqual(out.bigBytes);
  expect(out.set).toBe(100 * 2 ** 20);
  expect(out.setPooled).toBeLessThanOrEqual(100 * 2 ** 20);
  expect(out.afterSet).toBe(100 * 2 ** 20);
  expect(out.back).toBe(4 * out.bigBytes);
  expect(out.pooledAgain).toBeGreaterThanOrEqual(out.bigBytes);
  expect(out.after50).toBeGreaterThanOrEqual(out.bigBytes);
  expect(out.after110).toBeLessThan(out.bigBytes);
});

test('workers that exit or are terminated with gradient arrays alive: no crash; the main thread goes on', () => {
  expect(scenario('workers').same).toBe(true);
});

test('the load-time probe: recycling stays off where ArrayBuffer.prototype.transfer() moves a marked buffer', () => {
  const { markedBuffersStay } = require('../dist/binding');
  const proto = ArrayBuffer.prototype;
  const had = Object.getOwnPropertyDescriptor(proto, 'transfer');
  try {
    // A runtime whose transfer() ignores the untransferable mark (detaches).
    Object.defineProperty(proto, 'transfer', { configurable: true, writable: true, value() { return structuredClone(this, { transfer: [] }); } });
    expect(markedBuffersStay()).toBe(false);
    // One whose transfer() refuses it.
    Object.defineProperty(proto, 'transfer', { configurable: true, writable: true, value() { throw new TypeError('not detachable'); } });
    expect(markedBuffersStay()).toBe(true);
    // One without transfer() (Node 20).
    delete proto.transfer;
    expect(markedBuffersStay()).toBe(true);
  } finally {
    if (had) Object.defineProperty(proto, 'transfer', had); else delete proto.transfer;
  }
});
