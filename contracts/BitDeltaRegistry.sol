// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

// BitDeltaRegistry: who published which BitDelta (a 1-bit fine-tune delta of a base model) and
// which community soups were built from them, with royalties paid to a soup's contributors by
// their weights. docs/registry.md has the data model, the trust chain and the gas table.
//
// Hashes are the project's own: a base model's and an adapter's fingerprints are SHA-256 over
// their tensors (64 hex digits), taken as bytes32 as they are. Identities are did:lux accounts
// (did:lux:<chain id>:0x<address>): the contract keys them by the address.
//
// Signatures are EIP-191 personal_sign over a 32-byte digest (what `bitdelta id sign` and
// `bitdelta attest sign --format eip191` make, and what ethers' Wallet.signMessage(bytes)
// makes): ecrecover(keccak256("\x19Ethereum Signed Message:\n32" ‖ digest)).
contract BitDeltaRegistry {
    // The attester signs attestationDigest(...): the attested fields, not the caller's word.
    bytes32 public constant ATTESTATION_TAG = keccak256("bitdelta-attestation-1");
    // The owner signs publishDigest(...) when someone else sends the transaction.
    bytes32 public constant PUBLISH_TAG = keccak256("bitdelta-publish-1");
    // epsilonX1e6 of an adapter trained without differential privacy (no guarantee).
    uint64 public constant NO_EPSILON = type(uint64).max;
    uint16 public constant TOTAL_BPS = 10_000;

    // An attestation as the chain sees it: the hash of the signed JSON document's payload (every
    // field, so that nothing in it can change), the measurement of the training binary and its
    // configuration, and the privacy the adapter recorded: ε × 10^6 rounded up (NO_EPSILON when
    // none) and δ's exponent (δ ≤ 10^-deltaExponent; 0 when none).
    struct Attestation {
        bytes32 payloadHash;
        bytes32 measurement;
        uint64 epsilonX1e6;
        uint8 deltaExponent;
        bytes signature;
    }

    struct Delta {
        address owner;
        bytes32 baseModelHash;
        uint32 compressionRatioX100;
        bool isPublic;
        uint64 epsilonX1e6;
        uint8 deltaExponent;
        bytes32 measurement;
        address attester;
        uint64 publishedAt;
    }

    struct Soup {
        bytes32 adapterHash;
        bytes32 aggregationRecordHash;
        string method;
        address aggregator;
        uint32 version; // the n-th soup of this aggregator with this method
        bool active;
        uint64 createdAt;
        uint256 royaltiesPaid; // wei
    }

    address public admin;
    mapping(address => bool) public isAttester;
    mapping(address => bool) public isAggregator;

    mapping(bytes32 => Delta) private deltas;
    mapping(address => bytes32[]) private deltasByOwner;

    Soup[] private soups; // soup id = index + 1
    mapping(uint256 => bytes32[]) private soupDeltaHashes;
    mapping(uint256 => address[]) private soupContributorList;
    mapping(uint256 => uint16[]) private soupWeights;
    mapping(bytes32 => uint32) private soupVersions; // keccak256(aggregator, method) => count

    mapping(address => uint256) public credits; // wei each contributor may withdraw
    uint256 public totalCredits; // Σ credits: the wei this contract owes
    bool private locked;

    event AdminChanged(address indexed previousAdmin, address indexed newAdmin);
    event AttesterSet(address indexed attester, bool allowed);
    event AggregatorSet(address indexed aggregator, bool allowed);
    event DeltaPublished(
        bytes32 indexed deltaHash,
        address indexed owner,
        bytes32 indexed baseModelHash,
        uint32 compressionRatioX100,
        bool isPublic,
        uint64 epsilonX1e6,
        uint8 deltaExponent,
        bytes32 measurement,
        address attester
    );
    event DeltaVisibilityChanged(bytes32 indexed deltaHash, bool isPublic);
    event SoupCreated(
        uint256 indexed soupId,
        bytes32 indexed adapterHash,
        address indexed aggregator,
        string method,
        uint32 version,
        bytes32 aggregationRecordHash,
        uint256 contributors
    );
    event SoupDeactivated(uint256 indexed soupId);
    event RoyaltiesPaid(uint256 indexed soupId, address indexed payer, uint256 amount);
    event RoyaltyCredited(uint256 indexed soupId, address indexed contributor, uint256 amount);
    event Withdrawn(address indexed contributor, uint256 amount);

    modifier onlyAdmin() {
        require(msg.sender == admin, "only the admin");
        _;
    }

    // Pull payments are already checks-effects-interactions; the lock also stops a contributor
    // contract from re-entering any guarded function while its payment is under way.
    modifier nonReentrant() {
        require(!locked, "reentrant call");
        locked = true;
        _;
        locked = false;
    }

    constructor() {
        admin = msg.sender;
        emit AdminChanged(address(0), msg.sender);
    }

    // ---- administration ----

    function transferAdmin(address newAdmin) external onlyAdmin {
        require(newAdmin != address(0), "the admin cannot be the zero address");
        emit AdminChanged(admin, newAdmin);
        admin = newAdmin;
    }

    function setAttester(address attester, bool allowed) external onlyAdmin {
        require(attester != address(0), "the attester cannot be the zero address");
        isAttester[attester] = allowed;
        emit AttesterSet(attester, allowed);
    }

    function setAggregator(address aggregator, bool allowed) external onlyAdmin {
        require(aggregator != address(0), "the aggregator cannot be the zero address");
        isAggregator[aggregator] = allowed;
        emit AggregatorSet(aggregator, allowed);
    }

    // ---- digests that signers sign ----

    function attestationDigest(
        bytes32 payloadHash,
        bytes32 deltaHash,
        bytes32 baseModelHash,
        address owner,
        bytes32 measurement,
        uint64 epsilonX1e6,
        uint8 deltaExponent
    ) public pure returns (bytes32) {
        return keccak256(
            abi.encode(
                ATTESTATION_TAG,
                payloadHash,
                deltaHash,
                baseModelHash,
                owner,
                measurement,
                epsilonX1e6,
                deltaExponent
            )
        );
    }

    // Bound to this chain and this registry, so that a signature cannot be replayed elsewhere.
    function publishDigest(
        address ownerDid,
        bytes32 baseModelHash,
        bytes32 deltaHash,
        uint32 compressionRatioX100,
        bool makePublic,
        bytes32 attestationHash
    ) public view returns (bytes32) {
        return keccak256(
            abi.encode(
                PUBLISH_TAG,
                block.chainid,
                address(this),
                ownerDid,
                baseModelHash,
                deltaHash,
                compressionRatioX100,
                makePublic,
                attestationHash
            )
        );
    }

    // The signer of an EIP-191 personal message of 32 bytes; address(0) for a malformed or
    // malleable (high s) signature.
    function recoverSigner(bytes32 digest, bytes memory signature) public pure returns (address) {
        if (signature.length != 65) return address(0);
        bytes32 r;
        bytes32 s;
        uint8 v;
        assembly {
            r := mload(add(signature, 32))
            s := mload(add(signature, 64))
            v := byte(0, mload(add(signature, 96)))
        }
        if (v < 27) v += 27;
        if (v != 27 && v != 28) return address(0);
        if (uint256(s) > 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0) {
            return address(0);
        }
        bytes32 prefixed = keccak256(abi.encodePacked("\x19Ethereum Signed Message:\n32", digest));
        return ecrecover(prefixed, v, r, s);
    }

    // ---- deltas ----

    function publishBitDelta(
        address ownerDid,
        bytes32 baseModelHash,
        bytes32 deltaHash,
        uint32 compressionRatioX100,
        bool makePublic,
        Attestation calldata attestation,
        bytes calldata ownerSignature
    ) external {
        require(ownerDid != address(0), "the owner cannot be the zero address");
        require(deltaHash != bytes32(0) && baseModelHash != bytes32(0), "empty hash");
        require(deltas[deltaHash].owner == address(0), "delta already published");
        bytes32 attested = attestationDigest(
            attestation.payloadHash,
            deltaHash,
            baseModelHash,
            ownerDid,
            attestation.measurement,
            attestation.epsilonX1e6,
            attestation.deltaExponent
        );
        address attester = recoverSigner(attested, attestation.signature);
        require(isAttester[attester], "attestation not signed by an allowed attester");
        if (msg.sender != ownerDid) {
            bytes32 digest = publishDigest(
                ownerDid, baseModelHash, deltaHash, compressionRatioX100, makePublic, attested
            );
            require(recoverSigner(digest, ownerSignature) == ownerDid, "not signed by the owner");
        }
        deltas[deltaHash] = Delta({
            owner: ownerDid,
            baseModelHash: baseModelHash,
            compressionRatioX100: compressionRatioX100,
            isPublic: makePublic,
            epsilonX1e6: attestation.epsilonX1e6,
            deltaExponent: attestation.deltaExponent,
            measurement: attestation.measurement,
            attester: attester,
            publishedAt: uint64(block.timestamp)
        });
        deltasByOwner[ownerDid].push(deltaHash);
        emit DeltaPublished(
            deltaHash,
            ownerDid,
            baseModelHash,
            compressionRatioX100,
            makePublic,
            attestation.epsilonX1e6,
            attestation.deltaExponent,
            attestation.measurement,
            attester
        );
    }

    function setDeltaPublic(bytes32 deltaHash, bool isPublic) external {
        require(deltas[deltaHash].owner != address(0), "unknown delta");
        require(deltas[deltaHash].owner == msg.sender, "only the delta's owner");
        deltas[deltaHash].isPublic = isPublic;
        emit DeltaVisibilityChanged(deltaHash, isPublic);
    }

    function getDelta(bytes32 deltaHash) external view returns (Delta memory) {
        require(deltas[deltaHash].owner != address(0), "unknown delta");
        return deltas[deltaHash];
    }

    function deltasOf(address owner) external view returns (bytes32[] memory) {
        return deltasByOwner[owner];
    }

    // ---- soups ----

    function createDeltaSoup(
        bytes32 adapterHash,
        bytes32[] calldata deltaHashes,
        address[] calldata contributorDids,
        uint16[] calldata weightsBps,
        string calldata method,
        bytes32 aggregationRecordHash
    ) external returns (uint256 soupId) {
        require(isAggregator[msg.sender], "not an authorised aggregator");
        require(adapterHash != bytes32(0), "empty hash");
        checkContributions(deltaHashes, contributorDids, weightsBps);
        soupId = pushSoup(adapterHash, method, aggregationRecordHash, deltaHashes.length);
        soupDeltaHashes[soupId] = deltaHashes;
        soupContributorList[soupId] = contributorDids;
        soupWeights[soupId] = weightsBps;
    }

    // Every delta published, public, owned by its contributor, listed once; weights summing to
    // exactly 10000 basis points.
    function checkContributions(
        bytes32[] calldata deltaHashes,
        address[] calldata contributorDids,
        uint16[] calldata weightsBps
    ) private view {
        uint256 n = deltaHashes.length;
        require(n > 0, "a soup needs contributions");
        require(contributorDids.length == n && weightsBps.length == n, "arrays differ in length");
        uint256 total = 0;
        for (uint256 i = 0; i < n; ++i) {
            Delta storage d = deltas[deltaHashes[i]];
            require(d.owner != address(0), "unknown delta");
            require(d.isPublic, "delta is private");
            require(contributorDids[i] == d.owner, "contributor is not the delta's owner");
            for (uint256 j = 0; j < i; ++j) {
                require(deltaHashes[j] != deltaHashes[i], "delta listed twice");
            }
            total += weightsBps[i];
        }
        require(total == TOTAL_BPS, "weights must sum to 10000 basis points");
    }

    function pushSoup(
        bytes32 adapterHash,
        string calldata method,
        bytes32 aggregationRecordHash,
        uint256 contributors
    ) private returns (uint256 soupId) {
        uint32 version = ++soupVersions[keccak256(abi.encode(msg.sender, method))];
        soups.push(
            Soup({
                adapterHash: adapterHash,
                aggregationRecordHash: aggregationRecordHash,
                method: method,
                aggregator: msg.sender,
                version: version,
                active: true,
                createdAt: uint64(block.timestamp),
                royaltiesPaid: 0
            })
        );
        soupId = soups.length;
        emit SoupCreated(
            soupId, adapterHash, msg.sender, method, version, aggregationRecordHash, contributors
        );
    }

    function deactivateSoup(uint256 soupId) external {
        Soup storage soup = soupAt(soupId);
        require(msg.sender == admin || msg.sender == soup.aggregator, "only the admin or the soup's aggregator");
        require(soup.active, "soup already inactive");
        soup.active = false;
        emit SoupDeactivated(soupId);
    }

    function soupCount() external view returns (uint256) {
        return soups.length;
    }

    function getSoup(uint256 soupId) external view returns (Soup memory) {
        return soupAt(soupId);
    }

    function soupContributors(uint256 soupId)
        external
        view
        returns (bytes32[] memory deltaHashes, address[] memory contributors, uint16[] memory weightsBps)
    {
        soupAt(soupId);
        return (soupDeltaHashes[soupId], soupContributorList[soupId], soupWeights[soupId]);
    }

    function soupAt(uint256 soupId) private view returns (Soup storage) {
        require(soupId >= 1 && soupId <= soups.length, "unknown soup");
        return soups[soupId - 1];
    }

    // ---- royalties ----

    // Credits each contributor floor(value × weight / 10000) wei; the remainder (less than one
    // wei per contributor) goes to the contributor with the largest weight, the first listed on
    // a tie. Σ credited = msg.value exactly.
    function payRoyalties(uint256 soupId) external payable nonReentrant {
        Soup storage soup = soupAt(soupId);
        require(soup.active, "soup is inactive");
        require(msg.value > 0, "no value sent");
        address[] storage contributors = soupContributorList[soupId];
        uint16[] storage weights = soupWeights[soupId];
        uint256 credited = 0;
        uint256 largest = 0;
        for (uint256 i = 0; i < contributors.length; ++i) {
            uint256 share = (msg.value * weights[i]) / TOTAL_BPS;
            credits[contributors[i]] += share;
            credited += share;
            if (weights[i] > weights[largest]) largest = i;
            emit RoyaltyCredited(soupId, contributors[i], share);
        }
        uint256 remainder = msg.value - credited;
        if (remainder > 0) {
            credits[contributors[largest]] += remainder;
            emit RoyaltyCredited(soupId, contributors[largest], remainder);
        }
        soup.royaltiesPaid += msg.value;
        totalCredits += msg.value;
        emit RoyaltiesPaid(soupId, msg.sender, msg.value);
    }

    function withdraw() external nonReentrant {
        uint256 amount = credits[msg.sender];
        require(amount > 0, "nothing to withdraw");
        credits[msg.sender] = 0; // effects before the interaction
        totalCredits -= amount;
        emit Withdrawn(msg.sender, amount);
        (bool sent,) = payable(msg.sender).call{value: amount}("");
        require(sent, "transfer failed");
    }
}
