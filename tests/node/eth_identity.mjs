// Reference for tests/identity_test.cpp: ethers v6 (the Ethereum client library our users sign
// with) on the same key and message.
//   node eth_identity.mjs sign PRIVATE_KEY_HEX MESSAGE   -> {"address": ..., "signature": ...}
//   node eth_identity.mjs recover MESSAGE SIGNATURE_HEX   -> {"address": ...}
import { Wallet, verifyMessage } from "ethers";

const [command, first, second] = process.argv.slice(2);
if (command === "sign") {
  const wallet = new Wallet(first);
  const signature = await wallet.signMessage(second);
  console.log(JSON.stringify({ address: wallet.address, signature }));
} else if (command === "recover") {
  console.log(JSON.stringify({ address: verifyMessage(first, second) }));
} else {
  console.error("usage: eth_identity.mjs sign KEY MESSAGE | recover MESSAGE SIGNATURE");
  process.exit(2);
}
