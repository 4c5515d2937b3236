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

    function getBaseModel(uint64 modelId) external view returns (BaseModel memory);
    function getAdapter(uint64 adapterId) external view returns (Adapter memory);
    function baseModelCount() external view returns (uint64);
    function adapterCount() external view returns (uint64);
}
