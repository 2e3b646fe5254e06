// The MQTT contract checked by validators we did not write (tests/contract_js/test_validators.py):
//
//   node validate.js NPM_DIR CONTRACT_DIR [MESSAGES_JSON]
//
// 1. contract/asyncapi.json parsed by @asyncapi/parser (its own ruleset; every diagnostic is
//    reported with its severity: 0 error, 1 warning, 2 info, 3 hint),
// 2. every contract/schemas/*.json compiled by Ajv 2020-12 in strict mode,
// 3. with MESSAGES_JSON (a list of {"topic", "schema", "payload"}, "schema" a file name in
//    contract/schemas), every payload validated against its schema by that Ajv.
//
// Prints one JSON object on stdout: {"parser": ..., "schemas": ..., "messages": ...}.
// The packages come from NPM_DIR/node_modules (installed by the tests, git-ignored).
"use strict";

const fs = require("node:fs");
const path = require("node:path");
const { createRequire } = require("node:module");

async function main() {
  const [npmDir, contractDir, messagesFile] = process.argv.slice(2);
  if (!npmDir || !contractDir) {
    process.stderr.write("usage: node validate.js NPM_DIR CONTRACT_DIR [MESSAGES_JSON]\n");
    process.exit(2);
  }
  const need = createRequire(path.join(path.resolve(npmDir), "package.json"));
  const { Parser, fromFile } = need("@asyncapi/parser");
  const Ajv2020 = need("ajv/dist/2020").default;
  const out = {};

  const documentFile = path.join(contractDir, "asyncapi.json");
  const parser = new Parser();
  const { document, diagnostics } = await fromFile(parser, documentFile).parse();
  out.parser = {
    version: need("@asyncapi/parser/package.json").version,
    parsed: document !== undefined,
    channels: document ? document.channels().all().map((c) => c.address()) : [],
    operations: document ? document.operations().all().map((o) => o.id()) : [],
    diagnostics: diagnostics.map((d) => ({
      code: d.code,
      severity: d.severity,
      message: d.message,
      path: d.path.join("."),
    })),
  };

  const ajv = new Ajv2020({ strict: true, allErrors: true });
  const schemaDir = path.join(contractDir, "schemas");
  const validators = {};
  const errors = [];
  for (const name of fs.readdirSync(schemaDir).filter((n) => n.endsWith(".json")).sort()) {
    try {
      validators[name] = ajv.compile(JSON.parse(fs.readFileSync(path.join(schemaDir, name))));
    } catch (err) {
      errors.push({ schema: name, error: String(err.message || err) });
    }
  }
  out.schemas = {
    ajv: need("ajv/package.json").version,
    compiled: Object.keys(validators).length,
    errors,
  };

  if (messagesFile) {
    const messages = JSON.parse(fs.readFileSync(messagesFile));
    const invalid = [];
    for (const m of messages) {
      const validate = validators[m.schema];
      if (!validate) {
        invalid.push({ topic: m.topic, schema: m.schema, errors: ["no such schema"] });
      } else if (!validate(m.payload)) {
        invalid.push({ topic: m.topic, schema: m.schema, errors: validate.errors });
      }
    }
    out.messages = { checked: messages.length, invalid };
  }
  process.stdout.write(JSON.stringify(out) + "\n");
}

main().catch((err) => {
  process.stderr.write(String((err && err.stack) || err) + "\n");
  process.exit(1);
});
