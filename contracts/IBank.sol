// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

/// @title OpenLedger bank module: native OPEN transfers.
/// @notice Native system contract at 0x0000000000000000000000000000000000001001.
/// A plain value transfer to any address also emits `Transfer` from this address.
interface IBank {
    /// Every movement of OPEN between accounts, modules included.
    event Transfer(address indexed from, address indexed to, uint256 value);
    /// A grant paid from the treasury by governance (the move itself is also a `Transfer`).
    event TreasuryGrant(address indexed to, uint256 amount, string reason);

    /// Moves `amount` OPEN from the sender to `to`. Refused (not payable) when `to` is a module
    /// address (0x…1001–0x…1009): a module keeps only OPEN it accounts for, so OPEN sent there
    /// would be locked for good. The treasury (0x…1000) is an account and accepts it.
    function transfer(address to, uint256 amount) external returns (bool);

    /// Pays `amount` OPEN from the treasury (0x…1000) to `to` (an account, not a module).
    /// Only the governor (0x…1007) may call it, through an executed proposal.
    function treasuryGrant(address to, uint256 amount, string calldata reason) external;

    function balanceOf(address account) external view returns (uint256);
    function totalSupply() external view returns (uint256);
}
