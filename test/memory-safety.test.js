'use strict';
// Memory safety against adversarial JavaScript (RELIABILITY.md "What a caller
// may do to a buffer"). Every scenario runs in its own child process
// (test/safety/scenarios.js), so a crash fails its test instead of killing jest.
const path = require('path');
const { runScenario } = require('./helpers');

const script = path.join(__dirname, 'safety', 'scenarios.js');
const scenario = (name) => runScenario(script, name, 60000);

const refused = (code) => (out) => {
  expect(out.ok).toBe(false);
  expect(out.code).toBe(code);
  expect(out.name).toBe('TypeError');
  expect(out.message).toMatch(/scale \d, (student|teacher|gradOut)|Tensor\.fromFloat32Array/);
};

describe('resizable ArrayBuffers are refused with ERR_RESIZABLE_BUFFER; growable SharedArrayBuffers work', () => {
  test.each(['resizable_input_sync', 'resizable_shrunk_during_async', 'resizable_gradout_async'])('%s', (name) => {
    refused('ERR_RESIZABLE_BUFFER')(scenario(name));
  });
  test('growable_shared_ok: same loss before, during and after growing', () => {
    expect(scenario('growable_shared_ok').ok).toBe(true);
  });
});

describe('buffers of an async call cannot be detached under it (marked untransferable: a transfer copies)', () => {
  test('transfer_gradout_during_async: the gradient buffer stays attached and filled, no heap damage', () => {
    const out = scenario('transfer_gradout_during_async');
    expect(out.ok).toBe(true);
    expect(out.detachedAfter).toBe(false);
    expect(out.grads).toEqual([1 * 21 * 160 * 160]);
  });
  test('transfer_input_during_async: the result equals the sync call', () => {
    const out = scenario('transfer_input_during_async');
    expect(out.ok).toBe(true);
    expect(out.sameAsSync).toBe(true);
  });
  test('uint16_transfer_gradout_during_async: a float16 gradOut stays attached and filled', () => {
    const out = scenario('uint16_transfer_gradout_during_async');
    expect(out.ok).toBe(true);
    expect(out.detachedAfter).toBe(false);
    expect(out.grads).toEqual([1 * 21 * 160 * 160]);
  });
  test('postmessage_gradout_during_async', () => {
    expect(scenario('postmessage_gradout_during_async').ok).toBe(true);
  });
});

describe('user JavaScript that detaches an array already read gets ERR_DETACHED_BUFFER, never freed memory', () => {
  test.each([
    'shape_getter_detaches_own_data',
    'later_head_detaches_earlier',
    'teacher_getter_detaches_student',
    'gradout_getter_detaches_input',
    'gradout_element_getter_detaches_gradout',
    'option_getter_detaches_async',
    'proxy_head_detaches',
    'proxy_options_detaches',
    'uint16_dtype_getter_detaches_student',
    'from_float32array_dtype_getter_detaches',
    'from_float32array_device_getter_detaches',
    'from_float32array_shape_getter_detaches',
  ])('%s', (name) => {
    refused('ERR_DETACHED_BUFFER')(scenario(name));
  });
});
