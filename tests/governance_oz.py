#!/usr/bin/env python3
"""Drives OpenLedger's governor with OpenZeppelin's own IGovernor ABI through web3.py.

Usage: governance_oz.py RPC_URL OZ_BUILD_DIR KEY0 KEY1 KEY2 KEY3

OZ_BUILD_DIR is `build/contracts` of the `@openzeppelin/contracts` npm package (5.x); the ABIs of
IGovernor, Governor (nonces, BALLOT_TYPEHASH, eip712Domain) and GovernorCountingSimple
(proposalVotes) come from there, unchanged. KEY0 proposes; KEY0..KEY2 have staked (votes); KEY3
relays a vote signed by KEY0 (castVoteBySig, EIP-712). A parameter proposal
(IParams.setParam min_stake = 3) runs propose -> votes -> queue -> execute after the timelock,
and every event is decoded with OZ's ABI. Any failed check exits non-zero.
Run by crates/cli/tests/governance_oz.rs (set up the interpreter with ./scripts/setup-python).
"""

import json
import os
import sys
import time
import traceback

from eth_account import Account
from eth_abi import encode as abi_encode
from web3 import Web3
from web3.exceptions import ContractLogicError, Web3RPCError
from web3.logs import DISCARD

CHAIN_ID = 6736
GOVERNOR = Web3.to_checksum_address("0x0000000000000000000000000000000000001007")
PARAMS = Web3.to_checksum_address("0x0000000000000000000000000000000000001006")
ONE_OPEN = 10**18
PENDING, ACTIVE, CANCELED, DEFEATED, SUCCEEDED, QUEUED, EXPIRED, EXECUTED = range(8)

PARAMS_JSON_ABI = [
    {
        "type": "function",
        "name": "paramsJson",
        "stateMutability": "view",
        "inputs": [],
        "outputs": [{"name": "", "type": "string"}],
    }
]


class CheckFailed(Exception):
    pass


def check(cond, what):
    if not cond:
        raise CheckFailed(what)
    print(f"  ok: {what}")


def oz_abi(build, name):
    with open(os.path.join(build, f"{name}.json")) as f:
        return json.load(f)["abi"]


def merged_abi(*abis):
    seen, out = set(), []
    for abi in abis:
        for item in abi:
            key = (item["type"], item.get("name"), tuple(i["type"] for i in item.get("inputs", [])))
            if key not in seen:
                seen.add(key)
                out.append(item)
    return out


def send(w3, key, fn):
    """Builds, signs and sends a contract call from `key`; returns its receipt."""
    sender = Account.from_key(key).address
    tx = fn.build_transaction({"from": sender, "nonce": w3.eth.get_transaction_count(sender), "chainId": CHAIN_ID})
    signed = w3.eth.account.sign_transaction(tx, key)
    receipt = w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(signed.raw_transaction), timeout=30)
    if receipt.status != 1:
        raise CheckFailed(f"transaction {receipt.transactionHash.hex()} failed")
    return receipt


def refused(w3, key, fn, needle):
    """The call is refused (at estimate/send) with a message containing `needle`."""
    try:
        send(w3, key, fn)
    except (ContractLogicError, Web3RPCError, ValueError) as e:
        return needle in str(e), str(e)
    return False, "it was accepted"


def wait_state(gov, pid, wanted, limit=90):
    deadline = time.time() + limit
    while True:
        s = gov.functions.state(pid).call()
        if s == wanted:
            return s
        if time.time() > deadline:
            raise CheckFailed(f"proposal state is {s}, not {wanted}, after {limit} s")
        time.sleep(0.5)


