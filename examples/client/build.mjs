// Bundles each demo app with esbuild into dist/: NAME.js and the page NAME.html that loads it.
// Development builds: React's StrictMode double-mounts only there, and the browser tests check
// that the hook survives it. `npm run build` type-checks with tsc first.
import { build } from 'esbuild';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, 'dist');

const apps = {
  react: { entry: 'react/main.jsx', title: 'React' },
  vue: { entry: 'vue/main.js', title: 'Vue' },
  angular: { entry: 'angular/main.ts', title: 'Angular' },
  'angular-zoneless': { entry: 'angular/main-zoneless.ts', title: 'Angular (zoneless)' },
};

rmSync(out, { recursive: true, force: true });
mkdirSync(out);
await build({
  absWorkingDir: here,
  entryPoints: Object.entries(apps).map(([name, app]) => ({ in: app.entry, out: name })),
  outdir: out,
  bundle: true,
  format: 'esm',
  target: 'es2022',
  sourcemap: 'linked',
  logLevel: 'warning',
  // React's automatic runtime: no `import React` in each file.
  jsx: 'automatic',
  // The bundler build of vue carries the template compiler; the default entry does not.
  alias: { vue: 'vue/dist/vue.esm-bundler.js' },
  define: {
    'process.env.NODE_ENV': '"development"',
    __VUE_OPTIONS_API__: 'true',
    __VUE_PROD_DEVTOOLS__: 'false',
    __VUE_PROD_HYDRATION_MISMATCH_DETAILS__: 'false',
  },
  // experimentalDecorators for Angular's @Component and @Injectable.
  tsconfig: join(here, 'tsconfig.json'),
});
for (const [name, app] of Object.entries(apps)) {
  writeFileSync(join(out, `${name}.html`), `<!doctype html>
<html lang="en">
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>keepalive-client in ${app.title}</title>
<h1>keepalive-client in ${app.title}</h1>
${name.startsWith('angular') ? '<app-root></app-root>' : '<div id="app"></div>'}
<script type="module" src="${name}.js"></script>
</html>
`);
}
