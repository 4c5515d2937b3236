// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

/// @title OpenLedger staking module.
/// @notice Native system contract at 0x0000000000000000000000000000000000001002.
/// Stakers share the stakers pool (gas fees and the stakers' part of inference fees)
/// pro rata to their stake. Unstaking waits a governed cooldown before withdrawal.
///
/// Voting power (OpenZeppelin `IVotes` / `IERC5805` semantics, clock = block timestamp):
/// - Staked OPEN is the voting token. It counts for the staker's delegatee, which is the staker
///   itself until it calls `delegate` (unlike OpenZeppelin's ERC20Votes, no self-delegation call
///   is needed before stake counts). `delegate(address(0))` takes the stake's votes out of every
///   count except the total, as in OpenZeppelin; delegating back to oneself restores them.
/// - Unbonding OPEN has no votes: `requestUnstake` removes them at once.
/// - `getPastVotes` and `getPastTotalSupply` read checkpoints (one per account and timestamp,
///   binary-searched) and refuse a timepoint that is not strictly in the past
///   (OpenZeppelin's `ERC5805FutureLookup`): until a timestamp is over, more stake could still
///   land at it. `getPastTotalSupply` is the total stake, delegated or not.
/// - Delegating moves only votes: rewards stay with the staker, and the stake stays the
///   staker's own. A validator's or operator's backing (what RLHF rounds and agent limits
///   weigh, and what can be slashed) is its own stake; delegators lend it votes, never stake,
///   so they never share its slashing risk.
///
/// Slashing takes OPEN from a staker's stake first, then from its unbonding OPEN, and sends it
/// to the treasury or burns it, as the governed `slash_destination` says. A burn lowers the
/// total supply (`IBank.totalSupply`), adds to `totalBurned`, and is logged as an
/// `IBank.Transfer` to address(0), so supply accounting still balances. `slash` may be called
/// only by the governor (0x…1007); the RLHF and agent modules slash through the same code.
interface IStaking {
    /// A checkpoint of voting power: the votes in force from timestamp `key` on.
    struct Checkpoint {
        uint48 key;
        uint208 value;
    }

    event Staked(address indexed staker, uint256 amount, uint256 totalStake);
    event UnstakeRequested(address indexed staker, uint256 amount, uint64 releaseTime);
    event Withdrawn(address indexed staker, uint256 amount);
    event RewardsAdded(uint256 amount, uint256 totalStaked);
    event RewardsClaimed(address indexed staker, uint256 amount);
    /// `delegator` now counts its stake for `toDelegate` (OpenZeppelin IVotes).
    event DelegateChanged(address indexed delegator, address indexed fromDelegate, address indexed toDelegate);
    /// `delegate`'s voting power changed (OpenZeppelin IVotes).
    event DelegateVotesChanged(address indexed delegate, uint256 previousVotes, uint256 newVotes);
    /// `amount` OPEN was taken from `staker` (stake first, then unbonding) and sent to the
    /// treasury, or burned when `burned`.
    event Slashed(address indexed staker, uint256 amount, bool burned, string reason);

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

    /// Counts the sender's stake (now and later) for `delegatee`.
    function delegate(address delegatee) external;
    /// Whom `account`'s stake counts for (itself unless it delegated).
    function delegates(address account) external view returns (address);
    /// `account`'s voting power now.
    function getVotes(address account) external view returns (uint256);
    /// `account`'s voting power at the end of timestamp `timepoint`, which must be in the past.
    function getPastVotes(address account, uint256 timepoint) external view returns (uint256);
    /// The total stake at the end of timestamp `timepoint`, which must be in the past.
    function getPastTotalSupply(uint256 timepoint) external view returns (uint256);
    /// The current timepoint: the block timestamp (EIP-6372).
    function clock() external view returns (uint48);
    /// "mode=timestamp" (EIP-6372).
    function CLOCK_MODE() external view returns (string memory);
    /// How many voting-power checkpoints `account` has.
    function numCheckpoints(address account) external view returns (uint32);
    /// `account`'s checkpoint number `pos` (0 = oldest).
    function checkpoints(address account, uint32 pos) external view returns (Checkpoint memory);

    /// Governor only: slashes up to `amount` of `staker`'s stake and unbonding OPEN; returns
    /// what was slashed (less than `amount` when the staker holds less).
    function slash(address staker, uint256 amount, string calldata reason) external returns (uint256);
    /// All OPEN burned by slashing so far.
    function totalBurned() external view returns (uint256);
}
