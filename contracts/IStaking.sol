// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

/// @title OpenLedger staking module.
/// @notice Native system contract at 0x0000000000000000000000000000000000001002.
/// Stakers share the stakers pool (gas fees and the stakers' part of inference fees)
/// pro rata to their stake. Unstaking waits a governed cooldown before withdrawal.
interface IStaking {
    event Staked(address indexed staker, uint256 amount, uint256 totalStake);
    event UnstakeRequested(address indexed staker, uint256 amount, uint64 releaseTime);
    event Withdrawn(address indexed staker, uint256 amount);
    event RewardsAdded(uint256 amount, uint256 totalStaked);
    event RewardsClaimed(address indexed staker, uint256 amount);

    /// Stakes the OPEN sent with the call.
    function stake() external payable;
    /// Moves `amount` of the sender's stake into unbonding; it can be withdrawn after the cooldown.
    function requestUnstake(uint256 amount) external;
    /// Withdraws the sender's unbonded OPEN once its release time has passed.
    function withdraw() external returns (uint256);
    /// Pays the sender's accumulated rewards in whole wei. Rewards are tracked at full
    /// precision; the fraction of a wei not paid stays owed to the sender for the next claim.
    function claimRewards() external returns (uint256);

    function stakeOf(address staker) external view returns (uint256);
    /// What `claimRewards` would pay now, in whole wei.
    function pendingRewards(address staker) external view returns (uint256);
    function unbondingOf(address staker) external view returns (uint256 amount, uint64 releaseTime);
    function totalStaked() external view returns (uint256);
}
