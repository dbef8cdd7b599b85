"""PReF (reward factorization): r_i(x, y) = lambda_i . phi(x, y).

- `plus.factorization.core`: the algorithms on tensors (SVD warm start, regularised BT fit, a new user's lambda,
  active questions, best-of-N).
- `plus.factorization.protocol`: the new-user protocol and the methods it compares.
- `plus.factorization.experiment`: the experiment on the Attributes and Archetypes populations (data -> frozen
  features -> protocol, ablations, diagnostics, scaling -> artifacts).
- `plus.factorization.finetune`: phi with its encoder's top block fine-tuned (an ablation).
"""

from plus.factorization.core import (
    PrefConfig,
    PrefModel,
    RewardBasis,
    best_of_n,
    centre_labels,
    fit_pref,
    fit_user_weights,
    impute_low_rank,
    information_matrix,
    question_scores,
    select_question,
    svd_factors,
    win_rate,
)
from plus.factorization.protocol import (
    NewUser,
    NewUserMethod,
    PalNewUser,
    PerUserBT,
    PrefNewUser,
    ResponseBank,
    SingleBT,
    TrainingPopulation,
    VplNewUser,
    evaluate_new_users,
    fit_bradley_terry,
    pair_metrics,
    summarize,
)

__all__ = [
    "NewUser",
    "NewUserMethod",
    "PalNewUser",
    "PerUserBT",
    "PrefConfig",
    "PrefModel",
    "PrefNewUser",
    "ResponseBank",
    "RewardBasis",
    "SingleBT",
    "TrainingPopulation",
    "VplNewUser",
    "best_of_n",
    "evaluate_new_users",
    "fit_bradley_terry",
    "fit_pref",
    "fit_user_weights",
    "centre_labels",
    "impute_low_rank",
    "information_matrix",
    "pair_metrics",
    "question_scores",
    "select_question",
    "summarize",
    "svd_factors",
    "win_rate",
]
