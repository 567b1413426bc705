'use strict';
// One list of error codes: the native ones in native/core/errors.h, the
// facade's own in lib/*.ts, the exported ErrorCodes and the README's table
// must name the same codes.
const fs = require('fs');
const path = require('path');
const { ErrorCodes } = require('..');

const root = path.join(__dirname, '..');
const read = (f) => fs.readFileSync(path.join(root, f), 'utf8');
const codes = (text, re) => new Set([...text.matchAll(re)].map((m) => m[1]));

test('errors.h + facade codes = ErrorCodes = README table', () => {
  const native = codes(read('native/core/errors.h'), /constexpr const char\* k\w+ = "(ERR_[A-Z_]+)"/g);
  const facade = new Set();
  for (const f of fs.readdirSync(path.join(root, 'lib'))) {
    for (const c of codes(read(`lib/${f}`), /\.code = '(ERR_[A-Z_]+)'/g)) facade.add(c);
  }
  const exported = new Set(Object.values(ErrorCodes));
  const readme = codes(read('README.md'), /^\|[^|\n]*`(ERR_[A-Z_]+)`/gm);
  // README rows may name several codes in their first cell.
  for (const line of read('README.md').split('\n')) {
    const first = line.startsWith('|') ? line.split('|')[1] : '';
    for (const m of first.matchAll(/`(ERR_[A-Z_]+)`/g)) readme.add(m[1]);
  }
  const all = new Set([...native, ...facade]);
  expect(native.size).toBeGreaterThan(10);
  expect([...exported].sort()).toEqual([...all].sort());
  expect([...readme].sort()).toEqual([...all].sort());
});
