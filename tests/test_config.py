"""ListwiseConfig: YAML + flags, type coercion, unknown keys, cross-field problems."""

from __future__ import annotations

from pathlib import Path

import pytest

from rankalign.commands.train import parse_overrides
from rankalign.errors import ConfigError, UserError
from rankalign.losses import default_hparams
from rankalign.training.config import (
    LEARNING_RATE_FULL,
    LEARNING_RATE_LORA,
    ListwiseConfig,
    config_fields,
    load_config,
)


def test_yaml_then_flags_flags_win(tmp_path: Path) -> None:
    y = tmp_path / "run.yaml"
    y.write_text("method: dpo_pl\nbeta: 0.5\nmax_length: 128\nmax_prompt_length: 64\n"
                 "learning_rate: 1e-4\nuse_lora: true\nlora_target_modules: [q_proj, v_proj]\n")
    c = load_config(y, {"beta": "0.25", "max-list-size": "3", "output_dir": str(tmp_path / "o")})
    assert c.method == "dpo_pl"
    assert c.hparams == {"beta": 0.25}  # the flag wins over the YAML, typed
    assert c.max_length == 128 and c.max_list_size == 3
    assert c.learning_rate == 1e-4  # YAML's "1e-4" is a string for PyYAML; coerced to float
    assert c.use_lora is True and c.lora_target_modules == "q_proj,v_proj"


def test_defaults_come_from_one_place() -> None:
    c = ListwiseConfig(method="seadpra")
    assert c.hparams == {} and c.hparam("seadpra_alpha") == default_hparams("seadpra")["seadpra_alpha"]
    assert c.hparam("beta") == default_hparams("dpo_pl")["beta"]
    assert c.learning_rate == LEARNING_RATE_FULL
    assert ListwiseConfig(method="seadpra", use_lora=True).learning_rate == LEARNING_RATE_LORA
    assert c.report_to in ("none", ["none"], [])
    assert c.remove_unused_columns is False
    assert c.effective_order_source() == "dynamic"
    assert ListwiseConfig(method="pro").effective_order_source() == "auto"
    assert all(f.metadata.get("help") for f in config_fields().values()
               if f.name in {"method", "data", "order_source", "max_list_size", "merge_lora", "beta"})


def test_unknown_keys_yaml_and_flag_reported_together(tmp_path: Path) -> None:
    y = tmp_path / "run.yaml"
    y.write_text("method: pro\nmax_lenght: 100\n")
    with pytest.raises(ConfigError) as info:
        load_config(y, {"lerning_rate": "1"})
    text = str(info.value)
    assert "2 configuration problems" in text
    assert f"{y}: unknown key 'max_lenght' (did you mean 'max_length'" in text
    assert "command line: unknown key 'lerning_rate' (did you mean 'learning_rate'" in text
    assert "valid keys: " in text and "seadpra_alpha" in text  # hyper-parameters are keys too


def test_bad_values_are_named() -> None:
    with pytest.raises(ConfigError, match=r"max_length: cannot read 'abc' as int"):
        load_config(None, {"method": "pro", "max_length": "abc"})
    with pytest.raises(ConfigError, match=r"use_lora: cannot read 'maybe' as bool"):
        load_config(None, {"method": "pro", "use_lora": "maybe"})


def test_every_cross_field_problem_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        ListwiseConfig(method="kto", per_device_train_batch_size=1, order_source="best", max_length=10,
                       max_prompt_length=10, max_list_size=1, lora_dropout=1.5)
    problems = info.value.problems
    assert len(problems) == 5
    assert any("kto needs >= 2 lists" in p for p in problems)
    assert any("order_source: 'best'" in p for p in problems)
    assert any("max_prompt_length: 10 must be >= 1 and < max_length (10)" in p for p in problems)
    assert any("max_list_size: 1" in p for p in problems)
    assert any("lora_dropout" in p for p in problems)


def test_missing_method_lists_choices() -> None:
    with pytest.raises(ConfigError, match=r"method: missing; choose one of .*dpo_pl.*seadpra"):
        ListwiseConfig()


def test_bad_loss_hyper_parameter_reported() -> None:
    with pytest.raises(ConfigError, match="pro hyper-parameters"):
        ListwiseConfig(method="pro", hparams={"pro_sft_mode": "median"})
    with pytest.raises(ConfigError, match=r"pro_use_scores: cannot read 'maybe' as bool"):
        load_config(None, {"method": "pro", "pro_use_scores": "maybe"})


def test_a_hyper_parameter_reaches_only_its_own_method() -> None:
    """Another method's hyper-parameter is an error naming the methods that take it, never
    silently passed on; no config field ever reaches a loss."""
    with pytest.raises(ConfigError, match=r"seadpra_alpha: a hyper-parameter of seadpra, not of dpo_pl"):
        load_config(None, {"method": "dpo_pl", "seadpra_alpha": "0.1"})
    with pytest.raises(ConfigError, match=r"hparams: unknown key 'gamma'"):
        ListwiseConfig(method="dpo_pl", hparams={"gamma": 1.0})
    c = load_config(None, {"method": "kto", "max_length": "64", "max_prompt_length": "32", "beta": "0.3"})
    assert c.loss_hparams() == {"beta": 0.3}


def test_saved_config_round_trips(tmp_path: Path) -> None:
    """rankalign_config.json (TrainingArguments.to_json_string) loads back with its hparams."""
    import json

    c = load_config(None, {"method": "slic", "slic_delta": "2", "pair_mode": "pw", "output_dir": str(tmp_path)})
    saved = json.loads(c.to_json_string())
    keep = {k: saved[k] for k in ("method", "hparams", "output_dir", "max_length")}
    y = tmp_path / "again.yaml"
    y.write_text(json.dumps(keep))
    assert load_config(y).hparams == {"slic_delta": 2.0, "pair_mode": "pw"}


def test_missing_data_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"data: no such file or folder: .*nope.jsonl"):
        ListwiseConfig(method="pro", data=str(tmp_path / "nope.jsonl"))


def test_yaml_must_be_a_mapping(tmp_path: Path) -> None:
    y = tmp_path / "run.yaml"
    y.write_text("- method\n- pro\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(y)
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "absent.yaml")


def test_parse_overrides_forms() -> None:
    assert parse_overrides(["--beta", "0.2", "--use-lora", "--max_steps=3", "--seed", "-1", "--bf16"]) == {
        "beta": "0.2", "use_lora": "true", "max_steps": "3", "seed": "-1", "bf16": "true"}
    with pytest.raises(UserError, match="unexpected argument 'stray'"):
        parse_overrides(["stray"])


def test_example_configs_load(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1] / "configs"
    runs = sorted(root.glob("*run*.yaml")) + sorted(root.glob("examples/*.yaml"))
    assert runs, "no example run YAMLs in configs/"
    for y in runs:
        c = load_config(y, {"data": None, "output_dir": str(tmp_path / y.stem)})
        assert c.method
