// Reference for tests/registry_test.cpp: ethers v6 parses a signed raw transaction and recovers
// its sender, and RLP-encodes a structure, on the same inputs as the C++ side.
//   node eth_transaction.mjs parse 0xRAW      -> {"type", "chainId", "nonce", ..., "from", "hash"}
//   node eth_transaction.mjs rlp JSON         -> "0x…" (JSON: nested arrays of 0x-hex strings)
import { Transaction, encodeRlp } from "ethers";

const [command, argument] = process.argv.slice(2);
if (command === "parse") {
  const tx = Transaction.from(argument);
  console.log(
    JSON.stringify({
      type: tx.type,
      chainId: tx.chainId.toString(),
      nonce: tx.nonce,
      maxPriorityFeePerGas: tx.maxPriorityFeePerGas.toString(),
      maxFeePerGas: tx.maxFeePerGas.toString(),
      gasLimit: tx.gasLimit.toString(),
      to: tx.to,
      value: tx.value.toString(),
      data: tx.data,
      from: tx.from,
      hash: tx.hash,
    }),
  );
} else if (command === "rlp") {
  console.log(JSON.stringify(encodeRlp(JSON.parse(argument))));
} else {
  console.error("usage: eth_transaction.mjs parse RAW | rlp JSON");
  process.exit(2);
}
