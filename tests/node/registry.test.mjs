// The registry contract (contracts/BitDeltaRegistry.sol) on a real EVM: compiled with the solc
// npm package, deployed with ethers v6 on a ganache node that this test starts on a free loopback
// port and stops. Every require path, royalty splits to the wei, a reentrant contributor, and
// signatures made by the C++ side (`bitdelta id sign`, `bitdelta attest sign --format eip191`).
//
//   node --test tests/node/registry.test.mjs      (CTest: registry_evm_test)
//
// BITDELTA_BINARY names the bitdelta executable (default build/bitdelta); BITDELTA_GAS_REPORT,
// when set, is a file that receives the gas each function used (docs/registry.md's table).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile, execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import ganache from "ganache";
import { compile } from "./compile_contracts.mjs";
import {
  AbiCoder,
  ContractFactory,
  JsonRpcProvider,
  Wallet,
  getBytes,
  hexlify,
  id as keccakText,
  keccak256,
  randomBytes,
  toUtf8Bytes,
} from "ethers";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const bitdelta = process.env.BITDELTA_BINARY || path.join(root, "build/bitdelta");
const abi = AbiCoder.defaultAbiCoder();
const NO_EPSILON = (1n << 64n) - 1n;

// ---- start a node, deploy ----

let server, provider, artifacts, registry, chainId;
let admin, attester, aggregator, alice, bob, carol, relayer, outsider;
const gas = {}; // function -> gas used, for the report

function recordGas(name, receipt) {
  gas[name] = Number(receipt.gasUsed);
}

before(async () => {
  artifacts = compile();
  server = ganache.server({
    logging: { quiet: true },
    wallet: { deterministic: true, totalAccounts: 10 },
    chain: { chainId: 1337 },
  });
  await new Promise((ok, bad) => server.listen(0, "127.0.0.1", (e) => (e ? bad(e) : ok())));
  provider = new JsonRpcProvider(`http://127.0.0.1:${server.address().port}`, undefined, {
    cacheTimeout: -1,
  });
  chainId = (await provider.getNetwork()).chainId;
  const accounts = Object.values(await server.provider.getInitialAccounts());
  [admin, attester, aggregator, alice, bob, carol, relayer, outsider] = accounts
    .slice(0, 8)
    .map((a) => new Wallet(a.secretKey, provider));
  const factory = new ContractFactory(artifacts.registry.abi, artifacts.registry.bytecode, admin);
  registry = await factory.deploy();
  recordGas("deploy", await registry.deploymentTransaction().wait());
  recordGas("setAttester", await (await registry.setAttester(attester.address, true)).wait());
  recordGas("setAggregator", await (await registry.setAggregator(aggregator.address, true)).wait());
});

after(async () => {
  if (process.env.BITDELTA_GAS_REPORT)
    fs.writeFileSync(process.env.BITDELTA_GAS_REPORT, JSON.stringify(gas, null, 2) + "\n");
  console.log("gas used:", JSON.stringify(gas));
  if (server) await server.close();
});

// ---- the digests, computed here independently of the contract ----

function attestationDigest(a) {
  return keccak256(
    abi.encode(
      ["bytes32", "bytes32", "bytes32", "bytes32", "address", "bytes32", "uint64", "uint8"],
      [
        keccakText("bitdelta-attestation-1"),
        a.payloadHash,
        a.deltaHash,
        a.base,
        a.owner,
        a.measurement,
        a.epsilonX1e6,
        a.deltaExponent,
      ],
    ),
  );
}

function publishDigest(owner, base, deltaHash, ratio, makePublic, attestationHash) {
  return keccak256(
    abi.encode(
      ["bytes32", "uint256", "address", "address", "bytes32", "bytes32", "uint32", "bool", "bytes32"],
      [
        keccakText("bitdelta-publish-1"),
        chainId,
        registry.target,
        owner,
        base,
        deltaHash,
        ratio,
        makePublic,
        attestationHash,
      ],
    ),
  );
}

const random32 = () => hexlify(randomBytes(32));
const BASE = random32();

