// The package as a consumer gets it: the ES modules and the generated CommonJS build
// export the same names and work alike, the TypeScript declarations declare exactly
// what the modules export and compile against real usage (ESM and CommonJS, strict),
// and `npm pack` ships the files "exports" points at and nothing else.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { toCommonJS } from '../scripts/build-cjs.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
const tsMissing = fs.existsSync(path.join(ROOT, 'node_modules/typescript')) ? null
  : 'typescript is not installed (npm ci)';

test('package.json: publishable, BSD-2-Clause, no runtime dependencies', () => {
  assert.equal(pkg.private, undefined);
  assert.equal(pkg.license, 'BSD-2-Clause');
  assert.equal(pkg.repository.type, 'git');
  assert.equal(pkg.repository.directory, 'js');
  assert.equal(pkg.dependencies, undefined, 'runtime dependency-free');
  assert.ok(pkg.files.length > 0);
});

test('self-reference through "exports": import gets src/, require gets dist/cjs/', async () => {
  assert.equal(require.resolve('ngx-im-client'), path.join(ROOT, 'dist/cjs/imclient.cjs'));
  assert.equal(require.resolve('ngx-im-client/proto'), path.join(ROOT, 'dist/cjs/improto.cjs'));
  assert.equal(fileURLToPath(import.meta.resolve('ngx-im-client')), path.join(ROOT, 'src/imclient.js'));
  assert.equal(fileURLToPath(import.meta.resolve('ngx-im-client/proto')), path.join(ROOT, 'src/improto.js'));
  for (const [spec, file] of [['ngx-im-client', 'imclient'], ['ngx-im-client/proto', 'improto']]) {
    const esm = await import(spec);
    const cjs = require(spec);
    assert.deepEqual(Object.keys(cjs).filter((k) => k !== '__esModule').sort(), Object.keys(esm).sort(), `${file}: same names`);
    // the build is what the sources give now
    const built = fs.readFileSync(path.join(ROOT, `dist/cjs/${file}.cjs`), 'utf8');
    assert.equal(built, toCommonJS(fs.readFileSync(path.join(ROOT, `src/${file}.js`), 'utf8'), file),
      `dist/cjs/${file}.cjs is stale: npm run build`);
  }
});

test('the CommonJS build works like the ES modules', async () => {
  const P = require('ngx-im-client/proto');
  const E = await import('ngx-im-client/proto');
  const id = '0123456789abcdef0123456789ABCDEF';
  const frame = P.encodePublish({ toUid: 1234, msgId: id, payload: 'hello world' });
  assert.deepEqual(frame, E.encodePublish({ toUid: 1234, msgId: id, payload: 'hello world' }));
  assert.deepEqual(P.decodeClientMessage(frame).toUid, 1234);
  assert.throws(() => P.decodeServerMessage(Uint8Array.of(99)), (e) => e instanceof P.ProtoError && e.reason === 'unknown_cmd');
  const { ImClient, ImError, default: D } = require('ngx-im-client');
  assert.equal(D, ImClient);
  class NoSocket { constructor() { throw new SyntaxError('bad'); } }
  const c = new ImClient({ url: 'x', WebSocket: NoSocket });
  c.on('error', () => {});
  await assert.rejects(c.connect(), (e) => e instanceof ImError && e.code === 'bad_url');
});

test('the CommonJS converter refuses what it does not convert', () => {
  assert.throws(() => toCommonJS("export * from './x.js';\n", 't'), /does not convert/);
  assert.throws(() => toCommonJS("const u = import.meta.url;\n", 't'), /does not convert/);
  assert.throws(() => toCommonJS("import x from 'node:fs';\n", 't'), /does not convert/);
  assert.throws(() => toCommonJS("import { a } from 'ws';\n", 't'), /only \.\/name\.js/);
  assert.match(toCommonJS("import { a, b as c } from './x.js';\nexport const d = a + c;\n", 't'),
    /const \{ a, b: c \} = require\('\.\/x\.cjs'\);\nconst d = a \+ c;\n[^]*exports\.d = d;/);
});

test('the declarations declare exactly what the modules export', { skip: tsMissing || false }, async () => {
  const ts = require('typescript');
  for (const file of ['improto', 'imclient']) {
    const dts = path.join(ROOT, `src/${file}.d.ts`);
    const program = ts.createProgram([dts], { strict: true, noEmit: true, types: [] });
    const checker = program.getTypeChecker();
    const sym = checker.getSymbolAtLocation(program.getSourceFile(dts));
    const declared = checker.getExportsOfModule(sym).map((s) => s.getName())
      // type-only declarations have no runtime value
      .filter((n) => {
        const s = checker.getExportsOfModule(sym).find((x) => x.getName() === n);
        const t = s.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(s) : s;
        return (t.flags & ts.SymbolFlags.Value) !== 0;
      })
      .sort();
    const runtime = Object.keys(await import(`../src/${file}.js`)).sort();
    assert.deepEqual(declared, runtime, `${file}.d.ts against ${file}.js`);
  }
});

test('the declarations compile against real usage (tsc --strict, ESM and CommonJS)', { skip: tsMissing || false }, () => {
  try {
    execFileSync(process.execPath, [path.join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', 'test/types/tsconfig.json'],
      { cwd: ROOT, encoding: 'utf8', stdio: 'pipe' });
  } catch (e) {
    assert.fail(`tsc failed:\n${e.stdout}${e.stderr}`);
  }
});

test('npm pack ships the modules, the CommonJS build, the declarations, README and LICENSE only', () => {
  const out = execFileSync('npm', ['pack', '--dry-run', '--json'], { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  const files = JSON.parse(out)[0].files.map((f) => f.path).sort();
  assert.deepEqual(files, [
    'LICENSE', 'README.md',
    'dist/cjs/imclient.cjs', 'dist/cjs/imclient.d.cts', 'dist/cjs/improto.cjs', 'dist/cjs/improto.d.cts',
    'package.json',
    'src/imclient.d.ts', 'src/imclient.js', 'src/improto.d.ts', 'src/improto.js',
  ]);
  // every target of "exports" is shipped
  const targets = JSON.stringify(pkg.exports).match(/"\.\/[^"]+\.[a-z.]+"/g).map((s) => s.slice(3, -1));
  for (const t of targets) assert.ok(files.includes(t), `${t} is in the package`);
  assert.equal(fs.readFileSync(path.join(ROOT, 'LICENSE'), 'utf8'), fs.readFileSync(path.join(ROOT, '../LICENSE'), 'utf8'));
});
