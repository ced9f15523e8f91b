// Offline checks for the generated Grafana dashboards (called by tests/test_grafana_dashboards.py).
//
//   node validate.mjs schema [--write FILE] DASHBOARD.json...
//       Derives a JSON Schema from @grafana/schema's classic `Dashboard` type
//       (dist/types/raw/dashboard/x/types.gen.d.ts) with ts-json-schema-generator, then validates every
//       dashboard with ajv in strict mode (allErrors). Exit 1 if any is invalid. Prints {"schemaVersion": ..., "results": {file: [errors]}}.
//   node validate.mjs logql < expressions.json
//       Parses each LogQL expression (JSON array of strings on stdin) with @grafana/lezer-logql, Grafana's own
//       grammar. Prints [{expr, errors: [...], selectors: [[label, op, value], ...]}]. Template variables must
//       be substituted first: the grammar knows nothing of $var.
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);

export function dashboardSchema() {
  const { createGenerator } = require('ts-json-schema-generator');
  const path = join(here, 'node_modules/@grafana/schema/dist/types/raw/dashboard/x/types.gen.d.ts');
  return createGenerator({ path, type: 'Dashboard', skipTypeCheck: true, additionalProperties: false })
    .createSchema('Dashboard');
}

async function schemaCmd(args) {
  let write = null;
  if (args[0] === '--write') { write = args[1]; args = args.slice(2); }
  const schema = dashboardSchema();
  if (write) writeFileSync(write, JSON.stringify(schema, null, 2) + '\n');
  const Ajv = (await import('ajv')).default;
  // strict: true rejects unknown keywords / ambiguous constructs in the schema itself; the generated schema
  // sets additionalProperties:false on every object type, so unknown dashboard/panel keys are errors too.
  const ajv = new Ajv({ strict: true, strictTypes: false, allErrors: true, allowUnionTypes: true });
  const validate = ajv.compile(schema);
  const results = {};
  for (const file of args) {
    const ok = validate(JSON.parse(readFileSync(file, 'utf8')));
    results[file] = ok ? [] : validate.errors.map((e) => `${e.instancePath || '/'} ${e.message} ${JSON.stringify(e.params)}`);
  }
  const pkg = JSON.parse(readFileSync(join(here, 'node_modules/@grafana/schema/package.json'), 'utf8'));
  console.log(JSON.stringify({ grafanaSchemaVersion: pkg.version, results }, null, 1));
  if (Object.values(results).some((errs) => errs.length)) process.exitCode = 1;
}

async function logqlCmd() {
  const { parser } = await import('@grafana/lezer-logql');
  const exprs = JSON.parse(readFileSync(0, 'utf8'));
  const out = exprs.map((expr) => {
    const tree = parser.parse(expr);
    const errors = [];
    const selectors = [];
    tree.iterate({
      enter(node) {
        if (node.type.isError) errors.push(`error node at ${node.from}: ${JSON.stringify(expr.slice(node.from, node.from + 20))}`);
        if (node.name === 'Selector') {
          const sel = node.node;
          for (const m of sel.getChildren('Matchers').flatMap(function all(ms) {
            return [...ms.getChildren('Matcher'), ...ms.getChildren('Matchers').flatMap(all)];
          })) {
            const ident = m.getChild('Identifier');
            const str = m.getChild('String');
            const op = m.getChild('Eq') || m.getChild('Neq') || m.getChild('Re') || m.getChild('Nre');
            selectors.push([
              ident ? expr.slice(ident.from, ident.to) : null,
              op ? expr.slice(op.from, op.to) : null,
              str ? expr.slice(str.from, str.to) : null,
            ]);
          }
        }
      },
    });
    return { expr, errors, selectors };
  });
  console.log(JSON.stringify(out, null, 1));
  if (out.some((r) => r.errors.length)) process.exitCode = 1;
}

const [cmd, ...rest] = process.argv.slice(2);
if (cmd === 'schema') await schemaCmd(rest);
else if (cmd === 'logql') await logqlCmd();
else { console.error('usage: node validate.mjs schema [--write FILE] FILES... | logql < exprs.json'); process.exit(2); }
