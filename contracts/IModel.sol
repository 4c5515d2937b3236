// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

/// @title OpenLedger model module: base models and fine-tuned adapters with provenance.
/// @notice Native system contract at 0x0000000000000000000000000000000000001004.
interface IModel {
    struct BaseModel {
        uint64 id;
        address owner;
        bytes32 modelHash;
        string name;
        uint64 registeredAt;
    }

    struct Adapter {
        uint64 id;
        uint64 baseModelId;
        address owner;
        string name;
        uint64[] datanetIds;
        uint64[] datanetVersions;
        bytes32[] datanetRoots;
        bytes32 trainingConfigHash;
        bytes32 adapterHash;
        bytes32 attributionIndexRoot;
        uint64 registeredAt;
    }

    /// A proposal for a specialised model (see `proposeModel`). Status: 0 Pending (awaiting
    /// governance), 1 Approved (bounty reserved), 2 Fulfilled (bounty paid), 3 Expired.
    struct ModelProposal {
        uint64 id;
        address proposer;
        string name;
        string description;
        uint64 datanetId;
        uint16 targetScoreBps;
        uint256 escrow;
        uint256 bounty;
        uint8 status;
        uint64 createdAt;
        uint64 approvedAt;
        uint64 deadline;
        uint64 adapterId;
    }

    event ModelProposed(
        uint64 indexed proposalId, address indexed proposer, uint64 indexed datanetId, uint16 targetScoreBps, uint256 escrow
    );
    event ModelProposalApproved(uint64 indexed proposalId, uint256 bounty, uint64 deadline);
    event ModelBountyPaid(uint64 indexed proposalId, uint64 indexed adapterId, address indexed owner, uint256 bounty);
    /// `refunded` went back to the proposer, `slashed` to the treasury or the burn, `bounty` back to the treasury.
    event ModelProposalClosed(uint64 indexed proposalId, uint8 status, uint256 refunded, uint256 slashed, uint256 bounty);

    event AdapterMerged(uint64 indexed adapterId, uint64[] parentIds, bytes32 mergeConfigHash);
    event BaseModelRegistered(uint64 indexed modelId, address indexed owner, bytes32 modelHash, string name);
    event AdapterRegistered(
        uint64 indexed adapterId,
        uint64 indexed baseModelId,
        address indexed owner,
        bytes32 adapterHash,
        bytes32 trainingConfigHash,
        bytes32 attributionIndexRoot
    );

    function registerBaseModel(bytes32 modelHash, string calldata name) external returns (uint64);

    /// Adapter names are unique on chain (the OpenAI API's `model` field names an adapter by
    /// name or by `adapter-<id>`): 1 to 128 characters of A-Z a-z 0-9 - _ . and not all digits.
    /// Registers an adapter trained on the given datanet versions (parallel arrays). The chain
    /// records each version's root; the sender needs access to every permissioned datanet.
    function registerAdapter(
        uint64 baseModelId,
        string calldata name,
        uint64[] calldata datanetIds,
        uint64[] calldata datanetVersions,
        bytes32 trainingConfigHash,
        bytes32 adapterHash,
        bytes32 attributionIndexRoot
    ) external returns (uint64);

    /// Registers an adapter merged from registered adapters of the same base model (linear, TIES,
    /// DARE...): it inherits the union of its parents' datanet versions, so their contributors keep
    /// earning from it, and the first parent's attribution index root. `mergeConfigHash` commits to
    /// the method, weights and parameters. Inheriting a permissioned datanet needs an access grant
    /// to it, as `registerAdapter` does.
    function registerMergedAdapter(
        string calldata name,
        uint64[] calldata parentIds,
        bytes32 mergeConfigHash,
        bytes32 adapterHash
    ) external returns (uint64);

    /// Proposes a specialised model trained on datanet `datanetId` that should reach an RLHF
    /// evaluation of `targetScoreBps` (0..=10000, the mean consensus score of the RLHF rounds on
    /// its receipts, see IRlhf.adapterScore). The OPEN sent (at least the governed
    /// `model_proposal_min_escrow`) is escrowed. A proposal governance does not approve within
    /// `model_proposal_approval_secs` expires with its escrow refunded in full.
    function proposeModel(string calldata name, string calldata description, uint64 datanetId, uint16 targetScoreBps)
        external
        payable
        returns (uint64);

    /// Governor only: approves a pending proposal and reserves `bounty` from the treasury into
    /// this module; the bounty is payable until `model_proposal_duration_secs` from now.
    function approveModelProposal(uint64 proposalId, uint256 bounty) external;

    /// Pays an approved proposal's bounty to the owner of `adapterId` and refunds the proposer's
    /// escrow, when the adapter was registered after the approval, lists the proposal's datanet
    /// in its provenance, has at least `model_proposal_min_rated_rounds` non-void RLHF rounds and
    /// a mean consensus score >= the target. Anyone may call it.
    function claimModelBounty(uint64 proposalId, uint64 adapterId) external;

    /// Closes a proposal past its window: pending past the approval window (escrow refunded in
    /// full), or approved past its deadline without a qualifying adapter (bounty back to the
    /// treasury; `model_proposal_slash_bps` of the escrow slashed, the rest refunded). Anyone may call it.
    function expireModelProposal(uint64 proposalId) external;

    function getModelProposal(uint64 proposalId) external view returns (ModelProposal memory);
    function modelProposalCount() external view returns (uint64);

    /// The adapter registered under `name` (0: none).
    function adapterByName(string calldata name) external view returns (uint64);
    /// The parents of a merged adapter (empty for a trained one).
    function parentsOf(uint64 adapterId) external view returns (uint64[] memory);

    function getBaseModel(uint64 modelId) external view returns (BaseModel memory);
    function getAdapter(uint64 adapterId) external view returns (Adapter memory);
    function baseModelCount() external view returns (uint64);
    function adapterCount() external view returns (uint64);
}
