// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

/// @title OpenLedger AI agent staking.
/// @notice Native system contract at 0x0000000000000000000000000000000000001009.
///
/// Every account that pays for inference (the `caller` of an inference receipt) may use up to
/// the governed `agent_free_tokens_per_day` tokens (prompt + completion) per UTC day (block
/// timestamp / 86400). Beyond it, recording an inference for that caller is refused unless the
/// caller is a registered agent with at least `agent_min_stake` staked here. Agent stake sits
/// in this module's balance: `unstakeAgent` moves it to unbonding, withdrawable after
/// `agent_unstake_cooldown_secs`. The governor (0x…1007) may slash a misbehaving agent, from
/// its stake first and then from its unbonding OPEN, to the treasury or burned as the governed
/// `slash_destination` says.
interface IAgent {
    struct Agent {
        bool registered;
        string metadata;
        uint256 stake;
        uint256 unbonding;
        uint64 releaseTime;
        uint64 registeredAt;
    }

    event AgentRegistered(address indexed agent, string metadata);
    event AgentStaked(address indexed agent, uint256 amount, uint256 totalStake);
    event AgentUnstakeRequested(address indexed agent, uint256 amount, uint64 releaseTime);
    event AgentWithdrawn(address indexed agent, uint256 amount);
    event AgentSlashed(address indexed agent, uint256 amount, bool burned, string reason);

    /// Registers the sender as an agent (or updates its metadata: a URI or description).
    function registerAgent(string calldata metadata) external;
    /// Adds the OPEN sent to the sender's agent stake (registered agents only).
    function stakeAgent() external payable;
    /// Moves `amount` of the sender's agent stake to unbonding.
    function unstakeAgent(uint256 amount) external;
    /// Withdraws the sender's unbonded agent stake once released.
    function withdrawAgentStake() external returns (uint256);
    /// Governor only: slashes up to `amount`; returns what was slashed.
    function slashAgent(address agent, uint256 amount, string calldata reason) external returns (uint256);

    function getAgent(address agent) external view returns (Agent memory);
    /// Tokens `account` used today (UTC day `day`), the free volume, and whether its agent
    /// stake lets it go beyond the free volume.
    function usageOf(address account)
        external
        view
        returns (uint64 day, uint64 tokensToday, uint64 freeTokensPerDay, bool staked);
    /// All OPEN this module holds for agents: every stake plus every unbonding amount.
    function totalAgentStake() external view returns (uint256);
}
