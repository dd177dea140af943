"""The study's YAML, as dataclasses: every key is a field here, unknown keys are errors.

```yaml
name: cpu-smollm2                 # the report's title
output_dir: docs/study/cpu        # small result files (committable)
work_dir: runs/study-cpu          # models and checkpoints (large, not committed)
model: null                       # the policy (default: the offline SmolLM2-135M-Instruct)
data:
  stackexchange: ../shared/data/stackexchange   # a folder of site folders
  sites: null                     # all of them; or a list
  min_answers: 3
  oasst1: ../shared/data/oasst1/en_100_tree.jsonl
  domain: stackexchange           # the lists methods train and are evaluated on
  train_lists: 64
  test_lists: 24
labels: [algorithm1, semantic, popularity, votes, length, random]
methods:
  - base                          # the starting model, untrained
  - sft
  - {name: seadpra-no-pa, method: seadpra, hparams: {seadpra_alpha: 0.0}}
seeds: [0, 1, 2]
train: {max_steps: 16, use_lora: true, learning_rate: 3e-4}    # rankalign train keys
eval: {max_new_tokens: 48}
reward_model: {train: true, settings: {max_steps: 30}}
```

The full reference with every default is docs/study.md.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rankalign.cli_fields import coerce_fields, unknown_key_message
from rankalign.errors import ConfigError

#: the method entry that trains nothing: the starting model, evaluated as it is
BASE = "base"
#: ``rankalign spa`` keys an SPA cell sets itself -> what they are
SPA_RESERVED = {"data": "the training lists are the seed set", "prompts": "the rounds use the training prompts",
                "output_dir": "the cell's work folder"}
#: the keys of a ``labels`` entry given as a mapping
LABEL_KEYS = ("name", "rule", "attributes")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


def _f(default: Any, help_text: str) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help_text})
    return field(default=default, metadata={"help": help_text})


@dataclass
class StudyData:
    """Where the lists come from and how they are split (by list: one question is never in both)."""

    stackexchange: str | None = _f(None, "a folder of StackExchange site folders (each with Posts.xml)")
    sites: list[str] | None = _f(  # noqa: RUF009
        None, "site folder names to use (none: every site under stackexchange)")
    min_answers: int = _f(3, "smallest list (answers per question) kept")
    oasst1: str | None = _f(None, "an OASST1 tree export (.jsonl): human-ranked lists, a second domain")
    domain: str = _f("stackexchange", "the lists methods train and are evaluated on: stackexchange or oasst1")
    train_lists: int | None = _f(64, "training lists drawn (none: every list not held out)")
    test_lists: int = _f(24, "held-out test lists (drawn first, by a seeded shuffle of the list ids)")
    split_seed: int = _f(0, "seed of the train/test draw")


@dataclass
class StudyEval:
    """How every cell is evaluated (the fields of ``rankalign eval`` that the study sets)."""

    metrics: str = _f("ranking,generation,reward", "metric groups (reward needs a reward model)")
    max_new_tokens: int = _f(48, "tokens generated per answer")
    num_beams: int = _f(1, "1 = greedy (fast on a CPU); SeAdpra's evaluation uses beam search")
    batch_size: int = _f(4, "prompts per generate call")
    max_length: int = _f(256, "ranking: prompt + response tokens")
    max_prompt_length: int = _f(128, "ranking: prompt tokens")
    k: str = _f("1,3", "k of PrefHit@k / PrefRecall@k")
    bootstrap: int = _f(1000, "bootstrap resamples of every CI")


@dataclass
class StudyRewardModel:
    """The reward model of the Reward column: a folder, or trained by the study on its training lists."""

    path: str | None = _f(None, "an existing reward model folder (rankalign train-rm output)")
    train: bool = _f(True, "train one with rankalign train-rm on the study's training lists (when no path)")
    settings: dict[str, Any] = _f({},  # noqa: RUF009
                                   "rankalign train-rm keys (rm_loss, max_steps, learning_rate, ...)")


@dataclass
class StudyMethod:
    """One row of the comparison: a registered method with its settings, or ``base``."""

    name: str
    method: str | None = None
    hparams: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    #: ``rankalign spa`` options (rounds, spa_lambdas, ...): the cell runs SPA — DPO on the training
    #: lists, then self-annotated rounds on their prompts — instead of one training run
    spa: dict[str, Any] = field(default_factory=dict)

    @property
    def is_base(self) -> bool:
        return self.method is None


@dataclass
class StudyConfig:
    """One study: data, model, label rules, methods x seeds, budgets, evaluation."""

    name: str = _f("rankalign study", "the report's title")
    output_dir: str = _f("runs/study", "result files: small, committable (cells/, label_quality.json, study.*)")
    work_dir: str | None = _f(None, "models and checkpoints (large); none: OUTPUT_DIR/work")
    model: str | None = _f(None, "the policy every method starts from (none: the offline SmolLM2-135M-Instruct)")
    embedding_model: str | None = _f(None, "sentence-embedding model (none: the offline all-MiniLM-L6-v2)")
    data: StudyData = field(default_factory=StudyData)
    labels: list[Any] = _f(  # noqa: RUF009
        ["algorithm1", "semantic", "popularity", "votes", "length", "random"],
        "ranking rules whose label quality is measured (a rule name, or {name, rule, attributes})")
    methods: list[Any] = _f(  # noqa: RUF009
        ["base", "sft", "dpo_bt", "seadpra"], "methods: a registered name, base, or {name, method, hparams, train}")
    seeds: list[int] = _f([0, 1, 2],  # noqa: RUF009
                           "training seeds of every method (base runs once)")
    baseline: str | None = _f(None, "the method the paired differences are taken against (none: the first)")
    sweeps: list[dict[str, Any]] = _f(  # noqa: RUF009
        [], "one-setting sweeps, each {key, methods}: the methods differ in that training key or "
            "hyper-parameter (e.g. {key: seadpra_alpha, methods: [seadpra-no-pa, seadpra, seadpra-alpha-1]}); "
            "the report plots each metric against the key's value")
    comparisons: list[list[str]] = _f(  # noqa: RUF009
        [], "head-to-head paired differences, each [a, b] (a - b per held-out list), e.g. the paper's "
            "ordering [seadpra, pro] or an ablation against the full method [seadpra-no-pa, seadpra]")
    train: dict[str, Any] = _f({},  # noqa: RUF009
                               "rankalign train keys shared by every cell (max_steps, use_lora, ...)")
    eval: StudyEval = field(default_factory=StudyEval)
    reward_model: StudyRewardModel = field(default_factory=StudyRewardModel)
    keep_models: bool = _f(False, "keep each cell's trained model in work_dir (else deleted once evaluated)")

    # ------------------------------------------------------------------ derived
    def method_specs(self) -> list[StudyMethod]:
        return [m for m in self.methods if isinstance(m, StudyMethod)]

    @property
    def work(self) -> Path:
        return Path(self.work_dir) if self.work_dir else Path(self.output_dir) / "work"


# ---------------------------------------------------------------------- loading
def _section(cls: type, value: Any, where: str, problems: list[str]) -> Any:
    if value is None:
        return cls()
    if not isinstance(value, dict):
        problems.append(f"{where}: expected a mapping, got {type(value).__name__}")
        return cls()
    kwargs = coerce_fields(cls, value, where=where, problems=problems)
    return cls(**kwargs)


def _method(entry: Any, where: str, problems: list[str]) -> StudyMethod | None:
    from rankalign.losses import available_losses

    if isinstance(entry, str):
        entry = {"name": entry, "method": None if entry == BASE else entry}
    if not isinstance(entry, dict):
        problems.append(f"{where}: a method is a name or a mapping {{name, method, hparams, train}}, got {entry!r}")
        return None
    valid = [f.name for f in dataclasses.fields(StudyMethod)]
    for key in entry:
        if key not in valid:
            problems.append(unknown_key_message(str(key), valid, where))
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        problems.append(f"{where}: name {name!r} must be a folder-safe name (letters, digits, . _ + -)")
        return None
    method = entry.get("method", None if name == BASE else name)
    if method is not None:
        method = str(method).lower().replace("-", "_")
        if method not in available_losses():
            problems.append(f"{where} ({name}): unknown method {method!r}; registered: {', '.join(available_losses())}")
    for key in ("hparams", "train", "spa"):
        if not isinstance(entry.get(key) or {}, dict):
            problems.append(f"{where} ({name}): {key} must be a mapping")
            return None
    if method is None and (entry.get("hparams") or entry.get("train") or entry.get("spa")):
        problems.append(f"{where} ({name}): base trains nothing; remove hparams/train/spa")
    spa = dict(entry.get("spa") or {})
    if "spa" in entry and method != "spa":
        problems.append(f"{where} ({name}): an spa entry runs SPA; give it method: spa (list-wise SPA: "
                        f"spa: {{spa_list_size: 4, spa_list_method: pro}})")
    for key in SPA_RESERVED:
        if key in spa:
            problems.append(f"{where} ({name}): spa.{key} is set by the study ({SPA_RESERVED[key]}); remove it")
            spa.pop(key)
    return StudyMethod(name=name, method=method, hparams=dict(entry.get("hparams") or {}),
                       train=dict(entry.get("train") or {}), spa=spa)


def _problems(cfg: StudyConfig) -> list[str]:
    from rankalign.ranking.rules import RULES, rule_key

    out = []
    d = cfg.data
    if d.domain not in ("stackexchange", "oasst1"):
        out.append(f"data.domain: {d.domain!r} must be stackexchange or oasst1")
    elif getattr(d, d.domain) is None:
        out.append(f"data.{d.domain}: needed because data.domain is {d.domain}")
    if d.stackexchange is not None and not Path(d.stackexchange).is_dir():
        out.append(f"data.stackexchange: {d.stackexchange} is not a folder (give the folder that holds the site "
                   "folders)")
    if d.oasst1 is not None and not Path(d.oasst1).is_file():
        out.append(f"data.oasst1: no such file: {d.oasst1}")
    if d.min_answers < 2:
        out.append(f"data.min_answers: {d.min_answers} must be >= 2")
    if d.test_lists < 2:
        out.append(f"data.test_lists: {d.test_lists} must be >= 2")
    if d.train_lists is not None and d.train_lists < 1:
        out.append(f"data.train_lists: {d.train_lists} must be >= 1 or null")
    if (not cfg.seeds or len(set(map(str, cfg.seeds))) != len(cfg.seeds)
            or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in cfg.seeds)):
        out.append(f"seeds: {cfg.seeds} must be a non-empty list of distinct integers >= 0")
    for key in ("max_new_tokens", "num_beams", "batch_size", "max_length", "max_prompt_length", "bootstrap"):
        value = getattr(cfg.eval, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            out.append(f"eval.{key}: {value!r} must be an integer >= 1")
    names = [m.name for m in cfg.method_specs()]
    dup = sorted({n for n in names if [x.lower() for x in names].count(n.lower()) > 1})
    if dup:
        out.append(f"methods: names {dup} appear more than once; give each entry its own name")
    if not names:
        out.append("methods: empty; list at least one method")
    if cfg.baseline is not None and cfg.baseline not in names:
        out.append(f"baseline: {cfg.baseline!r} is not among the methods {names}")
    for where, train in [("train", cfg.train), *((f"methods ({m.name}): train", m.train) for m in cfg.method_specs())]:
        if any(str(k).replace("-", "_") == "ref_logps_dir" for k in train):
            out.append(f"{where}: ref_logps_dir is set by the study (work_dir/ref_logps, shared by every cell); "
                       f"remove it")
    for i, sweep in enumerate(cfg.sweeps):
        if not (isinstance(sweep, dict) and set(sweep) == {"key", "methods"} and isinstance(sweep["key"], str)
                and isinstance(sweep["methods"], list) and len(sweep["methods"]) >= 2):
            out.append(f"sweeps[{i}]: expected {{key: NAME, methods: [two or more method names]}}, got {sweep!r}")
            continue
        for x in sweep["methods"]:
            if x not in names:
                out.append(f"sweeps[{i}]: {x!r} is not among the methods {names}")
    for i, pair in enumerate(cfg.comparisons):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            out.append(f"comparisons[{i}]: expected a pair of method names [a, b], got {pair!r}")
            continue
        for x in pair:
            if x not in names:
                out.append(f"comparisons[{i}]: {x!r} is not among the methods {names}")
        if pair[0] == pair[1]:
            out.append(f"comparisons[{i}]: compares {pair[0]!r} with itself")
    label_names = []
    for i, lab in enumerate(cfg.labels):
        if isinstance(lab, dict):
            for key in lab:
                if key not in LABEL_KEYS:
                    out.append(unknown_key_message(str(key), LABEL_KEYS, f"labels[{i}]"))
            attrs = lab.get("attributes")
            if attrs is not None and (not isinstance(attrs, list) or not all(isinstance(a, str) for a in attrs)):
                out.append(f"labels[{i}]: attributes must be a list of names, e.g. [semantic, popularity]; "
                           f"got {attrs!r}")
        elif not isinstance(lab, str):
            out.append(f"labels[{i}]: a rule name or {{name, rule, attributes}}, got {lab!r}")
            continue
        rule = lab.get("rule", lab.get("name")) if isinstance(lab, dict) else lab
        label_names.append(str(lab.get("name", rule)) if isinstance(lab, dict) else str(lab))
        if rule_key(rule) not in RULES:
            out.append(f"labels[{i}]: unknown ranking rule {rule!r}; choose from {', '.join(RULES)}")
    dup_labels = sorted({n for n in label_names if label_names.count(n) > 1})
    if dup_labels:
        out.append(f"labels: names {dup_labels} appear more than once; give each entry its own name")
    if "reward" in cfg.eval.metrics and not cfg.reward_model.path and not cfg.reward_model.train:
        out.append("eval.metrics: reward needs reward_model.path or reward_model.train: true")
    if cfg.reward_model.path and not Path(cfg.reward_model.path).is_dir():
        out.append(f"reward_model.path: no such folder: {cfg.reward_model.path}")
    return out


def _sweep_problems(cfg: StudyConfig) -> list[str]:
    """A sweep's methods must run with distinct values of its key and agree on everything else
    (else the sweep confounds the key with another setting)."""
    from rankalign.study.run import effective_settings

    specs = {m.name: m for m in cfg.method_specs()}
    out = []
    for i, sweep in enumerate(cfg.sweeps):
        key = sweep["key"].replace("-", "_")
        settings = {}
        for name in sweep["methods"]:
            if specs[name].is_base:
                out.append(f"sweeps[{i}]: {name!r} trains nothing; a sweep's methods are trained ones")
                continue
            settings[name] = effective_settings(cfg, specs[name])
            if key not in settings[name]:
                out.append(f"sweeps[{i}]: {sweep['key']!r} is neither a training key nor a hyper-parameter of {name!r}")
                settings.pop(name)
        if len(settings) < len(sweep["methods"]):
            continue
        seen: dict[str, str] = {}
        for name, values in settings.items():
            value = repr(values[key])
            if value in seen:
                out.append(f"sweeps[{i}]: {seen[value]!r} and {name!r} both run with {key} = {values[key]!r}")
            seen.setdefault(value, name)
        first, ref = next(iter(settings.items()))
        for name, values in settings.items():
            other = sorted(k for k in set(values) | set(ref) if k != key and values.get(k) != ref.get(k))
            if other:
                out.append(f"sweeps[{i}]: {name!r} differs from {first!r} in {', '.join(other)} besides {key}; "
                           f"a sweep varies one setting")
    return out


def _run_config_problems(cfg: StudyConfig) -> list[str]:
    """Every cell's training config and the reward model's, built now: a typo in ``train``,
    ``hparams`` or ``reward_model.settings`` is reported before hours of work, not when its cell runs."""
    from rankalign.iterative.spa import build_run
    from rankalign.study.run import reward_settings, spa_values, train_config

    out = []
    for spec in cfg.method_specs():
        if spec.is_base:
            continue
        try:
            if spec.spa:  # the seed set and prompts files are written when the study starts: not checked here
                build_run(spa_values(cfg, spec, cfg.seeds[0], cfg.work / "check"))
            else:
                train_config(cfg, spec, cfg.seeds[0], cfg.work / "check")
        except ConfigError as exc:
            out += [f"methods ({spec.name}): {p}" for p in exc.problems
                    if not (spec.spa and p.startswith(("data: no such file", "prompts: no such file")))]
    if not out:
        out += _sweep_problems(cfg)
    if "reward" in cfg.eval.metrics and not cfg.reward_model.path:
        from rankalign.reward.config import load_reward_config

        try:
            load_reward_config(None, {**reward_settings(cfg), "output_dir": str(cfg.work / "check")})
        except ConfigError as exc:
            out += [f"reward_model.settings: {p}" for p in exc.problems]
    return out


def load_study_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> StudyConfig:
    """Read a study YAML and overrides (``{"output_dir": ..., "train.max_steps": 200}``: a dotted
    key sets a key inside a section); every problem is reported at once.

    Raises:
        ConfigError: unknown keys (with close matches), values of the wrong type, bad methods,
            rules or paths — all together.
    """
    from rankalign.training.config import read_yaml

    raw: dict[str, Any] = {}
    where = "study config"
    if path is not None:
        raw = read_yaml(Path(path))
        where = str(path)
    for key, value in (overrides or {}).items():  # "train.max_steps" reaches into a section
        *parents, leaf = str(key).split(".")
        node = raw
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[leaf] = value
    problems: list[str] = []
    sections = {"data": StudyData, "eval": StudyEval, "reward_model": StudyRewardModel}
    plain = {k: v for k, v in raw.items() if k not in sections and k != "methods"}
    kwargs = coerce_fields(StudyConfig, plain, where=where, problems=problems)
    for key, cls in sections.items():
        kwargs[key] = _section(cls, raw.get(key), f"{where}: {key}", problems)
    entries = raw.get("methods", StudyConfig().methods)
    if not isinstance(entries, list):
        problems.append(f"{where}: methods must be a list")
        entries = []
    kwargs["methods"] = [m for i, e in enumerate(entries)
                         if (m := _method(e, f"{where}: methods[{i}]", problems)) is not None]
    if problems:
        raise ConfigError(problems)
    cfg = StudyConfig(**kwargs)
    problems = _problems(cfg)
    if not problems:
        problems = _run_config_problems(cfg)
    if problems:
        raise ConfigError([f"{where}: {p}" for p in problems])
    return cfg