// An attestation of `deltaHash` for `owner`, signed by `signer` (EIP-191 over the digest).
async function attest(signer, deltaHash, owner, privacy = {}) {
  const fields = {
    payloadHash: random32(),
    deltaHash,
    base: BASE,
    owner,
    measurement: random32(),
    epsilonX1e6: privacy.epsilonX1e6 ?? NO_EPSILON,
    deltaExponent: privacy.deltaExponent ?? 0,
  };
  const signature = await signer.signMessage(getBytes(attestationDigest(fields)));
  return {
    fields,
    tuple: {
      payloadHash: fields.payloadHash,
      measurement: fields.measurement,
      epsilonX1e6: fields.epsilonX1e6,
      deltaExponent: fields.deltaExponent,
      signature,
    },
  };
}

// Publishes a fresh delta of `owner` (sent by the owner); returns its hash.
async function publish(owner, { makePublic = true, privacy = {} } = {}) {
  const deltaHash = random32();
  const a = await attest(attester, deltaHash, owner.address, privacy);
  const tx = await registry
    .connect(owner)
    .publishBitDelta(owner.address, BASE, deltaHash, 1530, makePublic, a.tuple, "0x");
  const receipt = await tx.wait();
  gas["publishBitDelta, sent by the owner"] ??= Number(receipt.gasUsed);
  return deltaHash;
}

// The revert reason of a failed call or transaction. ethers decodes it when the node's error
// carries the revert data as a hex string; ganache 7 sends an object ({result, reason, ...}),
// so its reason is read from there.
function revertReason(e) {
  return e.reason ?? e.info?.error?.data?.reason ?? e.info?.error?.message ?? e.shortMessage ?? e.message;
}

async function reverts(promise, reason) {
  await assert.rejects(promise, (e) => {
    const message = revertReason(e);
    assert.equal(message, reason, `expected the revert "${reason}", got: ${message}`);
    return true;
  });
}

// ---- administration ----

test("the admin manages attesters and aggregators; nobody else can", async () => {
  assert.equal(await registry.admin(), admin.address);
  assert.equal(await registry.isAttester(attester.address), true);
  assert.equal(await registry.isAggregator(aggregator.address), true);
  await reverts(registry.connect(outsider).setAttester(outsider.address, true), "only the admin");
  await reverts(registry.connect(outsider).setAggregator(outsider.address, true), "only the admin");
  await reverts(registry.connect(outsider).transferAdmin(outsider.address), "only the admin");
  const receipt = await (await registry.setAttester(outsider.address, true)).wait();
  const event = registry.interface.parseLog(receipt.logs[0]);
  assert.equal(event.name, "AttesterSet");
  assert.deepEqual([...event.args], [outsider.address, true]);
  await (await registry.setAttester(outsider.address, false)).wait();
  assert.equal(await registry.isAttester(outsider.address), false);
  const zero = "0x0000000000000000000000000000000000000000";
  await reverts(registry.setAttester(zero, true), "the attester cannot be the zero address");
  await reverts(registry.setAggregator(zero, true), "the aggregator cannot be the zero address");
  await reverts(registry.transferAdmin(zero), "the admin cannot be the zero address");
  // The admin can hand over the role (and the new admin can hand it back).
  const moved = await (await registry.transferAdmin(outsider.address)).wait();
  assert.deepEqual([...registry.interface.parseLog(moved.logs[0]).args], [admin.address, outsider.address]);
  await reverts(registry.setAttester(outsider.address, true), "only the admin");
  await (await registry.connect(outsider).transferAdmin(admin.address)).wait();
  assert.equal(await registry.admin(), admin.address);
});

test("the contract's digests are the ones computed here", async () => {
  const a = await attest(attester, random32(), alice.address, {
    epsilonX1e6: 3510790n,
    deltaExponent: 5,
  });
  const f = a.fields;
  assert.equal(
    await registry.attestationDigest(
      f.payloadHash,
      f.deltaHash,
      f.base,
      f.owner,
      f.measurement,
      f.epsilonX1e6,
      f.deltaExponent,
    ),
    attestationDigest(f),
  );
  const digest = publishDigest(alice.address, BASE, f.deltaHash, 1530, true, attestationDigest(f));
  assert.equal(
    await registry.publishDigest(alice.address, BASE, f.deltaHash, 1530, true, attestationDigest(f)),
    digest,
  );
  assert.equal(await registry.recoverSigner(digest, await alice.signMessage(getBytes(digest))), alice.address);
});

