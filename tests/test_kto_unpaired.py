"""KTO on unpaired feedback (docs/methods.md#kto-unpaired): the ``kto_unpaired`` source, the
single-response rule of the record, the labels' way from the data to the loss, and a tiny-model run
whose loss equals a naive loop over the explicit labels (KTO, Ethayarajh et al., arXiv:2402.01306,
eq. 7-8)."""

from __future__ import annotations

import copy
import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from rankalign.cli import main
from rankalign.data.io import LoadReport, read_records
from rankalign.data.record import ListRecord, RecordError
from rankalign.data.sources import load_dataset_file
from rankalign.errors import ConfigError
from rankalign.losses import ListLogps, build_loss
from rankalign.training.config import ListwiseConfig
from rankalign.training.logps import ListCollator
from rankalign.training.trainer import ListDataset, ListwiseTrainer, encode_records, select_list, train
from training_tiny import save_tiny, tiny_model, tiny_tokenizer

FAST = {"use_cpu": True, "report_to": "none", "disable_tqdm": True, "save_strategy": "no",
        "max_length": 48, "max_prompt_length": 24, "seed": 0, "logging_steps": 1}

ROWS = [
    {"prompt": "how to brew coffee ?", "response": "use a good grind and hot water", "label": True},
    {"prompt": "what fund is best ?", "response": "try low fee fund", "label": "desirable"},
    {"prompt": "how to brew coffee ?", "response": "never use cold milk", "label": 0},
    {"prompt": "why is my code error ?", "response": "install python and run the code", "label": "undesirable"},
    {"prompt": "how to save money ?", "response": "save money and invest", "label": 1},
    {"prompt": "how to brew coffee ?", "response": "maybe try sugar", "label": "FALSE"},
    {"prompt": "which cup is good ?", "response": "the answer is yes", "label": "maybe"},  # invalid label
    {"prompt": "can you help ?", "response": "no"},  # no label
    {"prompt": "how to brew coffee ?", "response": "never use cold milk", "label": 1},  # repeated response
]


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- the source
def test_labels_are_read_and_rows_grouped_by_prompt(tmp_path: Path) -> None:
    report = LoadReport()
    recs = load_dataset_file("kto_unpaired", write_rows(tmp_path / "u.jsonl", ROWS), report=report)
    assert [r.prompt for r in recs] == ["how to brew coffee ?", "what fund is best ?", "why is my code error ?",
                                        "how to save money ?"]
    coffee = recs[0]
    assert [x.text for x in coffee.responses] == ["use a good grind and hot water", "never use cold milk",
                                                  "maybe try sugar"]
    assert [x.attributes["desirable"] for x in coffee.responses] == [True, False, False]
    assert [[x.attributes["desirable"] for x in r.responses] for r in recs[1:]] == [[True], [False], [True]]
    assert all(r.ranking is None and r.scores is None for r in recs)  # never ranked
    assert coffee.id == "u-1" and recs[1].id == "u-2"
    assert report.kept == 4
    assert report.skipped == {"invalid label": 1, "missing label": 1, "duplicate response": 1}


def test_score_threshold(tmp_path: Path) -> None:
    rows = [{"prompt": "p one", "completion": "a", "rating": 4.5}, {"prompt": "p one", "completion": "b", "rating": 2},
            {"prompt": "p two", "completion": "c", "rating": "3.0"}, {"prompt": "p two", "completion": "d"}]
    report = LoadReport()
    recs = load_dataset_file("kto_unpaired", write_rows(tmp_path / "s.jsonl", rows), report=report,
                             response_field="completion", score_field="rating", threshold=3.0)
    assert [[x.attributes["desirable"] for x in r.responses] for r in recs] == [[True, False], [True]]
    assert recs[0].scores == [4.5, 2.0] and recs[1].scores == [3.0]  # >= threshold is desirable
    assert report.skipped == {"missing rating": 1}
    with pytest.raises(ConfigError, match="score_field and threshold go together"):
        load_dataset_file("kto_unpaired", tmp_path / "s.jsonl", score_field="rating")


