"""Tests of every registered loss (formulas and papers: docs/methods.md).

Each loss is checked against a naive pure-Python loop written from its paper's equation
(``math.log``/``math.exp`` over lists, no torch), against values worked out by hand, for
invariance to the storage order of the candidates, for padding, for the special cases
where two methods coincide, with ``torch.autograd.gradcheck``, and for finite values and
gradients in extreme inputs. Tests parametrised over ``available_losses()`` cover a new
loss automatically (and fail until it has a naive reference here).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, replace

import pytest
import torch

from rankalign.losses import (
    Beta,
    ListLogps,
    ListwiseLoss,
    available_losses,
    build_loss,
    default_hparams,
    get_loss_class,
    hparam,
    hyperparameters,
    register_loss,
)

F64 = torch.float64
ALL = available_losses()
EXPECTED = ["dpo_bt", "dpo_pl", "dpo_wdro", "ipo", "kto", "lipo", "pro", "rrhf", "seadpra", "sft", "slic", "spa", "spo", "spo_abs"]

# --------------------------------------------------------------------------- batches


def make_batch(lengths: list[int], m: int | None = None, seed: int = 0, dtype: torch.dtype = F64,
               scores: bool = True, garbage: float = 1e3, order_by_scores: bool = False) -> ListLogps:
    """Random lists of the given lengths padded to ``m``; padded entries hold ``garbage``."""
    g = torch.Generator().manual_seed(seed)
    b = len(lengths)
    m = m or max(lengths)
    n = torch.tensor(lengths)[:, None]
    mask = torch.arange(m)[None, :] < n  # [B, M]
    policy = -(torch.rand(b, m, generator=g, dtype=dtype) * 30 + 1)
    tok = torch.randint(1, 12, (b, m), generator=g)
    reference = policy + torch.randn(b, m, generator=g, dtype=dtype) * 2
    sc = torch.randn(b, m, generator=g, dtype=dtype) * 2
    orders = []
    for i, k in enumerate(lengths):
        head = torch.argsort(-sc[i, :k]) if order_by_scores else torch.randperm(k, generator=g)
        orders.append(torch.cat([head, torch.arange(k, m)]))
    order = torch.stack(orders)
    apdf = torch.rand(b, m, m, generator=g, dtype=dtype) * 3
    apdf = (apdf + apdf.transpose(1, 2)) / 2 * (1 - torch.eye(m, dtype=dtype))
    apdf = apdf * (mask[:, :, None] & mask[:, None, :])
    mis_p = policy + torch.randn(b, m, generator=g, dtype=dtype)
    mis_r = mis_p - torch.randn(b, m, generator=g, dtype=dtype) - 0.3
    pad = ~mask
    for t in (policy, reference, sc, mis_p, mis_r):
        t[pad] = garbage
    tok[pad] = 0
    return ListLogps(policy=policy, lengths=tok, mask=mask, order=order, reference=reference,
                     scores=sc if scores else None, apdf=apdf,
                     mismatched_policy=mis_p, mismatched_reference=mis_r)


def one_list(policy: list[float], lengths: list[int], order: list[int] | None = None,
             reference: list[float] | None = None, scores: list[float] | None = None,
             apdf: list[list[float]] | None = None, mis_ratio: list[float] | None = None) -> ListLogps:
    """A batch with one hand-written list (float64)."""
    k = len(policy)

    def t(x: list | None) -> torch.Tensor | None:
        return None if x is None else torch.tensor([x], dtype=F64)

    mis = t(mis_ratio)
    return ListLogps(policy=t(policy), lengths=torch.tensor([lengths]), mask=torch.ones(1, k, dtype=torch.bool),
                     order=torch.tensor([order if order is not None else list(range(k))]),
                     reference=t(reference), scores=t(scores),
                     apdf=None if apdf is None else torch.tensor([apdf], dtype=F64),
                     mismatched_policy=mis, mismatched_reference=None if mis is None else torch.zeros_like(mis))


# --------------------------------------------------------------------------- naive references


@dataclass
class Row:
    """One list in storage order, real candidates only, as plain Python numbers."""

    policy: list[float]
    lengths: list[int]
    order: list[int]
    reference: list[float]
    scores: list[float] | None
    apdf: list[list[float]]

    @property
    def n(self) -> int:
        return len(self.policy)


def rows(batch: ListLogps) -> list[Row]:
    out = []
    for i in range(batch.policy.shape[0]):
        k = int(batch.mask[i].sum())
        out.append(Row(policy=batch.policy[i, :k].tolist(), lengths=batch.lengths[i, :k].tolist(),
                       order=batch.order[i, :k].tolist(), reference=batch.reference[i, :k].tolist(),
                       scores=None if batch.scores is None else batch.scores[i, :k].tolist(),
                       apdf=batch.apdf[i, :k, :k].tolist()))
    return out


def lse(xs: list[float]) -> float:
    top = max(xs)
    return top + math.log(sum(math.exp(x - top) for x in xs))


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def sigmoid(x: float) -> float:
    return math.exp(log_sigmoid(x))


def pairs(n: int, mode: str) -> list[tuple[int, int]]:
    return [(a, b) for a in range(n) for b in range(a + 1, n) if mode == "pw" or a == 0]


def avg(r: Row, i: int) -> float:
    return r.policy[i] / r.lengths[i]


def ratio(r: Row, i: int) -> float:
    return r.policy[i] - r.reference[i]


def labels(r: Row) -> list[float]:
    if r.scores is not None:
        return list(r.scores)
    return [float(r.n - r.order.index(i)) for i in range(r.n)]


def naive_sft(r: Row, **_: object) -> float:
    return -avg(r, r.order[0])


def naive_dpo_bt(r: Row, beta: float, pair_mode: str, **_: object) -> float:
    s = [beta * ratio(r, i) for i in r.order]
    ps = pairs(r.n, pair_mode)
    return sum(-log_sigmoid(s[a] - s[b]) for a, b in ps) / len(ps)


def spa_confidences(r: Row, beta: float, pair_mode: str, spa_lambda: float, **_: object) -> list[float]:
    """SPA eq. 11-12 with the sequence-level mixture: sigmoid(beta (1 + lambda) (ratio_w - ratio_l)) per pair."""
    d = [beta * (1 + spa_lambda) * ratio(r, i) for i in r.order]
    return [sigmoid(d[a] - d[b]) for a, b in pairs(r.n, pair_mode)]


def percentile(values: list[float], k: float) -> float:
    """The k-th percentile with linear interpolation between order statistics."""
    v = sorted(values)
    pos = k / 100 * (len(v) - 1)
    lo = math.floor(pos)
    return v[lo] if lo + 1 >= len(v) else v[lo] + (pos - lo) * (v[lo + 1] - v[lo])


def naive_spa(r: Row, beta: float, pair_mode: str, spa_alpha: float, spa_tau: float, **hp: object) -> float:
    """SPA eq. 10: label smoothing alpha on the pairs less confident than tau (the batch's K-th percentile)."""
    s = [beta * ratio(r, i) for i in r.order]
    conf = spa_confidences(r, beta, pair_mode, **hp)
    total = 0.0
    for (a, b), c in zip(pairs(r.n, pair_mode), conf):
        z = spa_alpha if c < spa_tau else 0.0
        total -= (1 - z) * log_sigmoid(s[a] - s[b]) + z * log_sigmoid(s[b] - s[a])
    return total / len(conf)


def naive_pl(s: list[float]) -> float:
    """Seed 000 eq. 27: -sum_k log(exp(s_k) / sum_{j >= k} exp(s_j)), s best first."""
    return sum(lse(s[k:]) - s[k] for k in range(len(s) - 1))


def naive_dpo_pl(r: Row, beta: float, **_: object) -> float:
    return naive_pl([beta * ratio(r, i) for i in r.order])


def naive_slic(r: Row, slic_delta: float, slic_lambda: float, pair_mode: str, **_: object) -> float:
    p = [r.policy[i] for i in r.order]
    ps = pairs(r.n, pair_mode)
    hinge = sum(max(0.0, slic_delta - p[a] + p[b]) for a, b in ps) / len(ps)
    return hinge + slic_lambda * -avg(r, r.order[0])


def naive_rrhf(r: Row, rrhf_weight: float, rrhf_length_penalty: float, **_: object) -> float:
    s = [r.policy[i] / r.lengths[i] ** rrhf_length_penalty for i in r.order]
    rank = sum(max(0.0, s[j] - s[i]) for i in range(r.n) for j in range(i + 1, r.n))
    return rrhf_weight * rank - avg(r, r.order[0])


def naive_ipo(r: Row, ipo_tau: float, pair_mode: str, **_: object) -> float:
    h = [ratio(r, i) for i in r.order]
    ps = pairs(r.n, pair_mode)
    return sum((h[a] - h[b] - 1 / (2 * ipo_tau)) ** 2 for a, b in ps) / len(ps)


def naive_kto(r: Row, beta: float, kto_lambda_d: float, kto_lambda_u: float, z0: float, **_: object) -> float:
    total = 0.0
    for pos, i in enumerate(r.order):
        x = ratio(r, i)
        if pos < math.ceil(r.n / 2):
            total += kto_lambda_d * (1 - sigmoid(beta * (x - z0)))
        else:
            total += kto_lambda_u * (1 - sigmoid(beta * (z0 - x)))
    return total / r.n


def naive_spo(r: Row, beta: float, spo_alpha: float, absolute: bool = False, **_: object) -> float:
    """Seed 003 eq. 7 (+ Table 1's absolute term)."""
    rew = labels(r)
    t = [x / spo_alpha for x in rew]
    p = [math.exp(x - lse(t)) for x in t]
    s = [beta * ratio(r, i) for i in range(r.n)]
    loss = -sum(p[i] * (s[i] - lse(s)) for i in range(r.n))
    if absolute:
        loss += sum(sigmoid(-x) for x in s) / r.n
    return loss


def naive_lipo(r: Row, beta: float, **_: object) -> float:
    psi = labels(r)
    s = [beta * ratio(r, i) for i in range(r.n)]
    by_s = sorted(r.order, key=lambda i: -s[i])  # stable: ties keep the target order
    rank = {i: k + 1 for k, i in enumerate(by_s)}
    total = 0.0
    for i in range(r.n):
        for j in range(r.n):
            if psi[i] > psi[j]:
                delta = abs(2 ** psi[i] - 2 ** psi[j]) * abs(1 / math.log2(1 + rank[i]) - 1 / math.log2(1 + rank[j]))
                total -= delta * log_sigmoid(s[i] - s[j])
    return total


def naive_pro(r: Row, pro_sft_weight: float, pro_sft_mode: str, pro_use_scores: bool, **_: object) -> float:
    """Official PRO code: stage k logits a_i*(r_k - r_i), positive a_k*max gap; summed stages."""
    a = [avg(r, i) for i in r.order]
    sc = [r.scores[i] for i in r.order] if (r.scores is not None and pro_use_scores) else None
    loss = 0.0
    for k in range(r.n - 1):
        if sc is None:
            z = a[k:]
        else:
            gaps = [sc[k] - sc[i] for i in range(k + 1, r.n)]
            z = [a[k] * max(gaps)] + [a[i] * g for i, g in zip(range(k + 1, r.n), gaps)]
        loss += lse(z) - z[0]
    best = r.order[0]
    sft = -r.policy[best] if pro_sft_mode == "sum" else -avg(r, best)
    return loss + pro_sft_weight * (r.n - 1) ** 2 * sft


def naive_seadpra(r: Row, seadpra_alpha: float, weight_eps: float, **_: object) -> float:
    """SeAdpra eq. 6-13 with the project's reading of W_r and W_p (docs/methods.md#seadpra-loss)."""
    o = r.order
    a = [avg(r, i) for i in o]
    d = [[r.apdf[o[p]][o[q]] for q in range(r.n)] for p in range(r.n)]  # D^R order
    loss = 0.0
    for m in range(1, r.n):
        b = m - 1
        negs = [j for j in range(r.n) if j != b]
        w = sorted(d[b][j] for j in negs)
        num = math.exp(a[b]) * max(max(d[b]), weight_eps)
        den = num + sum(math.exp(a[j]) * max(w[k], weight_eps) for k, j in enumerate(negs))
        loss -= math.log(num / den)
    return loss + seadpra_alpha * -a[0]


def naive_wdro_excess(rs: list[Row], beta: float, pair_mode: str, wdro_epsilon: float, wdro_pieces: int,
                      wdro_xi_min: float, **_: object) -> float:
    """Wasserstein-robust DPO's batch term V_eps - V_0 (docs/methods.md#robust-dpo): the worst case of
    l^ = max of the K tangents of -log xi over the W1 ball, written as Mohajerin Esfahani & Kuhn's
    program (arXiv:1505.05116, Thm 4.2) in its textbook form (q = q+ - q-, both support rows; the
    loss solves a reduced form), one row at a time, and solved with HiGHS."""
    from scipy.optimize import linprog

    k, lo = wdro_pieces, wdro_xi_min
    ts = [1.0] if k == 1 else [lo ** ((k - 1 - j) / (k - 1)) for j in range(k)]
    a, b = [-1 / t for t in ts], [1 - math.log(t) for t in ts]
    xi, w = [], []
    lists = sum(1 for r in rs if r.n >= 2)
    for r in rs:
        s = [beta * ratio(r, i) for i in r.order]
        ps = pairs(r.n, pair_mode)
        for p, q in ps:
            xi.append(max(lo, sigmoid(s[p] - s[q])))
            w.append(1 / (lists * len(ps)))
    n = len(xi)
    var = lambda kind, i, j: kind * n * k + i * k + j  # noqa: E731  kind 0 alpha, 1 q+, 2 q-
    c = [0.0] * (3 * n * k)
    a_ub, b_ub, a_eq = [[0.0] * (3 * n * k)], [wdro_epsilon], []
    for i in range(n):
        a_eq.append([0.0] * (3 * n * k))
        for j in range(k):
            c[var(0, i, j)] = -w[i] * (a[j] * xi[i] + b[j])  # maximise: minimise the negative
            c[var(1, i, j)], c[var(2, i, j)] = w[i] * a[j], -w[i] * a[j]
            a_ub[0][var(1, i, j)] = a_ub[0][var(2, i, j)] = w[i]
            a_eq[i][var(0, i, j)] = 1.0
            low, high = [0.0] * (3 * n * k), [0.0] * (3 * n * k)
            low[var(0, i, j)], low[var(1, i, j)], low[var(2, i, j)] = lo - xi[i], 1.0, -1.0
            high[var(0, i, j)], high[var(1, i, j)], high[var(2, i, j)] = xi[i] - 1, -1.0, 1.0
            a_ub += [low, high]
            b_ub += [0.0, 0.0]
    res = linprog(c, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=[1.0] * n, bounds=(0, None), method="highs")
    assert res.status == 0, res.message
    nominal = sum(wi * max(aj * x + bj for aj, bj in zip(a, b)) for wi, x in zip(w, xi))
    return -res.fun - nominal


def naive_dpo_wdro(r: Row, beta: float, pair_mode: str, wdro_excess: float, **_: object) -> float:
    """Each list: its DPO-BT loss plus the batch's robust excess (the trainer's mean adds it once)."""
    return naive_dpo_bt(r, beta, pair_mode) + wdro_excess


NAIVE = {
    "sft": naive_sft, "dpo_bt": naive_dpo_bt, "dpo_pl": naive_dpo_pl, "slic": naive_slic, "rrhf": naive_rrhf,
    "ipo": naive_ipo, "kto": naive_kto, "spo": naive_spo, "spo_abs": lambda r, **hp: naive_spo(r, absolute=True, **hp),
    "lipo": naive_lipo, "pro": naive_pro, "seadpra": naive_seadpra, "spa": naive_spa,
    "dpo_wdro": naive_dpo_wdro,
}

# non-default hyper-parameters so a loss that ignores one is caught
CONFIGS: dict[str, list[dict]] = {
    "sft": [{}],
    "dpo_bt": [{"beta": 0.7, "pair_mode": "1vso"}, {"beta": 0.3, "pair_mode": "pw"}],
    "dpo_pl": [{"beta": 0.6}],
    "slic": [{"slic_delta": 3.0, "slic_lambda": 0.4, "pair_mode": "1vso"},
             {"slic_delta": 5.0, "slic_lambda": 0.2, "pair_mode": "pw"}],
    "rrhf": [{"rrhf_weight": 0.7, "rrhf_length_penalty": 1.0}, {"rrhf_weight": 1.3, "rrhf_length_penalty": 0.5}],
    "ipo": [{"ipo_tau": 0.3, "pair_mode": "1vso"}, {"ipo_tau": 0.8, "pair_mode": "pw"}],
    "kto": [{"beta": 0.8, "kto_lambda_d": 1.5, "kto_lambda_u": 0.7}],
    "spo": [{"beta": 0.6, "spo_alpha": 0.7}],
    "spo_abs": [{"beta": 0.4, "spo_alpha": 2.0}],
    "lipo": [{"beta": 0.5}],
    "pro": [{"pro_sft_weight": 0.05, "pro_sft_mode": "sum", "pro_use_scores": True},
            {"pro_sft_weight": 0.2, "pro_sft_mode": "mean", "pro_use_scores": False}],
    "seadpra": [{"seadpra_alpha": 0.3, "weight_eps": 1e-8}],
    "spa": [{"beta": 0.5, "spa_alpha": 0.3, "spa_k": 40.0, "spa_lambda": 0.25, "pair_mode": "pw"},
            {"beta": 0.2, "spa_alpha": 0.1, "spa_k": 10.0, "spa_lambda": 0.0, "pair_mode": "1vso"}],
    "dpo_wdro": [{"beta": 0.7, "pair_mode": "1vso", "wdro_epsilon": 0.1, "wdro_pieces": 6, "wdro_xi_min": 0.02},
                 {"beta": 0.3, "pair_mode": "pw", "wdro_epsilon": 0.02, "wdro_pieces": 3, "wdro_xi_min": 0.05}],
}


def full_hparams(name: str, hp: dict) -> dict:
    """``hp`` completed with the defaults (what the naive references need)."""
    return {**default_hparams(name), **hp}


def naive_batch(name: str, batch: ListLogps, hp: dict) -> list[float]:
    hp = full_hparams(name, hp)
    if name == "kto":
        mis = (batch.mismatched_policy - batch.mismatched_reference)[batch.mask].tolist()
        hp["z0"] = max(0.0, sum(mis) / len(mis))
    if name == "spa":  # tau: the K-th percentile over every pair of the batch
        hp["spa_tau"] = percentile([c for r in rows(batch) for c in spa_confidences(r, **hp)], hp["spa_k"])
    if name == "dpo_wdro":  # the worst case couples every pair of the batch
        hp["wdro_excess"] = naive_wdro_excess(rows(batch), **hp)
    return [NAIVE[name](r, **hp) for r in rows(batch)]


def cases() -> list[tuple[str, dict]]:
    return [(name, hp) for name in ALL for hp in CONFIGS.get(name, [{}])]


def ids(case: tuple[str, dict]) -> str:
    return case[0] + "-" + "-".join(f"{k}={v}" for k, v in case[1].items())


# --------------------------------------------------------------------------- registry


def test_every_method_is_registered() -> None:
    assert ALL == sorted(EXPECTED)


@pytest.mark.parametrize("name", ALL)
def test_defaults_come_from_the_declaration(name: str) -> None:
    """A loss built without arguments holds its dataclass's defaults, and the flat namespace
    lists every one of its hyper-parameters with that same default."""
    loss = build_loss(name)
    declared = {f.name: f.default for f in dataclasses.fields(get_loss_class(name).hyperparams)}
    assert dataclasses.asdict(loss.hparams) == declared == default_hparams(name)
    flat = hyperparameters()
    for p, default in declared.items():
        assert flat[p].default == default and name in flat[p].methods
        assert flat[p].field.metadata["help"]


def test_class_flags() -> None:
    ref = {"dpo_bt", "dpo_pl", "dpo_wdro", "ipo", "kto", "spo", "spo_abs", "lipo", "spa"}
    for name in ALL:
        cls = get_loss_class(name)
        assert cls.needs_reference == (name in ref), name
        assert cls.needs_apdf == (name == "seadpra"), name
        assert cls.needs_mismatched == (name == "kto"), name
        assert cls.needs_scores is False, name
        assert cls.default_order == ("dynamic" if name == "seadpra" else "auto"), name


def test_registry_refuses_duplicates_and_unknowns() -> None:
    class Dummy(ListwiseLoss):
        pass

    with pytest.raises(ValueError, match="'sft' is already registered"):
        register_loss("sft")(Dummy)
    with pytest.raises(ValueError, match="already registered"):
        register_loss("DPO-PL")(Dummy)  # same key after normalisation
    with pytest.raises(ValueError, match="unknown method 'nope'; registered methods: dpo_bt"):
        build_loss("nope")
    with pytest.raises(ValueError, match=r"unknown hyper-parameter\(s\) \['betta'\]; valid: \['beta'\]"):
        build_loss("dpo_pl", betta=0.1)
    with pytest.raises(TypeError, match="not a ListwiseLoss"):
        register_loss("brand_new_name")(int)  # type: ignore[arg-type]
    assert "brand_new_name" not in available_losses()
    assert available_losses() == ALL


def test_names_are_case_and_dash_insensitive() -> None:
    assert type(build_loss("DPO-PL")) is get_loss_class("dpo_pl")
    assert type(build_loss("Spo-Abs")) is get_loss_class("spo_abs")


@pytest.mark.parametrize(("name", "kwargs", "match"), [
    ("dpo_bt", {"beta": 0.0}, "beta must be > 0"),
    ("dpo_bt", {"pair_mode": "all"}, r"pair_mode must be one of \['1vso', 'pw'\] \(got 'all'\)"),
    ("ipo", {"ipo_tau": -1.0}, "ipo_tau must be > 0"),
    ("spo", {"spo_alpha": 0}, "spo_alpha must be > 0"),
    ("pro", {"pro_sft_mode": "avg"}, r"pro_sft_mode must be one of \['sum', 'mean'\]"),
    ("seadpra", {"weight_eps": 0.0}, "weight_eps must be > 0"),
    ("slic", {"slic_lambda": -0.1}, "slic_lambda must be >= 0"),
    ("kto", {"kto_lambda_u": -1}, "kto_lambda_u must be >= 0"),
    ("pro", {"pro_use_scores": "false"}, r"pro_use_scores must be true or false \(got 'false'\)"),
    ("rrhf", {"rrhf_length_penalty": float("nan")}, "rrhf_length_penalty must be a finite number"),
])
def test_bad_hyper_parameters_are_refused(name: str, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_loss(name, **kwargs)


def test_a_hyper_parameter_means_one_thing() -> None:
    """Sharing a name needs the declaring dataclass; a second declaration, a changed default, a
    config field's name, or a field without help is refused at registration."""

    @dataclass
    class OwnBeta:
        beta: float = hparam(0.1, "another beta")

    @dataclass
    class LouderBeta(Beta):
        beta: float = hparam(0.5, "beta with another default")

    @dataclass
    class Clash:
        max_length: int = hparam(3, "clashes with the training config's max_length")

    @dataclass
    class NoHelp:
        gamma: float = 1.0

    for params, match in [(OwnBeta, "declared again by .*OwnBeta.*inherit Beta"),
                          (LouderBeta, r"changes the default of Beta \(0.1 -> 0.5\)"),
                          (Clash, "clashes with a field of ListwiseConfig"), (NoHelp, "no help text")]:
        class Bad(ListwiseLoss):
            hyperparams = params

        import rankalign.training.config  # noqa: F401  (reserves the config's field names)

        with pytest.raises(ValueError, match=match):
            register_loss("throwaway_bad")(Bad)
        assert "throwaway_bad" not in available_losses()


@pytest.mark.parametrize("name", ALL)
def test_missing_inputs_name_the_field(name: str) -> None:
    loss = build_loss(name)
    batch = make_batch([3, 2])
    if loss.needs_reference:
        with pytest.raises(ValueError, match=f"loss '{name}' needs reference"):
            loss(replace(batch, reference=None))
    if loss.needs_apdf:
        with pytest.raises(ValueError, match="needs apdf"):
            loss(replace(batch, apdf=None))
    if loss.needs_mismatched:
        with pytest.raises(ValueError, match="needs mismatched_policy"):
            loss(replace(batch, mismatched_policy=None))
    loss(batch)  # complete inputs work


# --------------------------------------------------------------------------- against the naive loops


@pytest.mark.parametrize("case", cases(), ids=ids)
def test_matches_naive_loop(case: tuple[str, dict]) -> None:
    name, hp = case
    assert name in NAIVE, f"new loss {name!r}: add a naive reference to tests/test_losses.py"
    loss = build_loss(name, **hp)
    for seed, with_scores in ((0, True), (1, False)):
        batch = make_batch([5, 2, 4, 3, 5], m=6, seed=seed, scores=with_scores)
        got = loss(batch).loss
        assert got.shape == (5,)
        want = torch.tensor(naive_batch(name, batch, hp), dtype=F64)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


# --------------------------------------------------------------------------- hand-derived values


def test_sft_by_hand() -> None:
    """policy [-6, -2], lengths [3, 1], order [1, 0]: best = candidate 1, loss = 2/1 = 2."""
    out = build_loss("sft")(one_list([-6.0, -2.0], [3, 1], order=[1, 0]))
    assert out.loss.item() == pytest.approx(2.0)


def test_dpo_bt_by_hand() -> None:
    """beta 1, ratio [1, 0]: -log sigmoid(1) = log(1 + e^-1) = 0.3132617.

    'pw' with ratio [2, 1, 0]: pairs (0,1), (0,2), (1,2) have margins 1, 2, 1:
    (2 * 0.3132617 + log(1 + e^-2) = 0.1269280) / 3 = 0.2511505.
    """
    two = one_list([-1.0, -2.0], [1, 1], reference=[-2.0, -2.0])
    assert build_loss("dpo_bt", beta=1.0)(two).loss.item() == pytest.approx(0.3132617, abs=1e-7)
    three = one_list([2.0, 1.0, 0.0], [1, 1, 1], reference=[0.0, 0.0, 0.0])
    assert build_loss("dpo_bt", beta=1.0, pair_mode="pw")(three).loss.item() == pytest.approx(0.2511505, abs=1e-7)
    # 1vsO only uses (0,1) and (0,2): (0.3132617 + 0.1269280) / 2
    assert build_loss("dpo_bt", beta=1.0)(three).loss.item() == pytest.approx(0.2200948, abs=1e-7)


def test_dpo_pl_by_hand() -> None:
    """Three equal rewards: -log(1/3) - log(1/2) = log 6 = 1.7917595."""
    batch = one_list([-3.0, -3.0, -3.0], [1, 2, 3], reference=[-1.0, -1.0, -1.0])
    assert build_loss("dpo_pl", beta=0.5)(batch).loss.item() == pytest.approx(1.7917595, abs=1e-7)


def test_slic_by_hand() -> None:
    """delta 1, lambda 0.1, logp [-2, -2.5], lengths [2, 1]:
    hinge max(0, 1 + 2 - 2.5) = 0.5; NLL(best) = 2/2 = 1; loss = 0.5 + 0.1 = 0.6."""
    batch = one_list([-2.0, -2.5], [2, 1])
    assert build_loss("slic", slic_delta=1.0, slic_lambda=0.1)(batch).loss.item() == pytest.approx(0.6)


def test_rrhf_by_hand() -> None:
    """s = logp/len = [-3, -1] with order [0, 1]: hinge max(0, -1 - (-3)) = 2, NLL(best) = 3: 5.
    Same list with order [1, 0]: hinge 0, NLL = 1: 1."""
    rrhf = build_loss("rrhf")
    assert rrhf(one_list([-3.0, -1.0], [1, 1])).loss.item() == pytest.approx(5.0)
    assert rrhf(one_list([-3.0, -1.0], [1, 1], order=[1, 0])).loss.item() == pytest.approx(1.0)


def test_ipo_by_hand() -> None:
    """tau 0.5 (target margin 1), 'pw', ratio [2, 1, 0]: margins 1, 2, 1 -> (0 + 1 + 0)/3."""
    batch = one_list([2.0, 1.0, 0.0], [1, 1, 1], reference=[0.0, 0.0, 0.0])
    assert build_loss("ipo", ipo_tau=0.5, pair_mode="pw")(batch).loss.item() == pytest.approx(1 / 3)


def test_kto_by_hand() -> None:
    """beta 1, lambda_U 2, ratio [1, -1], mismatched ratio [1, 2] -> z0 = 1.5.
    desirable: 1 - sigmoid(1 - 1.5) = 0.6224593; undesirable: 2 * (1 - sigmoid(1.5 + 1)) = 0.1517164;
    mean 0.3870879. With mismatched ratio [-1, -1], z0 = max(0, -1) = 0:
    (1 - sigmoid(1)) + 2 * (1 - sigmoid(1)) = 3 * 0.2689414, mean 0.4034121."""
    kto = build_loss("kto", beta=1.0, kto_lambda_u=2.0)
    batch = one_list([1.0, -1.0], [1, 1], reference=[0.0, 0.0], mis_ratio=[1.0, 2.0])
    out = kto(batch)
    assert out.loss.item() == pytest.approx(0.3870879, abs=1e-7)
    assert out.metrics["kl"].item() == pytest.approx(1.5)
    batch = one_list([1.0, -1.0], [1, 1], reference=[0.0, 0.0], mis_ratio=[-1.0, -1.0])
    assert kto(batch).loss.item() == pytest.approx(0.4034121, abs=1e-7)


def test_spo_and_spo_abs_by_hand() -> None:
    """alpha 1, beta 1, scores [ln 3, 0] -> teacher [3/4, 1/4]; ratio [ln 3, 0] -> student [3/4, 1/4]:
    cross-entropy = entropy(3/4, 1/4) = 0.5623351. SPO-abs adds (sigmoid(-ln 3) + sigmoid(0)) / 2
    = (1/4 + 1/2) / 2 = 0.375: 0.9373351."""
    ln3 = math.log(3)
    batch = one_list([ln3, 0.0], [1, 1], reference=[0.0, 0.0], scores=[ln3, 0.0])
    assert build_loss("spo", beta=1.0, spo_alpha=1.0)(batch).loss.item() == pytest.approx(0.5623351, abs=1e-7)
    assert build_loss("spo_abs", beta=1.0, spo_alpha=1.0)(batch).loss.item() == pytest.approx(0.9373351, abs=1e-7)


def test_lipo_by_hand() -> None:
    """beta 1, ratio [1, 0], scores [1, 0]: G = [1, 0]; ranks by s = [1, 2];
    1/D = [1/log2 2, 1/log2 3] = [1, 0.6309298]; Delta = 1 * 0.3690702;
    loss = 0.3690702 * log(1 + e^-1) = 0.3690702 * 0.3132617 = 0.1156156."""
    batch = one_list([1.0, 0.0], [1, 1], reference=[0.0, 0.0], scores=[1.0, 0.0])
    assert build_loss("lipo", beta=1.0)(batch).loss.item() == pytest.approx(0.1156156, abs=1e-7)


def test_pro_by_hand() -> None:
    """No scores, a = [-1, -1, -1]: stages log 3 + log 2 = 1.7917595; SFT (sum) 0.05 * (3-1)^2 * 1 = 0.2:
    1.9917595.

    Scores [3, 2, 0], logp [-1, -2, -1], lengths 1, SFT weight 0. Stage 1: gaps 1, 3 (max 3):
    z = [-1*3, -2*1, -1*3] -> log(e^-3 + e^-2 + e^-3) + 3 = log(2 + e) = 1.5514447.
    Stage 2: gap 2: z = [-2*2, -1*2] -> log(e^-4 + e^-2) + 4 = log(1 + e^2) = 2.1269280. Sum 3.6783727.
    """
    batch = one_list([-1.0, -1.0, -1.0], [1, 1, 1])
    assert build_loss("pro")(batch).loss.item() == pytest.approx(1.9917595, abs=1e-7)
    batch = one_list([-1.0, -2.0, -1.0], [1, 1, 1], scores=[3.0, 2.0, 0.0])
    assert build_loss("pro", pro_sft_weight=0.0)(batch).loss.item() == pytest.approx(3.6783727, abs=1e-7)
    # 'mean' SFT: a_top = -1 -> 0.05 * 4 * 1 added
    pro_mean = build_loss("pro", pro_sft_mode="mean")
    assert pro_mean(batch).loss.item() == pytest.approx(3.8783727, abs=1e-7)


def test_seadpra_by_hand() -> None:
    """a = logp/len = [-0.5, 0, 0], D^R = [0, 1, 2], alpha 0.01,
    Delta_M = [[0, 1, 2], [1, 0, 3], [2, 3, 0]].
    Round 1 (b = 0): W_r = 2; negatives 1, 2 get the sorted row [1, 2]:
      -log(2e^-.5 / (2e^-.5 + 1 + 2)) = log(1 + 1.5 e^.5) = 1.2450424.
    Round 2 (b = 1): W_r = 3; negatives 0, 2 (D^R order) get [1, 3]:
      -log(3 / (3 + e^-.5 + 3)) = log((6 + e^-.5)/3) = 0.7894464.
    L_Pa = 0.5 -> loss = 2.0344887 + 0.005 = 2.0394887."""
    apdf = [[0.0, 1.0, 2.0], [1.0, 0.0, 3.0], [2.0, 3.0, 0.0]]
    batch = one_list([-1.0, 0.0, 0.0], [2, 1, 1], apdf=apdf)
    out = build_loss("seadpra")(batch)
    assert out.loss.item() == pytest.approx(2.0394887, abs=1e-7)
    assert out.metrics["seadpra/l_pc"].item() == pytest.approx(2.0344887, abs=1e-7)


def test_seadpra_reward_weight_is_the_product_of_attribute_row_maxima() -> None:
    """Eq. 7: W_r = prod_k max_j delta_k(b, j). Two attributes, D^R = [0, 1, 2], alpha 0:
    delta_1 = [[0, 1, 2], [1, 0, 1], [2, 1, 0]], delta_2 = [[0, 3, 1], [3, 0, 1], [1, 1, 0]],
    Delta_M = [[0, 3, 2], [3, 0, 1], [2, 1, 0]]; row maxima products W_r = [2*3, 1*3, 2*1] = [6, 3, 2]
    (max_j Delta_M gives [3, 3, 2]: round 1 differs). a = [0, 0, 0]:
    round 1 (b = 0): -log(6 / (6 + 2 + 3)) = log(11/6) = 0.6061358;
    round 2 (b = 1): negatives 0, 2 get the sorted row [1, 3]: -log(3 / (3 + 1 + 3)) = log(7/3) = 0.8472979.
    """
    d1 = torch.tensor([[0.0, 1, 2], [1, 0, 1], [2, 1, 0]], dtype=F64)
    d2 = torch.tensor([[0.0, 3, 1], [3, 0, 1], [1, 1, 0]], dtype=F64)
    row_max = (d1.amax(1) * d2.amax(1))[None]  # [1, 3]
    batch = one_list([0.0, 0.0, 0.0], [1, 1, 1], apdf=(d1 * d2).tolist())
    loss = build_loss("seadpra", seadpra_alpha=0.0)
    with_wr = loss(replace(batch, apdf_row_max=row_max)).loss.item()
    assert with_wr == pytest.approx(math.log(11 / 6) + math.log(7 / 3), abs=1e-9)
    # without apdf_row_max the loss falls back to max_j Delta_M: round 1 becomes log(8/3)
    fallback = loss(batch).loss.item()
    assert fallback == pytest.approx(math.log(8 / 3) + math.log(7 / 3), abs=1e-9)


# --------------------------------------------------------------------------- equivalences


@pytest.mark.parametrize("pair_mode", ["1vso", "pw"])
def test_dpo_pl_equals_dpo_bt_at_m2(pair_mode: str) -> None:
    batch = make_batch([2, 2, 2, 2], seed=3)
    pl = build_loss("dpo_pl", beta=0.4)(batch).loss
    bt = build_loss("dpo_bt", beta=0.4, pair_mode=pair_mode)(batch).loss
    torch.testing.assert_close(pl, bt, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("scores", [True, False])
def test_spo_alpha_to_zero_equals_dpo_at_m2(scores: bool) -> None:
    """Seed 003 eq. 9-10: alpha -> 0 turns the soft labels into the best response's one-hot."""
    batch = make_batch([2, 2, 2, 2, 2], seed=4, scores=scores, order_by_scores=True)
    spo = build_loss("spo", beta=0.3, spo_alpha=1e-6)(batch).loss
    dpo = build_loss("dpo_bt", beta=0.3)(batch).loss
    torch.testing.assert_close(spo, dpo, rtol=1e-12, atol=1e-12)
    # and alpha matters away from 0 (the test above is not vacuous)
    assert not torch.allclose(build_loss("spo", beta=0.3, spo_alpha=1.0)(batch).loss, dpo)


@pytest.mark.parametrize("use_scores_flag", [True, False])
def test_pro_without_scores_is_plackett_luce_on_avg(use_scores_flag: bool) -> None:
    """PRO with T = 1 and no SFT is PL on avg log-probs = DPO-PL (beta 1) with ratio = avg."""
    batch = make_batch([4, 3, 2], seed=5, scores=not use_scores_flag)
    pro = build_loss("pro", pro_sft_weight=0.0, pro_use_scores=use_scores_flag)(batch).loss
    as_ratio = replace(batch, policy=batch.avg, reference=torch.zeros_like(batch.policy))
    pl = build_loss("dpo_pl", beta=1.0)(as_ratio).loss
    torch.testing.assert_close(pro, pl, rtol=1e-12, atol=1e-12)


def test_seadpra_with_constant_weights_is_listnet_rounds() -> None:
    """Delta_M = 1 off the diagonal: every weight is 1, round m is -log softmax(a)[b] over all n."""
    batch = make_batch([4], seed=6)
    batch = replace(batch, apdf=torch.ones(1, 4, 4, dtype=F64) - torch.eye(4, dtype=F64))
    a = batch.sorted(batch.avg)[0].tolist()
    want = sum(lse(a) - a[b] for b in range(3))
    got = build_loss("seadpra", seadpra_alpha=0.0)(batch).loss.item()
    assert got == pytest.approx(want, rel=1e-12)


# --------------------------------------------------------------------------- invariances


def shuffled(batch: ListLogps, seed: int) -> ListLogps:
    """The same lists with their real candidates stored in another order (order remapped)."""
    g = torch.Generator().manual_seed(seed)
    b, m = batch.policy.shape
    perms = []
    for i in range(b):
        k = int(batch.mask[i].sum())
        perms.append(torch.cat([torch.randperm(k, generator=g), torch.arange(k, m)]))
    perm = torch.stack(perms)  # new index j holds old candidate perm[j]
    inv = torch.argsort(perm, dim=1)
    assert not torch.equal(perm, torch.arange(m).expand(b, m)), "the permutation must move something"

    def p(x: torch.Tensor | None) -> torch.Tensor | None:
        return None if x is None else torch.gather(x, 1, perm)

    apdf = torch.gather(torch.gather(batch.apdf, 1, perm[:, :, None].expand(b, m, m)), 2, perm[:, None, :].expand(b, m, m))
    return ListLogps(policy=p(batch.policy), lengths=p(batch.lengths), mask=p(batch.mask),
                     order=torch.gather(inv, 1, batch.order), reference=p(batch.reference), scores=p(batch.scores),
                     labels=p(batch.labels), apdf=apdf, mismatched_policy=p(batch.mismatched_policy),
                     mismatched_reference=p(batch.mismatched_reference))


@pytest.mark.parametrize("case", cases(), ids=ids)
def test_shuffling_candidates_leaves_loss_unchanged(case: tuple[str, dict]) -> None:
    name, hp = case
    loss = build_loss(name, **hp)
    for scores in (True, False):
        batch = make_batch([5, 3, 4], m=5, seed=7, scores=scores)
        torch.testing.assert_close(loss(shuffled(batch, 1)).loss, loss(batch).loss, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ALL)
def test_padded_list_equals_unpadded(name: str) -> None:
    """Each list alone, unpadded, gives the same loss as padded to M = 7 with garbage (even NaN)."""
    loss = build_loss(name)
    for k in (2, 3, 5):
        tight = make_batch([k], seed=10 + k)
        for garbage in (1e3, float("nan")):
            padded = make_batch([k], m=7, seed=10 + k, garbage=garbage)
            # same real values in both (the generator draws [1, M]-shaped tensors, so copy them)
            padded = _embed(tight, padded)
            torch.testing.assert_close(loss(padded).loss, loss(tight).loss, rtol=1e-12, atol=1e-12)


def _embed(tight: ListLogps, padded: ListLogps) -> ListLogps:
    k = tight.policy.shape[1]
    out = {}
    for f in ("policy", "lengths", "order", "reference", "scores", "mismatched_policy", "mismatched_reference"):
        big = getattr(padded, f).clone()
        big[:, :k] = getattr(tight, f)
        out[f] = big
    apdf = torch.zeros_like(padded.apdf)
    apdf[:, :k, :k] = tight.apdf
    return replace(padded, apdf=apdf, **out)


# --------------------------------------------------------------------------- gradients and extremes


@pytest.mark.parametrize("name", ALL)
def test_gradcheck(name: str) -> None:
    loss = build_loss(name)
    batch = make_batch([3, 2], m=3, seed=11)
    policy = batch.policy.clone().requires_grad_(True)
    reference = batch.reference.clone().requires_grad_(True)

    def fn(p: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return loss(replace(batch, policy=p, reference=r)).loss

    assert torch.autograd.gradcheck(fn, (policy, reference), eps=1e-6, atol=1e-6)


def _extreme_batches() -> dict[str, ListLogps]:
    base = make_batch([64, 40], m=64, seed=12)
    ties = make_batch([6, 4], m=6, seed=13)
    ones = torch.ones_like(ties.policy)
    ties = replace(ties, policy=-5 * ones, reference=-4 * ones, scores=ones, lengths=torch.full_like(ties.lengths, 3),
                   apdf=ties.apdf.clamp(max=0) + (ties.mask[:, :, None] & ties.mask[:, None, :]).to(F64)
                   * (1 - torch.eye(6, dtype=F64)), mismatched_policy=ones, mismatched_reference=ones)
    small = make_batch([5, 3], m=5, seed=14)
    very_negative = replace(small, policy=torch.full_like(small.policy, -1e4))
    both_negative = replace(small, policy=torch.full_like(small.policy, -1e4),
                            reference=torch.full_like(small.policy, -1e4) + torch.rand(2, 5, dtype=F64))
    zero_apdf = replace(small, apdf=torch.zeros_like(small.apdf))
    return {"M=64": base, "ties": ties, "logp=-1e4": very_negative, "both=-1e4": both_negative,
            "apdf=0": zero_apdf, "float32": make_batch([6, 2], seed=15, dtype=torch.float32)}


EXTREME = _extreme_batches()


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("which", list(EXTREME))
def test_finite_loss_and_grads_in_extremes(name: str, which: str) -> None:
    batch = EXTREME[which]
    policy = batch.policy.clone().requires_grad_(True)
    out = build_loss(name)(replace(batch, policy=policy))
    assert torch.isfinite(out.loss).all(), out.loss
    out.loss.sum().backward()
    assert torch.isfinite(policy.grad).all()
    assert (policy.grad[~batch.mask] == 0).all(), "padded candidates must not receive gradient"
    for key, value in out.metrics.items():
        assert value.dim() == 0 and not value.requires_grad and torch.isfinite(value), key


def test_all_zero_apdf_is_listnet() -> None:
    """All weights clamp to eps and cancel: same loss as a constant APDF."""
    batch = EXTREME["apdf=0"]
    const = replace(batch, apdf=(batch.mask[:, :, None] & batch.mask[:, None, :]).to(F64) * (1 - torch.eye(5, dtype=F64)))
    loss = build_loss("seadpra")
    torch.testing.assert_close(loss(batch).loss, loss(const).loss, rtol=1e-9, atol=1e-9)


def test_ties_give_known_values() -> None:
    """Equal rewards everywhere: DPO-PL = sum_k log(n - k) per list (log 6! and log 4!)."""
    out = build_loss("dpo_pl")(EXTREME["ties"]).loss
    torch.testing.assert_close(out, torch.tensor([math.log(720), math.log(24)], dtype=F64))


# --------------------------------------------------------------------------- metrics


@pytest.mark.parametrize("name", ALL)
def test_metrics_present_and_detached(name: str) -> None:
    loss = build_loss(name)
    out = loss(make_batch([4, 3], seed=16))
    keys = {"logps/chosen", "logps/rejected", "ranking/accuracy"}
    if loss.needs_reference:
        keys |= {"rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"}
    assert keys <= set(out.metrics)
    for value in out.metrics.values():
        assert value.dim() == 0 and not value.requires_grad


def test_ranking_accuracy_and_rewards_by_hand() -> None:
    """beta 1, ratio [3, 1, 2] with order [0, 1, 2]: pairs (0,1) ok, (0,2) ok, (1,2) wrong -> 2/3;
    rewards/chosen 3, rejected (1 + 2)/2 = 1.5, margin 1.5, accuracies 1."""
    batch = one_list([3.0, 1.0, 2.0], [1, 1, 1], reference=[0.0, 0.0, 0.0])
    m = build_loss("dpo_pl", beta=1.0)(batch).metrics
    assert m["ranking/accuracy"].item() == pytest.approx(2 / 3)
    assert m["rewards/chosen"].item() == pytest.approx(3.0)
    assert m["rewards/rejected"].item() == pytest.approx(1.5)
    assert m["rewards/margins"].item() == pytest.approx(1.5)
    assert m["rewards/accuracies"].item() == pytest.approx(1.0)
    assert m["logps/chosen"].item() == pytest.approx(3.0)
    assert m["logps/rejected"].item() == pytest.approx(1.5)
