//! A small chain for integration tests: a genesis with funded users, signed EIP-1559
//! transactions through `verify_raw` and `apply_tx`, and views through `simulate_call`.

#![allow(dead_code)]

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{keccak256, Address, TxKind, U256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::SolCall;
use openledger_state::{
    apply_tx, executor::simulate_call, genesis::genesis_writes, modules::bank, verify_raw, Env,
    ExecError, MemKv,
};
use openledger_types::{abi::IDatanet, units::one_open, Genesis, Params};

pub const CHAIN_ID: u64 = 77;

/// The chain under test: committed state, the users' keys, the genesis and the block.
pub struct World {
    pub kv: MemKv,
    pub signers: Vec<PrivateKeySigner>,
    pub genesis: Genesis,
    pub env: Env,
}

impl World {
    /// `users` accounts holding `open` OPEN each; `tune` adjusts the genesis parameters.
    pub fn new(label: &str, users: usize, open: u64, tune: impl FnOnce(&mut Params)) -> World {
        let signers: Vec<_> = (0..users)
            .map(|i| PrivateKeySigner::from_bytes(&keccak256(format!("{label} {i}"))).unwrap())
            .collect();
        let addrs: Vec<Address> = signers.iter().map(|s| s.address()).collect();
        let mut genesis =
            Genesis::with_accounts(CHAIN_ID, 1_000, &addrs, U256::from(open) * one_open()).unwrap();
        tune(&mut genesis.params);
        let mut kv = MemKv::default();
        kv.apply(genesis_writes(&genesis).unwrap());
        World {
            kv,
            signers,
            genesis,
            env: Env {
                chain_id: CHAIN_ID,
                block_number: 1,
                timestamp: 1_000,
            },
        }
    }

    pub fn addr(&self, i: usize) -> Address {
        self.signers[i].address()
    }

    pub fn nonce(&self, who: usize) -> u64 {
        bank::account(&self.kv, &self.addr(who)).unwrap().nonce
    }

    pub fn balance(&self, a: Address) -> U256 {
        bank::account(&self.kv, &a).unwrap().balance
    }

    /// A signed EIP-1559 transaction from user `who`.
    pub fn sign(&self, who: usize, nonce: u64, to: Address, value: U256, data: Vec<u8>) -> Vec<u8> {
        let tx = TxEip1559 {
            chain_id: CHAIN_ID,
            nonce,
            gas_limit: 2_000_000,
            max_fee_per_gas: 2_000_000_000,
            max_priority_fee_per_gas: 1_000_000_000,
            to: TxKind::Call(to),
            value,
            access_list: Default::default(),
            input: data.into(),
        };
        let sig = self.signers[who]
            .sign_hash_sync(&tx.signature_hash())
            .unwrap();
        TxEnvelope::from(tx.into_signed(sig)).encoded_2718()
    }

    /// Signs, verifies and applies a transaction with an explicit nonce; commits its writes
    /// when accepted.
    pub fn send_with_nonce(
        &mut self,
        who: usize,
        nonce: u64,
        to: Address,
        value: U256,
        data: Vec<u8>,
    ) -> Result<(), ExecError> {
        let raw = self.sign(who, nonce, to, value, data);
        let tx = verify_raw(&raw, CHAIN_ID, self.genesis.params.max_tx_bytes)
            .expect("a signed transaction verifies");
        assert_eq!(tx.sender, self.addr(who));
        let out = apply_tx(&self.kv, &self.env, &self.genesis.params, &tx)?;
        self.kv.apply(out.writes);
        Ok(())
    }

    /// Sends a transaction from `who` at its next nonce.
    pub fn send(
        &mut self,
        who: usize,
        to: Address,
        value: U256,
        data: Vec<u8>,
    ) -> Result<(), ExecError> {
        let nonce = self.nonce(who);
        self.send_with_nonce(who, nonce, to, value, data)
    }

    /// Calls a module function `call` from `who` with no value.
    pub fn call<C: SolCall>(&mut self, who: usize, to: Address, call: C) -> Result<(), ExecError> {
        self.send(who, to, U256::ZERO, call.abi_encode())
    }

    /// Reads a view as `eth_call` does.
    pub fn view<C: SolCall>(&self, to: Address, call: C) -> C::Return {
        let (out, _, _) = simulate_call(
            &self.kv,
            &self.env,
            &self.genesis.params,
            Address::ZERO,
            to,
            U256::ZERO,
            &call.abi_encode(),
        )
        .expect("a view succeeds");
        C::abi_decode_returns(&out).expect("a view's return data decodes")
    }
}

/// `createDatanet` for a public text datanet named `name` (licence CC0, no tags).
pub fn public_datanet(name: &str) -> IDatanet::createDatanetCall {
    IDatanet::createDatanetCall {
        name: name.into(),
        summary: String::new(),
        description: String::new(),
        tags: vec![],
        dataType: 0,
        licence: "CC0".into(),
        permissioned: false,
    }
}
