'use strict';
// Checks that a results.json written by run.js is well formed (not what its numbers are):
//   node examples/pipeline/check-results.js [examples/pipeline/results.json]
const fs = require('fs');

function check(r) {
  const problems = [];
  const num01 = (v, where) => { if (typeof v !== 'number' || !(v >= 0 && v <= 1)) problems.push(`${where}: expected a number in [0, 1], got ${JSON.stringify(v)}`); };
  const pos = (v, where) => { if (typeof v !== 'number' || !(v > 0) || !Number.isFinite(v)) problems.push(`${where}: expected a positive number, got ${JSON.stringify(v)}`); };
  if (!r || typeof r !== 'object') return ['not a JSON object'];
  num01(r.teacher && r.teacher.map50, 'teacher.map50');
  num01(r.teacher && r.teacher.map5095, 'teacher.map5095');
  pos(r.steps, 'steps');
  if (!Array.isArray(r.arms) || r.arms.length === 0) problems.push('arms: expected a non-empty array');
  for (const [i, a] of (r.arms || []).entries()) {
    const w = `arms[${i}] (${a && a.id})`;
    if (typeof a.id !== 'string' || typeof a.label !== 'string') problems.push(`${w}: id and label must be strings`);
    num01(a.map50, `${w}.map50`);
    num01(a.map5095, `${w}.map5095`);
    if (a.map5095 > a.map50 + 1e-12) problems.push(`${w}: mAP@0.5:0.95 above mAP@0.5`);
    pos(a.wallSeconds, `${w}.wallSeconds`);
    if (a.steps !== r.steps) problems.push(`${w}.steps: ${a.steps}, the run's ${r.steps}`);
    if (a.options !== null) pos(a.finalDistillationLoss, `${w}.finalDistillationLoss`);
    if (!Array.isArray(a.curve) || a.curve.length < 2 || a.curve[0].step !== 0 || a.curve[a.curve.length - 1].step !== r.steps) {
      problems.push(`${w}.curve: expected points from step 0 to step ${r.steps}`);
    } else a.curve.forEach((c, k) => num01(c.map50, `${w}.curve[${k}].map50`));
  }
  if (r.profile) for (const k of ['stepMs', 'studentForwardBackwardMs', 'lossThroughAdapterMs', 'fusedCallMs']) pos(r.profile[k], `profile.${k}`);
  return problems;
}

if (require.main === module) {
  const file = process.argv[2] || require('path').join(__dirname, 'results.json');
  let r;
  try { r = JSON.parse(fs.readFileSync(file, 'utf8')); } catch (e) { console.error(`${file}: ${e.message}`); process.exit(1); }
  const problems = check(r);
  if (problems.length) { console.error(`${file} is not well formed:\n  ` + problems.join('\n  ')); process.exit(1); }
  console.log(`${file}: well formed (${r.arms.length} arms, ${r.steps} steps, teacher mAP@0.5 ${r.teacher.map50.toFixed(3)})`);
}

module.exports = { check };