// ---- publishing ----

test("an owner publishes; the privacy budget comes from the attestation", async () => {
  const deltaHash = random32();
  const a = await attest(attester, deltaHash, alice.address, { epsilonX1e6: 3510790n, deltaExponent: 5 });
  const receipt = await (
    await registry.connect(alice).publishBitDelta(alice.address, BASE, deltaHash, 1530, true, a.tuple, "0x")
  ).wait();
  const event = registry.interface.parseLog(receipt.logs[0]);
  assert.equal(event.name, "DeltaPublished");
  assert.equal(event.args.deltaHash, deltaHash);
  assert.equal(event.args.owner, alice.address);
  assert.equal(event.args.epsilonX1e6, 3510790n);
  assert.equal(event.args.attester, attester.address);
  const d = await registry.getDelta(deltaHash);
  assert.equal(d.owner, alice.address);
  assert.equal(d.baseModelHash, BASE);
  assert.equal(d.compressionRatioX100, 1530n);
  assert.equal(d.isPublic, true);
  assert.equal(d.epsilonX1e6, 3510790n);
  assert.equal(d.deltaExponent, 5n);
  assert.equal(d.measurement, a.fields.measurement);
  assert.ok((await registry.deltasOf(alice.address)).includes(deltaHash));
});

test("someone else may send the transaction with the owner's signature", async () => {
  const deltaHash = random32();
  const a = await attest(attester, deltaHash, bob.address);
  const digest = publishDigest(bob.address, BASE, deltaHash, 1530, false, attestationDigest(a.fields));
  const signature = await bob.signMessage(getBytes(digest));
  // Signed by another key, or for other arguments: refused.
  await reverts(
    registry
      .connect(relayer)
      .publishBitDelta(bob.address, BASE, deltaHash, 1530, false, a.tuple, await carol.signMessage(getBytes(digest))),
    "not signed by the owner",
  );
  await reverts(
    registry.connect(relayer).publishBitDelta(bob.address, BASE, deltaHash, 1531, false, a.tuple, signature),
    "not signed by the owner",
  );
  await reverts(
    registry.connect(relayer).publishBitDelta(bob.address, BASE, deltaHash, 1530, false, a.tuple, "0x"),
    "not signed by the owner",
  );
  const receipt = await (
    await registry.connect(relayer).publishBitDelta(bob.address, BASE, deltaHash, 1530, false, a.tuple, signature)
  ).wait();
  recordGas("publishBitDelta, relayed with the owner's signature", receipt);
  assert.equal((await registry.getDelta(deltaHash)).owner, bob.address);
  assert.equal((await registry.getDelta(deltaHash)).isPublic, false);
});

test("attestations must come from an allowed attester and match every field", async () => {
  const deltaHash = random32();
  const untrusted = await attest(outsider, deltaHash, alice.address);
  const send = (tuple, hash = deltaHash, owner = alice.address) =>
    registry.connect(alice).publishBitDelta(owner, BASE, hash, 1530, true, tuple, "0x");
  await reverts(send(untrusted.tuple), "attestation not signed by an allowed attester");
  const good = await attest(attester, deltaHash, alice.address, { epsilonX1e6: 1000000n, deltaExponent: 5 });
  const tampered = [
    { ...good.tuple, epsilonX1e6: 1n }, // claim more privacy than attested
    { ...good.tuple, deltaExponent: 9 },
    { ...good.tuple, measurement: random32() },
    { ...good.tuple, payloadHash: random32() },
  ];
  for (const tuple of tampered) await reverts(send(tuple), "attestation not signed by an allowed attester");
  await reverts(send(good.tuple, random32()), "attestation not signed by an allowed attester"); // another delta
  await reverts(
    registry.connect(bob).publishBitDelta(bob.address, BASE, deltaHash, 1530, true, good.tuple, "0x"),
    "attestation not signed by an allowed attester", // another owner
  );
  const bad = { ...good.tuple, signature: good.tuple.signature.slice(0, -2) }; // 64 bytes
  await reverts(send(bad), "attestation not signed by an allowed attester");
  await send(good.tuple);
  await reverts(send(good.tuple), "delta already published");
  await reverts(
    registry.connect(alice).publishBitDelta(
      "0x0000000000000000000000000000000000000000", BASE, random32(), 1530, true, good.tuple, "0x"),
    "the owner cannot be the zero address",
  );
  const zeroHash = "0x" + "00".repeat(32);
  await reverts(send(good.tuple, zeroHash), "empty hash");
  await reverts(
    registry.connect(alice).publishBitDelta(alice.address, zeroHash, random32(), 1530, true, good.tuple, "0x"),
    "empty hash",
  );
});

