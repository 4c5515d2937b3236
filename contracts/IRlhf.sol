// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

/// @title OpenLedger RLHF validators: commit-reveal ratings of served outputs.
/// @notice Native system contract at 0x0000000000000000000000000000000000001008.
///
/// Validators are stakers (staking module, 0x…1002) with at least the governed `rlhf_min_stake`
/// who `joinValidators`. Anyone opens a round on an inference receipt (`receiptA`), optionally
/// paired with a second receipt (`receiptB`, 0 for none) answering the same prompt. The opener
/// commits to the texts being rated: `promptHash` = keccak256(prompt text), `outputHashA/B` =
/// keccak256(response text); receipts themselves hold only commitments, so the texts travel off
/// chain (e.g. in the operator's or the opener's transcript) and are checked against these
/// hashes when a preference dataset is exported.
///
/// A round has a commit window (`rlhf_commit_secs` from opening) and then a reveal window
/// (`rlhf_reveal_secs`). A validator commits
/// `keccak256(abi.encode(roundId, validator, scoreBps, preferred, salt))` (see
/// `commitmentOf`), then reveals the same values: a reveal without a commit, or one that does
/// not match it, is refused, so nobody can copy the others' ratings. `scoreBps` is 0..=10000;
/// `preferred` is 0 (no preference), 1 (A over B) or 2 (B over A), and must be 0 in a round
/// without `receiptB`.
///
/// `finalizeRound` (anyone, after the reveal window): with fewer than `rlhf_min_reveals`
/// reveals the round is void (no rewards, no consensus, no deviation slashes). Otherwise the
/// consensus score is the median of the revealed scores (the lower median for an even count)
/// and the consensus preference the strict majority of the non-zero preferences (none on a
/// tie). A validator deviates when its score is more than `rlhf_tolerance_bps` from the
/// consensus, or its preference is the opposite of the consensus preference: it is slashed
/// `rlhf_slash_bps` of the stake it had when it committed (staking slash: to the treasury or
/// burned, as governed). A validator agrees when it does not deviate and, if the round decided
/// a preference, voted for it: the agreeing validators share `rlhf_round_reward_bps` of the
/// reward pool equally. A validator that committed and never revealed is slashed
/// `rlhf_no_reveal_slash_bps` of its stake at commit, void round or not (so waiting to see the
/// others' reveals and staying silent does not pay).
///
/// The reward pool is this module's balance: `rlhf_fee_bps` of the stakers' share of every
/// settled inference fee is routed here while at least one validator has joined (none is taken
/// otherwise), and anyone may add to it with `fundRewards`.
///
/// A decided pair round records a preference: (promptHash, chosen receipt, rejected receipt),
/// readable with `getPreference`; `openledger rlhf export` turns them into {prompt, chosen,
/// rejected} JSONL given the texts. Every non-void round also adds its consensus score to
/// receipt A's adapter (`adapterScore`), which model proposals use as their evaluation.
interface IRlhf {
    /// Round status.
    /// 0 Open (commit or reveal window), 1 Finalized, 2 Void (too few reveals).
    struct Round {
        uint64 id;
        address opener;
        uint64 receiptA;
        uint64 receiptB;
        uint64 adapterId;
        bytes32 promptHash;
        bytes32 outputHashA;
        bytes32 outputHashB;
        uint64 commitEnd;
        uint64 revealEnd;
        uint32 commits;
        uint32 reveals;
        uint8 status;
        uint16 consensusScoreBps;
        uint8 consensusPreferred;
    }

    struct Rating {
        bytes32 commitment;
        uint256 stakeAtCommit;
        bool revealed;
        uint16 scoreBps;
        uint8 preferred;
    }

    struct Preference {
        uint64 roundId;
        bytes32 promptHash;
        uint64 chosenReceipt;
        uint64 rejectedReceipt;
        bytes32 chosenOutputHash;
        bytes32 rejectedOutputHash;
    }

    event ValidatorJoined(address indexed validator);
    event ValidatorLeft(address indexed validator);
    event RoundOpened(
        uint64 indexed roundId,
        uint64 indexed receiptA,
        uint64 indexed receiptB,
        bytes32 promptHash,
        uint64 commitEnd,
        uint64 revealEnd
    );
    event RatingCommitted(uint64 indexed roundId, address indexed validator, bytes32 commitment);
    event RatingRevealed(uint64 indexed roundId, address indexed validator, uint16 scoreBps, uint8 preferred);
    event RoundFinalized(
        uint64 indexed roundId, uint8 status, uint16 consensusScoreBps, uint8 consensusPreferred, uint32 reveals
    );
    event ValidatorRewarded(uint64 indexed roundId, address indexed validator, uint256 amount);
    /// A deviating (`revealed`) or silent (not revealed) validator was slashed.
    event ValidatorSlashed(uint64 indexed roundId, address indexed validator, uint256 amount, bool revealed);
    event PreferenceRecorded(
        uint64 indexed index, uint64 indexed roundId, uint64 chosenReceipt, uint64 rejectedReceipt
    );
    /// OPEN added to the reward pool (`receiptId` 0: by `fundRewards`).
    event RewardsFunded(uint64 indexed receiptId, address indexed from, uint256 amount);

    /// Joins the validator set (needs stake >= rlhf_min_stake in the staking module).
    function joinValidators() external;
    function leaveValidators() external;

    /// Opens a round on `receiptA` (and `receiptB`, 0 for a score-only round); each receipt
    /// pair is rated once. Returns the round id.
    function openRound(
        uint64 receiptA,
        uint64 receiptB,
        bytes32 promptHash,
        bytes32 outputHashA,
        bytes32 outputHashB
    ) external returns (uint64);

    function commitRating(uint64 roundId, bytes32 commitment) external;
    function revealRating(uint64 roundId, uint16 scoreBps, uint8 preferred, bytes32 salt) external;
    function finalizeRound(uint64 roundId) external;
    /// Adds the OPEN sent to the reward pool.
    function fundRewards() external payable;

    function commitmentOf(uint64 roundId, address validator, uint16 scoreBps, uint8 preferred, bytes32 salt)
        external
        pure
        returns (bytes32);
    function getRound(uint64 roundId) external view returns (Round memory);
    function ratingOf(uint64 roundId, address validator) external view returns (Rating memory);
    /// The validators that committed in a round, in commit order.
    function validatorsOf(uint64 roundId) external view returns (address[] memory);
    function roundCount() external view returns (uint64);
    function isValidator(address account) external view returns (bool);
    function validatorCount() external view returns (uint64);
    function rewardPool() external view returns (uint256);
    function preferenceCount() external view returns (uint64);
    /// Preference `index` (1-based).
    function getPreference(uint64 index) external view returns (Preference memory);
    /// Up to `count` preferences from index `from` (1-based; at most 256 per call).
    function preferences(uint64 from, uint64 count) external view returns (Preference[] memory);
    /// Non-void rounds on the adapter's receipts and the mean of their consensus scores.
    function adapterScore(uint64 adapterId) external view returns (uint64 rounds, uint16 meanScoreBps);
}
