"""A user-blind linear BT model on the true attribute differences (the response bank's known scores) of the
UF-P-4-like training records, per number of training records: how close a user-blind model with perfect features
gets to the user-blind ceiling on `test` (whose pairs, like the ceiling, are drawn after the training records, so
they change with the number of records). From the repository root: PYTHONPATH=. python linear_bt.py"""
import json
from pathlib import Path

import numpy as np
import torch

from plus.data import build_dataset
from plus.data.attributes import ATTRIBUTES, build_response_bank
from plus.evaluation import majority_accuracy

bank = build_response_bank(0, 24)


def differences(records):
    scores = [[[bank.scores_of(r[side])[a] for a in ATTRIBUTES] for side in ("chosen", "rejected")] for r in records]
    return torch.tensor(np.array(scores, dtype=np.float32)[:, 0] - np.array(scores, dtype=np.float32)[:, 1])


out = []
for num_train in (256, 512, 1024):
    records = build_dataset("uf-p-4-synthetic", 0, num_train=num_train, num_test=400)
    train = differences([r for r in records if r["split"] == "train"])
    test = differences([r for r in records if r["split"] == "test"])
    w = torch.zeros(train.shape[1], requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=200)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.softplus(-train @ w).mean() + 1e-3 * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    margin = (test @ w).detach()
    accuracy = ((margin > 0).float() + 0.5 * (margin == 0).float()).mean().item()
    ceiling = majority_accuracy(records, ("test",))["test"]["accuracy"]
    out.append({"num_train": num_train, "linear_bt_test": round(accuracy, 4), "user_blind_ceiling": round(ceiling, 4)})
    print(out[-1])
Path(__file__).with_name("linear_bt.json").write_text(json.dumps(out, indent=1) + "\n")