test("only the owner changes a delta's visibility", async () => {
  const deltaHash = await publish(carol, { makePublic: false });
  await reverts(registry.connect(alice).setDeltaPublic(deltaHash, true), "only the delta's owner");
  await reverts(registry.connect(carol).setDeltaPublic(random32(), true), "unknown delta");
  recordGas("setDeltaPublic", await (await registry.connect(carol).setDeltaPublic(deltaHash, true)).wait());
  assert.equal((await registry.getDelta(deltaHash)).isPublic, true);
  await reverts(registry.getDelta(random32()), "unknown delta");
});

// ---- soups ----

test("soups: only aggregators, public published deltas of their contributors, 10000 bp", async () => {
  const a = await publish(alice);
  const b = await publish(bob);
  const c = await publish(carol);
  const hidden = await publish(carol, { makePublic: false });
  const create = (hashes, owners, weights, from = aggregator) =>
    registry.connect(from).createDeltaSoup(random32(), hashes, owners, weights, "median", random32());
  const who = [alice.address, bob.address, carol.address];
  await reverts(create([a, b, c], who, [3000, 3000, 4000], outsider), "not an authorised aggregator");
  await reverts(create([a, b, c], who, [3000, 3000, 3999]), "weights must sum to 10000 basis points");
  await reverts(create([a, b, c], who, [3000, 3000, 4001]), "weights must sum to 10000 basis points");
  await reverts(create([a, b], who, [5000, 5000]), "arrays differ in length");
  await reverts(create([a, b, c], who, [5000, 5000]), "arrays differ in length");
  await reverts(create([], [], []), "a soup needs contributions");
  await reverts(
    registry.connect(aggregator).createDeltaSoup("0x" + "00".repeat(32), [a], [alice.address], [10000], "median", random32()),
    "empty hash",
  );
  await reverts(create([a, b, random32()], who, [3000, 3000, 4000]), "unknown delta");
  await reverts(create([a, b, hidden], who, [3000, 3000, 4000]), "delta is private");
  await reverts(create([a, b, c], [alice.address, carol.address, bob.address], [3000, 3000, 4000]),
    "contributor is not the delta's owner");
  await reverts(create([a, a, c], [alice.address, alice.address, carol.address], [3000, 3000, 4000]),
    "delta listed twice");
  const before = await registry.soupCount();
  const receipt = await (await create([a, b, c], who, [3000, 3000, 4000])).wait();
    const event = registry.interface.parseLog(receipt.logs[0]);
  assert.equal(event.name, "SoupCreated");
  const soupId = before + 1n;
  assert.equal(event.args.soupId, soupId);
  const soup = await registry.getSoup(soupId);
  assert.equal(soup.method, "median");
  assert.equal(soup.active, true);
  const [hashes, contributors, weights] = await registry.soupContributors(soupId);
  assert.deepEqual([...hashes], [a, b, c]);
  assert.deepEqual([...contributors], who);
  assert.deepEqual([...weights].map(Number), [3000, 3000, 4000]);
  // The next soup with the same method is the next version.
  const again = await (await create([a, b, c], who, [2000, 3000, 5000])).wait();
  assert.equal(registry.interface.parseLog(again.logs[0]).args.version, soup.version + 1n);
  // Deactivation: the aggregator or the admin; then it takes no royalties.
  await reverts(registry.connect(outsider).deactivateSoup(soupId), "only the admin or the soup's aggregator");
  recordGas("deactivateSoup", await (await registry.connect(aggregator).deactivateSoup(soupId)).wait());
  await reverts(registry.connect(admin).deactivateSoup(soupId), "soup already inactive");
  await reverts(registry.payRoyalties(soupId, { value: 100n }), "soup is inactive");
  await reverts(registry.getSoup(9999), "unknown soup");
  await reverts(registry.payRoyalties(9999, { value: 1n }), "unknown soup");
});