def test_cli_convert(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_rows(tmp_path / "u.jsonl", ROWS)
    out = tmp_path / "lists.jsonl"
    assert main(["data", "convert", "--format", "kto_unpaired", str(src), "--out", str(out)]) == 0
    assert "kept 4 record(s), skipped 3" in capsys.readouterr().err
    assert [r.num_responses for r in read_records(out)] == [3, 1, 1, 1]


# --------------------------------------------------------------------------- records
def test_a_single_response_needs_a_desirable_label() -> None:
    one = {"id": "a", "prompt": "p", "responses": [{"text": "only"}]}
    with pytest.raises(RecordError, match=r"has 1 response.*a single response is allowed only with a desirable"):
        ListRecord.from_dict(one)
    ok = ListRecord.from_dict({**one, "responses": [{"text": "only", "attributes": {"desirable": False}}]})
    assert ok.num_responses == 1 and ok.labelled_single()
    with pytest.raises(RecordError, match=r"desirable': must be true or false, got 'no'"):
        ListRecord.from_dict({**one, "responses": [{"text": "only", "attributes": {"desirable": "no"}}]})
    with pytest.raises(RecordError, match="has 0 response"):
        ListRecord.from_dict({**one, "responses": []})


def test_only_kto_trains_on_single_responses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*a: object, **k: object) -> None:
        raise AssertionError("a model was loaded before the data was checked")

    monkeypatch.setattr("rankalign.training.models.load_model_and_tokenizer", refuse)
    recs = load_dataset_file("kto_unpaired", write_rows(tmp_path / "u.jsonl", ROWS))
    config = ListwiseConfig(method="dpo_bt", output_dir=str(tmp_path / "o"), **FAST)
    with pytest.raises(ConfigError, match=r"3 list\(s\) hold a single response \(e.g. id='u-2'\); only kto"):
        train(config, recs)


def test_labels_reach_the_batch_only_when_every_response_has_one() -> None:
    labelled = ListRecord.from_dict({"id": "a", "prompt": "p", "responses": [
        {"text": "x", "attributes": {"desirable": False}}, {"text": "y", "attributes": {"desirable": True}}]})
    partial = ListRecord.from_dict({"id": "b", "prompt": "q", "responses": [
        {"text": "x", "attributes": {"desirable": True}}, {"text": "y"}, {"text": "z"}]})
    assert select_list(labelled, "auto", None)[1]["desirable"] == [0, 1]
    assert select_list(partial, "auto", None)[1]["desirable"] is None
    tok = tiny_tokenizer()
    config = ListwiseConfig(method="kto", **FAST)
    batch = ListCollator(tok.pad_token_id, mismatched=True)(encode_records([labelled, partial], tok, config))
    assert batch["desirable"].tolist() == [[0, 1, -1], [-1, -1, -1]]
    plain = ListCollator(tok.pad_token_id)(encode_records([partial, partial], tok, config))
    assert "desirable" not in plain


# --------------------------------------------------------------------------- the loss
def naive_kto(policy: list[list[float]], reference: list[list[float]], mis: list[list[float]],
              labels: list[list[bool]], beta: float, lam_d: float, lam_u: float) -> list[float]:
    """KTO eq. 7-8 with explicit labels: z0 = max(0, mean mismatched ratio over every response)."""
    flat = [x for row in mis for x in row]
    z0 = max(0.0, sum(flat) / len(flat))
    out = []
    for p, r, lab in zip(policy, reference, labels):
        total = 0.0
        for pi, ri, d in zip(p, r, lab):
            if d:
                total += lam_d * (1 - 1 / (1 + math.exp(-beta * ((pi - ri) - z0))))
            else:
                total += lam_u * (1 - 1 / (1 + math.exp(-beta * (z0 - (pi - ri)))))
        out.append(total / len(p))
    return out


