// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

/// @title OpenLedger governor: OpenZeppelin 5.x `IGovernor` semantics and ABI, with a built-in
/// timelock (as GovernorTimelockCompound) and GovernorStorage's by-id calls.
/// @notice Native system contract at 0x0000000000000000000000000000000000001007. Every function
/// and event of OpenZeppelin's `IGovernor` has exactly its signature here, so code and tools
/// written against OZ's JSON ABI drive this governor unchanged.
///
/// - Clock: block timestamps (`CLOCK_MODE()` = "mode=timestamp"); `clock()` is uint48 seconds.
/// - Votes: staked OPEN, counted for the staker's delegatee (IStaking `getPastVotes`), read at
///   the proposal's snapshot = creation time + `votingDelay()`: stake added after the snapshot
///   cannot vote on it. Voting is open while snapshot < now <= deadline.
/// - Counting: `support=bravo&quorum=for,abstain` (0 = Against, 1 = For, 2 = Abstain); a
///   proposal succeeds when for > against and for + abstain >= quorum(snapshot) = quorum_bps of
///   all votes at the snapshot (the quorum fraction in force when the proposal was created;
///   the `quorum(timepoint)` view applies the fraction in force now).
/// - Threshold: the proposer needs `proposalThreshold()` votes one second before `propose`.
/// - Timelock: every proposal needs queuing (`proposalNeedsQueuing` is true): `queue` sets
///   eta = now + timelock delay; `execute` is accepted from eta until eta + grace period, after
///   which the proposal is Expired. Parameters: voting_delay_secs, voting_period_secs,
///   proposal_threshold, quorum_bps, timelock_delay_secs, timelock_grace_secs (IParams).
/// - Actions: 1 to proposal_max_actions calls, each to a native module other than the governor,
///   with calldata that decodes for that module (at most proposal_max_calldata_bytes) and a
///   value of 0: the governor holds no OPEN; spend from the treasury with IBank.treasuryGrant.
///   `execute` runs them in order with the governor as sender; if any fails, the whole
///   `execute` is refused and nothing is applied. `execute` accepts no OPEN (msg.value = 0).
/// - Cancel: only the proposer, only while Pending.
/// - castVoteBySig: EIP-712 domain {name: "OpenLedger Governor", version: "1", chainId,
///   verifyingContract: 0x…1007}, OZ's Ballot / ExtendedBallot types with the voter's nonce
///   (`nonces(voter)`, used up by each signed vote, so a signature cannot be replayed).
/// - Refusals are reverts whose message names the rule (not OZ's custom error selectors).
interface IGovernor {
    enum ProposalState {
        Pending,
        Active,
        Canceled,
        Defeated,
        Succeeded,
        Queued,
        Expired,
        Executed
    }

    event ProposalCreated(
        uint256 proposalId,
        address proposer,
        address[] targets,
        uint256[] values,
        string[] signatures,
        bytes[] calldatas,
        uint256 voteStart,
        uint256 voteEnd,
        string description
    );
    event ProposalQueued(uint256 proposalId, uint256 etaSeconds);
    event ProposalExecuted(uint256 proposalId);
    event ProposalCanceled(uint256 proposalId);
    event VoteCast(address indexed voter, uint256 proposalId, uint8 support, uint256 weight, string reason);
    event VoteCastWithParams(
        address indexed voter,
        uint256 proposalId,
        uint8 support,
        uint256 weight,
        string reason,
        bytes params
    );

    // IERC165 / IERC6372 / IERC5267
    function supportsInterface(bytes4 interfaceId) external view returns (bool);
    function clock() external view returns (uint48);
    function CLOCK_MODE() external view returns (string memory);
    function eip712Domain()
        external
        view
        returns (
            bytes1 fields,
            string memory name,
            string memory version,
            uint256 chainId,
            address verifyingContract,
            bytes32 salt,
            uint256[] memory extensions
        );

