// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

/// @title OpenLedger inference module: receipts with attribution and fee settlement.
/// @notice Native system contract at 0x0000000000000000000000000000000000001005.
/// Callers prepay credit with `deposit`; a serving operator records a receipt that moves
/// the fee from the caller's credit (the caller itself, or an operator within its allowance)
/// into escrow; `settle` splits escrowed fees by the governed split: treasury, model owner,
/// stakers pool and contributors in proportion to their attribution weights. The
/// unattributed rest of the contributors' share goes to the model owner.
interface IInference {
    /// weightPpm: parts per million of the attributed output (all weights sum to <= 1_000_000).
    struct Attribution {
        uint64 contributionId;
        uint32 weightPpm;
    }

    struct Receipt {
        uint64 id;
        uint64 adapterId;
        address caller;
        address operator;
        uint32 promptTokens;
        uint32 completionTokens;
        uint256 fee;
        bytes32 attributionRoot;
        Attribution[] top;
        bool settled;
        uint64 recordedAt;
    }

    /// One served inference in a `recordInferences` batch. `requestId` is the serving
    /// operator's unique id for the request (non-zero); the same operator recording the same id
    /// twice is skipped, so an operator that restarts can resubmit its journal without charging
    /// anyone twice. Ids are scoped by operator: another account recording an id first does not
    /// make the operator's record a duplicate.
    struct InferenceRecord {
        bytes32 requestId;
        address caller;
        uint64 adapterId;
        uint32 promptTokens;
        uint32 completionTokens;
        Attribution[] top;
        bytes32 attributionRoot;
    }

    event Deposited(address indexed account, uint256 amount);
    event CreditWithdrawn(address indexed account, uint256 amount);
    event OperatorApproved(address indexed account, address indexed operator, uint256 allowance);
    event InferenceRecorded(
        uint64 indexed receiptId,
        uint64 indexed adapterId,
        address indexed caller,
        uint32 promptTokens,
        uint32 completionTokens,
        uint256 fee,
        bytes32 attributionRoot
    );
    /// A record of a `recordInferences` batch whose request id was already recorded (skipped).
    event InferenceDuplicate(bytes32 indexed requestId, uint64 indexed receiptId);
    event InferenceRequest(bytes32 indexed requestId, uint64 indexed receiptId);
    /// `stakers` is what reached the stakers pool: while RLHF validators exist, the governed
    /// `rlhf_fee_bps` of the stakers' share goes to the RLHF reward pool instead (logged as
    /// IRlhf.RewardsFunded with this receipt id), so the four parts plus that slice sum to the fee.
    event FeeSettled(
        uint64 indexed receiptId, uint256 platform, uint256 modelOwner, uint256 stakers, uint256 contributors
    );
    event ContributorPaid(
        uint64 indexed receiptId, uint64 indexed contributionId, address indexed contributor, uint256 amount
    );

    function deposit() external payable;
    function withdraw(uint256 amount) external;
    function approveOperator(address operator, uint256 allowance) external;

    /// Records an inference paid from `caller`'s credit. `top` is the committed top-k of the
    /// attribution list; `attributionRoot` the Merkle root of the full list.
    function recordInference(
        address caller,
        uint64 adapterId,
        uint32 promptTokens,
        uint32 completionTokens,
        Attribution[] calldata top,
        bytes32 attributionRoot
    ) external returns (uint64);

    /// Records many inferences in one transaction (at most `maxSettleBatch`), each as
    /// `recordInference` would, from its caller's credit within the sender's allowance. Records
    /// whose `requestId` the sender recorded before are skipped (event `InferenceDuplicate`); any other
    /// invalid record refuses the whole batch. The new receipts get consecutive ids from
    /// `firstReceiptId`; `recorded` counts them. With `settleNow` they are settled at once.
    function recordInferences(InferenceRecord[] calldata records, bool settleNow)
        external
        returns (uint64 firstReceiptId, uint32 recorded);

    /// Settles every listed receipt that is not settled yet.
    function settle(uint64[] calldata receiptIds) external returns (uint256 settledFees);

    function creditOf(address account) external view returns (uint256);
    function allowance(address account, address operator) external view returns (uint256);
    function getReceipt(uint64 receiptId) external view returns (Receipt memory);
    function receiptCount() external view returns (uint64);
    /// The receipt `operator` recorded for its request id (0: none).
    function receiptOfRequest(address operator, bytes32 requestId) external view returns (uint64);
    function quote(uint32 promptTokens, uint32 completionTokens) external view returns (uint256);
}
