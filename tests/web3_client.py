#!/usr/bin/env python3
"""Drives an OpenLedger dev node with the real web3.py client.

Usage: web3_client.py RPC_URL PRIVATE_KEY_HEX

Sends a native OPEN transfer and a datanet module call, then reads back receipts, logs,
blocks and transactions through web3.py's own formatters, and what tools ask around calls:
get_code of a module, the pending block, fee_history with reward percentiles. Any failed
check exits non-zero.
Run by crates/cli/tests/web3_client.rs (set up the interpreter with ./scripts/setup-python).
"""

import json
import sys
import traceback

from eth_account import Account
from web3 import Web3
from web3.logs import DISCARD

CHAIN_ID = 6736
BANK = "0x0000000000000000000000000000000000001001"
DATANET = "0x0000000000000000000000000000000000001003"
ONE_OPEN = 10**18

DATANET_ABI = json.loads(
    """
[
  {
    "type": "function",
    "name": "createDatanet",
    "stateMutability": "nonpayable",
    "inputs": [
      {"name": "name", "type": "string"},
      {"name": "summary", "type": "string"},
      {"name": "description", "type": "string"},
      {"name": "tags", "type": "string[]"},
      {"name": "dataType", "type": "uint8"},
      {"name": "licence", "type": "string"},
      {"name": "permissioned", "type": "bool"}
    ],
    "outputs": [{"name": "", "type": "uint64"}]
  },
  {
    "type": "function",
    "name": "datanetCount",
    "stateMutability": "view",
    "inputs": [],
    "outputs": [{"name": "", "type": "uint64"}]
  },
  {
    "type": "function",
    "name": "getDatanet",
    "stateMutability": "view",
    "inputs": [{"name": "datanetId", "type": "uint64"}],
    "outputs": [
      {
        "name": "",
        "type": "tuple",
        "components": [
          {"name": "id", "type": "uint64"},
          {"name": "owner", "type": "address"},
          {"name": "name", "type": "string"},
          {"name": "summary", "type": "string"},
          {"name": "description", "type": "string"},
          {"name": "tags", "type": "string[]"},
          {"name": "dataType", "type": "uint8"},
          {"name": "licence", "type": "string"},
          {"name": "permissioned", "type": "bool"},
          {"name": "versionCount", "type": "uint64"},
          {"name": "latestRoot", "type": "bytes32"},
          {"name": "rowCount", "type": "uint64"},
          {"name": "createdAt", "type": "uint64"}
        ]
      }
    ]
  },
  {
    "type": "event",
    "name": "DatanetCreated",
    "anonymous": false,
    "inputs": [
      {"name": "datanetId", "type": "uint64", "indexed": true},
      {"name": "owner", "type": "address", "indexed": true},
      {"name": "name", "type": "string", "indexed": false},
      {"name": "permissioned", "type": "bool", "indexed": false}
    ]
  }
]
"""
)


class CheckFailed(Exception):
    pass


def check(cond, what):
    if not cond:
        raise CheckFailed(what)
    print(f"  ok: {what}")


def hexstr(b):
    """0x-prefixed lowercase hex of bytes / HexBytes / str."""
    if isinstance(b, str):
        return b.lower() if b.startswith("0x") else "0x" + b.lower()
    return "0x" + bytes(b).hex()


