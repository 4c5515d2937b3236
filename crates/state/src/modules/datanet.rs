//! Datanets: creation, contributions (row-set Merkle roots; rows live off chain), owner
//! approval into immutable versions, rejection with a reason, and access control for
//! permissioned datanets.
//!
//! Keys (ids are 8-byte BE): `d/n` → datanet count; `d/d`++id → `DatanetInfo`; `d/f`++id → the
//! version tree's frontier; `d/v`++id++version → `VersionInfo`; `d/c` → contribution count;
//! `d/k`++cid → `ContributionInfo`; `d/a`++cid → its compact head (`head.rs`, what paying for an
//! inference reads); `d/h`++id++rowsRoot → cid (exact-duplicate guard);
//! `d/g`++id++address → access granted; `d/q`++id++address → access requested;
//! `d/m`++id → the datanet's contribution count; `d/l`++id++n → its n-th contribution's id
//! (0-based, submission order); `d/u`++id++address → `StoredQuota` (today's use of the daily
//! contribution quota).
//!
//! Sums of caller-chosen numbers (row counts, byte sizes, fees per KiB) are checked: one that
//! would overflow is refused with a reason, never wrapped.

use crate::{
    codec,
    error::{ExecResult, StorageError},
    kv::StateRead,
    Ctx, ExecError,
};
use alloy_primitives::{Address, U256};
use alloy_sol_types::{sol, SolCall, SolValue};
use openledger_types::{
    abi::IDatanet::{self, ContributionInfo, DatanetInfo, VersionInfo},
    merkle,
    modules::{DATANET, TREASURY},
    params::BPS,
};

mod head;
pub use head::{contribution_head, put_contribution, ContributionHead};

/// Contribution status: waiting for the owner.
pub const PENDING: u8 = 0;
/// Contribution status: part of a version.
pub const APPROVED: u8 = 1;
/// Contribution status: refused by the owner.
pub const REJECTED: u8 = 2;
/// Highest known data type (0 = text, 1 = prompt/response records).
pub const MAX_DATA_TYPE: u8 = 1;

sol! {
    /// Stored frontier of a datanet's version tree.
    struct StoredFrontier {
        uint64 count;
        bytes32[] branch;
    }

    /// What one address submitted to one datanet on one UTC day.
    struct StoredQuota {
        uint64 day;
        uint32 contributions;
        uint64 bytes;
    }
}

/// Seconds in the day the contribution quota counts over.
pub const QUOTA_DAY_SECS: u64 = 86_400;

/// Most ids one `contributionsOf` call returns.
pub const MAX_PAGE: u64 = 1000;

fn k(prefix: &[u8], id: u64, rest: &[u8]) -> Vec<u8> {
    codec::key(&[prefix, &id.to_be_bytes(), rest])
}

/// Reads a datanet.
pub fn datanet(state: &dyn StateRead, id: u64) -> ExecResult<DatanetInfo> {
    codec::get_sol::<DatanetInfo>(state, &k(b"d/d", id, &[]))?
        .ok_or_else(|| ExecError::NotFound(format!("datanet {id}")))
}

/// Reads a contribution.
pub fn contribution(state: &dyn StateRead, id: u64) -> ExecResult<ContributionInfo> {
    codec::get_sol::<ContributionInfo>(state, &k(b"d/k", id, &[]))?
        .ok_or_else(|| ExecError::NotFound(format!("contribution {id}")))
}

/// Reads a version.
pub fn version(state: &dyn StateRead, id: u64, v: u64) -> ExecResult<VersionInfo> {
    codec::get_sol::<VersionInfo>(state, &k(b"d/v", id, &v.to_be_bytes()))?
        .ok_or_else(|| ExecError::NotFound(format!("version {v} of datanet {id}")))
}

/// Number of datanets created.
pub fn datanet_count(state: &dyn StateRead) -> Result<u64, StorageError> {
    codec::get_u64(state, b"d/n")
}

/// Number of contributions submitted to datanet `id`.
pub fn contribution_count_of(state: &dyn StateRead, id: u64) -> Result<u64, StorageError> {
    codec::get_u64(state, &k(b"d/m", id, &[]))
}

/// Ids of datanet `id`'s contributions `offset..offset+limit` in submission order (at most
/// [`MAX_PAGE`]).
pub fn contribution_ids(
    state: &dyn StateRead,
    id: u64,
    offset: u64,
    limit: u64,
) -> Result<Vec<u64>, StorageError> {
    let end = contribution_count_of(state, id)?.min(offset.saturating_add(limit.min(MAX_PAGE)));
    (offset..end)
        .map(|n| codec::get_u64(state, &k(b"d/l", id, &n.to_be_bytes())))
        .collect()
}

