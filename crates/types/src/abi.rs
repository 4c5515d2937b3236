//! The native modules' Solidity interfaces, generated from `contracts/*.sol` (the published
//! source of truth) with alloy's `sol!`.

#![allow(missing_docs, clippy::too_many_arguments)]

use alloy_sol_types::sol;

sol!(
    #[sol(all_derives)]
    "../../contracts/IBank.sol"
);
sol!(
    #[sol(all_derives)]
    "../../contracts/IStaking.sol"
);
sol!(
    #[sol(all_derives)]
    "../../contracts/IDatanet.sol"
);
sol!(
    #[sol(all_derives)]
    "../../contracts/IModel.sol"
);
sol!(
    #[sol(all_derives)]
    "../../contracts/IInference.sol"
);
sol!(
    #[sol(all_derives)]
    "../../contracts/IParams.sol"
);
sol!(
    #[sol(all_derives)]
    "../../contracts/IGovernor.sol"
);
sol!(
    #[sol(all_derives)]
    "../../contracts/IRlhf.sol"
);
sol!(
    #[sol(all_derives)]
    "../../contracts/IAgent.sol"
);
