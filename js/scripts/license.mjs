// Copies the repository's LICENSE into this folder before `npm pack` / `npm publish`
// ("prepack"): npm takes the licence file from the package's own root, and one copy
// in git (the repository's) cannot drift from another.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const from = path.join(ROOT, '..', 'LICENSE');
if (!fs.existsSync(from)) {
  console.error(`license: ${from} is missing; the package must ship its licence`);
  process.exit(1);
}
fs.copyFileSync(from, path.join(ROOT, 'LICENSE'));
console.error('license: LICENSE copied from the repository root');