def main(url, key):
    w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 30}))
    check(w3.is_connected(), f"connected to {url}")
    check(w3.eth.chain_id == CHAIN_ID, f"eth_chainId is {CHAIN_ID}")

    acct = Account.from_key(key)
    sender = acct.address
    print(f"sender {sender}, client {w3.client_version}, head block {w3.eth.block_number}")
    check(w3.eth.get_balance(sender) > ONE_OPEN, "sender is funded")

    # ---- 1. a native OPEN transfer (EIP-1559) -------------------------------------------------
    recipient = Account.create().address
    check(w3.eth.get_balance(recipient) == 0, "fresh recipient has no balance")
    nonce = w3.eth.get_transaction_count(sender)
    gas_price = w3.eth.gas_price
    tx = {
        "type": 2,
        "chainId": CHAIN_ID,
        "nonce": nonce,
        "from": sender,
        "to": recipient,
        "value": ONE_OPEN,
        "maxFeePerGas": gas_price,
        "maxPriorityFeePerGas": 0,
    }
    tx["gas"] = w3.eth.estimate_gas(tx)
    check(tx["gas"] >= 21000, f"estimate_gas for a transfer is {tx['gas']} (>= 21000)")
    signed = w3.eth.account.sign_transaction(tx, key)
    h = w3.eth.send_raw_transaction(signed.raw_transaction)
    check(hexstr(h) == hexstr(signed.hash), "send_raw_transaction returns the signed hash")
    receipt = w3.eth.wait_for_transaction_receipt(h, timeout=30)
    check(receipt.status == 1, "transfer receipt status is 1")
    check(receipt["from"] == sender and receipt.to == recipient, "transfer receipt from/to")
    check(receipt.gasUsed > 0 and receipt.effectiveGasPrice == gas_price, "transfer receipt gasUsed/effectiveGasPrice")
    check(w3.eth.get_balance(recipient) == ONE_OPEN, "recipient balance is exactly 1 OPEN")
    check(w3.eth.get_transaction_count(sender) == nonce + 1, "sender nonce advanced by 1")
    transfer_topic = Web3.keccak(text="Transfer(address,address,uint256)")
    check(len(receipt.logs) == 1, f"transfer receipt has exactly one log (got {len(receipt.logs)})")
    log = receipt.logs[0]
    check(log.address.lower() == BANK, "transfer log comes from the bank module")
    check(log.topics[0] == transfer_topic, "transfer log topic0 is keccak(Transfer(address,address,uint256))")
    check(
        log.topics[1][-20:] == bytes.fromhex(sender[2:]) and log.topics[2][-20:] == bytes.fromhex(recipient[2:]),
        "transfer log topics 1/2 are sender/recipient",
    )
    check(int.from_bytes(bytes(log.data), "big") == ONE_OPEN, "transfer log data is the amount")
    check(log.transactionHash == h and log.blockNumber == receipt.blockNumber, "transfer log tx hash / block number")

    # ---- 2. a datanet module call through a web3 contract object --------------------------------
    datanet = w3.eth.contract(address=Web3.to_checksum_address(DATANET), abi=DATANET_ABI)
    count_before = datanet.functions.datanetCount().call()
    call_tx = datanet.functions.createDatanet("web3 test", "s", "d", ["a", "b"], 0, "MIT", False).build_transaction(
        {"from": sender, "nonce": w3.eth.get_transaction_count(sender), "chainId": CHAIN_ID}
    )
    check(call_tx["to"].lower() == DATANET and call_tx["gas"] > 0, f"build_transaction filled gas ({call_tx['gas']})")
    # What web3 would return from the call if sent now (eth_call on the same calldata).
    predicted_id = datanet.functions.createDatanet("web3 test", "s", "d", ["a", "b"], 0, "MIT", False).call({"from": sender})
    signed_call = w3.eth.account.sign_transaction(call_tx, key)
    h2 = w3.eth.send_raw_transaction(signed_call.raw_transaction)
    receipt2 = w3.eth.wait_for_transaction_receipt(h2, timeout=30)
    check(receipt2.status == 1, "createDatanet receipt status is 1")
    events = datanet.events.DatanetCreated().process_receipt(receipt2, errors=DISCARD)
    check(len(events) == 1, f"receipt holds one DatanetCreated event (got {len(events)})")
    ev = events[0]
    check(ev.args.name == "web3 test", "DatanetCreated.name")
    check(ev.args.owner == sender, "DatanetCreated.owner is the sender")
    check(ev.args.permissioned is False, "DatanetCreated.permissioned")
    datanet_id = ev.args.datanetId
    check(datanet_id == predicted_id, f"event datanetId {datanet_id} equals the eth_call prediction")
    count = datanet.functions.datanetCount().call()
    check(count >= 1 and count == count_before + 1, f"datanetCount() is {count} (was {count_before})")
    info = datanet.functions.getDatanet(datanet_id).call()
    check(info[0] == datanet_id and info[1] == sender, "getDatanet id/owner")
    check(info[2] == "web3 test" and info[3] == "s" and info[4] == "d", "getDatanet name/summary/description")
    check(list(info[5]) == ["a", "b"], "getDatanet tags")
    check(info[6] == 0 and info[7] == "MIT" and info[8] is False, "getDatanet dataType/licence/permissioned")

    # ---- 3. eth_getLogs over the whole chain, filtered by the module address --------------------
    logs = w3.eth.get_logs({"fromBlock": 0, "toBlock": "latest", "address": Web3.to_checksum_address(DATANET)})
    check(all(lg.address.lower() == DATANET for lg in logs), f"get_logs returned only datanet logs ({len(logs)})")
    mine = [lg for lg in logs if lg.transactionHash == h2 and lg.logIndex == ev.logIndex]
    check(len(mine) == 1, "get_logs includes the DatanetCreated log")
    decoded = datanet.events.DatanetCreated().process_log(mine[0])
    check(decoded.args.datanetId == datanet_id and decoded.args.name == "web3 test", "get_logs entry decodes to the event")
    event_logs = datanet.events.DatanetCreated().get_logs(from_block=receipt2.blockNumber, to_block=receipt2.blockNumber)
    check(any(e.args.datanetId == datanet_id for e in event_logs), "contract.events.DatanetCreated().get_logs finds it")

    # ---- 4. blocks and transactions agree --------------------------------------------------------
    block = w3.eth.get_block(receipt2.blockNumber)
    check(block.hash == receipt2.blockHash, "get_block(n).hash equals the receipt's blockHash")
    check(block.number == receipt2.blockNumber, "get_block(n).number")
    check(h2 in block.transactions, "block lists the transaction hash")
    check(w3.eth.get_block(block.hash).hash == block.hash, "get_block(hash) round-trips")
    full = w3.eth.get_block(receipt2.blockNumber, full_transactions=True)
    check(any(t.hash == h2 for t in full.transactions), "full block holds the transaction")
    t = w3.eth.get_transaction(h2)
    check(t.hash == h2 and t.blockHash == block.hash and t.blockNumber == block.number, "get_transaction hash/block")
    check(t["from"] == sender and t.to.lower() == DATANET and t.nonce == call_tx["nonce"], "get_transaction from/to/nonce")
    check(bytes(t.input) == bytes.fromhex(call_tx["data"][2:]), "get_transaction input is the calldata")
    t1 = w3.eth.get_transaction(h)
    check(t1.value == ONE_OPEN and t1.to == recipient and t1.blockHash == receipt.blockHash, "get_transaction of the transfer")
    check(w3.eth.get_transaction_receipt(h2).transactionHash == h2, "get_transaction_receipt round-trips")

    # ---- 5. a replayed signed transaction is rejected -------------------------------------------
    try:
        w3.eth.send_raw_transaction(signed_call.raw_transaction)
    except Exception as e:  # web3 raises Web3RPCError (a ValueError) for JSON-RPC errors
        msg = str(e)
        print(f"  replay rejected: {type(e).__name__}: {msg}")
        check(
            "already known" in msg or "nonce too low" in msg,
            "replayed raw transaction is rejected as already known / nonce too low",
        )
    else:
        raise CheckFailed("replaying the same signed transaction was accepted")
    check(w3.eth.get_transaction_count(sender) == call_tx["nonce"] + 1, "replay did not change the nonce")

    # ---- 6. what tools ask before and around calls: code, pending block, fee history ---------------
    code = w3.eth.get_code(Web3.to_checksum_address(DATANET))
    check(bytes(code) == bytes.fromhex("60006000fd"), f"get_code(datanet module) is the revert-only marker ({code.hex()})")
    check(len(w3.eth.get_code(sender)) == 0, "get_code(an account) is empty")
    head = w3.eth.block_number
    pending = w3.eth.get_block("pending")
    check(pending.number == head + 1, f"get_block('pending').number is head + 1 ({pending.number})")
    check(pending.get("hash") is None, "the pending block has no hash yet")
    check(pending.parentHash == w3.eth.get_block(head).hash, "the pending block's parent is the head")
    pending_full = w3.eth.get_block("pending", full_transactions=True)
    check(len(pending_full.transactions) == len(pending.transactions), "get_block('pending', full) lists the same transactions")
    fh = w3.eth.fee_history(4, "latest", [10, 50, 90])
    blocks = min(4, head + 1)
    check(fh.oldestBlock == head + 1 - blocks, f"fee_history.oldestBlock is {fh.oldestBlock}")
    check(len(fh.gasUsedRatio) == blocks and len(fh.baseFeePerGas) == blocks + 1, "fee_history has one entry per block")
    check(len(fh.reward) == blocks and all(len(r) == 3 for r in fh.reward), "fee_history has three rewards per block")
    check(fh.gasUsedRatio[-1] > 0, f"fee_history reports the gas the last block used ({fh.gasUsedRatio[-1]})")
    check(all(b == gas_price for b in fh.baseFeePerGas), "fee_history base fees are the gas price")
    check(all(r[0] <= r[1] <= r[2] for r in fh.reward), "fee_history rewards grow with the percentile")
    try:
        w3.eth.fee_history(1, "latest", list(range(101)))
    except Exception as e:
        check("at most 100" in str(e), f"fee_history with 101 percentiles is refused ({e})")
    else:
        raise CheckFailed("fee_history with 101 percentiles was accepted")

    print("web3 client: all checks passed")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(f"usage: {sys.argv[0]} RPC_URL PRIVATE_KEY_HEX", file=sys.stderr)
        sys.exit(2)
    try:
        main(sys.argv[1], sys.argv[2])
    except CheckFailed as e:
        print(f"web3 client: CHECK FAILED: {e}", file=sys.stderr)
        sys.exit(1)
    except Exception:
        traceback.print_exc()
        print("web3 client: FAILED with an exception (see above)", file=sys.stderr)
        sys.exit(1)