// ---- royalties ----

// Creates a soup of fresh deltas of `owners` with `weights`; returns its id.
async function soupOf(owners, weights) {
  const hashes = [];
  for (const owner of owners) hashes.push(await publish(owner));
  const receipt = await (
    await registry
      .connect(aggregator)
      .createDeltaSoup(random32(), hashes, owners.map((o) => o.address), weights, "trimmed-mean", random32())
  ).wait();
  return registry.interface.parseLog(receipt.logs[0]).args.soupId;
}

// What each contributor must be credited: floor(value × w / 10000), the remainder to the
// largest weight (the first on a tie).
function expectedShares(value, weights) {
  const shares = weights.map((w) => (value * BigInt(w)) / 10000n);
  let largest = 0;
  weights.forEach((w, i) => {
    if (w > weights[largest]) largest = i;
  });
  shares[largest] += value - shares.reduce((s, x) => s + x, 0n);
  return shares;
}

test("royalties are split by weight, exact to the wei, remainders included", async () => {
  const people = [alice, bob, carol, relayer, outsider];
  const cases = [
    { owners: [alice], weights: [10000], values: [1n, 12345n] },
    { owners: [alice, bob], weights: [5000, 5000], values: [1n, 3n, 10n ** 18n + 1n] },
    { owners: [alice, bob, carol], weights: [3333, 3333, 3334], values: [10n, 9999n, 7n * 10n ** 17n + 13n] },
    { owners: [alice, bob, carol], weights: [1, 9998, 1], values: [9999n, 1n] },
    { owners: [carol, bob, alice, relayer, outsider], weights: [2000, 2000, 2000, 2000, 2000], values: [4n, 123456789n] },
  ];
  for (const [k, c] of cases.entries()) {
    const soupId = await soupOf(c.owners, c.weights);
    for (const value of c.values) {
      const before = await Promise.all(people.map((p) => registry.credits(p.address)));
      const total = await registry.totalCredits();
      const receipt = await (await registry.connect(relayer).payRoyalties(soupId, { value })).wait();
            const shares = expectedShares(value, c.weights);
      const expected = [...before];
      c.owners.forEach((o, i) => {
        expected[people.indexOf(o)] += shares[i];
      });
      const after = await Promise.all(people.map((p) => registry.credits(p.address)));
      assert.deepEqual(after, expected, `weights ${c.weights} value ${value}`);
      assert.equal(await registry.totalCredits(), total + value);
    }
  }
  // The contract holds exactly what it owes.
  assert.equal(await provider.getBalance(registry.target), await registry.totalCredits());
  await reverts(registry.payRoyalties(1, { value: 0n }), "soup is inactive"); // soup 1 was deactivated
  await reverts(registry.payRoyalties(await registry.soupCount(), { value: 0n }), "no value sent");
});

test("withdraw pays a contributor's credit once, to the wei", async () => {
  const owed = await registry.credits(bob.address);
  assert.ok(owed > 0n);
  const balance = await provider.getBalance(bob.address);
  const receipt = await (await registry.connect(bob).withdraw()).wait();
  recordGas("withdraw", receipt);
  const fee = receipt.gasUsed * receipt.gasPrice;
  assert.equal(await provider.getBalance(bob.address), balance + owed - fee);
  assert.equal(await registry.credits(bob.address), 0n);
  await reverts(registry.connect(bob).withdraw(), "nothing to withdraw");
  assert.equal(await provider.getBalance(registry.target), await registry.totalCredits());
});