def test_kto_loss_uses_the_labels_and_falls_back_to_the_order() -> None:
    """List 0: labels [0, 1] against the stored order [0, 1] (which would make response 0 desirable);
    list 1: a single undesirable response; list 2: no labels -> the top half of its order [2, 0, 1]."""
    t = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
    policy = t([[-3.0, -5.0, 0.0], [-2.0, 0.0, 0.0], [-4.0, -1.0, -6.0]])
    reference = t([[-4.0, -4.0, 0.0], [-1.0, 0.0, 0.0], [-3.0, -2.0, -5.0]])
    mask = torch.tensor([[True, True, False], [True, False, False], [True, True, True]])
    mis_p = t([[-6.0, -7.0, 0.0], [-5.0, 0.0, 0.0], [-6.0, -6.0, -8.0]])
    mis_r = t([[-5.5, -7.5, 0.0], [-4.0, 0.0, 0.0], [-6.5, -5.0, -8.0]])
    batch = ListLogps(policy=policy, lengths=torch.ones(3, 3, dtype=torch.long), mask=mask,
                      order=torch.tensor([[0, 1, 2], [0, 1, 2], [2, 0, 1]]), reference=reference,
                      mismatched_policy=mis_p, mismatched_reference=mis_r,
                      desirable=torch.tensor([[0, 1, -1], [0, -1, -1], [-1, -1, -1]]))
    hp = {"beta": 0.7, "kto_lambda_d": 1.5, "kto_lambda_u": 0.6}
    got = build_loss("kto", **hp)(batch).loss
    mis = [[-0.5, 0.5], [-1.0], [0.5, -1.0, 0.0]]
    labels = [[False, True], [False], [True, False, True]]  # list 2: order [2, 0, 1] -> responses 2 and 0
    want = naive_kto([[-3.0, -5.0], [-2.0], [-4.0, -1.0, -6.0]], [[-4.0, -4.0], [-1.0], [-3.0, -2.0, -5.0]],
                     mis, labels, 0.7, 1.5, 0.6)
    torch.testing.assert_close(got, t(want), rtol=1e-12, atol=1e-12)
    unlabelled = build_loss("kto", **hp)(ListLogps(**{**batch.__dict__, "desirable": None})).loss
    assert not torch.allclose(unlabelled[:2], got[:2])  # the labels changed lists 0 and 1
    assert unlabelled[2] == got[2]


def test_tiny_model_trains_on_converted_unpaired_data(tmp_path: Path) -> None:
    """Convert, train KTO 3 steps through train(); then one batch's loss equals the naive loop over
    its explicit labels, with the log-probs of the same forward passes."""
    torch.set_num_threads(1)
    recs = load_dataset_file("kto_unpaired", write_rows(tmp_path / "u.jsonl", ROWS))
    config = ListwiseConfig(method="kto", model=str(save_tiny(tmp_path / "tiny")), output_dir=str(tmp_path / "run"),
                            max_steps=3, per_device_train_batch_size=2, learning_rate=1e-2,
                            hparams={"beta": 0.5}, **FAST)
    result = train(config, recs)
    steps = [r for r in result.log if r.get("type") == "train"]
    assert len(steps) == 3 and all(math.isfinite(r["loss"]) for r in steps)
    assert all("rewards/desirable" in r["metrics"] for r in steps)

    tok = tiny_tokenizer()
    model = tiny_model(len(tok), seed=1)
    loss = build_loss("kto", beta=0.5)
    trainer = ListwiseTrainer(model=model, args=config, train_dataset=ListDataset([]), loss=loss,
                              ref_model=copy.deepcopy(tiny_model(len(tok), seed=2)),
                              data_collator=ListCollator(tok.pad_token_id, mismatched=True))
    items = encode_records(recs, tok, config)
    batch = ListCollator(tok.pad_token_id, mismatched=True)(items)
    with torch.no_grad():
        lp = trainer.build_list_logps(model, batch)
        got = loss(lp).loss
    assert lp.desirable is not None
    labels = [[bool(x.attributes["desirable"]) for x in r.responses] for r in recs]
    rows = [int(r.num_responses) for r in recs]
    cut = lambda x: [x[i, :k].tolist() for i, k in enumerate(rows)]  # noqa: E731
    want = naive_kto(cut(lp.policy), cut(lp.reference), cut(lp.mismatched_policy - lp.mismatched_reference),
                     labels, 0.5, 1.0, 1.0)
    torch.testing.assert_close(got, torch.tensor(want, dtype=got.dtype), rtol=1e-5, atol=1e-6)
