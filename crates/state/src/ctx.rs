//! The execution context of one call: its tentative writes, the block environment, the
//! parameters in force, the sender, the value sent, and the logs emitted so far.
//!
//! Logs are built with as few allocations as their bytes allow (a settled inference emits
//! about 27): [`log_data`] writes the topics and the data each into one exact-size buffer, and
//! [`word_log_data`] writes an event whose data are single words without the ABI encoder. Both
//! give exactly the bytes of `SolEvent::encode_log_data`.

use crate::{error::ExecResult, kv::Overlay, modules::bank, ExecError};
use alloy_primitives::{Address, Bytes, Log, LogData, U256};
use alloy_sol_types::{abi::token::WordToken, SolEvent, SolType};
use openledger_types::Params;

/// The block a transaction executes in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Env {
    pub chain_id: u64,
    pub block_number: u64,
    /// Unix seconds.
    pub timestamp: u64,
}

/// One module call in progress.
pub struct Ctx<'a> {
    pub state: Overlay<'a>,
    pub env: &'a Env,
    pub params: &'a Params,
    pub sender: Address,
    pub value: U256,
    pub logs: Vec<Log>,
}

impl Ctx<'_> {
    /// Emits `event` as a log of `module`.
    pub fn emit<E: SolEvent>(&mut self, module: Address, event: &E) {
        self.logs.push(Log {
            address: module,
            data: log_data(event),
        });
    }

    /// [`Ctx::emit`] for an event whose data are single words (integers, addresses, fixed
    /// bytes, bools): one allocation fewer per log.
    pub fn emit_words<E>(&mut self, module: Address, event: &E)
    where
        E: SolEvent,
        for<'a> <E::DataTuple<'a> as SolType>::Token<'a>: Words,
    {
        self.logs.push(Log {
            address: module,
            data: word_log_data(event),
        });
    }

    /// Moves OPEN between accounts (modules included), emitting `IBank.Transfer`.
    pub fn transfer(&mut self, from: Address, to: Address, amount: U256) -> ExecResult<()> {
        bank::transfer(self, from, to, amount)
    }

    /// Refuses OPEN sent to a non-payable function.
    pub fn no_value(&self, function: &str) -> ExecResult<()> {
        if self.value.is_zero() {
            Ok(())
        } else {
            Err(ExecError::NotPayable(function.to_string()))
        }
    }

    /// Checks a string argument against the governed length limit.
    pub fn check_len(&self, what: &str, s: &str) -> ExecResult<()> {
        if s.len() as u64 > self.params.max_string_bytes {
            return Err(ExecError::Invalid(format!(
                "{what} is {} bytes, the limit is {}",
                s.len(),
                self.params.max_string_bytes
            )));
        }
        Ok(())
    }
}

/// The topics of `event`, in one exact-size vector.
fn topics<E: SolEvent>(event: &E) -> Vec<alloy_primitives::B256> {
    // `WordToken` is a transparent `B256`: the collect reuses the vector.
    event.encode_topics().into_iter().map(|t| t.0).collect()
}

/// `event.encode_log_data()`: the data are encoded straight into the buffer the log keeps
/// (the provided method encodes into one buffer and copies into another).
pub fn log_data<E: SolEvent>(event: &E) -> LogData {
    let data = if <E::DataTuple<'_> as SolType>::ENCODED_SIZE == Some(0) {
        Bytes::new()
    } else {
        alloy_sol_types::abi::encode_sequence(&event.tokenize_body()).into()
    };
    LogData::new_unchecked(topics(event), data)
}

/// `event.encode_log_data()` for an event whose data are single words: the words are copied
/// into one exact-size buffer, without the ABI encoder's working buffers.
pub fn word_log_data<E>(event: &E) -> LogData
where
    E: SolEvent,
    for<'a> <E::DataTuple<'a> as SolType>::Token<'a>: Words,
{
    let body = event.tokenize_body();
    let data = if body.count() == 0 {
        Bytes::new()
    } else {
        let mut data = Vec::with_capacity(32 * body.count());
        body.write(&mut data);
        data.into()
    };
    LogData::new_unchecked(topics(event), data)
}

/// An event body (its non-indexed fields' tokens) made only of single words, whose ABI
/// encoding is those words in order.
pub trait Words {
    /// How many words.
    fn count(&self) -> usize;
    /// Appends the words.
    fn write(&self, out: &mut Vec<u8>);
}

macro_rules! words {
    ($($n:literal: ($($i:tt)*);)*) => {$(
        impl Words for ($(words!(@word $i),)*) {
            fn count(&self) -> usize {
                $n
            }
            #[allow(unused_variables)]
            fn write(&self, out: &mut Vec<u8>) {
                $(out.extend_from_slice(self.$i.0.as_slice());)*
            }
        }
    )*};
    (@word $i:tt) => { WordToken };
}

words! {
    0: ();
    1: (0);
    2: (0 1);
    3: (0 1 2);
    4: (0 1 2 3);
    5: (0 1 2 3 4);
    6: (0 1 2 3 4 5);
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::{keccak256, B256};
    use openledger_types::abi::{IBank, IInference};

    /// Every log the inference path emits, built both ways.
    #[test]
    fn logs_are_byte_identical_to_encode_log_data() {
        let a = Address::repeat_byte(0xa1);
        let b = Address::repeat_byte(0xb2);
        let big = U256::MAX - U256::from(12345u64);
        let root = keccak256(b"root");
        fn check<E>(e: E)
        where
            E: SolEvent,
            for<'a> <E::DataTuple<'a> as SolType>::Token<'a>: Words,
        {
            let want = e.encode_log_data();
            assert_eq!(log_data(&e), want, "{}", E::SIGNATURE);
            assert_eq!(word_log_data(&e), want, "{}", E::SIGNATURE);
        }
        for v in [U256::ZERO, U256::from(1u64), big] {
            check(IBank::Transfer {
                from: a,
                to: b,
                value: v,
            });
            check(IInference::ContributorPaid {
                receiptId: u64::MAX,
                contributionId: 7,
                contributor: b,
                amount: v,
            });
            check(IInference::FeeSettled {
                receiptId: 3,
                platform: v,
                modelOwner: big,
                stakers: U256::from(5u64),
                contributors: v,
            });
            check(IInference::InferenceRecorded {
                receiptId: 1,
                adapterId: u64::MAX,
                caller: a,
                promptTokens: u32::MAX,
                completionTokens: 17,
                fee: v,
                attributionRoot: root,
            });
            check(IInference::Deposited {
                account: a,
                amount: v,
            });
        }
        check(IInference::InferenceRequest {
            requestId: root,
            receiptId: 9,
        });
        check(IInference::InferenceDuplicate {
            requestId: B256::ZERO,
            receiptId: 0,
        });
        // An event with dynamic data goes through the encoder.
        let grant = IBank::TreasuryGrant {
            to: a,
            amount: big,
            reason: "x".repeat(70),
        };
        assert_eq!(log_data(&grant), grant.encode_log_data());
    }
}