test("a reentrant contributor is paid once", async () => {
  const factory = new ContractFactory(artifacts.attacker.abi, artifacts.attacker.bytecode, outsider);
  const attacker = await factory.deploy(registry.target);
  await attacker.waitForDeployment();
  const deltaHash = random32();
  const a = await attest(attester, deltaHash, attacker.target);
  await (await attacker.publish(BASE, deltaHash, a.tuple)).wait();
  const honest = await publish(alice);
  const receipt = await (
    await registry
      .connect(aggregator)
      .createDeltaSoup(random32(), [deltaHash, honest], [attacker.target, alice.address], [6000, 4000], "median", random32())
  ).wait();
  const soupId = registry.interface.parseLog(receipt.logs[0]).args.soupId;
  await (await registry.connect(relayer).payRoyalties(soupId, { value: 1000n })).wait();
  const owed = await registry.credits(attacker.target);
  assert.equal(owed, 600n);
  const held = await provider.getBalance(registry.target);
  await (await attacker.attack()).wait();
  assert.equal(await attacker.received(), 600n);
  assert.equal(await attacker.payments(), 1n);
  assert.equal(await attacker.reentryFailed(), true);
  assert.equal(await attacker.reentryError(), "reentrant call");
  assert.equal(await provider.getBalance(registry.target), held - 600n);
  assert.equal(await provider.getBalance(registry.target), await registry.totalCredits());
  // A contributor that refuses payment: the withdrawal fails as a whole, its credit stays.
  await (await registry.connect(relayer).payRoyalties(soupId, { value: 10n })).wait();
  await (await attacker.setRefusePayments(true)).wait();
  await reverts(attacker.attack(), "transfer failed");
  assert.equal(await registry.credits(attacker.target), 6n);
  assert.equal(await provider.getBalance(registry.target), await registry.totalCredits());
});

// Gas as soups grow (docs/registry.md): contributors are fresh keys whose deltas a relayer
// publishes with their signatures; the first payment turns each credit from zero to non-zero
// (a fresh storage slot), the second adds to it.
test("gas by number of contributors", async () => {
  for (const n of [1, 2, 5, 10]) {
    const owners = Array.from({ length: n }, () => Wallet.createRandom());
    const hashes = [];
    for (const owner of owners) {
      const deltaHash = random32();
      const a = await attest(attester, deltaHash, owner.address);
      const digest = publishDigest(owner.address, BASE, deltaHash, 1530, true, attestationDigest(a.fields));
      const signature = await owner.signMessage(getBytes(digest));
      await (await registry.connect(relayer)
        .publishBitDelta(owner.address, BASE, deltaHash, 1530, true, a.tuple, signature)).wait();
      hashes.push(deltaHash);
    }
    const weights = Array.from({ length: n }, (_, i) => (i === 0 ? 10000 - 1000 * (n - 1) : 1000));
    const created = await (await registry.connect(aggregator).createDeltaSoup(
      random32(), hashes, owners.map((o) => o.address), weights, "median", random32())).wait();
    recordGas(`createDeltaSoup, ${n} contributors`, created);
    const soupId = registry.interface.parseLog(created.logs[0]).args.soupId;
    recordGas(`payRoyalties, ${n} contributors, first credits`,
      await (await registry.connect(relayer).payRoyalties(soupId, { value: 10n ** 18n })).wait());
    recordGas(`payRoyalties, ${n} contributors, credits already held`,
      await (await registry.connect(relayer).payRoyalties(soupId, { value: 10n ** 18n + 1n })).wait());
    const credited = await Promise.all(owners.map((o) => registry.credits(o.address)));
    assert.equal(credited.reduce((x, y) => x + y, 0n), 2n * 10n ** 18n + 1n);
  }
});

// ---- the C++ side: signatures and `bitdelta registry` ----

