// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

/// @title OpenLedger parameters: every fee, split, rate and gas cost lives here, in state.
/// @notice Native system contract at 0x0000000000000000000000000000000000001006 (views only;
/// governance changes them in a later release).
interface IParams {
    struct FeeSplit {
        uint16 platformBps;
        uint16 modelOwnerBps;
        uint16 stakersBps;
        uint16 contributorsBps;
    }

    function feeSplit() external view returns (FeeSplit memory);
    function minGasPrice() external view returns (uint256);
    /// Gas charged for a module call by its function name, e.g. "createDatanet".
    function callGas(string calldata name) external view returns (uint64);
    /// The whole parameter set as JSON (UTF-8 bytes).
    function paramsJson() external view returns (string memory);
    function treasury() external view returns (address);
}
