"""``rankalign train``: the generated --help, flag parsing, and a loss plug-in added by one definition."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from rankalign.cli import main
from rankalign.commands.train import build_train_parser, parse_train_args
from rankalign.losses import (
    ListwiseLoss,
    LossOutput,
    available_losses,
    hparam,
    hyperparameters,
    register_loss,
)
from rankalign.losses import unregister_loss as _unregister
from rankalign.training.config import config_fields
from training_tiny import save_tiny, tiny_records

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_help_lists_every_field_and_hyper_parameter_with_its_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["train", "--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for name in [*config_fields(), *hyperparameters()]:
        assert f"--{name}" in text, name
    beta_methods = ", ".join(hyperparameters()["beta"].methods)  # every method sharing beta, in one group
    for group in ("run: what to train", "model: policy, reference and LoRA", "data: records, orders",
                  "method hyper-parameters of seadpra", f"method hyper-parameters of {beta_methods}",
                  "training: transformers.TrainingArguments"):
        assert group in text, group
    assert "Train a LoRA adapter instead of all weights. (default: False)" in text
    assert "SeAdpra weight alpha of the Perceptual Alignment (SFT) term" in text and "(default: 0.01)" in text
    assert "--learning_rate FLOAT" in text and "--lr_scheduler_type" in text  # TrainingArguments' own


def test_flags_yaml_precedence_and_forms(tmp_path: Path) -> None:
    y = tmp_path / "run.yaml"
    y.write_text("method: dpo_pl\nbeta: 0.5\nmax_length: 64\n")
    config_file, overrides = parse_train_args(["--config", str(y), "--beta", "0.25", "--use-lora",
                                               "--max_prompt_length=16", "--seed", "-1", "--unknown-thing", "3"])
    assert config_file == str(y)
    assert overrides == {"beta": "0.25", "use_lora": "true", "max_prompt_length": "16", "seed": "-1",
                         "unknown_thing": "3"}  # unknown keys are left for load_config's message


def test_no_abbreviations() -> None:
    _, overrides = parse_train_args(["--learning", "1"])  # not taken as --learning_rate
    assert overrides == {"learning": "1"}


@dataclass
class ThrowawayParams:
    """Throw-away hyper-parameters."""

    throwaway_gamma: float = hparam(0.5, "Weight of the throw-away loss.")


@pytest.fixture
def throwaway_loss() -> Iterator[type[ListwiseLoss]]:
    """A new method with its own hyper-parameter: one decorated class and its dataclass."""

    @register_loss("throwaway")
    class ThrowawayLoss(ListwiseLoss):
        """SFT on the best response, scaled by ``throwaway_gamma``."""

        hyperparams = ThrowawayParams

        def forward(self, batch):  # type: ignore[no-untyped-def]
            best = batch.avg.gather(1, batch.top[:, None])[:, 0]
            return LossOutput(-self.hparams.throwaway_gamma * best)

    yield ThrowawayLoss
    _unregister("throwaway")


def test_a_plugin_loss_appears_in_help_and_trains(tmp_path: Path, throwaway_loss: type[ListwiseLoss],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from rankalign.data.io import write_jsonl

    assert "throwaway" in available_losses()
    help_text = " ".join(build_train_parser().format_help().split())
    assert "method hyper-parameters of throwaway" in help_text
    assert "--throwaway_gamma FLOAT" in help_text and "Weight of the throw-away loss. (default: 0.5)" in help_text

    data = tmp_path / "lists.jsonl"
    write_jsonl(tiny_records(4), data)
    out = tmp_path / "run"
    rc = main(["train", "--method", "throwaway", "--data", str(data), "--output-dir", str(out),
               "--model", str(save_tiny(tmp_path / "tiny")), "--throwaway-gamma", "2", "--max-steps", "1",
               "--use-cpu", "--save-strategy", "no", "--disable-tqdm", "true", "--max-length", "40",
               "--max-prompt-length", "20"])
    assert rc == 0, capsys.readouterr().err
    saved = json.loads((out / "rankalign_config.json").read_text())
    assert saved["method"] == "throwaway" and saved["hparams"] == {"throwaway_gamma": 2.0}
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert any(r.get("type") == "train" and r.get("loss") is not None for r in log)

    # another method does not take it: an error, not a silent pass-through
    rc = main(["train", "--method", "sft", "--data", str(data), "--output-dir", str(out), "--throwaway_gamma", "1"])
    assert rc == 2
    assert "throwaway_gamma: a hyper-parameter of throwaway, not of sft" in capsys.readouterr().err


def test_plugin_is_gone_after_unregister() -> None:
    assert "throwaway" not in available_losses()
    assert "throwaway_gamma" not in hyperparameters()
    assert dataclasses.is_dataclass(ThrowawayParams)
