// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

import "../BitDeltaRegistry.sol";

// A contributor that is a contract and tries to withdraw its royalties twice: when the first
// payment arrives, receive() calls withdraw() again. The registry's tests
// (tests/node/registry.test.mjs) check that the second call fails and that it was paid once;
// with setRefusePayments(true) it cannot be paid at all, and its credit must survive.
contract ReentrantContributor {
    BitDeltaRegistry public immutable registry;
    uint256 public received;
    uint256 public payments;
    bool public reentryFailed;
    string public reentryError;
    bool public refusePayments; // then receive() reverts: a contributor that cannot be paid

    function setRefusePayments(bool refuse) external {
        refusePayments = refuse;
    }

    constructor(BitDeltaRegistry registry_) {
        registry = registry_;
    }

    // Publishes a delta owned by this contract (it sends the transaction, so no owner signature).
    function publish(
        bytes32 baseModelHash,
        bytes32 deltaHash,
        BitDeltaRegistry.Attestation calldata attestation
    ) external {
        registry.publishBitDelta(address(this), baseModelHash, deltaHash, 1600, true, attestation, "");
    }

    function attack() external {
        registry.withdraw();
    }

    receive() external payable {
        require(!refusePayments, "payments refused");
        received += msg.value;
        payments += 1;
        if (payments == 1) {
            try registry.withdraw() {
                reentryFailed = false;
            } catch Error(string memory reason) {
                reentryFailed = true;
                reentryError = reason;
            }
        }
    }
}
