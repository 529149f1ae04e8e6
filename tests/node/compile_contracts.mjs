// Compiles contracts/*.sol with the solc npm package (pinned in package.json; no network):
//   node tests/node/compile_contracts.mjs -o FILE    writes BitDeltaRegistry's {abi, bytecode}
// for `bitdelta registry deploy --artifact FILE`; registry.test.mjs imports compile().
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import solc from "solc";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

// The settings every deployment uses: optimizer on, Paris (no PUSH0, which ganache 7 and some
// EVM chains lack).
export function compile() {
  const read = (file) => ({ content: fs.readFileSync(path.join(root, "contracts", file), "utf8") });
  const input = {
    language: "Solidity",
    sources: {
      "BitDeltaRegistry.sol": read("BitDeltaRegistry.sol"),
      "test/ReentrantContributor.sol": read("test/ReentrantContributor.sol"),
    },
    settings: {
      optimizer: { enabled: true, runs: 200 },
      evmVersion: "paris",
      outputSelection: { "*": { "*": ["abi", "evm.bytecode.object"] } },
    },
  };
  const output = JSON.parse(solc.compile(JSON.stringify(input)));
  const errors = (output.errors || []).filter((e) => e.severity === "error");
  if (errors.length) throw new Error(errors.map((e) => e.formattedMessage).join("\n"));
  const pick = (file, name) => ({
    contract: name,
    compiler: "solc " + solc.version(),
    abi: output.contracts[file][name].abi,
    bytecode: "0x" + output.contracts[file][name].evm.bytecode.object,
  });
  return {
    registry: pick("BitDeltaRegistry.sol", "BitDeltaRegistry"),
    attacker: pick("test/ReentrantContributor.sol", "ReentrantContributor"),
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const at = process.argv.indexOf("-o");
  if (at < 0 || !process.argv[at + 1]) {
    console.error("usage: node tests/node/compile_contracts.mjs -o FILE");
    process.exit(2);
  }
  fs.writeFileSync(process.argv[at + 1], JSON.stringify(compile().registry, null, 2) + "\n");
}