/// Charges one contribution of `bytes` to `who`'s quota on datanet `id` for the day of `now`,
/// or says how much is left.
fn charge_quota(ctx: &mut Ctx, id: u64, who: Address, bytes: u64, now: u64) -> ExecResult<()> {
    let key = k(b"d/u", id, who.as_slice());
    let day = now / QUOTA_DAY_SECS;
    let mut q = codec::get_sol::<StoredQuota>(&ctx.state, &key)?
        .filter(|q| q.day == day)
        .unwrap_or(StoredQuota {
            day,
            contributions: 0,
            bytes: 0,
        });
    let p = ctx.params;
    if q.contributions >= p.max_daily_contributions {
        return Err(ExecError::Invalid(format!(
            "daily quota reached: {who} already made {} contributions to datanet {id} today (limit {}); try again after the UTC day ends",
            q.contributions, p.max_daily_contributions
        )));
    }
    let used = q.bytes.checked_add(bytes).ok_or_else(|| {
        ExecError::Invalid(format!(
            "daily quota reached: {bytes} more bytes on top of the {} used today overflows a 64-bit byte count",
            q.bytes
        ))
    })?;
    if used > p.max_daily_contribution_bytes {
        return Err(ExecError::Invalid(format!(
            "daily quota reached: {bytes} more bytes would exceed {who}'s {} bytes a day on datanet {id} ({} used today)",
            p.max_daily_contribution_bytes, q.bytes
        )));
    }
    q.contributions += 1; // below max_daily_contributions (a u32), checked above
    q.bytes = used;
    codec::put_sol(&mut ctx.state, key, &q);
    Ok(())
}

/// Whether `user` may contribute to and train on datanet `d`.
pub fn has_access(
    state: &dyn StateRead,
    d: &DatanetInfo,
    user: &Address,
) -> Result<bool, StorageError> {
    Ok(!d.permissioned
        || d.owner == *user
        || state.get(&k(b"d/g", d.id, user.as_slice()))?.is_some())
}

pub use merkle::version_leaf;

/// The fee `approve` charges for a contribution of `bytes` bytes; refused when the governed
/// per-KiB fee times the size overflows.
pub fn approval_fee(params: &openledger_types::Params, bytes: u64) -> ExecResult<U256> {
    params
        .approval_fee_per_kib
        .checked_mul(U256::from(bytes.div_ceil(1024)))
        .and_then(|f| f.checked_add(params.approval_fee_base))
        .ok_or_else(|| {
            ExecError::Invalid(format!(
                "the approval fee for {bytes} bytes overflows 256 bits at {} wei per KiB",
                params.approval_fee_per_kib
            ))
        })
}

fn owned(ctx: &Ctx, id: u64) -> ExecResult<DatanetInfo> {
    let d = datanet(&ctx.state, id)?;
    if d.owner != ctx.sender {
        return Err(ExecError::Unauthorized(format!(
            "only the owner {} of datanet {id} may do this",
            d.owner
        )));
    }
    Ok(d)
}

fn pending_contribution(ctx: &Ctx, cid: u64) -> ExecResult<(ContributionInfo, DatanetInfo)> {
    let c = contribution(&ctx.state, cid)?;
    let d = owned(ctx, c.datanetId)?;
    if c.status != PENDING {
        let what = if c.status == APPROVED {
            "approved"
        } else {
            "rejected"
        };
        return Err(ExecError::Invalid(format!(
            "contribution {cid} is already {what}"
        )));
    }
    Ok((c, d))
}