function run(args) {
  return execFileSync(bitdelta, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}

// bitdelta talking to the node: asynchronously, since the node runs in this process's event
// loop (a synchronous child would wait for a node that cannot answer). Resolves to the exit
// status and output.
function runAsync(args) {
  return new Promise((resolve) => {
    execFile(bitdelta, args, { encoding: "utf8" }, (error, stdout, stderr) =>
      resolve({ status: error ? error.code : 0, stdout, stderr }));
  });
}

// Two real adapters of the default model (one fine-tuning step each, compressed), owned by two
// fresh did:lux keys, with sim-eip191 attestations by a third: made once, used by both tests.
let made;
function adapters() {
  if (made) return made;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "bitdelta-registry-"));
  const file = (name) => path.join(dir, name);
  const did = (name) => run(["id", "new", "-o", file(name), "--chain-id", String(chainId)]).trim();
  made = { dir, file, owners: [did("owner1.key"), did("owner2.key")], attester: did("attester.key") };
  fs.writeFileSync(file("run.json"), "{}\n");
  made.owners.forEach((owner, k) => {
    const text = file(`text${k}.txt`);
    fs.writeFileSync(text, `user ${k} writes about the registry of deltas. `.repeat(40));
    run(["train", "--data", text, "--steps", "1", "--batch", "1", "--seq", "16", "-o", file(`ft${k}`)]);
    run(["compress", "--base", path.join(root, "models/default"), "--finetuned", file(`ft${k}`),
         "--owner", owner, "-o", file(`user${k}.bitdelta`)]);
    run(["attest", "sign", "--format", "eip191", "--key", file("attester.key"),
         "--adapter", file(`user${k}.bitdelta`), "--binary", bitdelta, "--config", file("run.json"),
         "-o", file(`user${k}.attestation.json`)]);
  });
  return made;
}

after(() => {
  if (made) fs.rmSync(made.dir, { recursive: true, force: true });
});

const addressOf = (did) => did.split(":").pop();

test("C++ signatures verify on chain: bitdelta attest sign --format eip191 and id sign", async () => {
  const m = adapters();
  const document = JSON.parse(fs.readFileSync(m.file("user0.attestation.json"), "utf8"));
  // The payload: every field but the signature, compact, keys sorted (as the C++ side writes it).
  const payload = Object.fromEntries(
    Object.keys(document).filter((k) => k !== "signature").sort().map((k) => [k, document[k]]),
  );
  const tuple = {
    payloadHash: keccak256(toUtf8Bytes(JSON.stringify(payload))),
    measurement: "0x" + document.measurement,
    epsilonX1e6: NO_EPSILON, // not a DP fine-tune: no privacy.epsilon
    deltaExponent: 0,
    signature: document.signature,
  };
  const deltaHash = "0x" + document.adapter;
  const base = "0x" + document.base;
  const owner = addressOf(m.owners[0]);
  assert.equal(document.owner, m.owners[0]);
  await (await registry.setAttester(addressOf(m.attester), true)).wait();
  // The owner's consent, signed by `bitdelta id sign` over the 32-byte publish digest.
  const digest = await registry.publishDigest(owner, base, deltaHash, 1530, true,
    attestationDigest({ ...tuple, deltaHash, base, owner }));
  fs.writeFileSync(m.file("digest.bin"), getBytes(digest));
  const ownerSignature = run(["id", "sign", "--key", m.file("owner1.key"), "--file", m.file("digest.bin")]).trim();
  const receipt = await (
    await registry.connect(relayer).publishBitDelta(owner, base, deltaHash, 1530, true, tuple, ownerSignature)
  ).wait();
  const event = registry.interface.parseLog(receipt.logs[0]);
  assert.equal(event.name, "DeltaPublished");
  assert.equal(event.args.owner.toLowerCase(), owner.toLowerCase());
  assert.equal(event.args.attester.toLowerCase(), addressOf(m.attester).toLowerCase());
  assert.equal((await registry.getDelta(deltaHash)).epsilonX1e6, NO_EPSILON);
});

