// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

/// @title OpenLedger parameters: every fee, split, rate and gas cost lives here, in state.
/// @notice Native system contract at 0x0000000000000000000000000000000000001006. Only the
/// governor (0x…1007, through an executed proposal) may change them; every change is validated
/// as a whole (the fee split sums to 10,000 bps, limits are positive, …), emits `ParamsChanged`
/// and applies from the next transaction on.
interface IParams {
    /// `key` is the dotted key that changed (`fee_split.contributors_bps`), or "*" when
    /// `setParams` replaced the whole set.
    event ParamsChanged(string key);

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

    /// Replaces the whole parameter set with `json` (the format of `paramsJson`). Governor only.
    function setParams(string calldata json) external;
    /// Sets one parameter: `key` is a dotted path into `paramsJson` (`fee_split.contributors_bps`,
    /// `voting_period_secs`, `call_gas.createDatanet`) that must exist (a `call_gas` entry may be
    /// new); `jsonValue` is its new JSON value (`6000`, `"1.5"` for OPEN amounts). Governor only.
    function setParam(string calldata key, string calldata jsonValue) external;
}
