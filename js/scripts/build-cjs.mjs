// Writes the CommonJS build, dist/cjs/, from the ES modules in src/ (npm run build;
// npm runs it at `npm ci` / `npm install` through "prepare" and before `npm pack` /
// `npm publish` through "prepack"). No bundler: the sources keep to a few statement
// forms, rewritten here line by line, and anything else that looks like an import or
// an export stops the build, so a new form cannot slip through unconverted.
//
//   import { a, b } from './x.js';        ->  const { a, b } = require('./x.cjs');
//   export { a, b as c } from './x.js';   ->  exports.a = ...; exports.c = ...
//   export class|function|const NAME      ->  the declaration, exports.NAME = NAME at the end
//   export default NAME;                  ->  exports.default = NAME;
//
// The type declarations are copied as .d.cts next to the .cjs files, with their
// relative imports pointing at the .cjs files.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const SRC = path.join(ROOT, 'src');
const OUT = path.join(ROOT, 'dist', 'cjs');
const FILES = ['improto', 'imclient'];

const rel = (spec) => {
  if (!/^\.\/[\w-]+\.js$/.test(spec)) throw new Error(`only ./name.js imports are supported, got ${spec}`);
  return spec.replace(/\.js$/, '.cjs');
};

const names = (list) => list.split(',').map((x) => x.trim()).filter(Boolean).map((x) => {
  const m = /^(\w+)(?:\s+as\s+(\w+))?$/.exec(x);
  if (!m) throw new Error(`cannot read the name list entry ${JSON.stringify(x)}`);
  return { local: m[1], exported: m[2] || m[1] };
});

export function toCommonJS(source, file) {
  const exported = [];
  let out = source;
  let n = 0;
  // import { ... } from './x.js';  (may span lines)
  out = out.replace(/^import\s*\{([^}]*)\}\s*from\s*'([^']+)';$/gm, (all, list, spec) => {
    n++;
    const parts = names(list).map((x) => (x.local === x.exported ? x.local : `${x.local}: ${x.exported}`));
    return `const { ${parts.join(', ')} } = require('${rel(spec)}');`;
  });
  // export { ... } from './x.js';
  out = out.replace(/^export\s*\{([^}]*)\}\s*from\s*'([^']+)';$/gm, (all, list, spec) => {
    n++;
    const v = `_re${n}`;
    const lines = names(list).map((x) => `exports.${x.exported} = ${v}.${x.local};`);
    return `const ${v} = require('${rel(spec)}');\n${lines.join('\n')}`;
  });
  // export class / function / async function / const / let
  out = out.replace(/^export\s+((?:async\s+)?function\*?|class|const|let)\s+(\w+)/gm, (all, kw, name) => {
    exported.push(name);
    return `${kw} ${name}`;
  });
  out = out.replace(/^export\s+default\s+(\w+);$/gm, (all, name) => `exports.default = ${name};`);
  const left = out.split('\n').map((l, i) => [i + 1, l]).filter(([, l]) => /^\s*(import|export)\b|\bimport\s*\(|import\.meta/.test(l));
  if (left.length) {
    throw new Error(`${file}: statements the CommonJS build does not convert:\n`
      + left.map(([i, l]) => `  ${i}: ${l}`).join('\n'));
  }
  const tail = exported.map((x) => `exports.${x} = ${x};`).join('\n');
  return `'use strict';\n// Generated from src/${file}.js by scripts/build-cjs.mjs: do not edit.\n`
    + `Object.defineProperty(exports, '__esModule', { value: true });\n${out}\n${tail}\n`;
}

function build() {
  fs.rmSync(OUT, { recursive: true, force: true });
  fs.mkdirSync(OUT, { recursive: true });
  for (const f of FILES) {
    const src = fs.readFileSync(path.join(SRC, `${f}.js`), 'utf8');
    fs.writeFileSync(path.join(OUT, `${f}.cjs`), toCommonJS(src, f));
    const dts = fs.readFileSync(path.join(SRC, `${f}.d.ts`), 'utf8')
      .replace(/from '(\.\/[\w-]+)\.js'/g, "from '$1.cjs'");
    fs.writeFileSync(path.join(OUT, `${f}.d.cts`), dts);
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  build();
  console.error(`build-cjs: ${FILES.map((f) => `dist/cjs/${f}.cjs`).join(', ')}`);
}
