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

    /// The adapter registered under `name` (0: none).
    function adapterByName(string calldata name) external view returns (uint64);
    /// The parents of a merged adapter (empty for a trained one).
    function parentsOf(uint64 adapterId) external view returns (uint64[] memory);

    function getBaseModel(uint64 modelId) external view returns (BaseModel memory);
    function getAdapter(uint64 adapterId) external view returns (Adapter memory);
    function baseModelCount() external view returns (uint64);
    function adapterCount() external view returns (uint64);
}