/// Executes a datanet call.
pub fn call(ctx: &mut Ctx, call: IDatanet::IDatanetCalls) -> ExecResult<Vec<u8>> {
    use IDatanet::IDatanetCalls as C;
    let now = ctx.env.timestamp;
    Ok(match call {
        C::createDatanet(c) => {
            if c.name.trim().is_empty() {
                return Err(ExecError::Invalid("datanet name is empty".into()));
            }
            for (what, s) in [
                ("name", &c.name),
                ("summary", &c.summary),
                ("description", &c.description),
                ("licence", &c.licence),
            ] {
                ctx.check_len(what, s)?;
            }
            ctx.check_len("tags", &c.tags.concat())?;
            if c.dataType > MAX_DATA_TYPE {
                return Err(ExecError::Invalid(format!(
                    "unknown data type {} (0 = text, 1 = prompt/response)",
                    c.dataType
                )));
            }
            let id = codec::next_id(&mut ctx.state, b"d/n")?;
            let info = DatanetInfo {
                id,
                owner: ctx.sender,
                name: c.name,
                summary: c.summary,
                description: c.description,
                tags: c.tags,
                dataType: c.dataType,
                licence: c.licence,
                permissioned: c.permissioned,
                versionCount: 0,
                latestRoot: merkle::Frontier::default().root(),
                rowCount: 0,
                createdAt: now,
            };
            codec::put_sol(&mut ctx.state, k(b"d/d", id, &[]), &info);
            ctx.emit(
                DATANET,
                &IDatanet::DatanetCreated {
                    datanetId: id,
                    owner: info.owner,
                    name: info.name,
                    permissioned: info.permissioned,
                },
            );
            IDatanet::createDatanetCall::abi_encode_returns(&id)
        }
        C::contribute(c) => {
            let d = datanet(&ctx.state, c.datanetId)?;
            if !has_access(&ctx.state, &d, &ctx.sender)? {
                return Err(ExecError::Unauthorized(format!(
                    "datanet {} is permissioned; request access first",
                    d.id
                )));
            }
            if c.rowCount == 0 || c.byteSize == 0 || c.rowsRoot.is_zero() {
                return Err(ExecError::Invalid(
                    "a contribution needs a non-zero rows root, row count and byte size".into(),
                ));
            }
            if c.score > BPS || c.score < ctx.params.min_contribution_score {
                return Err(ExecError::Invalid(format!(
                    "validation score {} is outside {}..={BPS}",
                    c.score, ctx.params.min_contribution_score
                )));
            }
            ctx.check_len("metadata URI", &c.metadataUri)?;
            if d.rowCount.checked_add(c.rowCount).is_none() {
                return Err(ExecError::Invalid(format!(
                    "a contribution of {} rows could never be approved: datanet {} already holds {} rows and the sum overflows a 64-bit row count",
                    c.rowCount, d.id, d.rowCount
                )));
            }
            let dup = k(b"d/h", d.id, c.rowsRoot.as_slice());
            if let Some(first) = ctx.state.get(&dup)? {
                let first = u64::from_be_bytes(first.as_slice().try_into().unwrap_or_default());
                return Err(ExecError::Invalid(format!(
                    "the same rows were already contributed to datanet {} as contribution {first}",
                    d.id
                )));
            }
            charge_quota(ctx, d.id, ctx.sender, c.byteSize, now)?;
            let cid = codec::next_id(&mut ctx.state, b"d/c")?;
            ctx.state.put(dup, cid.to_be_bytes().to_vec());
            let n = contribution_count_of(&ctx.state, d.id)?;
            codec::put_u64(&mut ctx.state, k(b"d/l", d.id, &n.to_be_bytes()), cid);
            let count = n
                .checked_add(1)
                .ok_or_else(|| ExecError::Invalid(format!("datanet {} is full", d.id)))?;
            codec::put_u64(&mut ctx.state, k(b"d/m", d.id, &[]), count);
            let info = ContributionInfo {
                id: cid,
                datanetId: d.id,
                contributor: ctx.sender,
                rowsRoot: c.rowsRoot,
                rowCount: c.rowCount,
                byteSize: c.byteSize,
                score: c.score,
                metadataUri: c.metadataUri.clone(),
                status: PENDING,
                reason: String::new(),
                version: 0,
            };
            put_contribution(&mut ctx.state, &info);
            ctx.emit(
                DATANET,
                &IDatanet::ContributionSubmitted {
                    datanetId: d.id,
                    contributionId: cid,
                    contributor: ctx.sender,
                    rowsRoot: c.rowsRoot,
                    rowCount: c.rowCount,
                    byteSize: c.byteSize,
                    score: c.score,
                    metadataUri: c.metadataUri,
                },
            );
            IDatanet::contributeCall::abi_encode_returns(&cid)
        }
        C::approve(c) => {
            let (mut contrib, mut d) = pending_contribution(ctx, c.contributionId)?;
            // Refuse before anything moves: a contribution whose rows the datanet's row count
            // cannot hold stays pending (the owner may reject it).
            let rows = d.rowCount.checked_add(contrib.rowCount).ok_or_else(|| {
                ExecError::Invalid(format!(
                    "approving contribution {} would overflow datanet {}'s row count: {} + {} rows exceeds 2^64 - 1; reject it instead",
                    contrib.id, d.id, d.rowCount, contrib.rowCount
                ))
            })?;
            let version = d.versionCount.checked_add(1).ok_or_else(|| {
                ExecError::Invalid(format!("datanet {} has no version number left", d.id))
            })?;
            let fee = approval_fee(ctx.params, contrib.byteSize)?;
            ctx.transfer(d.owner, TREASURY, fee)?;
            let fkey = k(b"d/f", d.id, &[]);
            let stored = codec::get_sol::<StoredFrontier>(&ctx.state, &fkey)?;
            let mut frontier = stored
                .map(|s| merkle::Frontier {
                    count: s.count,
                    branch: s.branch,
                })
                .unwrap_or_default();
            frontier
                .push(version_leaf(contrib.id, contrib.rowsRoot, contrib.rowCount))
                .map_err(|e| ExecError::Invalid(e.into()))?;
            let root = frontier.root();
            codec::put_sol(
                &mut ctx.state,
                fkey,
                &StoredFrontier {
                    count: frontier.count,
                    branch: frontier.branch,
                },
            );
            d.versionCount = version;
            d.latestRoot = root;
            d.rowCount = rows;
            let v = VersionInfo {
                version: d.versionCount,
                root,
                contributionId: contrib.id,
                rowCount: d.rowCount,
                createdAt: now,
            };
            codec::put_sol(
                &mut ctx.state,
                k(b"d/v", d.id, &v.version.to_be_bytes()),
                &v,
            );
            contrib.status = APPROVED;
            contrib.version = v.version;
            put_contribution(&mut ctx.state, &contrib);
            codec::put_sol(&mut ctx.state, k(b"d/d", d.id, &[]), &d);
            ctx.emit(
                DATANET,
                &IDatanet::ContributionApproved {
                    datanetId: d.id,
                    contributionId: contrib.id,
                    version: v.version,
                    versionRoot: root,
                    fee,
                },
            );
            IDatanet::approveCall::abi_encode_returns(&IDatanet::approveReturn {
                version: v.version,
                versionRoot: root,
            })
        }
        C::reject(c) => {
            let (mut contrib, _) = pending_contribution(ctx, c.contributionId)?;
            ctx.check_len("reason", &c.reason)?;
            if c.reason.trim().is_empty() {
                return Err(ExecError::Invalid("a rejection needs a reason".into()));
            }
            contrib.status = REJECTED;
            contrib.reason = c.reason.clone();
            put_contribution(&mut ctx.state, &contrib);
            ctx.emit(
                DATANET,
                &IDatanet::ContributionRejected {
                    datanetId: contrib.datanetId,
                    contributionId: contrib.id,
                    reason: c.reason,
                },
            );
            Vec::new()
        }
        C::requestAccess(c) => {
            let d = datanet(&ctx.state, c.datanetId)?;
            if has_access(&ctx.state, &d, &ctx.sender)? {
                return Err(ExecError::Invalid(format!(
                    "you already have access to datanet {}",
                    d.id
                )));
            }
            ctx.check_len("note", &c.note)?;
            ctx.state
                .put(k(b"d/q", d.id, ctx.sender.as_slice()), vec![1]);
            ctx.emit(
                DATANET,
                &IDatanet::AccessRequested {
                    datanetId: d.id,
                    requester: ctx.sender,
                    note: c.note,
                },
            );
            Vec::new()
        }
        C::grantAccess(c) => {
            let d = owned(ctx, c.datanetId)?;
            if !d.permissioned {
                return Err(ExecError::Invalid(format!(
                    "datanet {} is public; everyone has access",
                    d.id
                )));
            }
            ctx.state.put(k(b"d/g", d.id, c.user.as_slice()), vec![1]);
            ctx.state.delete(k(b"d/q", d.id, c.user.as_slice()));
            ctx.emit(
                DATANET,
                &IDatanet::AccessGranted {
                    datanetId: d.id,
                    user: c.user,
                },
            );
            Vec::new()
        }
        C::revokeAccess(c) => {
            let d = owned(ctx, c.datanetId)?;
            let key = k(b"d/g", d.id, c.user.as_slice());
            if ctx.state.get(&key)?.is_none() {
                return Err(ExecError::Invalid(format!(
                    "{} has no grant on datanet {}",
                    c.user, d.id
                )));
            }
            ctx.state.delete(key);
            ctx.emit(
                DATANET,
                &IDatanet::AccessRevoked {
                    datanetId: d.id,
                    user: c.user,
                },
            );
            Vec::new()
        }
        C::getDatanet(c) => datanet(&ctx.state, c.datanetId)?.abi_encode(),
        C::getContribution(c) => contribution(&ctx.state, c.contributionId)?.abi_encode(),
        C::getVersion(c) => version(&ctx.state, c.datanetId, c.version)?.abi_encode(),
        C::hasAccess(c) => {
            has_access(&ctx.state, &datanet(&ctx.state, c.datanetId)?, &c.user)?.abi_encode()
        }
        C::datanetCount(_) => datanet_count(&ctx.state)?.abi_encode(),
        C::contributionCount(_) => codec::get_u64(&ctx.state, b"d/c")?.abi_encode(),
        C::approvalFee(c) => approval_fee(ctx.params, c.byteSize)?.abi_encode(),
        C::contributionCountOf(c) => contribution_count_of(&ctx.state, c.datanetId)?.abi_encode(),
        C::contributionsOf(c) => {
            contribution_ids(&ctx.state, c.datanetId, c.offset, c.limit)?.abi_encode()
        }
    })
}