test("bitdelta registry deploys, publishes, records a soup, pays and lists (EIP-1559, JSON-RPC)", async () => {
  const m = adapters();
  const rpc = `http://127.0.0.1:${server.address().port}`;
  const cli = async (args) => {
    const result = await runAsync(["registry", ...args, "--rpc", rpc, "--json"]);
    assert.equal(result.status, 0, result.stderr);
    return JSON.parse(result.stdout);
  };
  // Fresh keys hold no ether: fund the admin, the owners and the aggregator from a node account.
  const aggregatorDid = run(["id", "new", "-o", m.file("aggregator.key"), "--chain-id", String(chainId)]).trim();
  const adminDid = run(["id", "new", "-o", m.file("admin.key"), "--chain-id", String(chainId)]).trim();
  for (const d of [adminDid, aggregatorDid, ...m.owners])
    await (await admin.sendTransaction({ to: addressOf(d), value: 10n ** 18n })).wait();
  fs.writeFileSync(m.file("registry.json"), JSON.stringify(artifacts.registry));
  const deployed = await cli(["deploy", "--key", m.file("admin.key"), "--artifact", m.file("registry.json")]);
  const contract = deployed.contract;
  const onChain = new (await import("ethers")).Contract(contract, artifacts.registry.abi, provider);
  assert.equal((await onChain.admin()).toLowerCase(), addressOf(adminDid).toLowerCase());
  const withContract = (args) => cli([...args, "--contract", contract]);
  await withContract(["allow", "--key", m.file("admin.key"), "--attester", m.attester]);
  await withContract(["allow", "--key", m.file("admin.key"), "--aggregator", aggregatorDid]);
  assert.equal(await onChain.isAttester(addressOf(m.attester)), true);
  const hashes = [];
  for (const k of [0, 1]) {
    const published = await withContract(["publish", "--key", m.file(`owner${k + 1}.key`), "--adapter",
      m.file(`user${k}.bitdelta`), "--attestation", m.file(`user${k}.attestation.json`), "--public"]);
    hashes.push(published.delta);
    const d = await onChain.getDelta(published.delta);
    assert.equal(d.owner.toLowerCase(), addressOf(m.owners[k]).toLowerCase());
    assert.equal(d.isPublic, true);
    assert.equal(d.compressionRatioX100, BigInt(published.compression_ratio_x100));
    assert.ok(published.compression_ratio_x100 > 100);
  }
  // A second publish of the same adapter: one line with the contract's reason, exit status 1.
  const again = await runAsync(["registry", "publish", "--rpc", rpc, "--contract", contract,
    "--key", m.file("owner1.key"), "--adapter", m.file("user0.bitdelta"), "--attestation",
    m.file("user0.attestation.json")]);
  assert.equal(again.status, 1);
  assert.equal(again.stderr.trim().split("\n").length, 1);
  assert.match(again.stderr, /reverted: delta already published/);
  // A soup of both, recorded by the aggregator (and refused from anyone else).
  run(["soup", "--base", path.join(root, "models/default"), "--deltas", m.file("user0.bitdelta"),
       m.file("user1.bitdelta"), "-o", m.file("soup.bitdelta"), "--method", "mean"]);
  const refused = await runAsync(["registry", "soup", "--rpc", rpc, "--contract", contract,
    "--key", m.file("owner1.key"), "--soup", m.file("soup.bitdelta")]);
  assert.equal(refused.status, 1);
  assert.match(refused.stderr, /reverted: not an authorised aggregator/);
  const soup = await withContract(["soup", "--key", m.file("aggregator.key"), "--soup", m.file("soup.bitdelta")]);
  assert.equal(soup.soup, 1);
  assert.deepEqual(soup.weights_bps, [5000, 5000]);
  await withContract(["pay", "--key", m.file("admin.key"), "--soup", "1", "--wei", "1001"]);
  const shown = await withContract(["show", "--soup", "1"]);
  assert.equal(shown.method, "mean");
  assert.equal(shown.royalties_paid_wei, "1001");
  assert.deepEqual(shown.contributors.map((c) => c.delta).sort(), [...hashes].sort());
  // 1001 wei at 5000/5000: 500 each, the remainder to the first listed.
  const credits = await Promise.all(shown.contributors.map((c) => onChain.credits(c.owner)));
  assert.deepEqual(credits, [501n, 500n]);
  const listed = await withContract(["list"]);
  assert.deepEqual(listed.deltas.map((d) => d.delta).sort(), [...hashes].sort());
  assert.equal(listed.soups.length, 1);
  assert.equal((await withContract(["list", "--owner", m.owners[1]])).deltas.length, 1);
  const first = shown.contributors[0].owner;
  const key = m.owners.findIndex((o) => addressOf(o).toLowerCase() === first.toLowerCase());
  const withdrawn = await withContract(["withdraw", "--key", m.file(`owner${key + 1}.key`)]);
  assert.equal(withdrawn.wei, "501");
  assert.equal(await onChain.credits(first), 0n);
});
