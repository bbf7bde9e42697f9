// Validates asyncapi/asyncapi.json with the AsyncAPI parser (the official tooling) and compiles every JSON
// Schema it points at with Ajv. Prints one line per problem; exits 1 if there is any error.
//
//   node tests/node/validate-asyncapi.mjs [path/to/asyncapi.json]
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Parser, fromFile, DiagnosticSeverity } from '@asyncapi/parser';
import Ajv from 'ajv';
import addFormats from 'ajv-formats';

const here = dirname(fileURLToPath(import.meta.url));
const documentPath = resolve(process.argv[2] ?? join(here, '..', '..', 'asyncapi', 'asyncapi.json'));

const parser = new Parser();
const { document, diagnostics } = await fromFile(parser, documentPath).parse();
const severity = { [DiagnosticSeverity.Error]: 'error', [DiagnosticSeverity.Warning]: 'warning',
  [DiagnosticSeverity.Information]: 'info', [DiagnosticSeverity.Hint]: 'hint' };
let errors = 0;
for (const d of diagnostics) {
  if (d.severity === DiagnosticSeverity.Error) errors += 1;
  if (d.severity <= DiagnosticSeverity.Warning) {
    console.log(`${severity[d.severity]}: ${d.code}: ${d.message} at ${d.path.join('/')}`);
  }
}
if (!document) {
  console.log(`FAILED: ${documentPath} did not parse (${errors} errors)`);
  process.exit(1);
}

// every schema file compiles as draft-07 (what the Node proof and other languages validate messages with)
const ajv = new Ajv({ strict: true, allErrors: true, strictRequired: false });
addFormats(ajv);
const schemaDir = join(dirname(documentPath), 'schemas');
const files = [];
const walk = (dir) => {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) walk(path); else if (name.endsWith('.json')) files.push(path);
  }
};
walk(schemaDir);
for (const file of files) {
  try {
    ajv.compile(JSON.parse(readFileSync(file, 'utf8')));
  } catch (err) {
    errors += 1;
    console.log(`error: ${file}: ${err.message}`);
  }
}
const counts = `${document.channels().length} channels, ${document.operations().length} operations, ` +
  `${document.messages().length} messages, ${files.length} schemas`;
if (errors) {
  console.log(`FAILED: ${errors} errors (${counts})`);
  process.exit(1);
}
console.log(`valid AsyncAPI ${document.version()}: ${counts}`);
