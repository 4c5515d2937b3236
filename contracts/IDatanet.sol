// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

/// @title OpenLedger datanet module: curated, versioned datasets.
/// @notice Native system contract at 0x0000000000000000000000000000000000001003.
/// Rows live off chain in the content-addressed blob store; the chain holds each
/// contribution's row-set Merkle root and each version's root. A version root is the
/// root of a depth-32 incremental keccak Merkle tree whose leaves are the approved
/// contributions, `keccak256(abi.encodePacked(contributionId, rowsRoot, rowCount))`,
/// in approval order.
interface IDatanet {
    struct DatanetInfo {
        uint64 id;
        address owner;
        string name;
        string summary;
        string description;
        string[] tags;
        uint8 dataType;
        string licence;
        bool permissioned;
        uint64 versionCount;
        bytes32 latestRoot;
        uint64 rowCount;
        uint64 createdAt;
    }

    struct ContributionInfo {
        uint64 id;
        uint64 datanetId;
        address contributor;
        bytes32 rowsRoot;
        uint64 rowCount;
        uint64 byteSize;
        uint16 score;
        string metadataUri;
        /// 0 pending, 1 approved, 2 rejected
        uint8 status;
        string reason;
        /// the version this contribution created when approved, else 0
        uint64 version;
    }

    struct VersionInfo {
        uint64 version;
        bytes32 root;
        uint64 contributionId;
        uint64 rowCount;
        uint64 createdAt;
    }

    event DatanetCreated(uint64 indexed datanetId, address indexed owner, string name, bool permissioned);
    event ContributionSubmitted(
        uint64 indexed datanetId,
        uint64 indexed contributionId,
        address indexed contributor,
        bytes32 rowsRoot,
        uint64 rowCount,
        uint64 byteSize,
        uint16 score,
        string metadataUri
    );
    event ContributionApproved(
        uint64 indexed datanetId, uint64 indexed contributionId, uint64 version, bytes32 versionRoot, uint256 fee
    );
    event ContributionRejected(uint64 indexed datanetId, uint64 indexed contributionId, string reason);
    event AccessRequested(uint64 indexed datanetId, address indexed requester, string note);
    event AccessGranted(uint64 indexed datanetId, address indexed user);
    event AccessRevoked(uint64 indexed datanetId, address indexed user);

    /// dataType: 0 = text. Returns the new datanet id.
    function createDatanet(
        string calldata name,
        string calldata summary,
        string calldata description,
        string[] calldata tags,
        uint8 dataType,
        string calldata licence,
        bool permissioned
    ) external returns (uint64);

    /// score is the validation score in basis points (0..=10000). Each address may submit at most
    /// `max_daily_contributions` contributions and `max_daily_contribution_bytes` bytes to a
    /// datanet per UTC day (governed parameters).
    function contribute(
        uint64 datanetId,
        bytes32 rowsRoot,
        uint64 rowCount,
        uint64 byteSize,
        uint16 score,
        string calldata metadataUri
    ) external returns (uint64);

    /// Owner only. Appends the contribution to the datanet as a new immutable version and
    /// charges the owner the size-based fee (to the treasury). Refused, changing nothing, when
    /// the datanet's row count plus the contribution's would overflow 64 bits.
    function approve(uint64 contributionId) external returns (uint64 version, bytes32 versionRoot);
    /// Owner only.
    function reject(uint64 contributionId, string calldata reason) external;

    function requestAccess(uint64 datanetId, string calldata note) external;
    /// Owner only.
    function grantAccess(uint64 datanetId, address user) external;
    /// Owner only.
    function revokeAccess(uint64 datanetId, address user) external;

    function getDatanet(uint64 datanetId) external view returns (DatanetInfo memory);
    function getContribution(uint64 contributionId) external view returns (ContributionInfo memory);
    function getVersion(uint64 datanetId, uint64 version) external view returns (VersionInfo memory);
    function hasAccess(uint64 datanetId, address user) external view returns (bool);
    function datanetCount() external view returns (uint64);
    function contributionCount() external view returns (uint64);
    /// The fee `approve` would charge for a contribution of `byteSize` bytes.
    function approvalFee(uint64 byteSize) external view returns (uint256);
    /// Number of contributions submitted to a datanet.
    function contributionCountOf(uint64 datanetId) external view returns (uint64);
    /// Ids of a datanet's contributions in submission order, `limit` (at most 1000) from `offset`.
    function contributionsOf(uint64 datanetId, uint64 offset, uint64 limit) external view returns (uint64[] memory);
}
