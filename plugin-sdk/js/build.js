#!/usr/bin/env node
// `gleitzeit-plugin-js build [DIR] [-o OUT]`: turn a JavaScript provider
// into a component.
//
// It bundles DIR's `app.js` (or `--entry FILE`) with rolldown, resolving
// `@gleitzeit/plugin` to this SDK and leaving the WIT imports to the
// component, then runs componentize-js against the WIT world shipped in this
// package and writes NAME.wasm (NAME: the directory's name).
//
// componentize-js 0.23.0 imports @bytecodealliance/preview2-shim but declares
// it only as a development dependency, so package.json names it.
//
// The component imports our `host` interface and what the JS engine needs
// of WASI 0.2 (clocks, random, stdio); `wasi:http` and the fetch-event
// export are disabled, so the plugin reaches the network only through the
// host's `http-fetch`, within the hosts its manifest grants.
import { componentize } from '@bytecodealliance/componentize-js';
import { rolldown } from 'rolldown';
import { mkdtemp, rm, writeFile, access } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const SDK = dirname(fileURLToPath(import.meta.url));
const WORLD = 'provider';

async function bundle(entry, out) {
  const build = await rolldown({
    input: entry,
    external: [/^gleitzeit:provider\//],
    resolve: { alias: { '@gleitzeit/plugin': SDK } },
    logLevel: 'warn',
  });
  await build.write({ file: out, format: 'esm' });
  await build.close();
}

export async function build(project, { entry = 'app.js', output } = {}) {
  project = resolve(project);
  const source = resolve(project, entry);
  await access(source).catch(() => {
    throw new Error(`${project} has no ${entry} (give another with --entry)`);
  });
  output = resolve(output ?? join(project, `${basename(project)}.wasm`));
  const work = await mkdtemp(join(tmpdir(), 'gleitzeit-plugin-'));
  try {
    const bundled = join(work, 'bundle.js');
    await bundle(source, bundled);
    const { component } = await componentize({
      sourcePath: bundled,
      witPath: join(SDK, 'wit'),
      worldName: WORLD,
      disableFeatures: ['http', 'fetch-event'],
    });
    await writeFile(output, component);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  return output;
}

async function main() {
  const { positionals, values } = parseArgs({
    allowPositionals: true,
    options: { output: { type: 'string', short: 'o' }, entry: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
  });
  const [command, project = '.'] = positionals;
  if (values.help || command !== 'build') {
    console.error('usage: gleitzeit-plugin-js build [DIR] [--entry app.js] [-o NAME.wasm]');
    process.exit(values.help ? 0 : 2);
  }
  try {
    console.log(await build(project, values));
  } catch (e) {
    console.error(`error: ${e.message}`);
    process.exit(1);
  }
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) await main();