def main(url, build, keys):
    w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 30}))
    check(w3.is_connected() and w3.eth.chain_id == CHAIN_ID, f"connected to {url}")
    igov = oz_abi(build, "IGovernor")
    abi = merged_abi(igov, oz_abi(build, "Governor"), oz_abi(build, "GovernorCountingSimple"))
    gov = w3.eth.contract(address=GOVERNOR, abi=abi)
    accts = [Account.from_key(k).address for k in keys]

    # ---- views of IGovernor -------------------------------------------------------------------
    check(gov.functions.name().call() == "OpenLedger Governor", "name()")
    check(gov.functions.version().call() == "1", "version()")
    check(gov.functions.COUNTING_MODE().call() == "support=bravo&quorum=for,abstain", "COUNTING_MODE()")
    check(gov.functions.CLOCK_MODE().call() == "mode=timestamp", "CLOCK_MODE()")
    clock = gov.functions.clock().call()
    check(abs(clock - time.time()) < 120, f"clock() is a timestamp ({clock})")
    delay, period = gov.functions.votingDelay().call(), gov.functions.votingPeriod().call()
    check(0 < delay <= 10 and 0 < period <= 60, f"dev votingDelay {delay} s, votingPeriod {period} s")
    check(gov.functions.proposalThreshold().call() == ONE_OPEN, "proposalThreshold() is 1 OPEN")
    igov_id = bytes(4)
    for item in igov:
        if item["type"] == "function" and item["name"] not in ("supportsInterface", "clock", "CLOCK_MODE"):
            sig = f"{item['name']}({','.join(i['type'] for i in item['inputs'])})"
            igov_id = bytes(a ^ b for a, b in zip(igov_id, Web3.keccak(text=sig)[:4]))
    check(gov.functions.supportsInterface(igov_id).call(), f"supportsInterface(IGovernor id 0x{igov_id.hex()})")
    check(gov.functions.BALLOT_TYPEHASH().call() == Web3.keccak(text="Ballot(uint256 proposalId,uint8 support,address voter,uint256 nonce)"), "BALLOT_TYPEHASH()")
    domain = gov.functions.eip712Domain().call()
    check(tuple(domain[1:5]) == ("OpenLedger Governor", "1", CHAIN_ID, GOVERNOR), f"eip712Domain() {domain[1:5]}")
    votes0 = gov.functions.getVotes(accts[0], clock - 1).call()
    check(votes0 >= 10_000 * ONE_OPEN, f"getVotes(proposer, clock - 1) = {votes0 // ONE_OPEN} OPEN")

    # ---- propose: IParams.setParam("min_stake", "\"3\"") ------------------------------------
    calldata = Web3.keccak(text="setParam(string,string)")[:4] + abi_encode(["string", "string"], ["min_stake", '"3"'])
    targets, values, calldatas = [PARAMS], [0], [calldata]
    description = f"web3.py: minimum stake 3 OPEN ({time.time()})"
    desc_hash = Web3.keccak(text=description)
    expected = gov.functions.hashProposal(targets, values, calldatas, desc_hash).call()
    check(gov.functions.getProposalId(targets, values, calldatas, desc_hash).call() == expected, "getProposalId == hashProposal")
    local = int.from_bytes(Web3.keccak(abi_encode(["address[]", "uint256[]", "bytes[]", "bytes32"], [targets, values, calldatas, desc_hash])), "big")
    check(local == expected, "hashProposal is keccak256(abi.encode(targets, values, calldatas, descriptionHash))")
    receipt = send(w3, keys[0], gov.functions.propose(targets, values, calldatas, description))
    created = gov.events.ProposalCreated().process_receipt(receipt, errors=DISCARD)
    check(len(created) == 1, "ProposalCreated decodes with OZ's ABI")
    ev = created[0].args
    pid = ev.proposalId
    check(pid == expected, "ProposalCreated.proposalId is the hash")
    check(ev.proposer == accts[0] and list(ev.targets) == targets and list(ev.values) == values, "ProposalCreated proposer/targets/values")
    check([bytes(c) for c in ev.calldatas] == calldatas and list(ev.signatures) == [""], "ProposalCreated calldatas/signatures")
    check(ev.description == description and ev.voteEnd - ev.voteStart == period, "ProposalCreated description/voteStart/voteEnd")
    check(gov.functions.proposalSnapshot(pid).call() == ev.voteStart, "proposalSnapshot")
    check(gov.functions.proposalDeadline(pid).call() == ev.voteEnd, "proposalDeadline")
    check(gov.functions.proposalProposer(pid).call() == accts[0], "proposalProposer")
    check(gov.functions.proposalNeedsQueuing(pid).call() is True, "proposalNeedsQueuing")
    check(gov.functions.state(pid).call() == PENDING, "state Pending")
    ok, msg = refused(w3, keys[1], gov.functions.castVote(pid, 1), "Pending")
    check(ok, f"a vote before the snapshot is refused ({msg[:100]})")

    # ---- votes ----------------------------------------------------------------------------------
    wait_state(gov, pid, ACTIVE)
    check(True, "state Active after the voting delay")
    r1 = send(w3, keys[1], gov.functions.castVote(pid, 1))
    cast = gov.events.VoteCast().process_receipt(r1, errors=DISCARD)
    check(len(cast) == 1 and cast[0].args.voter == accts[1] and cast[0].args.support == 1, "VoteCast decodes with OZ's ABI")
    check(cast[0].args.weight == 30_000 * ONE_OPEN and cast[0].args.reason == "", "VoteCast weight is the stake at the snapshot")
    r2 = send(w3, keys[2], gov.functions.castVoteWithReason(pid, 0, "too high"))
    cast2 = gov.events.VoteCast().process_receipt(r2, errors=DISCARD)[0].args
    check(cast2.support == 0 and cast2.reason == "too high" and cast2.weight == 5_000 * ONE_OPEN, "castVoteWithReason: against, with its reason")
    ok, msg = refused(w3, keys[1], gov.functions.castVote(pid, 0), "already voted")
    check(ok, "a second vote is refused")

    # dev0 signs an EIP-712 Ballot; dev3 relays it.
    nonce = gov.functions.nonces(accts[0]).call()
    typed = {
        "domain": {"name": "OpenLedger Governor", "version": "1", "chainId": CHAIN_ID, "verifyingContract": GOVERNOR},
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "Ballot": [
                {"name": "proposalId", "type": "uint256"},
                {"name": "support", "type": "uint8"},
                {"name": "voter", "type": "address"},
                {"name": "nonce", "type": "uint256"},
            ],
        },
        "primaryType": "Ballot",
        "message": {"proposalId": pid, "support": 1, "voter": accts[0], "nonce": nonce},
    }
    signature = Account.sign_typed_data(keys[0], full_message=typed).signature
    r3 = send(w3, keys[3], gov.functions.castVoteBySig(pid, 1, accts[0], signature))
    cast3 = gov.events.VoteCast().process_receipt(r3, errors=DISCARD)[0].args
    check(cast3.voter == accts[0] and cast3.weight >= 10_000 * ONE_OPEN, "castVoteBySig counts the signer's votes, relayed by another account")
    check(gov.functions.nonces(accts[0]).call() == nonce + 1, "the signer's nonce advanced")
    ok, msg = refused(w3, keys[3], gov.functions.castVoteBySig(pid, 1, accts[0], signature), "invalid vote signature")
    check(ok, "the same signature replayed is refused")
    check(gov.functions.hasVoted(pid, accts[0]).call() and not gov.functions.hasVoted(pid, accts[3]).call(), "hasVoted")
    against, for_, abstain = gov.functions.proposalVotes(pid).call()
    check((against, abstain) == (5_000 * ONE_OPEN, 0) and for_ == 30_000 * ONE_OPEN + cast3.weight, "proposalVotes (GovernorCountingSimple)")

    # ---- queue, timelock, execute ---------------------------------------------------------------
    wait_state(gov, pid, SUCCEEDED)
    check(True, "state Succeeded after the deadline")
    quorum = gov.functions.quorum(ev.voteStart).call()
    check(0 < quorum <= for_, f"quorum(snapshot) = {quorum // ONE_OPEN} OPEN is reached")
    rq = send(w3, keys[3], gov.functions.queue(targets, values, calldatas, desc_hash))
    queued = gov.events.ProposalQueued().process_receipt(rq, errors=DISCARD)
    check(len(queued) == 1 and queued[0].args.proposalId == pid, "ProposalQueued decodes with OZ's ABI")
    eta = queued[0].args.etaSeconds
    check(gov.functions.proposalEta(pid).call() == eta and gov.functions.state(pid).call() == QUEUED, "proposalEta, state Queued")
    ok, msg = refused(w3, keys[3], gov.functions.execute(targets, values, calldatas, desc_hash), "timelock")
    check(ok, f"execute before the eta is refused ({msg[:120]})")
    while gov.functions.clock().call() < eta:
        time.sleep(0.5)
    re = send(w3, keys[3], gov.functions.execute(targets, values, calldatas, desc_hash))
    executed = gov.events.ProposalExecuted().process_receipt(re, errors=DISCARD)
    check(len(executed) == 1 and executed[0].args.proposalId == pid, "ProposalExecuted decodes with OZ's ABI")
    check(gov.functions.state(pid).call() == EXECUTED, "state Executed")
    params = w3.eth.contract(address=PARAMS, abi=PARAMS_JSON_ABI)
    now_params = json.loads(params.functions.paramsJson().call())
    check(now_params["min_stake"] == "3", f"the new min_stake is in force ({now_params['min_stake']})")
    ok, msg = refused(w3, keys[3], gov.functions.execute(targets, values, calldatas, desc_hash), "Executed")
    check(ok, "a second execute is refused")

    # ---- cancel: only the proposer, only while pending ----------------------------------------------
    d2 = f"web3.py: to cancel ({time.time()})"
    send(w3, keys[0], gov.functions.propose(targets, values, calldatas, d2))
    h2 = Web3.keccak(text=d2)
    ok, msg = refused(w3, keys[1], gov.functions.cancel(targets, values, calldatas, h2), "only by its proposer")
    check(ok, "another account cannot cancel")
    rc = send(w3, keys[0], gov.functions.cancel(targets, values, calldatas, h2))
    canceled = gov.events.ProposalCanceled().process_receipt(rc, errors=DISCARD)
    check(len(canceled) == 1, "ProposalCanceled decodes with OZ's ABI")
    pid2 = canceled[0].args.proposalId
    check(gov.functions.state(pid2).call() == CANCELED, "state Canceled")
    print("governance_oz: all checks passed")


if __name__ == "__main__":
    if len(sys.argv) != 7:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    try:
        main(sys.argv[1], sys.argv[2], sys.argv[3:7])
    except Exception:
        traceback.print_exc()
        sys.exit(1)