    // IGovernor
    function name() external view returns (string memory);
    function version() external view returns (string memory);
    function COUNTING_MODE() external view returns (string memory);
    function hashProposal(
        address[] memory targets,
        uint256[] memory values,
        bytes[] memory calldatas,
        bytes32 descriptionHash
    ) external pure returns (uint256);
    function getProposalId(
        address[] memory targets,
        uint256[] memory values,
        bytes[] memory calldatas,
        bytes32 descriptionHash
    ) external view returns (uint256);
    function state(uint256 proposalId) external view returns (ProposalState);
    function proposalThreshold() external view returns (uint256);
    function proposalSnapshot(uint256 proposalId) external view returns (uint256);
    function proposalDeadline(uint256 proposalId) external view returns (uint256);
    function proposalProposer(uint256 proposalId) external view returns (address);
    function proposalEta(uint256 proposalId) external view returns (uint256);
    function proposalNeedsQueuing(uint256 proposalId) external view returns (bool);
    function votingDelay() external view returns (uint256);
    function votingPeriod() external view returns (uint256);
    function quorum(uint256 timepoint) external view returns (uint256);
    function getVotes(address account, uint256 timepoint) external view returns (uint256);
    function getVotesWithParams(address account, uint256 timepoint, bytes memory params)
        external
        view
        returns (uint256);
    function hasVoted(uint256 proposalId, address account) external view returns (bool);

    function propose(
        address[] memory targets,
        uint256[] memory values,
        bytes[] memory calldatas,
        string memory description
    ) external returns (uint256 proposalId);
    function queue(
        address[] memory targets,
        uint256[] memory values,
        bytes[] memory calldatas,
        bytes32 descriptionHash
    ) external returns (uint256 proposalId);
    function execute(
        address[] memory targets,
        uint256[] memory values,
        bytes[] memory calldatas,
        bytes32 descriptionHash
    ) external payable returns (uint256 proposalId);
    function cancel(
        address[] memory targets,
        uint256[] memory values,
        bytes[] memory calldatas,
        bytes32 descriptionHash
    ) external returns (uint256 proposalId);
    function castVote(uint256 proposalId, uint8 support) external returns (uint256 balance);
    function castVoteWithReason(uint256 proposalId, uint8 support, string calldata reason)
        external
        returns (uint256 balance);
    function castVoteWithReasonAndParams(
        uint256 proposalId,
        uint8 support,
        string calldata reason,
        bytes memory params
    ) external returns (uint256 balance);
    function castVoteBySig(uint256 proposalId, uint8 support, address voter, bytes memory signature)
        external
        returns (uint256 balance);
    function castVoteWithReasonAndParamsBySig(
        uint256 proposalId,
        uint8 support,
        address voter,
        string calldata reason,
        bytes memory params,
        bytes memory signature
    ) external returns (uint256 balance);

    // Governor, GovernorCountingSimple, Nonces
    function BALLOT_TYPEHASH() external view returns (bytes32);
    function EXTENDED_BALLOT_TYPEHASH() external view returns (bytes32);
    function nonces(address owner) external view returns (uint256);
    function proposalVotes(uint256 proposalId)
        external
        view
        returns (uint256 againstVotes, uint256 forVotes, uint256 abstainVotes);

    // GovernorStorage: proposals by id and by index
    function queue(uint256 proposalId) external;
    function execute(uint256 proposalId) external payable;
    function cancel(uint256 proposalId) external;
    function proposalCount() external view returns (uint256);
    function proposalDetails(uint256 proposalId)
        external
        view
        returns (address[] memory targets, uint256[] memory values, bytes[] memory calldatas, bytes32 descriptionHash);
    function proposalDetailsAt(uint256 index)
        external
        view
        returns (
            uint256 proposalId,
            address[] memory targets,
            uint256[] memory values,
            bytes[] memory calldatas,
            bytes32 descriptionHash
        );

    // OpenLedger: the description text (OZ keeps it only in ProposalCreated).
    function proposalDescription(uint256 proposalId) external view returns (string memory);
}
