//! OpenLoRA refuses, before any compute, a request that would take its caller past the
//! governed free daily token volume without agent stake (the chain would refuse to record it),
//! and serves it once the caller is a staked agent.

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{keccak256, Address, TxKind, B256, U256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::SolCall;
use openledger_datanet::SourceFile;
use openledger_node::{openlora::OpenLora, sequencer::Node, Chain, NodeConfig};
use openledger_state::{executor::gas_of, modules::bank};
use openledger_types::{
    abi::{IAgent, IDatanet, IInference, IModel},
    modules::{AGENT, DATANET, INFERENCE, MODEL},
    units::one_open,
    Genesis,
};
use std::sync::Arc;

const CHAIN_ID: u64 = 4245;

fn key(name: &str) -> PrivateKeySigner {
    PrivateKeySigner::from_bytes(&keccak256(name)).unwrap()
}

fn send(node: &Node, from: &PrivateKeySigner, to: Address, value: U256, data: Vec<u8>) {
    let (nonce, params) = {
        let chain = node.chain();
        let nonce = chain
            .with_pending_state(|s| bank::account(s, &from.address()))
            .unwrap()
            .nonce;
        (nonce, chain.params().unwrap())
    };
    let tx = TxEip1559 {
        chain_id: CHAIN_ID,
        nonce,
        gas_limit: gas_of(&params, &to, &data).unwrap(),
        max_fee_per_gas: params.min_gas_price_wei as u128,
        max_priority_fee_per_gas: 0,
        to: TxKind::Call(to),
        value,
        access_list: Default::default(),
        input: data.into(),
    };
    let sig = from.sign_hash_sync(&tx.signature_hash()).unwrap();
    let raw = TxEnvelope::from(tx.into_signed(sig)).encoded_2718();
    node.submit_raw(&raw).unwrap();
    node.seal().unwrap();
}

#[test]
fn a_caller_past_the_free_volume_needs_agent_stake() {
    let (owner, alice, operator) = (key("owner"), key("alice"), key("operator"));
    let accounts = [owner.address(), alice.address(), operator.address()];
    let mut genesis =
        Genesis::with_accounts(CHAIN_ID, 1, &accounts, U256::from(10_000u64) * one_open()).unwrap();
    genesis.params.agent.agent_free_tokens_per_day = 1_000;
    let dir = tempfile::tempdir().unwrap();
    let chain = Chain::open(&dir.path().join("chain.redb"), &genesis, false).unwrap();
    let config = NodeConfig {
        dev: true,
        ..NodeConfig::default()
    };
    let node: Arc<Node> = Node::new(chain, config, &dir.path().join("blobs")).unwrap();
    let z = U256::ZERO;
    send(
        &node,
        &owner,
        DATANET,
        z,
        IDatanet::createDatanetCall {
            name: "Bees".into(),
            summary: String::new(),
            description: String::new(),
            tags: vec![],
            dataType: 0,
            licence: "CC0".into(),
            permissioned: false,
        }
        .abi_encode(),
    );
    let staged = {
        let store = node.chain().store().clone();
        let rows = SourceFile::new("bees.txt", "City bees forage on linden.\n\n".to_string());
        node.datanets
            .stage(&*store, 1, &[rows], owner.address())
            .unwrap()
    };
    let calls: Vec<(&PrivateKeySigner, Address, U256, Vec<u8>)> = vec![
        (
            &owner,
            DATANET,
            z,
            IDatanet::contributeCall {
                datanetId: 1,
                rowsRoot: staged.report.rows_root,
                rowCount: staged.report.row_count,
                byteSize: staged.report.byte_size,
                score: staged.report.score_bps,
                metadataUri: staged.metadata_uri.clone(),
            }
            .abi_encode(),
        ),
        (
            &owner,
            DATANET,
            z,
            IDatanet::approveCall { contributionId: 1 }.abi_encode(),
        ),
        (
            &owner,
            MODEL,
            z,
            IModel::registerBaseModelCall {
                modelHash: B256::repeat_byte(1),
                name: "smol".into(),
            }
            .abi_encode(),
        ),
        (
            &owner,
            MODEL,
            z,
            IModel::registerAdapterCall {
                baseModelId: 1,
                name: "bees".into(),
                datanetIds: vec![1],
                datanetVersions: vec![1],
                trainingConfigHash: B256::repeat_byte(2),
                adapterHash: B256::repeat_byte(3),
                attributionIndexRoot: B256::ZERO,
            }
            .abi_encode(),
        ),
        (
            &alice,
            INFERENCE,
            U256::from(10u64) * one_open(),
            IInference::depositCall {}.abi_encode(),
        ),
        (
            &alice,
            INFERENCE,
            z,
            IInference::approveOperatorCall {
                operator: operator.address(),
                allowance: U256::from(10u64) * one_open(),
            }
            .abi_encode(),
        ),
    ];
    for (from, to, value, data) in calls {
        send(&node, from, to, value, data);
    }
    let o = OpenLora::open(
        node.clone(),
        &dir.path().join("openlora"),
        Some(operator),
        None,
    )
    .unwrap();

    // Within the free volume: reserved. A request of up to 600 + 600 tokens could pass the
    // 1,000 free tokens: refused before any compute, saying why and what to do.
    drop(o.reserve(alice.address(), 1, 100, 500).unwrap());
    let e = o.reserve(alice.address(), 1, 600, 600).unwrap_err();
    assert!(e.contains("free tokens"), "{e}");
    assert!(e.contains("openledger agent stake"), "{e}");

    // A staked agent has no daily limit.
    send(
        &node,
        &alice,
        AGENT,
        z,
        IAgent::registerAgentCall {
            metadata: "alice's agent".into(),
        }
        .abi_encode(),
    );
    send(
        &node,
        &alice,
        AGENT,
        U256::from(1_000u64) * one_open(),
        IAgent::stakeAgentCall {}.abi_encode(),
    );
    o.reserve(alice.address(), 1, 600, 600).unwrap();
}
